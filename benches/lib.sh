# Shell pieces shared by the DNS load scripts (benches/dns-load.sh, benches/ab.sh): the data set,
# starting a pinned Maxine, and the measured dnsload runs; the paced wrk load of the lag measurements
# (benches/federation.sh, benches/etcd-cluster.sh) and the wrk error count (benches/registration-load.sh).
# Sourced, not run; bash only. Everything they call is in benches/ (see benches/README.md).
#
# The functions read these globals of the script that sources them:
#   B            the run's temp dir (data, zones, out/ with every run's output)
#   DNSLOAD      the load generator binary (set by build_dnsload)
#   FOREIGN_MAX  RETRIES  QUIET_WAIT   see run_load and wait_quiet
# shellcheck shell=bash disable=SC2034
# (SC2034: DNS_ARGS, MAXINE_PID and REFLECT are set here for the caller.)

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# BENCHES: this directory, where the helpers below live (dns-data.py, register.py, measure-cpu.py)
BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# need_ports_free PORT...: no listener on any of them (a leftover server?)
need_ports_free() {
  local p
  command -v ss >/dev/null || return 0
  for p in "$@"; do
    if ss -Hlntu "( sport = :$p )" | grep -q .; then die "port $p is already in use (a leftover server?)"; fi
  done
}

# build_dnsload TARGET_DIR: builds benches/dnsload (release) under TARGET_DIR/dnsload, sets DNSLOAD
# (and REFLECT, the crate's loopback floor server)
build_dnsload() {
  log "building dnsload"
  CARGO_TARGET_DIR=$1/dnsload cargo build --release --locked \
    --manifest-path "$BENCHES/dnsload/Cargo.toml" || die "building benches/dnsload failed"
  DNSLOAD=$1/dnsload/release/dnsload
  REFLECT=$1/dnsload/release/reflect
}

# gen_dns_data DIR [dns-data.py options]: the data set of docs/performance.md (1000 services x 3
# instances unless told otherwise) in DIR: registrations.jsonl, queries.txt, maxine.zone (for the
# reference servers), zones/maxine.zone (the zone's SOA and NS, which Maxine serves beside the
# registered records) and nx.txt (unknown names only). See benches/dns-data.py.
gen_dns_data() {
  local dir=$1; shift
  log "generating data in $dir"
  python3 "$BENCHES/dns-data.py" "$@" "$dir" || die "generating the data set failed"
}

# register_all API FILE [register.py options]: every registration of FILE into the Maxine at API
register_all() {
  local api=$1 file=$2; shift 2
  python3 "$BENCHES/register.py" "$@" "$api" "$file" || die "registering $file at $api failed"
}

# start_maxine_on BIN DNS_PORT HTTP_PORT DATA_DIR LOGFILE ZONE_DIR: `maxine serve` pinned to
# CPU ${SERVE_CPU:-0}, other MAXINE_* variables of the caller removed; sets MAXINE_PID and returns once the
# server is ready (30 s at most).
start_maxine_on() {
  local bin=$1 dns_port=$2 http_port=$3 data=$4 logf=$5 zones=$6
  local unset_args=() v
  for v in $(env | sed -n 's/^\(MAXINE_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(DATACENTER_ID\)=.*/\1/p'); do unset_args+=(-u "$v"); done
  # shellcheck disable=SC2086
  env "${unset_args[@]}" MAXINE_DNS_TTL=30 taskset -c "${SERVE_CPU:-0}" "$bin" serve \
    --dns-addr "127.0.0.1:$dns_port" --http-addr "127.0.0.1:$http_port" \
    --data-dir "$data" --zone-dir "$zones" --log-level warn ${MAXINE_SERVE_ARGS:-} >"$logf" 2>&1 &
  MAXINE_PID=$!
  for _ in $(seq 150); do
    kill -0 "$MAXINE_PID" 2>/dev/null || { cat "$logf" >&2; MAXINE_PID=""; die "maxine exited at start"; }
    curl -sf "http://127.0.0.1:$http_port/v1/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  cat "$logf" >&2
  die "maxine not ready after 30 s"
}

# stop_pid PID: SIGTERM, up to 5 s for a clean exit, then SIGKILL
stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# dns_test_args TEST ADDR SECONDS: sets DNS_ARGS to dnsload's arguments for one test of
# docs/performance.md: udp (the A/SRV mix), udp50k (the same at a fixed 50k qps), edns (EDNS
# 1232), nx (NXDOMAIN only), tcp (50 pipelined connections). Needs gen_dns_data's files in $B.
: "${FIXED_RATE:=50000}"
dns_test_args() {
  case $1 in
    udp)    DNS_ARGS=(udp "$2" "$B/queries.txt" "$3") ;;
    udp50k) DNS_ARGS=(udp "$2" "$B/queries.txt" "$3" --rate "$FIXED_RATE") ;;
    edns)   DNS_ARGS=(udp "$2" "$B/queries.txt" "$3" --edns 1232) ;;
    nx)     DNS_ARGS=(udp "$2" "$B/nx.txt" "$3") ;;
    tcp)    DNS_ARGS=(tcp "$2" "$B/queries.txt" "$3" --conns 50 --pipeline 16) ;;
    *)      die "unknown DNS test $1" ;;
  esac
}

# busy_pct: the machine's busy CPU over 1 s, in % of one core
busy_pct() {
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    n = split(a, x); split(b, y); t = 0
    for (i = 2; i <= 9; i++) if (i != 5 && i != 6) t += y[i] - x[i]
    printf "%.0f", 100 * t / hz }'
}
# wait_quiet: wait (QUIET_WAIT s at most) until the machine's busy CPU over 1 s, with our servers
# idle, is at most FOREIGN_MAX % (100 = one core).
wait_quiet() {
  local waited=0 f
  while :; do
    f=$(busy_pct)
    [ "$f" -le "$FOREIGN_MAX" ] && return 0
    if [ "$waited" -ge "$QUIET_WAIT" ]; then echo "  (machine still ${f}% busy after ${waited} s: running anyway)" >&2; return 0; fi
    sleep 4; waited=$((waited + 5))
  done
}
# run_load SERVER TEST PID DNSLOAD-ARGS...: measure-cpu.py around dnsload on CPU 1; a run with
# foreign CPU above FOREIGN_MAX is repeated (RETRIES times at most), the quietest one is kept
# as $B/out/SERVER.TEST.
run_load() {
  local server=$1 test=$2 pid=$3; shift 3
  local best="" bestf="" f try out
  for try in $(seq 0 "$RETRIES"); do
    wait_quiet
    out=$B/out/$server.$test.try$try
    # --timeout: a backstop only; dnsload stops itself after its SECONDS and 1 s for late replies
    python3 "$BENCHES/measure-cpu.py" --timeout 300 "$server/$test" "$pid" -- taskset -c 1 "$DNSLOAD" "$@" >"$out" 2>&1 ||
      { cat "$out" >&2; die "$server/$test: load run failed"; }
    kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; die "$server (pid $pid) died during $test"; }
    grep -q '^MEASURE ' "$out" || { cat "$out" >&2; die "$server/$test: no MEASURE line"; }
    grep -q 'Queries per second: *[1-9]' "$out" || { cat "$out" >&2; die "$server/$test: no answers"; }
    f=$(sed -n 's/^MEASURE .*foreign_cpu_pct=\([-0-9.]*\).*/\1/p' "$out")
    printf '%-8s %-10s try %d: %s | %s\n' "$server" "$test" "$try" \
      "$(grep -E '^Queries (per|lost)' "$out" | tr -s ' ' | paste -sd' ')" "$(grep -o 'server_us.*' "$out")" >&2
    if [ -z "$best" ] || awk -v a="$f" -v b="$bestf" 'BEGIN { exit !(a < b) }'; then best=$out bestf=$f; fi
    awk -v a="$f" -v m="$FOREIGN_MAX" 'BEGIN { exit !(a <= m) }' && break
  done
  cp "$best" "$B/out/$server.$test"
}

# paced_lua RATE THREADS: a wrk script registering instances of load0..load99
# (ids cycling over 5,000 per service) at RATE requests/s over THREADS wrk
# threads in all. Each thread paces its own share on a monotonic clock
# (LuaJIT's ffi), so the rate holds whatever the latency, as long as the
# connections suffice (benches/federation.sh, benches/etcd-cluster.sh).
paced_lua() {
  cat <<LUA
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } timespec_t; int clock_gettime(int, timespec_t *); ]]
local ts = ffi.new("timespec_t")
local function now_ms() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6 end
local interval = 1000 * $2 / $1   -- the wrk threads share the rate
local next_at = nil
local n = math.random(0, 1000000)
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
function delay()
  local now = now_ms()
  if next_at == nil or next_at < now - 1000 then next_at = now end
  next_at = next_at + interval
  local d = next_at - now
  if d < 0 then return 0 end
  return math.floor(d)
end
function request()
  n = n + 1
  local path = string.format("/v1/services/load%d/instances/i%d", n % 100, n % 5000)
  local body = string.format('{"address":"10.8.%d.%d","port":8080,"ttl":"3600s"}', math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, path, nil, body)
end
LUA
  wrk_errors_lua
}

# wrk_errors_lua: a wrk done() hook printing "non-2xx or errors: N", which the
# scripts read to tell a clean run from one with failed requests.
wrk_errors_lua() {
  cat <<'LUA'
function done(summary, latency, requests)
  io.write(string.format("non-2xx or errors: %d\n",
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
LUA
}
