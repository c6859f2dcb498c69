#!/usr/bin/env bash
# Federation figures (docs/performance.md, "Federation"): two or three Maxines on loopback.
#
#   benches/federation.sh            full run
#   QUICK=1 benches/federation.sh    smoke test: short runs, 20k instances
#
# Parts (ONLY=lag,catchup,dns, default all):
#   lag      replication lag dc2 -> dc1 at RATE changes/s (default 5000): p50/p99 from dc2's
#            acknowledgement to dc1's DNS answering (benches/federation.py lag asks the probes;
#            wrk writes the load, Needs wrk: apt-get install wrk)
#   catchup  a fresh dc1 catching up from zero with dc2 holding INSTANCES instances (default
#            1M): seconds, and dc1's RSS per replicated instance (against an idle dc1)
#   dns      dc1's server CPU per query (benches/dnsload, benches/measure-cpu.py, as in
#            benches/dns-load.sh's udp test) for: a single datacenter (no peers); three
#            federated datacenters answering local names, .dc2. names, and failover answers
#            (dc1 without local instances, failing over to dc2)
#
# Environment: QUICK=1, ONLY=..., KEEP=1 (keep the temp dir), MAXINE_BIN=PATH (else the repo is
# built in release), RATE=5000 LAG_SECS=20 LAG_LOAD=wrk LAG_CONNS=128 PROBE_RATE=50 LAG_DC1_CPU=0
# (1: dc1 beside the load, dc2 alone on CPU 0) LAG_THREADS=48 (LAG_LOAD=python), INSTANCES=1000000
# DNS_SECS=10, FOREIGN_MAX=15
# RETRIES=2 QUIET_WAIT=60 (see benches/lib.sh).
# Ports (127.0.0.1): dc1 5300/5380, dc2 5310/5390, dc3 5320/5391.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
QUICK=${QUICK:-0}
KEEP=${KEEP:-0}
ONLY=${ONLY:-lag,catchup,dns}
FOREIGN_MAX=${FOREIGN_MAX:-15}
RETRIES=${RETRIES:-2}
QUIET_WAIT=${QUIET_WAIT:-60}
RATE=${RATE:-5000}
# Writers of the lag test. LAG_LOAD=wrk (default): wrk writes the load over
# LAG_CONNS connections, paced to the rate, and Python only the probes
# (PROBE_RATE/s); LAG_LOAD=python: Python writes both over LAG_THREADS
# connections (each waits for its durable acknowledgement, so the rate needs
# enough of them in flight for the group commit to batch).
LAG_LOAD=${LAG_LOAD:-wrk}
LAG_CONNS=${LAG_CONNS:-128}
PROBE_RATE=${PROBE_RATE:-50}
LAG_THREADS=${LAG_THREADS:-48}
[ "$LAG_LOAD" = python ] || command -v wrk >/dev/null || die "wrk is missing: apt-get install wrk (or LAG_LOAD=python)"
if [ "$QUICK" = 1 ]; then
  LAG_SECS=${LAG_SECS:-3} INSTANCES=${INSTANCES:-20000} DNS_SECS=${DNS_SECS:-3}
  RETRIES=0 QUIET_WAIT=5
else
  LAG_SECS=${LAG_SECS:-20} INSTANCES=${INSTANCES:-1000000} DNS_SECS=${DNS_SECS:-10}
fi

B=$(mktemp -d /tmp/maxine-federation.XXXXXX)
mkdir -p "$B/out"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ "$KEEP" = 1 ]; then echo "kept $B" >&2; else rm -rf "$B"; fi
}
trap cleanup EXIT INT TERM

if [ -n "${MAXINE_BIN:-}" ]; then
  BIN=$(realpath "$MAXINE_BIN")
else
  log "building maxine (release)"
  (cd "$REPO" && cargo build --release --locked --bin maxine) || die "build failed"
  BIN=$REPO/target/release/maxine
fi
need_ports_free 5300 5380 5310 5390 5320 5391
echo "federation-bench-secret-0123456789abcdef" >"$B/token"
mkdir -p "$B/zones"
printf '$ORIGIN maxine.\n@ 3600 IN SOA ns.maxine. admin.maxine. 1 3600 600 86400 5\n@ 3600 IN NS ns.maxine.\nns 3600 IN A 127.0.0.1\n' >"$B/zones/maxine.zone"

# conf NAME DNS HTTP [PEERS] [FAILOVER]: a config file for one datacenter
conf() {
  local f=$B/$1.toml
  {
    echo "datacenter = \"$1\""
    echo "[acl]"
    echo "bootstrap_token_file = \"$B/token\""
    echo "[http]"
    echo "max_connections_per_ip = 512   # the load comes from one address"
    echo "[federation]"
    echo "token_file = \"$B/token\""
    echo "stale_after = \"5s\""
    echo "keepalive = \"1s\""
    if [ -n "${4:-}" ]; then
      echo "peers = [$4]"
    fi
    if [ -n "${5:-}" ]; then
      echo "[failover]"
      echo "datacenters = [$5]"
    fi
  } >"$f"
  echo "$f"
}

# dc NAME DNS HTTP [PEERS] [FAILOVER]: starts a datacenter on CPU 0; its pid in DC_PID
dc() {
  local name=$1 dns=$2 http=$3 cfg
  cfg=$(conf "$@")
  rm -rf "$B/$name-data"
  MAXINE_SERVE_ARGS="--config $cfg" start_maxine_on "$BIN" "$dns" "$http" "$B/$name-data" "$B/$name.log" "$B/zones"
  DC_PID=$MAXINE_PID
  PIDS+=("$DC_PID")
}
stop_all() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
has() { [[ ",$ONLY," == *",$1,"* ]]; }

PEER2='"dc2=http://127.0.0.1:5390"'
PEER23='"dc2=http://127.0.0.1:5390", "dc3=http://127.0.0.1:5391"'
started=$(date +%s)

if has lag; then
  log "lag: dc2 -> dc1 at $RATE changes/s for $LAG_SECS s"
  dc dc2 5310 5390
  # LAG_DC1_CPU=1 puts the receiver beside the load generator, so that the
  # sender has CPU 0 to itself, as a datacenter has its own machines.
  SERVE_CPU=${LAG_DC1_CPU:-0} dc dc1 5300 5380 "$PEER2"
  if [ "$LAG_LOAD" = wrk ]; then
    # wrk (CPU 1) writes the load, paced to RATE - PROBE_RATE changes/s over
    # LAG_CONNS connections; the Python script only writes and asks the probes.
    paced_lua "$(( RATE - PROBE_RATE ))" 2 >"$B/lag.lua"
    taskset -c 1 wrk -t 2 -c "$LAG_CONNS" -d "${LAG_SECS}s" -s "$B/lag.lua" http://127.0.0.1:5390 >"$B/out/lag-wrk" 2>&1 &
    wrk_pid=$!
    python3 "$BENCHES/federation.py" lag http://127.0.0.1:5390 127.0.0.1:5300 "$PROBE_RATE" "$LAG_SECS" --threads 4 --every 1 >"$B/out/lag-probes"
    wait "$wrk_pid"
    load=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$B/out/lag-wrk")
    grep -q '^non-2xx or errors: 0$' "$B/out/lag-wrk" || { cat "$B/out/lag-wrk" >&2; die "the lag load had errors"; }
    # rate= is wrk's and the probes' together.
    awk -v load="$load" '{ if (match($0, /rate=[0-9]+/)) { r = substr($0, RSTART + 5, RLENGTH - 5); sub(/rate=[0-9]+/, "rate=" (load + r)) } print }' "$B/out/lag-probes" | tee "$B/out/lag"
  else
    python3 "$BENCHES/federation.py" lag http://127.0.0.1:5390 127.0.0.1:5300 "$RATE" "$LAG_SECS" --threads "$LAG_THREADS" | tee "$B/out/lag"
  fi
  stop_all
fi

if has catchup; then
  log "catch-up: dc2 with $INSTANCES instances, dc1 from zero"
  gen_dns_data "$B/big" --services $((INSTANCES / 100)) --instances 100 --queries 1 --nx-queries 1 --no-zone >&2
  dc dc2 5310 5390
  register_all http://127.0.0.1:5390 "$B/big/registrations.jsonl" --threads 8
  dc dc1 5300 5380
  idle=$(rss_kb "$DC_PID")
  stop_pid "$DC_PID"
  PIDS=("${PIDS[@]:0:1}")
  dc dc1 5300 5380 "$PEER2"
  python3 "$BENCHES/federation.py" catchup http://127.0.0.1:5380 "$B/token" "$INSTANCES" --timeout 600 | tee "$B/out/catchup"
  sleep 1
  full=$(rss_kb "$DC_PID")
  echo "MEMORY replica_bytes_per_instance=$(( (full - idle) * 1024 / INSTANCES )) idle_rss_kb=$idle rss_kb=$full" | tee -a "$B/out/catchup"
  stop_all
fi

if has dns; then
  build_dnsload "$REPO/target"
  gen_dns_data "$B" --no-zone >&2
  sed 's/\.maxine\. /.dc2.maxine. /' "$B/queries.txt" >"$B/queries-dc2.txt"
  cp "$B/queries.txt" "$B/queries-local.txt"
  measure() { # LABEL PID QUERIES
    cp "$B/$3" "$B/queries.txt"
    dns_test_args udp 127.0.0.1:5300 "$DNS_SECS"
    run_load "$1" udp "$2" "${DNS_ARGS[@]}"
    cp "$B/queries-local.txt" "$B/queries.txt"
  }
  log "dns: single datacenter"
  dc dc1 5300 5380
  register_all http://127.0.0.1:5380 "$B/registrations.jsonl"
  measure single "$DC_PID" queries-local.txt
  stop_all
  log "dns: three datacenters"
  dc dc2 5310 5390
  register_all http://127.0.0.1:5390 "$B/registrations.jsonl"
  dc dc3 5320 5391
  register_all http://127.0.0.1:5391 "$B/registrations.jsonl"
  dc dc1 5300 5380 "$PEER23" '"dc2", "dc3"'
  register_all http://127.0.0.1:5380 "$B/registrations.jsonl"
  python3 "$BENCHES/federation.py" catchup http://127.0.0.1:5380 "$B/token" "$(wc -l <"$B/registrations.jsonl")" >/dev/null
  measure local "$DC_PID" queries-local.txt
  measure dc2 "$DC_PID" queries-dc2.txt
  stop_pid "$DC_PID"
  PIDS=("${PIDS[@]:0:2}")
  dc dc1 5300 5380 "$PEER23" '"dc2", "dc3"'
  python3 "$BENCHES/federation.py" catchup http://127.0.0.1:5380 "$B/token" "$(wc -l <"$B/registrations.jsonl")" >/dev/null
  measure failover "$DC_PID" queries-local.txt
  stop_all
fi

echo
echo "| measurement | value |"
echo "|---|---|"
[ -f "$B/out/lag" ] && sed -n 's/^LAG /| replication lag at '"$RATE"'\/s (achieved rate, p50, p99) | /p' "$B/out/lag" | sed 's/$/ |/'
[ -f "$B/out/catchup" ] && sed -n 's/^\(CATCHUP\|MEMORY\) /| catch-up | /p' "$B/out/catchup" | sed 's/$/ |/'
for s in single local dc2 failover; do
  f=$B/out/$s.udp
  [ -f "$f" ] || continue
  echo "| DNS server us/query, $s | $(sed -n 's/^MEASURE .*server_us_per_query=\([0-9.]*\).*qps.*//p; s/^MEASURE .* qps=\([0-9]*\) .*server_us_per_query=\([0-9.]*\).*/\2 (qps \1)/p' "$f") |"
done
echo "($(( $(date +%s) - started )) s$([ "$QUICK" = 1 ] && echo ', QUICK: not figures to publish'))"
