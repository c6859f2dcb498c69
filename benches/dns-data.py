#!/usr/bin/env python3
"""The DNS benchmark's data set, written once for Maxine and once for the reference servers.

    benches/dns-data.py [--services 1000] [--instances 3] [--queries 200000] [--nx-queries 200000]
                        [--seed 42] [--ttl 30] [--no-zone] OUTDIR

Every file is derived from the same list of instances, so Maxine (fed over its API) and NSD/Knot
(fed a zone file) give the same answers to every name in the query files:

  registrations.jsonl  one instance per line, the body of a native-API registration plus its key:
                       {"service": "svcN", "id": "svcN-K", "address", "port", "version", "weight"}
                       (benches/register.py sends them)
  maxine.zone          the same instances as a master-format zone `maxine.` for NSD and Knot:
                         svcN               A and SRV, one each per instance
                         v2.svcN            A and SRV of the instances of version 2.x
                         _svcN._tcp         SRV, one per instance
                         svcN-K.node        A: the SRV targets
                       (left out with --no-zone: a 1M-instance zone is large and unused)
  zones/maxine.zone    the zone's apex only (SOA, NS, the name server's A), which Maxine serves
                       beside the registered records (`maxine serve --zone-dir OUTDIR/zones`)
  queries.txt          the query mix, dnsload/dnsperf format (`name TYPE`): 5% unknown names, A or
                       SRV; of the rest 60% A over svcN / v2.svcN, 40% SRV over _svcN._tcp / svcN /
                       v2.svcN, the service drawn uniformly. Only service-level names: the SRV
                       targets' names are each server's own (Maxine's are svcN-K.svcN.dc1.maxine.).
  nx.txt               unknown names only (A), every one different: the NXDOMAIN path

Instance K of service N is version 1.0.0 for K = 0 and 2.0.0 otherwise, port 8000 + N mod 1000,
weight 1; addresses 10.x.y.z count up from 10.0.0.1 over all instances. The query files are drawn
from a seeded generator, so the same arguments give the same files.
"""
import argparse
import json
import os
import random
import sys

ZONE = "maxine."


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--services", type=int, default=1000, help="services svc0 .. svcN-1")
    p.add_argument("--instances", type=int, default=3, help="instances per service")
    p.add_argument("--queries", type=int, default=200_000, help="lines of queries.txt")
    p.add_argument("--nx-queries", type=int, default=200_000, help="lines of nx.txt")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ttl", type=int, default=30, help="record TTL of the zone (Maxine's is its --dns-ttl)")
    p.add_argument("--no-zone", action="store_true", help="skip maxine.zone")
    a = p.parse_args()
    if a.services < 1 or a.instances < 1:
        p.error("--services and --instances must be at least 1")
    if a.services * a.instances >= 1 << 24:
        p.error("at most 16M instances (their addresses are 10.x.y.z)")
    return a


def address(n):
    """The n-th instance's address (n from 0): 10.0.0.1, 10.0.0.2, ..."""
    n += 1
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def instances(services, per_service):
    """(service, [(id, address, port, version), ...]) for every service, in order."""
    n = 0
    for s in range(services):
        svc = f"svc{s}"
        port = 8000 + s % 1000
        rows = []
        for k in range(per_service):
            rows.append((f"{svc}-{k}", address(n), port, "1.0.0" if k == 0 else "2.0.0"))
            n += 1
        yield svc, rows


def apex(ttl):
    # The SOA minimum (negative-answer TTL) is capped at 5 s, so an NXDOMAIN is not cached for long.
    return [
        f"$ORIGIN {ZONE}",
        f"$TTL {ttl}",
        f"@ IN SOA ns1.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 {min(ttl, 5)}",
        f"@ IN NS ns1.{ZONE}",
        "ns1 IN A 127.0.0.1",
    ]


def zone_lines(svc, rows):
    """The records the reference servers serve for one service, relative to the origin."""
    out = [f"{iid}.node IN A {addr}" for iid, addr, _, _ in rows]
    for iid, addr, port, _ in rows:
        target = f"{iid}.node.{ZONE}"
        out += [f"{svc} IN A {addr}", f"{svc} IN SRV 1 1 {port} {target}", f"_{svc}._tcp IN SRV 1 1 {port} {target}"]
    for iid, addr, port, version in rows:
        if version.startswith("2."):
            out += [f"v2.{svc} IN A {addr}", f"v2.{svc} IN SRV 1 1 {port} {iid}.node.{ZONE}"]
    return out


def query_mix(services, count, rnd):
    """Yield (kind, line) for queries.txt; kind is A, SRV or NX."""
    a_forms = ("{s}.", "v2.{s}.")
    srv_forms = ("_{s}._tcp.", "{s}.", "v2.{s}.")
    for _ in range(count):
        u = rnd.random()
        if u < 0.05:
            qtype = "A" if rnd.random() < 0.5 else "SRV"
            yield "NX", f"nosuch{rnd.randrange(1_000_000)}.{ZONE} {qtype}"
            continue
        s = f"svc{rnd.randrange(services)}"
        # the remaining 95% split 60:40 between A and SRV
        if (u - 0.05) / 0.95 < 0.60:
            yield "A", rnd.choice(a_forms).format(s=s) + f"{ZONE} A"
        else:
            yield "SRV", rnd.choice(srv_forms).format(s=s) + f"{ZONE} SRV"


def write_lines(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def main():
    a = parse_args()
    os.makedirs(os.path.join(a.outdir, "zones"), exist_ok=True)
    total = 0
    zone = apex(a.ttl)
    with open(os.path.join(a.outdir, "registrations.jsonl"), "w") as reg:
        for svc, rows in instances(a.services, a.instances):
            for iid, addr, port, version in rows:
                reg.write(json.dumps({"service": svc, "id": iid, "address": addr, "port": port,
                                      "version": version, "weight": 1}) + "\n")
            total += len(rows)
            if not a.no_zone:
                zone += zone_lines(svc, rows)
    if not a.no_zone:
        write_lines(os.path.join(a.outdir, "maxine.zone"), zone)
    write_lines(os.path.join(a.outdir, "zones", "maxine.zone"), apex(a.ttl))

    rnd = random.Random(a.seed)
    kinds = {"A": 0, "SRV": 0, "NX": 0}

    def counted():
        for kind, line in query_mix(a.services, a.queries, rnd):
            kinds[kind] += 1
            yield line

    write_lines(os.path.join(a.outdir, "queries.txt"), counted())
    write_lines(os.path.join(a.outdir, "nx.txt"), (f"nope-{i}.{ZONE} A" for i in range(a.nx_queries)))
    mix = ", ".join(f"{k} {100 * v / max(a.queries, 1):.1f}%" for k, v in kinds.items())
    print(f"dns-data: {total} instances in {a.services} services; {a.queries} queries ({mix}), "
          f"{a.nx_queries} NXDOMAIN queries; in {a.outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
