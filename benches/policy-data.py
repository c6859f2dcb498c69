#!/usr/bin/env python3
"""The DNS policy benchmark's policy data (benches/dns-policy.sh), beside benches/dns-data.py's.

    benches/policy-data.py [--callers 1000] [--caller-services 100] [--intentions 10000]
                           [--cidrs 1000] [--services 1000] OUTDIR

Writes, for benches/register.py:

  callers.jsonl     the askers: CALLERS instances of CALLER-SERVICES services callerN, at the
                    addresses 127.1.0.1, 127.1.0.2, ... (one each, counting up), so a query from
                    one of those addresses has that service's identity. dnsload --source 127.1.0.1
                    --sockets CALLERS asks from exactly these addresses.
  intentions.jsonl  INTENTIONS intentions callerC -> svcJ (register.py --raw lines), all `allow`, so
                    every answer is the one the policy-off server gives: the benchmark measures
                    what deciding costs, not a different answer.
  cidrs.jsonl       CIDRS blacklisted networks in 100.64.0.0/10 (none contains an asker), of
                    prefix lengths /20, /24, /28 and /32 in turn.

The caller with index i is instance callerS-K (S = i // (CALLERS / CALLER-SERVICES)).
"""
import argparse
import ipaddress
import json
import os
import urllib.parse


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--callers", type=int, default=1000)
    p.add_argument("--caller-services", type=int, default=100)
    p.add_argument("--intentions", type=int, default=10000)
    p.add_argument("--cidrs", type=int, default=1000)
    p.add_argument("--services", type=int, default=1000, help="svc0 .. svcN-1 of dns-data.py")
    a = p.parse_args()
    if not 1 <= a.caller_services <= a.callers <= 65000:
        p.error("1 <= --caller-services <= --callers <= 65000")
    if a.cidrs > 1024:
        p.error("--cidrs: at most 1024 (the /20 blocks of 100.64.0.0/10)")
    if a.intentions > a.caller_services * a.services:
        p.error("--intentions: at most caller-services x services")
    os.makedirs(a.outdir, exist_ok=True)
    per = a.callers // a.caller_services
    first = int(ipaddress.IPv4Address("127.1.0.1"))
    with open(os.path.join(a.outdir, "callers.jsonl"), "w") as f:
        for i in range(a.callers):
            s, k = min(i // per, a.caller_services - 1), i % per
            f.write(json.dumps({"service": f"caller{s}", "id": f"caller{s}-{k}-{i}",
                                "address": str(ipaddress.IPv4Address(first + i)), "port": 9000}) + "\n")
    with open(os.path.join(a.outdir, "intentions.jsonl"), "w") as f:
        for n in range(a.intentions):
            c, j = n % a.caller_services, n // a.caller_services
            f.write(json.dumps({"path": f"/v1/intentions/caller{c}/svc{j}",
                                "body": {"action": "allow"}}) + "\n")
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    with open(os.path.join(a.outdir, "cidrs.jsonl"), "w") as f:
        for n in range(a.cidrs):
            # Network n starts its own /20 block of 100.64.0.0/10 (1,024 of them).
            plen = (20, 24, 28, 32)[n % 4]
            net = ipaddress.IPv4Network((base + (n << 12), plen))
            path = "/v1/blacklist/cidrs/" + urllib.parse.quote(str(net), safe="")
            f.write(json.dumps({"path": path, "body": {"reason": "benchmark"}}) + "\n")


if __name__ == "__main__":
    main()
