#!/usr/bin/env python3
"""Registrations/s with event-stream consumers attached, and the latency from an acknowledged
registration to an SSE consumer receiving it.

    benches/events-load.py [--consumers 100] [--seconds 10] [--threads 4] API
    e.g. benches/events-load.py --consumers 0 http://127.0.0.1:8080     (the baseline)
         benches/events-load.py --consumers 100 http://127.0.0.1:8080   (with 100 SSE consumers)

Start Maxine first (`maxine serve`, pinned to a CPU of its own with taskset for figures worth
comparing; run the script on the other CPU). CONSUMERS threads each hold one
`GET /v1/events?since=NOW` stream open and read every event; THREADS workers then register
instances (PUT /v1/services/bench-events/instances/iN, durable) over kept-alive connections for
SECONDS. One more consumer (not counted in CONSUMERS) records, for every registration, when its
change event arrived; the latency is that time minus the time the registration's answer arrived
(negative values, the event arriving before the answer, count as 0: the stream shows a change
once it is applied, the answer waits for the store's fsync); `from_send` is the same from when
the request was sent.

Prints `registrations/s R consumers C p50_ms X p99_ms Y missed M` on stdout (`missed`: changes
the latency consumer had not seen 5 s after the load ended: must be 0). Small and bounded:
--seconds at most 300. MQTT publishing is measured with benches/registration-load.sh (SERVE_ARGS).
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("api", help="the API's base URL, http://host:port")
    p.add_argument("--consumers", type=int, default=100, help="SSE consumers held open")
    p.add_argument("--seconds", type=float, default=10, help="how long to register (<= 300)")
    p.add_argument("--threads", type=int, default=4, help="parallel registering connections")
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.api)
    if u.scheme != "http" or not u.hostname:
        p.error(f"{a.api}: an http://host:port URL")
    a.host, a.port = u.hostname, u.port or 80
    a.seconds = min(max(a.seconds, 0.5), 300)
    return a


def current_index(a):
    c = http.client.HTTPConnection(a.host, a.port, timeout=10)
    c.request("GET", "/v1/services")
    r = c.getresponse()
    r.read()
    return int(r.getheader("X-Maxine-Index", "0"))


class Consumer(threading.Thread):
    """One SSE stream from `since`; with `record`, the arrival time of each change by index."""

    def __init__(self, a, since, stop, record=None):
        super().__init__(daemon=True)
        self.a, self.since, self.stop, self.record = a, since, stop, record
        self.events = 0
        self.ready = threading.Event()

    def run(self):
        c = http.client.HTTPConnection(self.a.host, self.a.port, timeout=30)
        c.request("GET", f"/v1/events?since={self.since}")
        r = c.getresponse()
        if r.status != 200:
            print(f"consumer: {r.status}", file=sys.stderr)
            self.ready.set()
            return
        self.ready.set()
        event_id = None
        while not self.stop.is_set():
            line = r.fp.readline()
            if not line:
                return
            line = line.rstrip(b"\n")
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line == b"":
                if event_id is not None:
                    self.events += 1
                    if self.record is not None:
                        self.record[event_id] = time.monotonic()
                event_id = None


def register(a, n0, deadline, acks, errors):
    c = http.client.HTTPConnection(a.host, a.port, timeout=30)
    body = json.dumps({"address": "10.9.0.1", "port": 80, "ttl": "1h"})
    n = n0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        c.request("PUT", f"/v1/services/bench-events/instances/i{n}", body,
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        now = time.monotonic()
        if r.status != 200:
            errors.append(r.status)
            if len(errors) > 20:
                return
            continue
        acks.append((int(r.getheader("X-Maxine-Index")), now, sent))
        n += a.threads


def main():
    a = parse_args()
    since = current_index(a)
    stop = threading.Event()
    arrivals = {}
    consumers = [Consumer(a, since, stop) for _ in range(a.consumers)]
    watcher = Consumer(a, since, stop, record=arrivals)
    for c in consumers + [watcher]:
        c.start()
    for c in consumers + [watcher]:
        c.ready.wait(30)
    deadline = time.monotonic() + a.seconds
    acks, errors = [], []
    workers = [threading.Thread(target=register, args=(a, i, deadline, acks, errors))
               for i in range(a.threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.monotonic() - start
    # Let the latency consumer catch up (bounded).
    wait_until = time.monotonic() + 5
    while time.monotonic() < wait_until and any(i not in arrivals for i, _, _ in acks[-50:]):
        time.sleep(0.05)
    stop.set()
    lat = sorted(max(0.0, arrivals[i] - t) * 1000 for i, t, _ in acks if i in arrivals)
    lat_sent = sorted((arrivals[i] - s) * 1000 for i, _, s in acks if i in arrivals)
    missed = sum(1 for i, _, _ in acks if i not in arrivals)

    def pct(v, p):
        return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")

    print(f"registrations/s {len(acks) / took:.0f} consumers {a.consumers} "
          f"p50_ms {pct(lat, 0.50):.2f} p99_ms {pct(lat, 0.99):.2f} "
          f"from_send_p50_ms {pct(lat_sent, 0.50):.2f} from_send_p99_ms {pct(lat_sent, 0.99):.2f} "
          f"missed {missed}")
    if errors:
        print(f"{len(errors)} registrations failed, e.g. status {errors[0]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
