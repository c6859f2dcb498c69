#!/usr/bin/env python3
"""Server CPU per request in named parts of a `perf record` profile.

    perf record -o perf.data --call-graph dwarf,16384 -F 1999 -- maxine serve ...
    perf script -i perf.data -F comm,tid,ip,sym --no-inline \\
      | benches/perf-buckets.py REQUESTS HZ [NAME=SUBSTRING ...]

A sample counts in a part when any frame of its stack contains the
substring; µs per request = samples / HZ / REQUESTS. Parts overlap (a part
holds what it calls). Without parts, a default set for event consumers
(docs/performance.md, "Registrations with event consumers attached").
"""
import sys

DEFAULT = [
    ("all", ""),
    ("writev", "writev"),
    ("deflate", "zlib_rs"),
    ("event streams", "events::Follow"),
    ("encoded changes", "EncodedChanges"),
    ("mqtt", "maxine::mqtt"),
    ("dns answers", "AnswerBuilder"),
    ("registry commit", "Registry::commit"),
]


def samples(lines):
    stack = None
    for line in lines:
        if not line.strip():
            if stack is not None:
                yield stack
            stack = None
        elif not line.startswith(("\t", " ")):
            stack = []
        elif stack is not None:
            parts = line.strip().split(None, 1)
            if len(parts) > 1:
                stack.append(parts[1])
    if stack:
        yield stack


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    requests, hz = float(sys.argv[1]), float(sys.argv[2])
    parts = [tuple(a.split("=", 1)) for a in sys.argv[3:]] or DEFAULT
    counts = {name: 0 for name, _ in parts}
    total = 0
    for stack in samples(sys.stdin):
        total += 1
        for name, sub in parts:
            if any(sub in f for f in stack):
                counts[name] += 1
    print(f"{total} samples, {requests:.0f} requests")
    for name, _ in parts:
        print(f"  {name:<18} {counts[name] / hz / requests * 1e6:8.1f} µs/request")


main()
