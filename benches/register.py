#!/usr/bin/env python3
"""Register every instance of a registrations.jsonl (benches/dns-data.py) with a running Maxine.

    benches/register.py [--threads 8] [--ttl 3600s] [--token-file FILE] [--timeout 600] [--raw] API FILE
    e.g. benches/register.py http://127.0.0.1:5380 "$B/registrations.jsonl"

Each line becomes PUT API/v1/services/{service}/instances/{id} with the line's address, port,
version and weight and a heartbeat TTL long enough for the whole benchmark (--ttl; the benchmark
sends no heartbeats). THREADS workers share the lines, each over one kept-alive connection, so
a large file (1M instances) loads in about a minute. --token-file sends that file's secret as a
bearer token, for a server with access control on.

Prints one line (`registered N of M in S s (R/s)`) on stderr; exits 1 if any registration was
refused or failed (the first few are shown), 2 if the API cannot be reached at all, and stops
with an error after --timeout seconds.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

# After this many failures the load stops early: something is wrong with every request.
MAX_FAILURES = 20


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("api", help="the API's base URL, http://host:port")
    p.add_argument("file", help="registrations.jsonl")
    p.add_argument("--threads", type=int, default=8, help="parallel connections")
    p.add_argument("--ttl", default="3600s", help="heartbeat TTL of every instance")
    p.add_argument("--token-file", help="file holding a bearer token")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--raw", action="store_true",
                   help='each line is {"path": ..., "body": ...}: PUT body to path (policy objects)')
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.api)
    if u.scheme != "http" or not u.hostname:
        p.error(f"{a.api}: an http://host:port URL")
    if a.threads < 1:
        p.error("--threads: at least 1")
    return a, u


class Load:
    """Shared by the workers: the requests to send and what came back."""

    def __init__(self, requests, deadline):
        self.requests = requests
        self.deadline = deadline
        self.lock = threading.Lock()
        self.done = 0
        self.failures = []

    def fail(self, what):
        with self.lock:
            self.failures.append(what)

    def should_stop(self):
        return len(self.failures) >= MAX_FAILURES or time.monotonic() > self.deadline


def requests_of(path, ttl, raw=False):
    """(url path, JSON body) per registration line (per {"path", "body"} line when raw)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if raw:
                try:
                    r = json.loads(line)
                    out.append((r["path"], json.dumps(r["body"]).encode()))
                except (ValueError, KeyError, TypeError) as e:
                    sys.exit(f"register.py: {path}:{n}: not a {{\"path\", \"body\"}} line ({e})")
                continue
            try:
                r = json.loads(line)
                svc, iid = r["service"], r["id"]
                body = {k: r[k] for k in ("address", "port", "version", "weight", "metadata") if k in r}
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"register.py: {path}:{n}: not a registration ({e})")
            body["ttl"] = ttl
            out.append((f"/v1/services/{urllib.parse.quote(svc)}/instances/{urllib.parse.quote(iid)}",
                        json.dumps(body).encode()))
    return out


def worker(load, mine, host, port, headers):
    conn = None
    for path, body in mine:
        if load.should_stop():
            break
        for attempt in (1, 2):  # one reconnect: a kept-alive connection the server closed
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("PUT", path, body, headers)
                resp = conn.getresponse()
                text = resp.read()
                if resp.status >= 300:
                    load.fail(f"{path}: {resp.status} {text[:200].decode(errors='replace')}")
                else:
                    with load.lock:
                        load.done += 1
                break
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                conn = None
                if attempt == 2:
                    load.fail(f"{path}: {e!r}")
    if conn is not None:
        conn.close()


def main():
    a, u = parse_args()
    headers = {"Content-Type": "application/json"}
    if a.token_file:
        with open(a.token_file) as f:
            headers["Authorization"] = "Bearer " + f.read().strip()
    reqs = requests_of(a.file, a.ttl, a.raw)
    host, port = u.hostname, u.port or 80
    try:
        http.client.HTTPConnection(host, port, timeout=10).connect()
    except OSError as e:
        print(f"register.py: cannot reach {a.api}: {e}", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    load = Load(reqs, t0 + a.timeout)
    threads = [threading.Thread(target=worker, args=(load, reqs[i::a.threads], host, port, headers))
               for i in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0

    print(f"registered {load.done} of {len(reqs)} in {secs:.1f} s ({load.done / secs:.0f}/s, "
          f"{a.threads} connections)", file=sys.stderr)
    for f in load.failures[:5]:
        print(f"  refused or failed: {f}", file=sys.stderr)
    if time.monotonic() > load.deadline and load.done < len(reqs):
        print(f"register.py: stopped after {a.timeout:.0f} s", file=sys.stderr)
    return 0 if load.done == len(reqs) else 1


if __name__ == "__main__":
    sys.exit(main())
