#!/usr/bin/env python3
"""Time from an intention change being acknowledged to every DNS worker answering with it.

    benches/policy-latency.py [--flips 20] [--sockets 32] API DNS_ADDR SOURCE SERVICE DEST

SOURCE is the address of a registered instance of SERVICE (e.g. 127.1.0.1, an instance of caller0
in benches/policy-data.py's data); DEST is a service it may see. Each flip PUTs the intention
SERVICE -> DEST (deny, then allow, in turn) and, once the API has answered, sends DEST's A
question from SOCKETS UDP sockets bound to SOURCE (each with its own port, so the server's
workers, which share the DNS port, all get some) until each socket has had one answer that
follows the change. Prints per flip the time from the acknowledgement to the last socket's first
up-to-date answer, then the median and the maximum, and how many answers after an
acknowledgement still showed the rules before it (stale: must be 0).
"""
import argparse
import http.client
import json
import socket
import statistics
import struct
import sys
import time
import urllib.parse


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for a in ("api", "dns", "source", "service", "dest"):
        p.add_argument(a)
    p.add_argument("--flips", type=int, default=20)
    p.add_argument("--sockets", type=int, default=32)
    p.add_argument("--zone", default="maxine")
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.api)
    host, port = a.dns.rsplit(":", 1)
    dns = (host, int(port))
    socks = []
    for _ in range(a.sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((a.source, 0))
        s.settimeout(1.0)
        socks.append(s)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    name = f"{a.dest}.{a.zone}."
    times, stale, qid = [], 0, 1
    for flip in range(a.flips):
        action = "deny" if flip % 2 == 0 else "allow"
        want_refused = action == "deny"
        conn.request("PUT", f"/v1/intentions/{a.service}/{a.dest}", json.dumps({"action": action}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        acked = time.perf_counter()
        if r.status != 200:
            sys.exit(f"PUT intention: {r.status} {body[:200]!r}")
        # Every socket asks at once; a socket whose answer is still the old one asks again.
        pending = list(range(len(socks)))
        deadline = acked + 5
        while pending:
            if time.perf_counter() > deadline:
                sys.exit(f"{name} from {a.source} still not {action}ed 5 s after the ack")
            ids = {}
            for i in pending:
                qid = (qid + 1) & 0xFFFF
                ids[i] = qid
                socks[i].sendto(query(qid, name), dns)
            again = []
            for i in pending:
                try:
                    while True:
                        reply, _ = socks[i].recvfrom(4096)
                        if reply[:2] == struct.pack(">H", ids[i]):
                            break
                except socket.timeout:
                    again.append(i)
                    continue
                if ((reply[3] & 0x0F) == 5) != want_refused:
                    stale += 1
                    again.append(i)
            pending = again
        last = time.perf_counter()
        times.append((last - acked) * 1e3)
        print(f"flip {flip + 1:2} {action:5}: every socket answered by the new rules {times[-1]:.3f} ms after the ack")
    print(f"ack -> every worker: median {statistics.median(times):.3f} ms, max {max(times):.3f} ms "
          f"over {a.flips} flips x {a.sockets} sockets; stale answers after an ack: {stale}")
    sys.exit(1 if stale else 0)


if __name__ == "__main__":
    main()
