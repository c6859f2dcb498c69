#!/usr/bin/env bash
# DNS instructions per query, counted by valgrind's callgrind: the same
# count for the same binary, data and queries whatever else the machine is
# doing, so differences of 1-2% that a timed A/B on this shared machine
# cannot resolve (docs/performance.md, "DNS counters on and off") show.
#
#   benches/dns-instructions.sh NAME=BINARY[,VAR=VALUE...] ...
#   e.g. benches/dns-instructions.sh off=target/release/maxine,MAXINE_METRICS_ENABLED=false \
#                                    on=target/release/maxine
#
# For each variant: the data set of dns-load.sh registered, callgrind's
# counters zeroed, QUERIES_SECONDS (10) of dnsload's UDP A/SRV mix (TEST=udp;
# edns, nx as in dns-load.sh) at RATE (2000) queries/s, the counters dumped;
# prints instructions per answered query, user space only (the kernel's
# socket work is outside valgrind and the same for every variant).
# KEEP=DIR copies each variant's dump there (callgrind.NAME.out) for
# `callgrind_annotate --inclusive=yes DIR/callgrind.NAME.out`. Needs
# valgrind, python3, curl, cargo (for benches/dnsload).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHES=benches
# shellcheck source=benches/lib.sh
. benches/lib.sh
command -v valgrind >/dev/null || die "valgrind is missing: apt-get install valgrind"
[ $# -gt 0 ] || die "usage: $0 NAME=BINARY[,VAR=VALUE...] ..."
secs=${QUERIES_SECONDS:-10}
rate=${RATE:-2000}
test=${TEST:-udp}
B=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && stop_pid "$pid"; rm -rf "$B"' EXIT
build_dnsload target
gen_dns_data "$B" >/dev/null
echo "| variant | queries answered | instructions per query |"
echo "|---|---:|---:|"
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}
  IFS=, read -r -a parts <<<"$rest"
  bin=${parts[0]}; vars=("${parts[@]:1}")
  port=$((20000 + RANDOM % 20000))
  env "${vars[@]}" valgrind --tool=callgrind --callgrind-out-file="$B/cg.$name.%p" \
    "$bin" serve --dns-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$((port + 1))" \
    --data-dir "$B/data.$name" --zone-dir "$B/zones" --store memory --log-level warn \
    >"$B/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$((port + 1))/v1/ready" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$B/$name.log" >&2; die "$name exited at start"; }
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$((port + 1))/v1/ready" >/dev/null || die "$name was not ready after 300 s"
  register_all "http://127.0.0.1:$((port + 1))" "$B/registrations.jsonl" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  dns_test_args "$test" "127.0.0.1:$port" "$secs"
  out=$("$DNSLOAD" "${DNS_ARGS[@]}" --rate "$rate")
  callgrind_control -d "$pid" >/dev/null
  answered=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  [ "${answered:-0}" -gt 0 ] || die "$name answered no queries: $out"
  dump=$(ls -t "$B"/cg."$name".*.1 2>/dev/null | head -1)
  [ -n "$dump" ] || { cat "$B/$name.log" >&2; die "$name: callgrind wrote no dump"; }
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  [ -n "$ir" ] || die "$name: no instruction total in $dump"
  awk -v n="$name" -v q="$answered" -v ir="$ir" 'BEGIN { printf "| %s | %d | %.0f |\n", n, q, ir / q }'
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$dump" "$KEEP/callgrind.$name.out"; fi
  stop_pid "$pid"; pid=
done
