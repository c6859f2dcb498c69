#!/usr/bin/env bash
# A/B: two Maxine builds measured in the same run, interleaved (A, B, A, B, ...) so that both
# sides see the same machine; prints a Markdown table of the median per side and B/A.
#
#   benches/ab.sh A_BIN B_BIN
#   e.g. benches/ab.sh /work/baseline/maxine-f10c992 target/release/maxine
#
# A baseline from the tree before a change:
#   git worktree add ../base HEAD~1 && (cd ../base && cargo build --release --bin maxine)
#   TREE_A=../base TREE_B=. benches/ab.sh ../base/target/release/maxine target/release/maxine
#
# Parts (ONLY=dns,reg,startup,memory, default all), each measurement taken A then B, ROUNDS times:
#   dns      server CPU per query (and qps) with dnsload as in benches/dns-load.sh: UDP max over the
#            A/SRV mix, UDP max with EDNS 1232, UDP max NXDOMAIN only, TCP 50 connections. Both
#            servers run side by side on CPU 0 with the same data; dnsload on CPU 1.
#   reg      durable registrations/s and heartbeats/s with p99: benches/registration-load.sh with
#            MAXINE_BIN set to each binary.
#   startup  start-up with INSTANCES on disk: one data directory filled once (store_startup
#            --fill), a fresh copy of it for every run (store_startup --data), time to the first
#            DNS answer clean and after kill -9, and RSS.
#   memory   the registry's and DNS cache's memory per instance (registry_memory --dns): a library
#            benchmark, so it runs in each build's source tree; needs TREE_A and TREE_B (skipped
#            without them).
#
# A full run takes about 10 minutes on a quiet machine once the benchmarks are built (DNS about
# 4, registrations 2, start-up 2, memory 2; more while it waits for other load to pass), QUICK=1
# about 2.
#
# Environment:
#   ROUNDS=2           rounds of A-then-B per measurement; the median of each side is reported
#   QUICK=1            smoke test: 3 s runs, 100k instances instead of 1M, one round
#   ONLY=dns,reg,...   the parts to run
#   KEEP=1             keep the temp dir with every run's raw output
#   TREE_A, TREE_B     source trees (git worktrees) of the two builds, for `memory`
#   STARTUP_FILL=once  `each`: fill a data directory per build with its own tree's store_startup
#                      (TREE_A/TREE_B), for builds whose store formats differ
#   INSTANCES=1000000 STARTUP_SERVICES=10000   start-up and memory sizes (QUICK: 100000)
#   DNS_SECS=10        seconds per DNS run (QUICK: 3)
#   REG_SECS=10 REG_CONNS=50 REG_STORE=file    registration-load.sh's arguments (QUICK: 3 s);
#                      SERVICES is passed on to it as is
#   FOREIGN_MAX=15 RETRIES=2 QUIET_WAIT=60     DNS runs with other load: see benches/dns-load.sh
#                      (QUICK: RETRIES=0 QUIET_WAIT=0)
#   AB_PORT=5310       DNS part: A on DNS :AB_PORT, API :AB_PORT+1; B on :AB_PORT+2, :AB_PORT+3
#   MAXINE_SERVE_ARGS  extra arguments for `maxine serve` in the DNS part
# Needs Linux with 2+ CPUs, cargo, python3, curl, taskset, timeout; dig for a check; wrk for `reg`.
# Everything else it runs is in benches/ (see benches/README.md).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
usage() { sed -n '2,6s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# = 2 ] || usage
for x in "$1" "$2"; do if [ ! -f "$x" ] || [ ! -x "$x" ]; then die "$x is not an executable file"; fi; done
A_BIN=$(realpath "$1") B_BIN=$(realpath "$2")

QUICK=${QUICK:-0}
KEEP=${KEEP:-0}
ONLY=${ONLY:-dns,reg,startup,memory}
if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-1} DNS_SECS=${DNS_SECS:-3} REG_SECS=${REG_SECS:-3} INSTANCES=${INSTANCES:-100000}
  RETRIES=${RETRIES:-0} QUIET_WAIT=${QUIET_WAIT:-0}
else
  ROUNDS=${ROUNDS:-2} DNS_SECS=${DNS_SECS:-10} REG_SECS=${REG_SECS:-10} INSTANCES=${INSTANCES:-1000000}
  RETRIES=${RETRIES:-2} QUIET_WAIT=${QUIET_WAIT:-60}
fi
FOREIGN_MAX=${FOREIGN_MAX:-15}
STARTUP_SERVICES=${STARTUP_SERVICES:-10000}
STARTUP_FILL=${STARTUP_FILL:-once}
REG_CONNS=${REG_CONNS:-50}
REG_STORE=${REG_STORE:-file}
AB_PORT=${AB_PORT:-5310}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TREE_A=${TREE_A:-} TREE_B=${TREE_B:-}
export PATH=$PATH:/usr/sbin:/sbin
for p in ${ONLY//,/ }; do
  case $p in dns|reg|startup|memory) ;; *) die "ONLY: unknown part '$p' (dns, reg, startup, memory)" ;; esac
done
part() { [[ ",$ONLY," == *",$1,"* ]]; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: a positive count"
SIDES=(A B)
bin_of() { if [ "$1" = A ]; then echo "$A_BIN"; else echo "$B_BIN"; fi; }
tree_of() { if [ "$1" = A ]; then echo "$TREE_A"; else echo "$TREE_B"; fi; }

# ---------------------------------------------------------------------------------------------
# cleanup: servers started here (PIDS) and the one bounded child running now (CHILD, its own
# process group under `timeout`) are stopped on exit, failure or interrupt
B="" PIDS=() CHILD="" MAXINE_PID=""
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; fi
  for p in "${PIDS[@]}" $MAXINE_PID; do stop_pid "$p"; done
  if [ -n "$B" ] && [ -d "$B" ]; then
    if [ "$KEEP" = 1 ]; then echo "kept $B" >&2; else rm -rf "$B"; fi
  fi
  [ "$rc" = 0 ] || echo "ab.sh: failed (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bounded DIR SECONDS LOG CMD...: CMD run in DIR with its output in LOG, ended (with all it
# started: `timeout` leads its own process group) after SECONDS or when this script stops; fails
# with CMD's status, the log's tail on stderr
bounded() {
  local dir=$1 secs=$2 out=$3 rc=0; shift 3
  (cd "$dir" && exec timeout -k 10 "$secs" "$@") >"$out" 2>&1 &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  if [ "$rc" != 0 ]; then
    tail -20 "$out" >&2
    [ "$rc" = 124 ] && echo "(stopped after $secs s)" >&2
    return "$rc"
  fi
}

# field KEY: KEY's value in the MEASURE line (benches/measure-cpu.py) in $m
field() { sed -n "s/.* $1=\([-0-9.]*\).*/\1/p" <<<"$m"; }
# record LABEL SIDE VALUE: one measurement of one run, for the table
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$B/results.tsv"; }
note() { printf '%s\n' "$*" >>"$B/notes.txt"; }
human() { awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) print n / 1000000 "M"; else if (n % 1000 == 0) print n / 1000 "k"; else print n }'; }

# ---------------------------------------------------------------------------------------------
# prerequisites
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU 0, load on CPU 1)"
for c in cargo python3 curl taskset timeout realpath; do command -v "$c" >/dev/null || die "$c not found"; done
if part dns; then
  need_ports_free "$AB_PORT" $((AB_PORT + 1)) $((AB_PORT + 2)) $((AB_PORT + 3))
fi
if part reg; then command -v wrk >/dev/null || die "wrk is missing (Debian: apt-get install wrk)"; fi
MEMORY=0
if part memory; then
  if [ -n "$TREE_A" ] && [ -n "$TREE_B" ]; then
    for s in A B; do
      t=$(tree_of "$s")
      [ -f "$t/benches/registry_memory.rs" ] || die "TREE_$s=$t has no benches/registry_memory.rs"
    done
    TREE_A=$(realpath "$TREE_A") TREE_B=$(realpath "$TREE_B") MEMORY=1
  else
    echo "ab.sh: memory: skipped (a library benchmark: set TREE_A and TREE_B to the two builds' source trees)" >&2
  fi
fi
if part startup && [ "$STARTUP_FILL" = each ]; then
  if [ -z "$TREE_A" ] || [ -z "$TREE_B" ]; then die "STARTUP_FILL=each needs TREE_A and TREE_B"; fi
  TREE_A=$(realpath "$TREE_A") TREE_B=$(realpath "$TREE_B")
fi
[ "$STARTUP_FILL" = once ] || [ "$STARTUP_FILL" = each ] || die "STARTUP_FILL=$STARTUP_FILL: once or each"

B=$(mktemp -d "${TMPDIR:-/tmp}/maxine-ab.XXXXXX")
mkdir -p "$B/out"
: >"$B/results.tsv"
: >"$B/notes.txt"
if part memory && [ "$MEMORY" = 0 ]; then note "memory: skipped (TREE_A and TREE_B not given)"; fi
started=$(date +%s)

# ---------------------------------------------------------------------------------------------
# dns: both servers up side by side on CPU 0 with the same data; per test A, B, A, B, ...
if part dns; then
  build_dnsload "$TARGET"
  gen_dns_data "$B" >&2
  declare -A DNS_PORT_OF HTTP_PORT_OF PID_OF
  DNS_PORT_OF[A]=$AB_PORT HTTP_PORT_OF[A]=$((AB_PORT + 1))
  DNS_PORT_OF[B]=$((AB_PORT + 2)) HTTP_PORT_OF[B]=$((AB_PORT + 3))
  for s in "${SIDES[@]}"; do
    log "starting $s (:${DNS_PORT_OF[$s]}, API :${HTTP_PORT_OF[$s]}) on CPU 0: $(bin_of "$s")"
    start_maxine_on "$(bin_of "$s")" "${DNS_PORT_OF[$s]}" "${HTTP_PORT_OF[$s]}" "$B/data-$s" "$B/maxine-$s.log" "$B/zones"
    PID_OF[$s]=$MAXINE_PID PIDS+=("$MAXINE_PID") MAXINE_PID=""
    register_all "http://127.0.0.1:${HTTP_PORT_OF[$s]}" "$B/registrations.jsonl"
  done
  if command -v dig >/dev/null; then
    for q in "svc1.maxine. A" "v2.svc1.maxine. SRV" "nosuch.maxine. A"; do   # same answers on both?
      # shellcheck disable=SC2086
      a=$(dig +short +time=1 +tries=3 @127.0.0.1 -p "${DNS_PORT_OF[A]}" $q | sort | tr '\n' ' ')
      # shellcheck disable=SC2086
      b=$(dig +short +time=1 +tries=3 @127.0.0.1 -p "${DNS_PORT_OF[B]}" $q | sort | tr '\n' ' ')
      [ "$a" = "$b" ] || { echo "warning: '$q': A answers [$a], B [$b]" >&2; note "dns: '$q' answered differently: A [$a], B [$b]"; }
    done
  fi
  declare -A DNS_DESC=([udp]="UDP max, A/SRV mix" [edns]="UDP max, EDNS 1232" [nx]="UDP max, NXDOMAIN only" [tcp]="TCP, 50 connections")
  for test in udp edns nx tcp; do
    log "dns $test: ${ROUNDS} x (A, B), ${DNS_SECS} s each"
    for r in $(seq "$ROUNDS"); do
      for s in "${SIDES[@]}"; do
        dns_test_args "$test" "127.0.0.1:${DNS_PORT_OF[$s]}" "$DNS_SECS"
        run_load "$s$r" "$test" "${PID_OF[$s]}" "${DNS_ARGS[@]}"
        m=$(grep '^MEASURE ' "$B/out/$s$r.$test")
        record "DNS ${DNS_DESC[$test]}: server µs/query" "$s" "$(field server_us_per_query)"
        record "DNS ${DNS_DESC[$test]}: qps" "$s" "$(field qps)"
        record "_load dns" "$s" "$(field foreign_cpu_pct)"
        lost=$(sed -n 's/^Queries lost: *\([0-9]*\).*/\1/p' "$B/out/$s$r.$test")
        [ "${lost:-0}" = 0 ] || note "dns: $s round $r $test lost $lost queries"
      done
    done
  done
  for s in "${SIDES[@]}"; do
    n=$(grep -c . "$B/maxine-$s.log" || true)
    [ "$n" = 0 ] || note "dns: $s logged $n lines at --log-level warn (see maxine-$s.log)"
    stop_pid "${PID_OF[$s]}"
  done
  PIDS=()
fi

# ---------------------------------------------------------------------------------------------
# reg: benches/registration-load.sh per side and round (a fresh server and data dir each time)
if part reg; then
  mkdir -p "$B/reg"
  for r in $(seq "$ROUNDS"); do
    for s in "${SIDES[@]}"; do
      log "reg round $r: $s, ${REG_SECS} s registrations + ${REG_SECS} s heartbeats, $REG_CONNS connections, store $REG_STORE"
      out=$B/reg/$s$r.log
      bounded "$REPO" $((3 * REG_SECS + 120)) "$out" env MAXINE_BIN="$(bin_of "$s")" SERVER_CPU=0 LOAD_CPU=1 \
        "$REPO/benches/registration-load.sh" "$REG_SECS" "$REG_CONNS" "$REG_STORE" ||
        die "registration-load.sh failed for $s (log: $out)"
      python3 - "$out" >"$out.tsv" <<'PY' || die "cannot read registration-load.sh's output ($out)"
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
parts = {"registrations": r"== durable registrations.*?(?=\n== )", "heartbeats": r"== heartbeats.*?(?=\n== )"}
for name, pat in parts.items():
    sec = re.search(pat, text, re.S)
    if not sec:
        sys.exit(f"no {name} section")
    sec = sec.group(0)
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", sec).group(1))
    p99 = ms(re.search(r"^\s*99%\s+(\S+)", sec, re.M).group(1))
    errors = int(re.search(r"non-2xx or errors: (\d+)", sec).group(1))
    cpu = re.search(r"server CPU: (\d+)% of one core; other processes: (-?\d+)%", sec)
    if rate <= 0:
        sys.exit(f"{name}: no requests")
    print(f"{name}/s\t{rate:.0f}")
    print(f"{name} p99 ms\t{p99:.3f}")
    if cpu:
        print(f"{name} server CPU %\t{cpu.group(1)}")
        print(f"_other {name}\t{cpu.group(2)}")
    if errors:
        print(f"_errors {name}\t{errors}")
rss = re.search(r"== server RSS: (\d+) MiB", text)
if rss:
    print(f"server RSS after both, MiB\t{rss.group(1)}")
PY
      while IFS=$'\t' read -r label value; do
        case $label in
          _errors*) note "reg: $s round $r: ${label#_errors } had $value non-2xx or errors" ;;
          _other*) record "_load reg" "$s" "$value" ;;
          *) record "reg $REG_STORE, $REG_CONNS conns: $label" "$s" "$value" ;;
        esac
      done <"$out.tsv"
    done
  done
fi

# ---------------------------------------------------------------------------------------------
# startup: one fill (or one per build with STARTUP_FILL=each), a fresh copy for every run
if part startup; then
  mkdir -p "$B/startup"
  N=$(human "$INSTANCES")
  log "building store_startup"
  bounded "$REPO" 3600 "$B/startup/build.log" cargo bench --bench store_startup --no-run ||
    die "building store_startup failed"
  if [ "$STARTUP_FILL" = once ]; then
    log "filling $INSTANCES instances in $STARTUP_SERVICES services (once, for both)"
    bounded "$REPO" 1800 "$B/startup/fill.log" cargo bench --bench store_startup -- \
      "$INSTANCES" "$STARTUP_SERVICES" --fill "$B/startup/filled" || die "filling the data directory failed"
    for s in "${SIDES[@]}"; do ln -s filled "$B/startup/filled-$s"; done
  else
    for s in "${SIDES[@]}"; do
      log "filling $INSTANCES instances in $STARTUP_SERVICES services with $s's tree ($(tree_of "$s"))"
      bounded "$(tree_of "$s")" 3600 "$B/startup/fill-$s.log" cargo bench --bench store_startup -- \
        "$INSTANCES" "$STARTUP_SERVICES" --fill "$B/startup/filled-$s" || die "filling with $s's tree failed"
    done
  fi
  note "startup: data directory $(du -sh "$B/startup/filled-A/" | cut -f1)$([ "$STARTUP_FILL" = each ] && echo " (A), $(du -sh "$B/startup/filled-B/" | cut -f1) (B)")"
  for r in $(seq "$ROUNDS"); do
    for s in "${SIDES[@]}"; do
      log "startup round $r: $s"
      rm -rf "$B/startup/run"
      cp -a "$B/startup/filled-$s/." "$B/startup/run"
      out=$B/startup/$s$r.log
      # store_startup on CPU 1 (it asks for the first answer), the server it starts on CPU 0
      bounded "$REPO" 900 "$out" env MAXINE_BIN="$(bin_of "$s")" taskset -c 1 cargo bench --bench store_startup -- \
        "$INSTANCES" "$STARTUP_SERVICES" --cpu 0 --data "$B/startup/run" ||
        die "store_startup failed for $s (log: $out; if the builds' store formats differ, use STARTUP_FILL=each)"
      rm -rf "$B/startup/run"
      for kind in "clean start" "start after kill -9"; do
        l=$(grep "^$kind: first DNS answer" "$out") || die "no '$kind' line in $out"
        read -r secs rss rss2 < <(sed -n 's/.*answer after \([0-9.]*\) s; RSS \([0-9]*\) MiB then, \([0-9]*\) MiB 2 s later.*/\1 \2 \3/p' <<<"$l")
        [ -n "${rss2:-}" ] || die "cannot read '$l'"
        record "start-up $N in $STARTUP_SERVICES services, $kind: s to first DNS answer" "$s" "$secs"
        record "start-up $N in $STARTUP_SERVICES services, $kind: RSS MiB then" "$s" "$rss"
        [ "$kind" != "clean start" ] || record "start-up $N in $STARTUP_SERVICES services, $kind: RSS MiB 2 s later" "$s" "$rss2"
      done
    done
  done
fi

# ---------------------------------------------------------------------------------------------
# memory: registry_memory --dns in each tree
if part memory && [ "$MEMORY" = 1 ]; then
  mkdir -p "$B/memory"
  N=$(human "$INSTANCES")
  for s in "${SIDES[@]}"; do
    log "building registry_memory in $s's tree ($(tree_of "$s"))"
    bounded "$(tree_of "$s")" 3600 "$B/memory/build-$s.log" cargo bench --bench registry_memory --no-run ||
      die "building registry_memory in $(tree_of "$s") failed"
    note "memory: $s's tree $(tree_of "$s") at $(git -C "$(tree_of "$s")" rev-parse --short HEAD 2>/dev/null || echo "?")$(git -C "$(tree_of "$s")" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
  done
  for r in $(seq "$ROUNDS"); do
    for s in "${SIDES[@]}"; do
      log "memory round $r: $s"
      out=$B/memory/$s$r.log
      bounded "$(tree_of "$s")" 900 "$out" taskset -c 0 cargo bench --bench registry_memory -- \
        "$INSTANCES" "$STARTUP_SERVICES" --dns || die "registry_memory failed in $(tree_of "$s") (log: $out)"
      alloc=$(sed -n 's/^allocated: .* MiB, \(-\{0,1\}[0-9]*\) bytes per instance.*/\1/p' "$out")
      rss=$(sed -n 's/^RSS: .* MiB, \(-\{0,1\}[0-9]*\) bytes per instance.*/\1/p' "$out")
      built=$(sed -n 's/.* built in \([0-9.]*\) s.*/\1/p' "$out")
      if [ -z "$alloc" ] || [ -z "$rss" ]; then die "cannot read $out"; fi
      record "memory $N in $STARTUP_SERVICES services (registry + DNS cache): allocated bytes/instance" "$s" "$alloc"
      record "memory $N in $STARTUP_SERVICES services: RSS bytes/instance" "$s" "$rss"
      [ -z "$built" ] || record "memory $N in $STARTUP_SERVICES services: restore s" "$s" "$built"
    done
  done
fi

# ---------------------------------------------------------------------------------------------
# report
log "results"
{
  echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1); $(uname -r)"
  echo "A: $A_BIN ($("$A_BIN" --version 2>/dev/null || echo "?"))"
  echo "B: $B_BIN ($("$B_BIN" --version 2>/dev/null || echo "?"))"
  [ "$A_BIN" != "$B_BIN" ] && ! cmp -s "$A_BIN" "$B_BIN" || echo "(A and B are the same binary: an A/A run)"
  echo "rounds: $ROUNDS x (A then B) per measurement; parts: $ONLY$([ "$QUICK" = 1 ] && echo '; QUICK (smoke test)'); $(( $(date +%s) - started )) s"
} | sed "s/^/- /"
python3 - "$B/results.tsv" "$B/notes.txt" <<'PY'
import statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    label, side, value = line.rstrip("\n").split("\t")
    if label not in rows:
        rows[label] = {"A": [], "B": []}
        order.append(label)
    rows[label][side].append(float(value))
def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if v == int(v):
        return f"{v:,.0f}"
    return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
print()
print("| measurement | A | B | B/A |")
print("|---|---:|---:|---:|")
for label in order:
    if label.startswith("_"):
        continue
    a, b = (statistics.median(rows[label][s]) if rows[label][s] else None for s in "AB")
    ratio = f"{b / a:.3f}" if a and b is not None else "-"
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")
print()
print("Medians per side; B/A below 1 is better for µs, p99, seconds, bytes and MiB, above 1 for rates and qps.")
for label in order:
    if label.startswith("_load "):
        f = rows[label]
        print(f"- {label[6:]}: other load on the machine at most {max(f['A']):.0f}% (A), {max(f['B']):.0f}% (B)"
              " of a core; rerun when high")
notes = [l.rstrip("\n") for l in open(sys.argv[2]) if l.strip()]
for n in notes:
    print(f"- {n}")
PY
