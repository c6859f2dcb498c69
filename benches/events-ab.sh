#!/usr/bin/env bash
# Durable registrations/s with event consumers attached (SSE_CONSUMERS
# streams of GET /v1/events and every change published to a local
# mosquitto) against the same binary with nothing attached, for each binary
# given, ROUNDS times interleaved (docs/performance.md, "Registrations with
# event consumers attached"):
#
#   benches/events-ab.sh [BINARY...]      (default: target/release/maxine)
#
# Maxine on SERVER_CPU (0); wrk, the consumers and mosquitto on LOAD_CPU (1).
# SECONDS_PER_RUN (10), CONNECTIONS (50), SSE_CONSUMERS (100), ROUNDS (2), STORE (file;
# memory takes the disk out: registrations are then bound by the CPU alone).
# Needs wrk, curl and mosquitto (Debian: apt-get install wrk curl mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_PER_RUN:-10}
conns=${CONNECTIONS:-50}
consumers=${SSE_CONSUMERS:-100}
rounds=${ROUNDS:-2}
store=${STORE:-file}
load_cpu=${LOAD_CPU:-1}
for tool in wrk curl mosquitto; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "$tool is missing: apt-get install $tool" >&2; exit 1; }
done
bins=("$@")
if [ ${#bins[@]} = 0 ]; then cargo build --release --quiet; bins=(target/release/maxine); fi

work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
printf 'listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
PATH="$PATH:/usr/sbin" taskset -c "$load_cpu" mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5

# one run: prints "registrations/s server-µs-CPU-per-registration errors load-CPU-%"
one() { # binary attached(0: nothing, 1: plain consumers, 2: gzip consumers)
  local out
  if [ "$2" = 0 ]; then
    out=$(HEARTBEATS=0 MAXINE_BIN="$1" benches/registration-load.sh "$secs" "$conns" "$store")
  else
    out=$(HEARTBEATS=0 MAXINE_BIN="$1" SSE_CONSUMERS="$consumers" SSE_GZIP=$(($2 - 1)) \
      SERVE_ARGS="--mqtt-url mqtt://127.0.0.1:$port" benches/registration-load.sh "$secs" "$conns" "$store")
  fi
  awk '/Requests\/sec/ {r = $2} /server CPU/ {c = $3 + 0} /non-2xx or errors/ {e = $4}
    /load CPU/ {l = $3 + 0} END { printf "%.0f %.0f %s %d\n", r, c * 1e4 / r, e, l }' <<<"$out"
}

# Each cell: registrations/s (server µs of CPU per registration, the load
# CPU's busy %). Ratios: of registrations/s, and (CPU) of the server's CPU
# per registration, off over on: the server's own cost, whatever the load
# side could offer.
printf '| binary | round | nothing attached | %d SSE + MQTT | ratio | ratio (CPU) | %d gzip SSE + MQTT | ratio | ratio (CPU) |\n' "$consumers" "$consumers"
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
for round in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    read -r off_rate off_cpu off_err off_load < <(one "$bin" 0)
    read -r on_rate on_cpu on_err on_load < <(one "$bin" 1)
    read -r gz_rate gz_cpu gz_err gz_load < <(one "$bin" 2)
    awk -v b="$(basename "$bin")" -v r="$round" -v a="$off_rate" -v ac="$off_cpu" -v al="$off_load" \
      -v o="$on_rate" -v oc="$on_cpu" -v ol="$on_load" -v g="$gz_rate" -v gc="$gz_cpu" -v gl="$gz_load" \
      -v e="$off_err/$on_err/$gz_err" 'BEGIN {
        printf "| %s | %d | %d (%d µs, %d%%) | %d (%d µs, %d%%) | %.2f | %.2f | %d (%d µs, %d%%) | %.2f | %.2f |%s\n",
          b, r, a, ac, al, o, oc, ol, o / a, ac / oc, g, gc, gl, g / a, ac / gc,
          (e == "0/0/0" ? "" : " errors " e) }'
  done
done
