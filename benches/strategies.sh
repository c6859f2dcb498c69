#!/usr/bin/env bash
# DNS server CPU per query by load-balancing strategy, in one run: one Maxine with the data set of
# docs/performance.md (1000 services x 3 instances), every service switched to each strategy in
# turn through PUT /v1/services/{svc}/config, interleaved (round_robin, sticky, weighted, random,
# nearest, round_robin, ...) so that all see the same machine; prints a Markdown table of the
# median server_us_per_query per strategy and its ratio to round_robin (target: <= 1.1x).
#
#   benches/strategies.sh [MAXINE_BIN]      (default target/release/maxine, built when missing)
#
# The load is dnsload's UDP A/SRV mix from 127.0.0.1: one client subnet, so `sticky` always picks
# the same order and `nearest` finds the client's zone (dns.client_zones puts 127.0.0.0/8 in zone
# z0, where a third of the instances are) on every query: the cost of a strategy's choice, not of
# its cache misses.
#
# Environment:
#   ROUNDS=3            rounds over the strategies; the median per strategy is reported
#   STRATEGIES="round_robin sticky weighted random nearest"
#   QUICK=1             smoke test: 3 s runs, one round
#   DNS_SECS=10         seconds per run (QUICK: 3)
#   KEEP=1              keep the temp dir with every run's raw output
#   FOREIGN_MAX=15 RETRIES=2 QUIET_WAIT=60   runs with other load: see benches/dns-load.sh
#   PORT=5320           DNS on :PORT, the API on :PORT+1
# Needs Linux with 2+ CPUs, cargo, python3, curl, taskset. Everything else is in benches/.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

QUICK=${QUICK:-0}
KEEP=${KEEP:-0}
if [ "$QUICK" = 1 ]; then
  : "${ROUNDS:=1}" "${DNS_SECS:=3}" "${RETRIES:=0}" "${QUIET_WAIT:=0}"
fi
: "${ROUNDS:=3}" "${DNS_SECS:=10}" "${FOREIGN_MAX:=15}" "${RETRIES:=2}" "${QUIET_WAIT:=60}" "${PORT:=5320}"
: "${STRATEGIES:=round_robin sticky weighted random nearest}"

BIN=${1:-$REPO/target/release/maxine}
if [ ! -x "$BIN" ]; then
  log "building maxine (release)"
  (cd "$REPO" && cargo build --release --locked --bin maxine) || die "building maxine failed"
fi
BIN=$(realpath "$BIN")

B=$(mktemp -d)
MAXINE_PID=""
cleanup() {
  [ -n "$MAXINE_PID" ] && stop_pid "$MAXINE_PID"
  if [ "$KEEP" = 1 ]; then echo "kept $B" >&2; else rm -rf "$B"; fi
}
trap cleanup EXIT
mkdir -p "$B/out"

need_ports_free "$PORT" "$((PORT + 1))"
build_dnsload "$REPO/target"
gen_dns_data "$B"
API=http://127.0.0.1:$((PORT + 1))
# Every third instance in zone z0, where the load's 127.0.0.1 is (for `nearest`).
python3 - "$B/registrations.jsonl" <<'EOF'
import json, sys
path = sys.argv[1]
lines = [json.loads(l) for l in open(path)]
for n, r in enumerate(lines):
    r.setdefault("metadata", {})["zone"] = f"z{n % 3}"
with open(path, "w") as f:
    for r in lines:
        f.write(json.dumps(r) + "\n")
EOF
printf '[dns]\nclient_zones = ["127.0.0.0/8=z0", "10.0.0.0/8=z1"]\n' >"$B/strategies.toml"
MAXINE_SERVE_ARGS="${MAXINE_SERVE_ARGS:-} --config $B/strategies.toml" \
  start_maxine_on "$BIN" "$PORT" "$((PORT + 1))" "$B/data" "$B/maxine.log" "$B/zones"
register_all "$API" "$B/registrations.jsonl"

# set_strategy NAME: PUT /v1/services/{svc}/config for every service of the data set
set_strategy() {
  python3 - "$API" "$B/registrations.jsonl" "$1" <<'EOF'
import http.client, json, sys, urllib.parse
api, path, strategy = sys.argv[1:4]
u = urllib.parse.urlparse(api)
services = sorted({json.loads(l)["service"] for l in open(path)})
c = http.client.HTTPConnection(u.hostname, u.port)
for s in services:
    c.request("PUT", f"/v1/services/{s}/config", json.dumps({"strategy": strategy}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"{s}: {r.status}")
EOF
}

for round in $(seq "$ROUNDS"); do
  for s in $STRATEGIES; do
    log "round $round: $s"
    set_strategy "$s"
    dns_test_args udp "127.0.0.1:$PORT" "$DNS_SECS"
    run_load "$s" "udp.r$round" "$MAXINE_PID" "${DNS_ARGS[@]}"
  done
done

# shellcheck disable=SC2086 # one argument per strategy
python3 - "$B/out" "$ROUNDS" $STRATEGIES <<'EOF'
import re, statistics, sys
out, rounds, strategies = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def us(s, r):
    text = open(f"{out}/{s}.udp.r{r}").read()
    return float(re.search(r"server_us_per_query=([0-9.]+)", text).group(1))
med = {s: statistics.median(us(s, r) for r in range(1, rounds + 1)) for s in strategies}
base = med.get("round_robin")
print("| strategy | server µs/query (median) | vs round_robin |")
print("|---|---|---|")
for s in strategies:
    ratio = f"{med[s] / base:.2f}x" if base else "-"
    print(f"| {s} | {med[s]:.2f} | {ratio} |")
EOF
