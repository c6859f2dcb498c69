#!/usr/bin/env bash
# DNS load comparison: Maxine against NSD and Knot DNS serving the same discovery data, each
# server pinned to CPU 0 and loaded by dnsload (benches/dnsload) pinned to CPU 1.
#
#   benches/dns-load.sh                 full run (about 15-25 minutes, most of it loading 1M instances)
#   QUICK=1 benches/dns-load.sh         3 s runs, no 1M part (smoke test)
#
# Everything it runs is in benches/ (benches/README.md): dns-data.py writes the data set,
# reference-dns.sh serves it from NSD and Knot, register.py loads it into Maxine, measure-cpu.py
# accounts each server's CPU around a dnsload run.
#
# Environment:
#   QUICK=1           shorter runs, skip the 1M-instance part
#   KEEP=1            keep the temp dir (data, logs, every run's output)
#   FOREIGN_MAX=15    a run with more foreign CPU (other load on the machine) than this is repeated...
#   RETRIES=2         ...up to this many times; the quietest attempt is kept
#   QUIET_WAIT=60     before each attempt, wait up to this many seconds for the machine to be quiet
#   MAXINE_BIN=PATH   use this maxine binary instead of building the repo in release
#   MAXINE_SERVE_ARGS extra arguments for `maxine serve` (e.g. a --store choice)
#   FLOOR=1           also measure benches/dnsload's `reflect` (UDP tests only): a server that does
#                     no DNS work, so its CPU per query is the loopback path's own cost
# Ports: Maxine DNS 5300 and API 5380, NSD 5301, Knot 5302, reflect 5303 (127.0.0.1 only).
# Needs Linux with 2+ CPUs, cargo, python3, curl, taskset; installs nsd, knot, dnsutils if absent.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
QUICK=${QUICK:-0}
KEEP=${KEEP:-0}
FOREIGN_MAX=${FOREIGN_MAX:-15}
RETRIES=${RETRIES:-2}
QUIET_WAIT=${QUIET_WAIT:-60}
FLOOR=${FLOOR:-0}
export PATH=$PATH:/usr/sbin:/sbin

DNS_PORT=5300 HTTP_PORT=5380 NSD_PORT=5301 KNOT_PORT=5302 FLOOR_PORT=5303
API=http://127.0.0.1:$HTTP_PORT
if [ "$QUICK" = 1 ]; then MAX_SECS=3 FIXED_SECS=3; else MAX_SECS=10 FIXED_SECS=5; fi
FIXED_RATE=50000

# ---------------------------------------------------------------------------------------------
# cleanup: everything started here is tracked and stopped on exit, failure or interrupt
B=""
MAXINE_PID=""
REF_PID=""     # benches/reference-dns.sh serve: NSD and Knot are its children
FLOOR_PID=""
stop_maxine() {
  [ -n "$MAXINE_PID" ] || return 0
  stop_pid "$MAXINE_PID"
  MAXINE_PID=""
}
stop_reference() {
  [ -n "$REF_PID" ] || return 0
  stop_pid "$REF_PID"   # SIGTERM: it stops and reaps both servers (within 4 s)
  REF_PID=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_maxine
  stop_reference
  if [ -n "$FLOOR_PID" ]; then stop_pid "$FLOOR_PID"; fi
  if [ -n "$B" ] && [ -d "$B" ]; then
    if [ "$KEEP" = 1 ]; then echo "kept $B" >&2; else rm -rf "$B"; fi
  fi
  [ "$rc" = 0 ] || echo "dns-load.sh: failed (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. prerequisites
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU 0, load generator on CPU 1)"
for c in cargo python3 curl taskset; do command -v "$c" >/dev/null || die "$c not found"; done
if ! command -v nsd >/dev/null || ! command -v knotd >/dev/null || ! command -v dig >/dev/null; then
  log "installing nsd knot dnsutils"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y nsd knot dnsutils || { $SUDO apt-get update && $SUDO apt-get install -y nsd knot dnsutils; } ||
    die "cannot install nsd knot dnsutils"
  # the packages' own services would hold port 53 and compete for CPU; we run our own instances
  $SUDO systemctl disable --now nsd knot >/dev/null 2>&1 || true
fi
need_ports_free $DNS_PORT $HTTP_PORT $NSD_PORT $KNOT_PORT
[ "$FLOOR" != 1 ] || need_ports_free $FLOOR_PORT

# ---------------------------------------------------------------------------------------------
# 2. build
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
if [ -n "${MAXINE_BIN:-}" ]; then
  [ -x "$MAXINE_BIN" ] || die "MAXINE_BIN=$MAXINE_BIN is not executable"
else
  log "building maxine (release)"
  (cd "$REPO" && cargo build --release --bin maxine) || die "cargo build --release failed"
  MAXINE_BIN=$TARGET/release/maxine
fi
build_dnsload "$TARGET"
STORE_HELP=$("$MAXINE_BIN" serve --help | grep -E -- '--store' || true)

# ---------------------------------------------------------------------------------------------
# 3. data
B=$(mktemp -d "${TMPDIR:-/tmp}/maxine-dns-load.XXXXXX")
mkdir -p "$B/out"
gen_dns_data "$B"

# ---------------------------------------------------------------------------------------------
# 4. reference servers
log "starting NSD (:$NSD_PORT) and Knot (:$KNOT_PORT) on CPU 0"
NSD_PORT=$NSD_PORT KNOT_PORT=$KNOT_PORT "$REPO/benches/reference-dns.sh" serve "$B" 0 >"$B/reference.out" 2>&1 &
REF_PID=$!
for _ in $(seq 150); do   # it creates run/ready once both answer (10 s at most)
  [ ! -e "$B/run/ready" ] || break
  kill -0 "$REF_PID" 2>/dev/null || break
  sleep 0.1
done
[ -e "$B/run/ready" ] || { cat "$B/reference.out" >&2; die "NSD and Knot did not start"; }
NSD_PID=$(cat "$B/run/nsd.pid") KNOT_PID=$(cat "$B/run/knot.pid")
if [ "$FLOOR" = 1 ]; then
  log "starting reflect (:$FLOOR_PORT) on CPU 0"
  taskset -c 0 "$REFLECT" "127.0.0.1:$FLOOR_PORT" --seconds 3600 >"$B/reflect.log" 2>&1 &
  FLOOR_PID=$!
  sleep 0.2
  kill -0 "$FLOOR_PID" 2>/dev/null || { cat "$B/reflect.log" >&2; die "reflect did not start"; }
fi

# ---------------------------------------------------------------------------------------------
# 5. maxine
# start_maxine DATA_DIR LOGFILE: pinned to CPU 0, other MAXINE_* variables of the caller removed
start_maxine() { start_maxine_on "$MAXINE_BIN" "$DNS_PORT" "$HTTP_PORT" "$1" "$2" "$B/zones"; }
log "starting maxine (:$DNS_PORT, API :$HTTP_PORT) on CPU 0"
start_maxine "$B/maxine-data" "$B/maxine.log"
register_all "$API" "$B/registrations.jsonl"
for q in "svc1.maxine. A" "v2.svc1.maxine. A" "nosuch.maxine. A"; do   # same answers everywhere?
  # shellcheck disable=SC2086
  a=$(dig +short @127.0.0.1 -p $DNS_PORT $q | sort | tr '\n' ' ')
  # shellcheck disable=SC2086
  b=$(dig +short @127.0.0.1 -p $NSD_PORT $q | sort | tr '\n' ' ')
  [ "$a" = "$b" ] || echo "warning: '$q': maxine answers [$a], nsd [$b]" >&2
done

# ---------------------------------------------------------------------------------------------
# 6. load runs
# run_load (benches/lib.sh): measure-cpu.py around dnsload on CPU 1, a run with foreign CPU above
# FOREIGN_MAX repeated (RETRIES times at most), the quietest one kept.
# Test-major order: the three servers take each test back to back, under similar machine load.
for test in udp udp50k edns nx tcp; do
  servers=("nsd $NSD_PORT $NSD_PID" "knot $KNOT_PORT $KNOT_PID" "maxine $DNS_PORT $MAXINE_PID")
  if [ -n "$FLOOR_PID" ] && [ "$test" != tcp ]; then servers+=("floor $FLOOR_PORT $FLOOR_PID"); fi
  log "$test: ${servers[*]%% *}"
  for s in "${servers[@]}"; do
    read -r name port pid <<<"$s"
    secs=$MAX_SECS; [ "$test" = udp50k ] && secs=$FIXED_SECS
    dns_test_args "$test" "127.0.0.1:$port" "$secs"
    run_load "$name" "$test" "$pid" "${DNS_ARGS[@]}"
  done
done
MAXINE_LOG_LINES=$(grep -c . "$B/maxine.log" || true)
cp "$B/maxine.log" "$B/out/maxine.log.3k"

# ---------------------------------------------------------------------------------------------
# 7. one million instances
LOAD_1M=""
if [ "$QUICK" != 1 ]; then
  stop_reference   # idle, but no reason to keep them
  if [ -n "$FLOOR_PID" ]; then stop_pid "$FLOOR_PID"; FLOOR_PID=""; fi
  log "restarting maxine for 1M instances"
  stop_maxine
  gen_dns_data "$B/1m" --services 333334 --instances 3 --no-zone --nx-queries 0
  start_maxine "$B/maxine-data-1m" "$B/maxine-1m.log"
  t0=$(date +%s.%N)
  register_all "$API" "$B/1m/registrations.jsonl" --threads 16
  t1=$(date +%s.%N)
  n=$(wc -l <"$B/1m/registrations.jsonl")
  rss=$(awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$MAXINE_PID/status")
  LOAD_1M=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v r="$rss" \
    'BEGIN { printf "%d instances registered over HTTP in %.0f s (%.0f/s, register.py 16 connections); maxine RSS %s", n, b - a, n / (b - a), r }')
  echo "$LOAD_1M" >&2
  log "maxine with 1M instances: UDP max"
  run_load maxine 1m-q3k "$MAXINE_PID" udp "127.0.0.1:$DNS_PORT" "$B/queries.txt" "$MAX_SECS"
  run_load maxine 1m-q1m "$MAXINE_PID" udp "127.0.0.1:$DNS_PORT" "$B/1m/queries.txt" "$MAX_SECS"
  cp "$B/maxine-1m.log" "$B/out/maxine.log.1m"
fi

# ---------------------------------------------------------------------------------------------
# 8. report
log "results"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); $(uname -r)"
echo "maxine: $("$MAXINE_BIN" --version 2>/dev/null || echo "?") at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo '+dirty')${STORE_HELP:+; store option: $(echo "$STORE_HELP" | tr -s ' ')}"
echo "runs: servers on CPU 0, dnsload on CPU 1; max runs ${MAX_SECS} s (udp: 8 sockets x window 64), fixed ${FIXED_RATE} qps ${FIXED_SECS} s, tcp: 50 conns x pipeline 16"
python3 - "$B/out" "$LOAD_1M" "$MAXINE_LOG_LINES" <<'PY'
import os, re, sys
out, load1m, loglines = sys.argv[1], sys.argv[2], sys.argv[3]
R = {}
for f in sorted(os.listdir(out)):
    if "." not in f or "try" in f or f.startswith("maxine.log"):
        continue
    server, test = f.split(".", 1)
    t = open(os.path.join(out, f)).read()
    m = dict(re.findall(r"(\w+)=([-\d.]+)", t[t.index("MEASURE "):]))
    lat = re.search(r"Latency ms: avg (\S+) p50 (\S+) p90 (\S+) p99 (\S+) p99.9 (\S+)", t)
    rc = re.search(r"Response rcodes: (.*)", t).group(1)
    R[server, test] = dict(
        qps=float(m["qps"]), us=float(m["server_us_per_query"]), client=float(m["client_cpu_pct"]),
        foreign=float(m["foreign_cpu_pct"]), p50=lat.group(2), p99=lat.group(4),
        lost=int(re.search(r"Queries lost: *(\d+)", t).group(1)),
        tc=int(re.search(r"Truncated \(TC\): *(\d+)", t).group(1)),
        bad=" ".join(f"{k}={v}" for k, v in re.findall(r"(REFUSED|SERVFAIL|FORMERR|NOTIMP|other) (\d+)", rc) if v != "0"),
        tries=sum(1 for g in os.listdir(out) if g.startswith(f + ".try")),
        extra=" ".join(f"{k}={v}" for k, v in re.findall(r"(unmatched/late|mismatched question|malformed|without OPT|closed by server|connect failures) (\d+)", t) if v != "0"))
servers = ["nsd", "knot", "maxine", "floor"]  # floor: FLOOR=1 only
tests = ["udp", "udp50k", "edns", "nx", "tcp", "1m-q3k", "1m-q1m"]
desc = {"udp": "UDP max", "udp50k": "UDP 50k qps", "edns": "UDP max, EDNS 1232", "nx": "UDP max, NXDOMAIN",
        "tcp": "TCP 50 conns max", "1m-q3k": "UDP max, 1M inst, 3k-query file", "1m-q1m": "UDP max, 1M inst, 1M-query file"}
print()
print(f"{'server':7} {'test':32} {'qps':>9} {'us/query':>8} {'p50 ms':>7} {'p99 ms':>7} {'lost':>6} {'TC':>4} {'client%':>7} {'foreign%':>8} {'tries':>5}  notes")
for s in servers:
    for t in tests:
        r = R.get((s, t))
        if not r:
            continue
        notes = " ".join(x for x in (r["bad"], r["extra"]) if x)
        print(f"{s:7} {desc[t]:32} {r['qps']:9.0f} {r['us']:8.2f} {r['p50']:>7} {r['p99']:>7} {r['lost']:6d} {r['tc']:4d} {r['client']:7.0f} {r['foreign']:8.0f} {r['tries']:5d}  {notes}")
def g(s, t):
    return R.get((s, t))
print("\nMaxine relative to the references (qps: maxine/ref, higher is better; CPU/query: maxine/ref, lower is better)")
print(f"{'test':20} {'qps vs nsd':>10} {'cpu/q vs nsd':>12} {'qps vs knot':>11} {'cpu/q vs knot':>13}")
for t in ["udp", "udp50k", "edns", "nx", "tcp"]:
    m = g("maxine", t)
    cells = []
    for ref in ("nsd", "knot"):
        r = g(ref, t)
        cells += [f"{m['qps'] / r['qps']:.2f}" if m and r else "-", f"{m['us'] / r['us']:.2f}" if m and r and r["us"] else "-"]
    print(f"{desc[t]:20} {cells[0]:>10} {cells[1]:>12} {cells[2]:>11} {cells[3]:>13}")
print("\nEDNS and NXDOMAIN relative to plain UDP (the mixed A/SRV query file without EDNS), same server")
print(f"{'server':7} {'EDNS qps':>9} {'EDNS us/q':>10} {'NX qps':>7} {'NX us/q':>8} {'TCP qps':>9} {'TCP qps/UDP':>11} {'TCP us/q':>9}")
for s in servers:
    u, e, n, c = g(s, "udp"), g(s, "edns"), g(s, "nx"), g(s, "tcp")
    if not u:
        continue
    q = lambda x: f"{x['qps'] / u['qps']:.2f}" if x else "-"
    c_ = lambda x: f"{x['us'] / u['us']:.2f}" if x and u["us"] else "-"
    print(f"{s:7} {q(e):>9} {c_(e):>10} {q(n):>7} {c_(n):>8} {c['qps'] if c else 0:9.0f} {q(c):>11} {c['us'] if c else 0:9.2f}")
u = g("maxine", "udp")
if g("maxine", "1m-q3k") and u:
    print("\nMaxine with 1,000,000 instances vs 3,000 (UDP max)")
    for t in ("1m-q3k", "1m-q1m"):
        r = g("maxine", t)
        print(f"  {desc[t]:32} qps {r['qps']:.0f} = {r['qps'] / u['qps']:.2f} x the 3k figure; us/query {r['us']:.2f} = {r['us'] / u['us']:.2f} x")
if load1m:
    print(f"  {load1m}")
print(f"\nmaxine log lines at --log-level warn during the 3k runs: {loglines}")
PY
