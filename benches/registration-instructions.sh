#!/usr/bin/env bash
# Instructions per registration, counted by valgrind's callgrind: the same
# count for the same binary and requests whatever else the machine is
# doing, so the per-change cost of event consumers, and changes to it, show
# where a timed A/B on this shared machine scatters by ±10%
# (docs/performance.md, "Registrations with event consumers attached").
#
#   benches/registration-instructions.sh NAME=BINARY[,VAR=VALUE...] ...
#   e.g. benches/registration-instructions.sh off=target/release/maxine \
#          on=target/release/maxine,SSE=100,MQTT=1
#
# For each variant: Maxine (memory store) under callgrind, SSE event streams
# of /v1/events held open by examples/sse_consumers (SSE=N, default 0) and
# every change published to a local mosquitto (MQTT=1), callgrind's
# counters zeroed, REGISTRATIONS (5000) new instances registered over
# THREADS (8) connections, the counters dumped; prints instructions per
# registration, user space only (the kernel's socket work is outside
# valgrind). Other VAR=VALUE pairs are passed to Maxine's environment.
# FUNCTION=GLOB counts only inside the functions matching it (callgrind's
# --toggle-collect, e.g. FUNCTION='*change_json*'), per registration too.
#
# Under valgrind Maxine runs 20-50 times slower, so a stream's write
# interval (http.event_write_interval, 50 ms) would hold fewer changes than
# at full speed: it is set to 1 s (the most it allows, 20 times its
# default) unless a variant sets MAXINE_HTTP_EVENT_WRITE_INTERVAL itself,
# so each write batches about as many changes as it does at full speed.
# KEEP=DIR copies each dump there (callgrind.NAME.out) for
# `callgrind_annotate --inclusive=yes DIR/callgrind.NAME.out`.
# Needs valgrind, python3, curl, mosquitto (for MQTT=1) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
command -v valgrind >/dev/null || die "valgrind is missing: apt-get install valgrind"
[ $# -gt 0 ] || die "usage: $0 NAME=BINARY[,VAR=VALUE...] ..."
count=${REGISTRATIONS:-5000}
threads=${THREADS:-8}
B=$(mktemp -d)
pid= consumers= broker=
cleanup() {
  [ -n "$consumers" ] && { kill "$consumers" 2>/dev/null || true; wait "$consumers" 2>/dev/null || true; }
  [ -n "$pid" ] && stop_pid "$pid"
  [ -n "$broker" ] && stop_pid "$broker"
  rm -rf "$B"
}
trap cleanup EXIT
cargo build --release --quiet --locked --example sse_consumers || die "building examples/sse_consumers failed"

echo "| variant | registrations | instructions per registration |"
echo "|---|---:|---:|"
round=0
for spec in "$@"; do
  round=$((round + 1))
  name=${spec%%=*}; rest=${spec#*=}
  IFS=, read -r -a parts <<<"$rest"
  bin=${parts[0]}
  sse=0 mqtt=0 vars=() interval_set=0
  for p in "${parts[@]:1}"; do
    case $p in
      SSE=*) sse=${p#SSE=} ;;
      MQTT=*) mqtt=${p#MQTT=} ;;
      MAXINE_HTTP_EVENT_WRITE_INTERVAL=*) interval_set=1; vars+=("$p") ;;
      *) vars+=("$p") ;;
    esac
  done
  [ "$interval_set" = 1 ] || vars+=("MAXINE_HTTP_EVENT_WRITE_INTERVAL=1s")
  port=$((20000 + RANDOM % 20000))
  args=()
  if [ "$mqtt" = 1 ]; then
    PATH="$PATH:/usr/sbin" command -v mosquitto >/dev/null || die "mosquitto is missing: apt-get install mosquitto"
    printf 'listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n' "$((port + 2))" >"$B/mosquitto.conf"
    PATH="$PATH:/usr/sbin" mosquitto -c "$B/mosquitto.conf" >"$B/mosquitto.log" 2>&1 &
    broker=$!
    sleep 0.5
    args=(--mqtt-url "mqtt://127.0.0.1:$((port + 2))")
  fi
  toggle=()
  [ -n "${FUNCTION:-}" ] && toggle=("--toggle-collect=$FUNCTION")
  api="http://127.0.0.1:$((port + 1))"
  env "${vars[@]}" MAXINE_HTTP_MAX_CONNECTIONS_PER_IP=1000 valgrind --tool=callgrind "${toggle[@]}" \
    --callgrind-out-file="$B/cg.$name.%p" \
    "$bin" serve --dns-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$((port + 1))" \
    --data-dir "$B/data.$name" --store memory --log-level warn "${args[@]}" >"$B/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "$api/v1/ready" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$B/$name.log" >&2; die "$name exited at start"; }
    sleep 0.5
  done
  curl -sf "$api/v1/ready" >/dev/null || die "$name was not ready after 300 s"
  if [ "$sse" -gt 0 ]; then
    target/release/examples/sse_consumers "$api/v1/events" "$sse" plain >"$B/consumers.out" 2>&1 &
    consumers=$!
    sleep 5   # every stream connected and past its snapshot
  fi
  # New ids in 1000 services, as benches/registration-load.sh registers them.
  python3 - "$count" "$round" >"$B/regs.jsonl" <<'PY'
import json, sys
n, r = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(json.dumps({"service": f"svc{i % 1000}", "id": f"r{r}-{i}", "version": "2.1.0",
                      "address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "port": 8080}))
PY
  callgrind_control -z "$pid" >/dev/null 2>&1
  register_all "$api" "$B/regs.jsonl" --threads "$threads" --ttl 1h 2>/dev/null
  # Let the last deliveries of the streams and the broker go out.
  sleep 3
  callgrind_control -d "$pid" >/dev/null 2>&1
  dump=$(ls -t "$B"/cg."$name".*.1 2>/dev/null | head -1)
  [ -n "$dump" ] || { cat "$B/$name.log" >&2; die "$name: callgrind wrote no dump"; }
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  [ -n "$ir" ] || die "$name: no instruction total in $dump"
  awk -v n="$name" -v c="$count" -v ir="$ir" 'BEGIN { printf "| %s | %d | %.0f |\n", n, c, ir / c }'
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$dump" "$KEEP/callgrind.$name.out"; fi
  stop_pid "$pid"; pid=
  if [ -n "$consumers" ]; then
    # The streams end with the server; each must have had every change.
    for _ in $(seq 100); do kill -0 "$consumers" 2>/dev/null || break; sleep 0.1; done
    kill "$consumers" 2>/dev/null || true; wait "$consumers" 2>/dev/null || true; consumers=
    least=$(sed -n 's/.*events=\([0-9]*\)\.\..*/\1/p' "$B/consumers.out")
    [ "${least:-0}" -ge "$count" ] || die "$name: a stream got ${least:-no} events of $count: $(cat "$B/consumers.out")"
  fi
  [ -n "$broker" ] && { stop_pid "$broker"; broker=; }
done
