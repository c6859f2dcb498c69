#!/usr/bin/env bash
# Heartbeats/s and server CPU per heartbeat, as in docs/performance.md
# ("Heartbeats"): Maxine (memory store) pinned to core 0, 10,000 instances
# hb-0..hb-9999 in 1,000 services, then wrk (1 thread, 50 connections,
# 6 s) on core 1 heartbeating them round-robin. The CPU figure is the
# server's utime+stime over the wrk run divided by the requests: it holds
# still on a machine whose throughput is noisy.
#
#   benches/heartbeat-cpu.sh BINARY [BINARY...]   # each once, in the order given
#
# Interleave binaries for an A/B (A B A B A B). Needs wrk and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
pid= work=
# A failure half-way (set -e) still stops the server and removes its data.
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$work" ] && rm -rf "$work"' EXIT
one() {
local bin=$1 port c0 c1 out rps reqs
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
MAXINE_HTTP_MAX_CONNECTIONS_PER_IP=1000 taskset -c 0 "$bin" serve --data-dir "$work/data" --store memory --log-level warn \
  --http-addr 127.0.0.1:$port --dns-addr 127.0.0.1:$((port+1)) >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/v1/ready >/dev/null && break; sleep 0.1; done
python3 -c '
import json
for n in range(10000):
    print(json.dumps({"service": f"hb{n % 1000}", "id": f"hb-{n}", "address": "10.9.0.1", "port": 8080, "ttl": "1h"}))
' >"$work/hb.jsonl"
taskset -c 1 python3 benches/register.py --threads 16 "http://127.0.0.1:$port" "$work/hb.jsonl" >/dev/null
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
c0=$(cpu)
out=$(taskset -c 1 wrk -t1 -c50 -d6s -s benches/heartbeat.lua http://127.0.0.1:$port)
c1=$(cpu)
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
reqs=$(echo "$out" | awk '/requests in/{print $1}')
kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$work"; pid= work=
# A refused heartbeat is not a heartbeat: such a run measures nothing.
if echo "$out" | grep -q Non-2xx; then echo "$bin: some heartbeats were refused:" >&2; echo "$out" >&2; exit 1; fi
python3 -c "t=($c1-$c0)/100; r=$reqs; print(f'$(basename $bin): {float(\"$rps\"):,.0f} beats/s, {t/r*1e6:.1f} us CPU/beat')"
}
for b in "$@"; do one "$b"; done
