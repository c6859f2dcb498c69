#!/usr/bin/env bash
# Durable registrations and heartbeats per second through the HTTP API, as in
# docs/performance.md ("Registry durability"): Maxine pinned to one core
# (taskset -c SERVER_CPU), wrk on the other (LOAD_CPU), 50 connections.
#
#   benches/registration-load.sh [SECONDS=10] [CONNECTIONS=50] [STORE=file]
#
# STORE is passed to --store (file, memory or redis://...). BATCHES=1 logs
# every store commit (trace level) and prints batch sizes and commit times
# at the end (needs python3). Needs wrk
# (Debian: apt-get install wrk). MAXINE_BIN=PATH runs that binary instead of
# building the repository. PACE_MS=N makes each connection wait N ms
# between its registrations (wrk's delay hook), for latency below the
# maximum rate. Every registration has a new id, spread
# over SERVICES services (default 1000); heartbeats go round 10,000
# registered instances. ACL=1 runs with access control on: default policy
# deny, and every request carries a service-identity token of its service
# (one token per service, created before the runs); ACL=0 (default) sends
# no token to a server that allows by default. Both build the same request
# headers in wrk, so the difference is the server's.
# SERVE_ARGS="..." adds arguments to `maxine serve` (e.g. --mqtt-url
# mqtt://127.0.0.1:1883 to publish every change to a broker), and
# SSE_CONSUMERS=N holds N event streams of /v1/events
# open during the runs (one process, examples/sse_consumers.rs, on
# LOAD_CPU), each reading and decoding every change (SSE_GZIP=1: asking for
# gzip, as browsers and most HTTP clients do). HEARTBEATS=0 skips the
# heartbeat part. Each run ends with the server's CPU (in % of one core) and
# how busy LOAD_CPU was: near 100%, the load side set the rate.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
secs=${1:-10}
conns=${2:-50}
store=${3:-file}
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}
services=${SERVICES:-1000}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

if [ -z "${MAXINE_BIN:-}" ]; then cargo build --release --quiet; MAXINE_BIN=target/release/maxine; fi
if [ "${SSE_CONSUMERS:-0}" -gt 0 ]; then cargo build --release --quiet --example sse_consumers; fi
work=$(mktemp -d)
consumers=
finish() {
  kill -0 "$pid" 2>/dev/null || tail -5 "$work/server.log" >&2
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  # The consumers end with the server (its exit closes their streams).
  if [ -n "$consumers" ]; then
    for _ in $(seq 100); do kill -0 "$consumers" 2>/dev/null || break; sleep 0.1; done
    kill "$consumers" 2>/dev/null || true; wait "$consumers" 2>/dev/null || true
    sed 's/^/  /' "$work/consumers.out"
  fi
  rm -rf "$work"
}
trap finish EXIT
port=$((20000 + RANDOM % 20000))
level=warn
[ "${BATCHES:-0}" = 1 ] && level="warn,maxine::store=trace"
acl=${ACL:-0}
acl_args=()
if [ "$acl" = 1 ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/management.secret"
  acl_args=(--acl-default-policy deny --acl-bootstrap-token-file "$work/management.secret")
fi
# Every connection comes from 127.0.0.1: the per-client cap (64 by default)
# would refuse wrk's connections once the event consumers hold theirs.
env -u MAXINE_BIN MAXINE_HTTP_MAX_CONNECTIONS_PER_IP="${MAXINE_HTTP_MAX_CONNECTIONS_PER_IP:-1000}" \
  taskset -c "$server_cpu" "$MAXINE_BIN" serve \
  --data-dir "$work/data" --store "$store" --log-level "$level" --log-format json \
  --http-addr "127.0.0.1:$port" --dns-addr "127.0.0.1:$((port + 1))" "${acl_args[@]}" \
  ${SERVE_ARGS:-} >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/v1/ready" >/dev/null && break
  sleep 0.1
done

if [ "${SSE_CONSUMERS:-0}" -gt 0 ]; then
  coding=plain
  [ "${SSE_GZIP:-0}" = 1 ] && coding=gzip
  taskset -c "$load_cpu" target/release/examples/sse_consumers "http://127.0.0.1:$port/v1/events" \
    "$SSE_CONSUMERS" "$coding" >"$work/consumers.out" 2>&1 &
  consumers=$!
  sleep 2   # for every consumer to be connected
fi

# headers_for(service): the request headers, with that service's token under ACL=1.
if [ "$acl" = 1 ]; then
  echo "== creating one service-identity token per service (ACL=1)"
  python3 - "$port" "$(cat "$work/management.secret")" "$services" >"$work/auth.lua" <<'PY'
import http.client, json, sys
port, management, services = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
print("local tokens = {}")
for name in [f"svc{i}" for i in range(services)] + [f"hb{i}" for i in range(1000)]:
    body = json.dumps({"description": "bench", "service": name})
    c.request("POST", "/v1/acl/tokens", body, {"Authorization": "Bearer " + management,
                                              "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    if r.status != 200:
        sys.exit(f"creating a token for {name}: {r.status} {data[:200]!r}")
    print(f'tokens["{name}"] = "Bearer {json.loads(data)["secret"]}"')
print('function headers_for(svc) return {["Content-Type"] = "application/json", '
      '["Authorization"] = tokens[svc]} end')
PY
else
  echo 'function headers_for(svc) return {["Content-Type"] = "application/json"} end' >"$work/auth.lua"
fi

# New ids only: the prefix keeps ids of separate runs apart.
{ cat "$work/auth.lua"; echo "local services = $services"; } >"$work/register.lua"
if [ -n "${PACE_MS:-}" ]; then
  printf 'function delay()\n  return %s\nend\n' "$PACE_MS" >>"$work/register.lua"
fi
cat >>"$work/register.lua" <<'LUA'
local n = 0
local prefix = "w" .. os.time() .. "-"
wrk.method = "PUT"
function request()
  n = n + 1
  local svc = "svc" .. (n % services)
  local path = "/v1/services/" .. svc .. "/instances/" .. prefix .. n
  local body = string.format(
    '{"address":"10.%d.%d.%d","port":8080,"version":"2.1.0","ttl":"1h"}',
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, path, headers_for(svc), body)
end
LUA
wrk_errors_lua >>"$work/register.lua"

# 10,000 instances to heartbeat: hb-0 .. hb-9999 in 1000 services.
cp "$work/auth.lua" "$work/hb-register.lua"
cat >>"$work/hb-register.lua" <<'LUA'
local n = -1
wrk.method = "PUT"
function request()
  n = (n + 1) % 10000
  local svc = "hb" .. (n % 1000)
  return wrk.format(nil, "/v1/services/" .. svc .. "/instances/hb-" .. n, headers_for(svc),
    '{"address":"10.9.0.1","port":8080,"ttl":"1h"}')
end
LUA
cp "$work/auth.lua" "$work/heartbeat.lua"
cat >>"$work/heartbeat.lua" <<'LUA'
local n = -1
wrk.method = "PUT"
function request()
  n = (n + 1) % 10000
  local svc = "hb" .. (n % 1000)
  return wrk.format(nil, "/v1/services/" .. svc .. "/instances/hb-" .. n .. "/heartbeat",
    headers_for(svc))
end
LUA
wrk_errors_lua >>"$work/heartbeat.lua"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# The load CPU's busy ticks: near 100% of it, the load side (wrk and, when
# attached, the consumers and the broker) limits the rate, not the server.
load_ticks() { awk -v c="cpu$load_cpu" '$1 == c {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
run() { # name script seconds
  local t0 c0 b0 l0 client
  t0=$(date +%s.%N); c0=$(cpu_ticks); b0=$(busy_ticks); l0=$(load_ticks)
  /usr/bin/time -o "$work/time" -f "%U %S" taskset -c "$load_cpu" \
    wrk -t1 -c"$conns" -d"${3}s" --latency -s "$2" "http://127.0.0.1:$port" | sed "s/^/  /"
  client=$(cat "$work/time")
  awk -v c0="$c0" -v c1="$(cpu_ticks)" -v b0="$b0" -v b1="$(busy_ticks)" -v l0="$l0" -v l1="$(load_ticks)" -v t0="$t0" \
    -v t1="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" -v client="$client" 'BEGIN {
      split(client, u, " "); wall = t1 - t0; srv = (c1 - c0) / hz
      printf "  server CPU: %.0f%% of one core; other processes: %.0f%% of a core (rerun if high)\n",
        100 * srv / wall, 100 * ((b1 - b0) / hz - srv - u[1] - u[2]) / wall
      printf "  load CPU: %.0f%% busy\n", 100 * (l1 - l0) / hz / wall }'
}

echo "== durable registrations (store: $store, ACL=$acl), $conns connections, ${secs}s, $services services${PACE_MS:+, each connection pausing ${PACE_MS} ms between requests}"
run register "$work/register.lua" "$secs"
if [ "${BATCHES:-0}" = 1 ]; then
  python3 - "$work/server.log" <<'PY'
import json, sys
rows = [json.loads(l)["fields"] for l in open(sys.argv[1]) if '"batch committed"' in l]
if rows:
    n = sorted(r["changes"] for r in rows); us = sorted(r["us"] for r in rows)
    q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))]
    print(f"  store: {len(rows)} commits, changes per commit mean {sum(n) / len(n):.1f} "
          f"(p50 {q(n, .5)}, max {n[-1]}); commit time p50 {q(us, .5) / 1000:.2f} ms, "
          f"p99 {q(us, .99) / 1000:.2f} ms")
PY
fi
if [ "${HEARTBEATS:-1}" = 0 ]; then exit 0; fi
echo "== registering 10,000 instances for the heartbeat run"
taskset -c "$load_cpu" wrk -t1 -c"$conns" -d2s -s "$work/hb-register.lua" "http://127.0.0.1:$port" >/dev/null
echo "== heartbeats, $conns connections, ${secs}s"
run heartbeat "$work/heartbeat.lua" "$secs"
echo "== server RSS: $(awk '/VmRSS/ {print int($2 / 1024) " MiB"}' "/proc/$pid/status")"
