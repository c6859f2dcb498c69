#!/usr/bin/env bash
# DNS with policy on against policy off: one Maxine binary, two servers side by side on CPU 0 with
# the same services, loaded in turn (off, on, off, on, ...) by dnsload on CPU 1 from 1,000 source
# addresses in 127.1.0.0/16 that are registered instances (so every query has a service identity).
# The "on" server also holds 10,000 intentions and 1,000 blacklisted CIDRs (benches/policy-data.py);
# every intention allows, so both servers give the same answers and the ratio is what deciding costs.
# Then the time from an intention change being acknowledged to every DNS worker answering with it
# (benches/policy-latency.py) on the "on" server.
#
#   benches/dns-policy.sh            about 3 minutes
#   QUICK=1 benches/dns-policy.sh    smoke test (3 s runs, one round)
#
# Environment:
#   MAXINE_BIN=PATH   the binary (default: build the repo in release)
#   ROUNDS=3          rounds of off-then-on; the median per side is reported
#   DNS_SECS=10       seconds per run (QUICK: 3)
#   CALLERS=1000 INTENTIONS=10000 CIDRS=1000   the policy's size
#   WINDOW=4          queries in flight per source address (dnsload --window)
#   KEEP=1            keep the temp dir
#   FOREIGN_MAX=15 RETRIES=2 QUIET_WAIT=60     other load: see benches/dns-load.sh
# Ports: off DNS 5330 API 5331, on DNS 5332 API 5333 (127.0.0.1). Needs Linux, 2+ CPUs, cargo,
# python3, curl, taskset, dig.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
QUICK=${QUICK:-0}
KEEP=${KEEP:-0}
if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-1} DNS_SECS=${DNS_SECS:-3} RETRIES=${RETRIES:-0} QUIET_WAIT=${QUIET_WAIT:-0}
else
  ROUNDS=${ROUNDS:-3} DNS_SECS=${DNS_SECS:-10} RETRIES=${RETRIES:-2} QUIET_WAIT=${QUIET_WAIT:-60}
fi
FOREIGN_MAX=${FOREIGN_MAX:-15}
CALLERS=${CALLERS:-1000} INTENTIONS=${INTENTIONS:-10000} CIDRS=${CIDRS:-1000} WINDOW=${WINDOW:-4}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
declare -A DNS_PORT_OF=([off]=5330 [on]=5332) HTTP_PORT_OF=([off]=5331 [on]=5333) PID_OF=()

B="" PIDS=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ -n "$B" ] && [ -d "$B" ]; then
    if [ "$KEEP" = 1 ]; then echo "kept $B" >&2; else rm -rf "$B"; fi
  fi
  [ "$rc" = 0 ] || echo "dns-policy.sh: failed (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (servers on CPU 0, load on CPU 1)"
for c in cargo python3 curl taskset dig; do command -v "$c" >/dev/null || die "$c not found"; done
need_ports_free 5330 5331 5332 5333
if [ -n "${MAXINE_BIN:-}" ]; then
  BIN=$(realpath "$MAXINE_BIN")
else
  log "building maxine (release)"
  (cd "$REPO" && cargo build --release --locked --bin maxine) || die "build failed"
  BIN=$TARGET/release/maxine
fi
B=$(mktemp -d "${TMPDIR:-/tmp}/maxine-policy.XXXXXX")
mkdir -p "$B/out"
build_dnsload "$TARGET"
gen_dns_data "$B" >&2
python3 "$BENCHES/policy-data.py" --callers "$CALLERS" --intentions "$INTENTIONS" --cidrs "$CIDRS" "$B" ||
  die "generating the policy data failed"

for s in off on; do
  log "starting $s (:${DNS_PORT_OF[$s]}, API :${HTTP_PORT_OF[$s]}) on CPU 0"
  start_maxine_on "$BIN" "${DNS_PORT_OF[$s]}" "${HTTP_PORT_OF[$s]}" "$B/data-$s" "$B/maxine-$s.log" "$B/zones"
  PID_OF[$s]=$MAXINE_PID PIDS+=("$MAXINE_PID") MAXINE_PID=""
  api=http://127.0.0.1:${HTTP_PORT_OF[$s]}
  register_all "$api" "$B/registrations.jsonl"
  register_all "$api" "$B/callers.jsonl"
done
api=http://127.0.0.1:${HTTP_PORT_OF[on]}
log "policy on the 'on' server: $INTENTIONS intentions, $CIDRS blacklisted CIDRs"
register_all "$api" "$B/intentions.jsonl" --raw
if [ "$CIDRS" -gt 0 ]; then
  register_all "$api" "$B/cidrs.jsonl" --raw
fi

# Both servers answer the askers alike (every intention allows), and a refusal is one on "on".
for q in "svc1.maxine. A" "_svc2._tcp.maxine. SRV" "v2.svc3.maxine. SRV"; do
  # shellcheck disable=SC2086
  a=$(dig +short +time=1 +tries=3 -b 127.1.0.1 @127.0.0.1 -p "${DNS_PORT_OF[off]}" $q | sort | tr '\n' ' ')
  # shellcheck disable=SC2086
  b=$(dig +short +time=1 +tries=3 -b 127.1.0.1 @127.0.0.1 -p "${DNS_PORT_OF[on]}" $q | sort | tr '\n' ' ')
  [ -n "$a" ] && [ "$a" = "$b" ] || die "'$q' from 127.1.0.1: off answers [$a], on [$b]"
done

for r in $(seq "$ROUNDS"); do
  for s in off on; do
    log "round $r: $s, $DNS_SECS s from $CALLERS source addresses"
    run_load "$s$r" udp "${PID_OF[$s]}" udp "127.0.0.1:${DNS_PORT_OF[$s]}" "$B/queries.txt" "$DNS_SECS" \
      --sockets "$CALLERS" --window "$WINDOW" --source 127.1.0.1
    grep '^MEASURE ' "$B/out/$s$r.udp" | sed "s/^/$s /" >>"$B/measures.txt"
  done
done

log "ack -> every worker (intention caller0 -> svc1 flipped on the 'on' server)"
python3 "$BENCHES/policy-latency.py" "$api" "127.0.0.1:${DNS_PORT_OF[on]}" 127.1.0.1 caller0 svc1 | tee "$B/latency.txt" | tail -1

python3 - "$B/measures.txt" <<'PY'
import re, statistics, sys
per = {"off": {}, "on": {}}
for line in open(sys.argv[1]):
    side = line.split()[0]
    for k in ("server_us_per_query", "server_us_per_answer", "qps"):
        per[side].setdefault(k, []).append(float(re.search(rf" {k}=([-0-9.]+)", line).group(1)))
print("\n| figure | policy off | policy on | on/off |\n|---|---|---|---|")
for k, label in (("server_us_per_answer", "server µs CPU per answer"), ("server_us_per_query", "server µs CPU per query"), ("qps", "queries/s")):
    a, b = statistics.median(per["off"][k]), statistics.median(per["on"][k])
    print(f"| {label} (median of {len(per['off'][k])}) | {a:.2f} | {b:.2f} | {b / a:.3f} |")
PY
for s in off on; do
  n=$(grep -c . "$B/maxine-$s.log" || true)
  [ "$n" = 0 ] || echo "note: $s logged $n lines at --log-level warn (see maxine-$s.log)" >&2
done
