#!/usr/bin/env python3
"""Federation measurements against running Maxines (benches/federation.sh starts them).

    benches/federation.py lag DC2_API DC1_DNS RATE SECONDS [--threads 8] [--every 50] [--zone Z]
        Registers instances into dc2 at RATE changes/s for SECONDS (THREADS kept-alive
        connections, paced), and every EVERYth change is a probe: a new service `probeN` whose
        name dc1 is asked over UDP (probeN.dc2.maxine. A, every 0.5 ms) from the moment dc2
        acknowledged it until dc1 answers. Prints `LAG rate=R probes=N p50_ms=.. p99_ms=..
        max_ms=..` (probes unanswered after 5 s count as 5000 ms). With --every 1 every change
        is a probe: the load then comes from elsewhere (federation.sh runs wrk beside it).
        --zone (dc2.maxine.) is where the receiver finds probeN; etcd-cluster.sh measures two
        nodes of one datacenter with --zone dc1.maxine.

    benches/federation.py catchup DC1_API TOKEN_FILE INSTANCES [--timeout 120]
        Polls dc1's GET /v1/datacenters until dc2's replica holds INSTANCES instances and no
        lag; prints `CATCHUP seconds=S instances=N` (from this script's start, which the
        caller puts right after starting dc1).

Only the standard library; loopback only.
"""
import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse


def dns_query(name, qtype=1):
    qid = random.randrange(65536)
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        msg += bytes([len(label)]) + label.encode()
    return qid, msg + b"\x00" + struct.pack(">HH", qtype, 1)


def answered(sock, addr, name):
    qid, q = dns_query(name)
    sock.sendto(q, addr)
    try:
        data, _ = sock.recvfrom(4096)
    except socket.timeout:
        return False
    if len(data) < 12:
        return False
    rid, _, _, ancount = struct.unpack(">HHHH", data[:8])
    return rid == qid and ancount > 0


def put(conn, service, iid, address):
    body = json.dumps({"address": address, "port": 8080, "ttl": "3600s"})
    conn.request("PUT", f"/v1/services/{service}/instances/{iid}", body,
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def lag(args):
    api = urllib.parse.urlparse(args.api)
    host, port = args.dns.rsplit(":", 1)
    dns = (host, int(port))
    per_thread = args.rate / args.threads
    stop_at = time.monotonic() + args.seconds
    delays, lock, sent = [], threading.Lock(), [0]
    probes = []

    def probe(n, t0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.05)
        name = f"probe{n}.{args.zone}"
        deadline = t0 + 5
        while time.monotonic() < deadline:
            if answered(s, dns, name):
                with lock:
                    delays.append(time.monotonic() - t0)
                return
            time.sleep(0.0005)
        with lock:
            delays.append(5.0)

    def worker(k):
        conn = http.client.HTTPConnection(api.hostname, api.port, timeout=10)
        i, next_at = 0, time.monotonic()
        while time.monotonic() < stop_at:
            n = k + i * args.threads
            i += 1
            if n % args.every == 0:
                st = put(conn, f"probe{n}", "p", "10.9.0.1")
                t0 = time.monotonic()
                th = threading.Thread(target=probe, args=(n, t0))
                th.start()
                probes.append(th)
            else:
                st = put(conn, f"load{n % 100}", f"i{n % 5000}", f"10.8.{(n >> 8) % 256}.{n % 256}")
            if st != 200:
                sys.exit(f"registration answered {st}")
            with lock:
                sent[0] += 1
            next_at += 1 / per_thread
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    for t in probes:
        t.join()
    d = sorted(delays)
    if not d:
        sys.exit("no probes")
    q = lambda p: d[min(len(d) - 1, int(p * len(d)))] * 1000
    print(f"LAG rate={sent[0] / took:.0f} probes={len(d)} p50_ms={q(0.5):.2f} "
          f"p99_ms={q(0.99):.2f} max_ms={d[-1] * 1000:.2f}")


def catchup(args):
    started = time.monotonic()
    api = urllib.parse.urlparse(args.api)
    token = open(args.token_file).read().strip()
    while time.monotonic() - started < args.timeout:
        try:
            conn = http.client.HTTPConnection(api.hostname, api.port, timeout=5)
            conn.request("GET", "/v1/datacenters", headers={"Authorization": f"Bearer {token}"})
            body = json.loads(conn.getresponse().read())
            dc2 = next((d for d in body["datacenters"] if d["name"] == "dc2"), None)
            if dc2 and dc2["instances"] >= args.instances and dc2["lag_indexes"] == 0:
                print(f"CATCHUP seconds={time.monotonic() - started:.2f} instances={dc2['instances']}")
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    sys.exit(f"dc1 had not caught up after {args.timeout} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("lag")
    l.add_argument("api")
    l.add_argument("dns")
    l.add_argument("rate", type=float)
    l.add_argument("seconds", type=float)
    l.add_argument("--threads", type=int, default=8)
    l.add_argument("--every", type=int, default=50)
    l.add_argument("--zone", default="dc2.maxine.",
                   help="where the receiver finds the probes: probeN.ZONE")
    c = sub.add_parser("catchup")
    c.add_argument("api")
    c.add_argument("token_file")
    c.add_argument("instances", type=int)
    c.add_argument("--timeout", type=float, default=120)
    args = p.parse_args()
    {"lag": lag, "catchup": catchup}[args.cmd](args)


if __name__ == "__main__":
    main()
