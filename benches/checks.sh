#!/usr/bin/env bash
# Active health checks per second on one core, as in docs/performance.md
# ("Health checks"): Maxine pinned to SERVER_CPU (default 0) runs CHECKS
# HTTP checks (default 100000) at INTERVAL (default 10s) against TARGETS
# local HTTP targets (default 100 ports on 127.0.0.1, examples/check_target.rs,
# one thread pinned to LOAD_CPU, default 1). Each check belongs to its own
# instance, registered on 127.0.0.1.
#
#   benches/checks.sh [SECONDS=60]
#
# The instances are registered, then Maxine is restarted: a restart spreads
# every check's first run over its interval (registrations alone would
# bunch them by the time they arrived). Then for SECONDS it reads
# Maxine's scheduler reports (every 10 s: runs/s, latency p50/p99 as
# power-of-two bucket bounds, the largest lag) and the targets' requests/s.
# QUICK=1: 10,000 checks at 1 s for 20 s (checks the script works; not a
# measurement). MAXINE_BIN=PATH runs that binary instead of building.
# Needs cargo, python3, curl, util-linux (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
checks=${CHECKS:-100000}
interval=${INTERVAL:-10s}
targets=${TARGETS:-100}
if [ "${QUICK:-0}" = 1 ]; then checks=${CHECKS:-10000}; interval=${INTERVAL:-1s}; secs=${1:-20}; fi
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}

cargo build --release --quiet --example check_target
if [ -z "${MAXINE_BIN:-}" ]; then cargo build --release --quiet; MAXINE_BIN=target/release/maxine; fi
work=$(mktemp -d)
pid="" tpid=""
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  [ -n "$tpid" ] && { kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
tport=$((31000 + RANDOM % 20000))

taskset -c "$load_cpu" target/release/examples/check_target "$tport" "$targets" >"$work/targets.log" 2>&1 &
tpid=$!

start_maxine() {
  env -u MAXINE_BIN taskset -c "$server_cpu" "$MAXINE_BIN" serve \
    --data-dir "$work/data" --store file --log-format json \
    --log-level "warn,maxine::health=debug" \
    --http-addr "127.0.0.1:$port" --dns-addr "127.0.0.1:$((port + 1))" \
    >>"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/v1/ready" >/dev/null && return 0
    sleep 0.1
  done
  tail -5 "$work/server.log" >&2
  echo "maxine did not become ready" >&2
  exit 1
}
start_maxine

echo "== registering $checks instances, each with an HTTP check every $interval"
python3 - "$port" "$tport" "$targets" "$checks" "$interval" <<'PY'
import http.client, json, sys, threading, time
port, tport, targets, checks, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
failed = []
def worker(k, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(k, checks, n):
        body = json.dumps({"address": "127.0.0.1", "port": 8080, "ttl": "24h",
                           "checks": [{"name": "http", "interval": interval,
                                       "http": f"http://127.0.0.1:{tport + i % targets}/h/{i}"}]})
        c.request("PUT", f"/v1/services/svc{i % 1000}/instances/i{i}", body,
                  {"Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        if r.status != 200:
            failed.append((r.status, data[:200])); return
t0 = time.time()
ts = [threading.Thread(target=worker, args=(k, 8)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
if failed:
    sys.exit(f"registration failed: {failed[0]}")
print(f"registered {checks} in {time.time() - t0:.1f} s", file=sys.stderr)
PY

echo "== restarting Maxine (first runs spread over the interval)"
kill "$pid"; wait "$pid" 2>/dev/null || true
: >"$work/server.log"
start_maxine
sleep "$secs"

echo "== Maxine's scheduler reports (10 s windows; the first may hold the start)"
python3 - "$work/server.log" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    if f.get("message") == "health check scheduler report":
        rows.append(f)
    elif e.get("level") == "WARN":
        print("warning:", f.get("message"), {k: v for k, v in f.items() if k != "message"})
for f in rows:
    print(f"checks {f['checks']}  runs/s {f['runs_per_s']:.0f}  p50 <= {f['p50_us']} us  "
          f"p99 <= {f['p99_us']} us  max lag {f['max_lag_ms']} ms  in flight {f['in_flight']}")
if not rows:
    sys.exit("no scheduler report in the log")
PY
echo "== the targets' requests/s (last 5 s)"
grep requests_per_s "$work/targets.log" | tail -5 | awk '{print "  " $2}'
echo "== Maxine's CPU time: $(ps -o times= -p "$pid" | tr -d ' ') s since its restart"
