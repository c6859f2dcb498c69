#!/usr/bin/env bash
# The high-availability deployment on one machine (docs/cluster.md): three
# etcd members and three Maxine nodes on loopback, measured against one
# Maxine on the file store in the same run.
#
#   benches/etcd-cluster.sh [SECONDS=10] [CONNECTIONS=50] [STARTUP_INSTANCES=20000]
#
# Prints, in order:
#   1. durable registrations/s with CONNECTIONS connections spread over the
#      three nodes (three wrk processes), with wrk's p50/p99; then the same
#      against a single node on the file store;
#   2. convergence lag between nodes, p50/p99: wrk registers LAG_RATE
#      (5000) changes/s over the three nodes, paced (check the rate
#      reached), while PROBE_RATE (50) probes/s, each a new service
#      registered through node A, are asked of node B's DNS from A's
#      acknowledgement until B answers (benches/federation.py lag);
#   3. heartbeats/s through one node (10,000 instances, CONNECTIONS
#      connections), as it runs and then pinned to core 0 with wrk on core
#      1, with the node's CPU per beat;
#   4. start-up: STARTUP_INSTANCES instances in etcd, registered through
#      the API (minutes for many), then a node without local state starts:
#      seconds until it answers DNS for them, and until /v1/ready. For a
#      million, and for the restart from a node's local snapshot, use
#      benches/etcd-startup.sh (fills etcd directly, in seconds).
# Needs etcd, etcdctl (apt-get install etcd-server etcd-client), wrk and
# python3. MAXINE_BIN=PATH runs that binary instead of building. Small
# sizes (QUICK=1: 3 s runs, 2,000 start-up instances) check that it works.
# ONLY=reg,file,lag,hb,startup runs only those parts (default: all; "file" is
# the file-store comparison of the registrations and heartbeats).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
secs=${1:-10}
conns=${2:-50}
startup=${3:-20000}
lag_rate=${LAG_RATE:-5000}
probe_rate=${PROBE_RATE:-50}
only=${ONLY:-reg,file,lag,hb,startup}
part() { [[ ",$only," == *",$1,"* ]]; }
if [ "${QUICK:-0}" = 1 ]; then secs=3; startup=2000; fi
for tool in etcd etcdctl wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (etcd-server, etcd-client, wrk, python3, curl)" >&2; exit 1; }
done
if [ -z "${MAXINE_BIN:-}" ]; then cargo build --release --quiet; MAXINE_BIN=target/release/maxine; fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))

# Three etcd members: client ports base..base+2, peers base+10..base+12.
initial=""
for i in 0 1 2; do initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 + i))"; done
endpoints=""
for i in 0 1 2; do
  endpoints+="${endpoints:+,}127.0.0.1:$((base + i))"
  etcd --name "m$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" \
    --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --max-txn-ops 1024 --quota-backend-bytes 8589934592 \
    --logger zap --log-level warn >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done

# node NAME STORE HTTP_PORT DNS_PORT: starts a Maxine and waits for /v1/ready.
node() {
  env -u MAXINE_BIN "$MAXINE_BIN" serve --data-dir "$work/$1" --store "$2" \
    --http-addr "127.0.0.1:$3" --dns-addr "127.0.0.1:$4" --log-level warn \
    >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$3/v1/ready" >/dev/null && return 0
    sleep 0.1
  done
  echo "node $1 did not become ready:" >&2; tail -5 "$work/$1.log" >&2; exit 1
}
store="etcd://$endpoints/bench"
for i in 0 1 2; do node "n$i" "$store" $((base + 20 + i)) $((base + 30 + i)); done
node single file $((base + 40)) $((base + 41))

cat >"$work/register.lua" <<'LUA'
local n = 0
local prefix = "w" .. os.time() .. "-" .. math.random(1000000) .. "-"
wrk.method = "PUT"
function request()
  n = n + 1
  local path = "/v1/services/svc" .. (n % 1000) .. "/instances/" .. prefix .. n
  local body = string.format('{"address":"10.%d.%d.%d","port":8080,"ttl":"1h"}',
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, path, {["Content-Type"] = "application/json"}, body)
end
LUA

# wrk_spread SECONDS PORT...: CONNECTIONS split over the ports, summed.
wrk_spread() {
  local s=$1; shift
  local n=$#; local k=0
  for port in "$@"; do
    local c=$(( conns / n + (k < conns % n ? 1 : 0) ))
    wrk -t1 -c"$c" -d"${s}s" --latency -s "${script:-$work/register.lua}" "http://127.0.0.1:$port" >"$work/wrk$k.out" &
    k=$((k + 1))
  done
  wait_wrk=$(jobs -p | grep -v -F -x -f <(printf '%s\n' "${pids[@]}") || true)
  for j in $wait_wrk; do wait "$j"; done
  python3 - "$work" "$k" <<'PY'
import re, sys
work, k = sys.argv[1], int(sys.argv[2])
rate, p50, p99 = 0.0, [], []
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
for i in range(k):
    t = open(f"{work}/wrk{i}.out").read()
    rate += float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    for q, dst in (("50", p50), ("99", p99)):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", t)
        dst.append(ms(*m.groups()))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    if bad:
        print(f"  node {i}: {bad.group(1)} non-2xx answers")
print(f"  {rate:,.0f} registrations/s; p50 {max(p50):.2f} ms, p99 {max(p99):.2f} ms (worst node)")
PY
}

# store_metrics PORT: the mean commit time and batch size of a node's store.
store_metrics() {
  curl -fs "http://127.0.0.1:$1/metrics" | python3 -c '
import re, sys
t = sys.stdin.read()
def v(name):
    m = re.search(r"^" + name + r" ([0-9.e+-]+)$", t, re.M)
    return float(m.group(1)) if m else 0.0
n = v("maxine_store_commit_duration_seconds_count")
ms = 1000 * v("maxine_store_commit_duration_seconds_sum") / max(n, 1)
per = v("maxine_store_batch_changes_sum") / max(v("maxine_store_batch_changes_count"), 1)
if n:
    print(f"  its store: {n:,.0f} commits, {ms:.1f} ms each, {per:.1f} changes per commit (one node)")
'
}

# cpu_seconds PID...: user + system CPU seconds the processes used so far.
cpu_seconds() {
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}
if part reg; then
  echo "== durable registrations, $conns connections over three nodes on a three-member etcd cluster, ${secs}s"
  e0=$(cpu_seconds "${pids[@]:0:3}"); m0=$(cpu_seconds "${pids[@]:3:3}")
  wrk_spread "$secs" $((base + 20)) $((base + 21)) $((base + 22))
  e1=$(cpu_seconds "${pids[@]:0:3}"); m1=$(cpu_seconds "${pids[@]:3:3}")
  awk -v a="$e0" -v b="$e1" -v c="$m0" -v d="$m1" \
    'BEGIN { printf "  CPU seconds: etcd members %.1f, Maxine nodes %.1f\n", b - a, d - c }'
  store_metrics $((base + 20))
fi
if part file; then
  echo "== the same, one node on the file store"
  wrk_spread "$secs" $((base + 40))
  store_metrics $((base + 40))
fi

if part lag; then
  # wrk writes the load over the three nodes (CONNECTIONS, paced to LAG_RATE
  # in all); probes at PROBE_RATE/s, each a new service registered through
  # node A, are asked of node B's DNS from A's acknowledgement on.
  echo "== convergence lag: $lag_rate changes/s asked over the three nodes; probes through node A, asked of node B's DNS"
  paced_lua "$(( lag_rate / 3 ))" 1 >"$work/paced.lua"
  python3 benches/federation.py lag "http://127.0.0.1:$((base + 20))" "127.0.0.1:$((base + 31))" \
    "$probe_rate" "$secs" --threads 4 --every 1 --zone dc1.maxine. >"$work/lag.out" &
  probes=$!
  script="$work/paced.lua" wrk_spread "$secs" $((base + 20)) $((base + 21)) $((base + 22)) | sed 's/registrations/changes of the load/'
  wait "$probes"
  sed 's/^/  /' "$work/lag.out"
fi

python3 -c '
import json
for n in range(10000):
    print(json.dumps({"service": f"hb{n % 1000}", "id": f"hb-{n}", "address": "10.9.0.1", "port": 8080}))
' >"$work/hb.jsonl"
# cpu_ticks PID: the process's utime + stime, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# heartbeats NAME PORT PID: unpinned, as the node runs beside the rest;
# then the node pinned to core 0 and wrk to core 1, with the node's CPU per
# beat (the steadier figure: the unpinned rate moves by a fifth between
# runs on this machine).
heartbeats() {
  echo "== heartbeats through $1, $conns connections, ${secs}s (10,000 instances)"
  python3 benches/register.py --threads 16 "http://127.0.0.1:$2" "$work/hb.jsonl"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s benches/heartbeat.lua "http://127.0.0.1:$2" \
    | grep -E "Requests/sec|^ +50%|^ +99%|Non-2xx" | sed 's/^/  /'
  taskset -a -p -c 0 "$3" >/dev/null
  local c0 c1 out
  c0=$(cpu_ticks "$3")
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s benches/heartbeat.lua "http://127.0.0.1:$2")
  c1=$(cpu_ticks "$3")
  taskset -a -p -c 0-1 "$3" >/dev/null
  awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" '/Requests\/sec/ { r = $2 }
    /^ +99%/ { p = $2 } /requests in/ { n = $1 }
    END { printf "  pinned to one core: %.0f/s, p99 %s, %.1f us of node CPU per beat\n", r, p, c / hz / n * 1e6 }' <<<"$out"
}
if part hb; then heartbeats "node A (etcd)" $((base + 20)) "${pids[3]}"; fi
if part hb && part file; then heartbeats "the file-store node" $((base + 40)) "${pids[6]}"; fi

if ! part startup; then exit 0; fi
echo "== start-up with $startup instances in etcd"
python3 benches/dns-data.py --services $(( startup / 10 > 0 ? startup / 10 : 1 )) --instances 10 \
  --queries 10 --nx-queries 10 --no-zone "$work/data" >/dev/null
python3 benches/register.py --threads 16 http://127.0.0.1:$((base + 20)) "$work/data/registrations.jsonl"
t0=$(date +%s.%N)
env -u MAXINE_BIN "$MAXINE_BIN" serve --data-dir "$work/fresh" --store "$store" \
  --http-addr "127.0.0.1:$((base + 50))" --dns-addr "127.0.0.1:$((base + 51))" --log-level warn \
  >"$work/fresh.log" 2>&1 &
pids+=($!)
last=$(tail -1 "$work/data/registrations.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["service"])')
for _ in $(seq 6000); do
  if dig +short +tries=1 +time=1 @127.0.0.1 -p $((base + 51)) "$last.maxine" A 2>/dev/null | grep -q .; then break; fi
  sleep 0.01
done
t1=$(date +%s.%N)
for _ in $(seq 6000); do curl -fs "http://127.0.0.1:$((base + 50))/v1/ready" >/dev/null && break; sleep 0.01; done
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "  answering DNS after %.2f s, ready after %.2f s (no local state)\n", b - a, c - a }'
echo "== node RSS: $(awk '/VmRSS/ {print int($2 / 1024) " MiB"}' "/proc/${pids[-1]}/status")"
