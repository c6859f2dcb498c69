#!/usr/bin/env python3
"""Run one load command and account for the CPU a server spent answering it.

    benches/measure-cpu.py [--timeout 900] NAME PID[,PID...] -- LOAD-COMMAND...
    e.g. benches/measure-cpu.py maxine/udp 1234 -- taskset -c 1 dnsload udp 127.0.0.1:5300 queries.txt 10

Prints the load command's output (stdout, then stderr), then one line:

    MEASURE name=NAME qps=Q server_cpu_pct=S server_us_per_query=U client_cpu_pct=C foreign_cpu_pct=F server_us_per_answer=A

  qps                   the load command's own `Queries per second:` figure (dnsload and dnsperf
                        print one); 0 if it printed none
  server_cpu_pct        CPU of the server processes PID... and all their descendants (NSD answers
                        from a child process) while the load command ran, in % of one core
  server_us_per_query   server_cpu_pct / qps: the figure docs/performance.md quotes. The server's
                        CPU is spread over the command's whole run (its start-up and its wait for
                        late replies included) while qps counts only its sending time, so this
                        reads low by that ratio: a few % for a 10 s dnsload run, more for short
                        runs and for runs that lose queries (dnsload then waits 1 s more)
  client_cpu_pct        the load command's own CPU (its rusage), in % of one core
  foreign_cpu_pct       the machine's remaining busy CPU (neither server nor load command): other
                        work on the machine; a run with much of it is worth repeating
  server_us_per_answer  the server's CPU time divided by the replies the load command received
                        (`Queries completed:`): what one answer cost, without that bias

CPU comes from /proc (ticks of USER_HZ, usually 10 ms): the machine's busy time is user, nice,
system, irq, softirq and steal of the `cpu` line of /proc/stat; a process's is its utime, stime and
the times of its reaped children. The load command is killed (and this exits 124) if it runs
longer than --timeout seconds; otherwise the exit status is the load command's.
"""
import os
import re
import signal
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy():
    """Busy ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    assert fields[0] == "cpu"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + irq + softirq + steal


def proc_stat(pid):
    """(ppid, state, ticks) of a process, None once it is gone. ticks: utime + stime + cutime + cstime."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    # rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[11:15] fields 14-17
    return int(rest[1]), rest[0], sum(int(x) for x in rest[11:15])


def descendants(roots):
    """The roots and every process below them."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += children.get(p, [])
    return seen


def ticks_of(pids):
    """{pid: ticks} of the processes still there."""
    out = {}
    for p in pids:
        st = proc_stat(p)
        if st:
            out[p] = st[2]
    return out


def server_ticks(before, after):
    """Ticks the server spent between two samples. A process that ended in between has handed its
    times to its parent's cutime/cstime once reaped, so it is counted from `after`'s side; one
    that started in between began at 0."""
    return sum(t - before.get(p, 0) for p, t in after.items()) - sum(
        t for p, t in before.items() if p not in after)


def main():
    args = sys.argv[1:]
    timeout = 900.0
    if args[:1] == ["--timeout"] and len(args) > 1:
        timeout, args = float(args[1]), args[2:]
    if len(args) < 4 or args[2] != "--":
        sys.exit(__doc__.split("\n\n")[1])
    name, cmd = args[0], args[3:]
    try:
        roots = [int(x) for x in args[1].split(",")]
    except ValueError:
        sys.exit(f"measure-cpu.py: {args[1]}: not a PID list")
    for p in roots:
        if proc_stat(p) is None:
            sys.exit(f"measure-cpu.py: no process {p}")

    pids = descendants(roots)
    s0, b0, t0 = ticks_of(pids), machine_busy(), time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        timed_out = True
    # the child is reaped by now; its rusage is this process's children's usage (the only child)
    ru = os.times()
    client = (ru.children_user + ru.children_system) * HZ
    wall = time.monotonic() - t0
    b1 = machine_busy()
    s1 = ticks_of(pids | descendants(roots))

    text = out.decode(errors="replace") + err.decode(errors="replace")
    sys.stdout.write(text)
    m = re.search(r"Queries per second:\s*([\d.]+)", text)
    qps = float(m.group(1)) if m else 0.0
    m = re.search(r"Queries completed:\s*(\d+)", text)
    answered = int(m.group(1)) if m else 0

    server = server_ticks(s0, s1)

    def pct(ticks):
        return 100 * ticks / HZ / wall

    per_query = pct(server) / 100 * 1e6 / qps if qps else 0.0
    per_answer = server / HZ * 1e6 / answered if answered else 0.0
    print(f"MEASURE name={name} qps={qps:.0f} server_cpu_pct={pct(server):.1f} server_us_per_query={per_query:.2f} "
          f"client_cpu_pct={pct(client):.1f} foreign_cpu_pct={pct(b1 - b0 - server - client):.1f} "
          f"server_us_per_answer={per_answer:.2f}")
    if timed_out:
        print(f"measure-cpu.py: {cmd[0]} killed after {timeout:.0f} s", file=sys.stderr)
        return 124
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
