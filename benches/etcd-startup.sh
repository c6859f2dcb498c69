#!/usr/bin/env bash
# Start-up of a node against etcd holding many instances (issue 14: a
# million, answering DNS within 5 s; docs/cluster.md).
#
#   benches/etcd-startup.sh [INSTANCES=1000000] [SERVICES=10000]
#
# One etcd member on loopback (start-up reads from one member however many
# the cluster has; the figure says so), filled by examples/etcd_fill.rs
# with the keys and values a node's proposer writes (the same encoding
# function; 1M in about a minute instead of ten through the API), PER_TXN
# (128, the largest batch a node writes) keys per transaction. Then:
#   (a) a node without local state starts: seconds until it answers DNS
#       for the last instance filled, until /v1/ready answers 200, its RSS,
#       and whether the API lists that instance's service in full;
#   (b) the node is stopped (SIGTERM: it writes its local snapshot) and
#       started again on its data directory: seconds until DNS, until ready.
# The node's own log lines on the load (`ms`) are printed after each run.
# Needs etcd (apt-get install etcd-server), curl and python3.
# MAXINE_BIN=PATH / FILL_BIN=PATH run those binaries instead of building
# (MAXINE_BIN="A B": each of them in turn on the same fill, for an A/B; a
# debug etcd_fill is fast enough: FILL_BIN=target/debug/examples/etcd_fill
# fills 1M in 25-40 s). QUICK=1: 20,000 instances in 2,000 services, to
# check that it works. Every wait is
# bounded (WAIT seconds, default 120); everything runs in a temporary
# directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
services=${2:-10000}
if [ "${QUICK:-0}" = 1 ]; then n=20000; services=2000; fi
wait_s=${WAIT:-120}
for tool in etcd python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (etcd-server, python3, curl)" >&2; exit 1; }
done
# Separately: an example brings the dev-dependencies' features in, which
# must not change the server measured.
if [ -z "${MAXINE_BIN:-}" ]; then cargo build --release --quiet --bin maxine; fi
if [ -z "${FILL_BIN:-}" ]; then cargo build --release --quiet --example etcd_fill; fi
MAXINE_BIN=${MAXINE_BIN:-target/release/maxine}
FILL_BIN=${FILL_BIN:-target/release/examples/etcd_fill}
work=$(mktemp -d)
etcd_pid=
cleanup() {
  if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
etcd --name m0 --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$base" --advertise-client-urls "http://127.0.0.1:$base" \
  --listen-peer-urls "http://127.0.0.1:$((base + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((base + 1))" \
  --initial-cluster "m0=http://127.0.0.1:$((base + 1))" --initial-cluster-state new \
  --max-txn-ops 10000 --quota-backend-bytes 8589934592 \
  --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
etcd_pid=$!
healthy=0
for _ in $(seq $((wait_s * 5))); do
  if curl -fs "http://127.0.0.1:$base/health" 2>/dev/null | grep -q '"true"'; then healthy=1; break; fi
  sleep 0.2
done
[ "$healthy" = 1 ] || { echo "etcd did not start:" >&2; tail -5 "$work/etcd.log" >&2; exit 1; }

echo "== filling one etcd member with $n instances in $services services"
"$FILL_BIN" "127.0.0.1:$base" /bench "$n" "$services" "${PER_TXN:-128}" | sed 's/^/  /'
echo "  etcd's database: $(du -sh "$work/etcd" | cut -f1)"

python3 - "$MAXINE_BIN" "$work" "127.0.0.1:$base" "$n" "$services" "$wait_s" $((base + 2)) $((base + 3)) <<'PY'
import http.client, os, re, signal, socket, subprocess, sys, time
binaries, work, endpoint = sys.argv[1].split(), sys.argv[2], sys.argv[3]
n, services, wait_s, http_port, dns_port = (int(a) for a in sys.argv[4:9])
last = n - 1
name = f"i{last}.s{last % services}.dc1.maxine."
want = bytes(int(o) for o in f"10.{(last >> 16) & 255}.{(last >> 8) & 255}.{last & 255}".split("."))
query = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
for label in name.rstrip(".").split("."):
    query += bytes([len(label)]) + label.encode()
query += b"\x00\x00\x01\x00\x01"
env = {k: v for k, v in os.environ.items() if not k.startswith("MAXINE_")}

def ready():
    try:
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
        c.request("GET", "/v1/ready")
        return c.getresponse().status == 200
    except OSError:
        return False

def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0

def listed(service):
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    c.request("GET", f"/v1/services/{service}")
    r = c.getresponse()
    body = r.read()
    return body.count(b'"id":') if r.status == 200 else 0

def run(binary, data, label):
    log = open(os.path.join(work, f"{label}.log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "serve", "--data-dir", data, "--store", f"etcd://{endpoint}/bench",
                          "--http-addr", f"127.0.0.1:{http_port}", "--dns-addr", f"127.0.0.1:{dns_port}",
                          "--log-level", "info,maxine::store::etcd::sync=debug"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.02)
    t_dns = t_ready = None
    while time.monotonic() - t0 < wait_s and (t_dns is None or t_ready is None):
        if p.poll() is not None:
            sys.exit(f"the node exited ({p.returncode}): see {label}.log")
        if t_dns is None:
            sock.sendto(query, ("127.0.0.1", dns_port))
            try:
                answer = sock.recv(1500)
                if answer.endswith(want):
                    t_dns = time.monotonic() - t0
            except OSError:
                time.sleep(0.01)
        if t_ready is None and ready():
            t_ready = time.monotonic() - t0
    if t_dns is None or t_ready is None:
        p.kill()
        sys.exit(f"{label}: no answer within {wait_s} s (DNS {t_dns}, ready {t_ready})")
    rss = rss_mib(p.pid)
    return p, t_dns, t_ready, rss

def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        p.kill()
        sys.exit("the node did not stop")

def log_lines(label):
    text = open(os.path.join(work, f"{label}.log")).read()
    for line in text.splitlines():
        if re.search(r"the registry|restored the local snapshot|following the etcd cluster", line):
            print("    log:", re.sub(r"\x1b\[[0-9;]*m", "", line)[:220])

expected = len(range(last % services, n, services))
summary = []
for k, binary in enumerate(binaries):
    data = os.path.join(work, f"node{k}")
    who = f" [{binary}]" if len(binaries) > 1 else ""
    print(f"== (a) a node without local state, against one etcd member holding {n:,} instances{who}")
    p, t_dns, t_ready, rss = run(binary, data, f"fresh{k}")
    got = listed(f"s{last % services}")
    print(f"  answering DNS for {name} after {t_dns:.2f} s, /v1/ready 200 after {t_ready:.2f} s, RSS {rss} MiB")
    print(f"  the API lists {got} of the {expected} instances of s{last % services}" + ("" if got == expected else "  <-- MISMATCH"))
    log_lines(f"fresh{k}")
    stop(p)
    snap = os.path.join(data, "etcd", "registry.snapshot")
    size = os.path.getsize(snap) >> 20 if os.path.exists(snap) else None
    print(f"  stopped (SIGTERM): local snapshot {size} MiB" if size is not None else "  stopped: NO local snapshot")
    print(f"== (b) the same node restarted on its local snapshot and revision{who}")
    p, t_dns2, t_ready2, rss2 = run(binary, data, f"restart{k}")
    print(f"  answering DNS after {t_dns2:.2f} s, /v1/ready 200 after {t_ready2:.2f} s, RSS {rss2} MiB")
    log_lines(f"restart{k}")
    stop(p)
    summary.append((binary, t_dns, t_ready, rss, t_dns2, t_ready2, rss2))
print(f"== summary ({n:,} instances in {services:,} services, one etcd member, loopback)")
for binary, t_dns, t_ready, rss, t_dns2, t_ready2, rss2 in summary:
    if len(binaries) > 1:
        print(f"  {binary}")
    print(f"  no local state:   DNS {t_dns:.2f} s, ready {t_ready:.2f} s, RSS {rss} MiB")
    print(f"  local snapshot:   DNS {t_dns2:.2f} s, ready {t_ready2:.2f} s, RSS {rss2} MiB")
PY
