#!/usr/bin/env python3
"""Sample the resident memory (and optionally open file descriptors) of server processes.

The benchmark scenarios (bench/scenarios.sh) start this beside a load run to watch the servers
under test: every process named on the command line and all its descendants (a trackd master's
workers, an nginx master's workers), re-discovered at each sample so a restarted worker is seen.
It reads /proc only, so it costs a few hundred microseconds per sample and can run at 10 Hz on
the load generator's core without disturbing the servers.

    procmon.py [--interval S] [--fds] [--psi] [--series FILE] LABEL=PID [LABEL=PID ...]

Runs until SIGTERM or SIGINT, then prints one JSON object on stdout:
    {"interval_s", "samples", "duration_s",
     "labels": {LABEL: {"rss_kib_max", "rss_kib_first", "rss_kib_last",   (sums over the group)
                        "fds_max", "fds_first", "fds_last", "procs_max"}},
     "processes": [{"label", "pid", "name", "rss_kib_max", "rss_kib_last", "fds_max"}]}
--series FILE also writes every sample, one JSON object a line: {"t", "label", "rss_kib", "fds"};
with --psi, also {"t", "label": "machine", "cpu_some_pct", "io_some_pct"}: the share of the last
interval in which some task on the machine waited for a CPU or for I/O (Linux pressure stall
information), which tells a slow moment of the server apart from a busy moment of the machine,
shared with other work.
Standard library only.
"""
import argparse
import json
import os
import signal
import sys
import time


def read_status(pid):
    """(name, VmRSS in KiB) of a process, or None once it is gone."""
    name, rss = "?", 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Name:"):
                    name = line.split(None, 1)[1].strip().decode(errors="replace")
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                    break
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return name, rss


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0


def read_psi(kind):
    """Total microseconds some task stalled on `kind` (cpu, io) since boot, or None."""
    try:
        with open(f"/proc/pressure/{kind}") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        pass
    return None


def parent_map():
    """pid -> ppid for every process (one pass over /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(roots, parents):
    """Every pid under each root (the root included), as {pid: label}."""
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    owner = {}
    for label, root in roots:
        stack = [root]
        while stack:
            pid = stack.pop()
            if pid in owner or (pid not in parents and pid != root):
                continue
            owner[pid] = label
            stack.extend(children.get(pid, []))
    return owner


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples (0.1)")
    ap.add_argument("--fds", action="store_true", help="also count open file descriptors")
    ap.add_argument("--psi", action="store_true", help="also record the machine's CPU and I/O pressure")
    ap.add_argument("--series", help="write every sample to this file (JSON lines)")
    ap.add_argument("targets", nargs="+", metavar="LABEL=PID")
    args = ap.parse_args()

    roots = []
    for t in args.targets:
        label, _, pid = t.rpartition("=")
        if not label or not pid.isdigit():
            ap.error(f"bad target {t!r}: want LABEL=PID")
        roots.append((label, int(pid)))

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    series = open(args.series, "w") if args.series else None
    labels = {label: {} for label, _ in roots}
    procs = {}
    samples = 0
    start = time.monotonic()
    next_t = start
    psi_prev = (start, read_psi("cpu"), read_psi("io")) if args.psi else None
    while not stop:
        now = time.monotonic()
        if psi_prev and series and now - psi_prev[0] >= args.interval / 2:
            cpu, io = read_psi("cpu"), read_psi("io")
            span_us = (now - psi_prev[0]) * 1e6
            rec = {"t": round(now - start, 3), "label": "machine"}
            if cpu is not None and psi_prev[1] is not None:
                rec["cpu_some_pct"] = round(100.0 * (cpu - psi_prev[1]) / span_us, 1)
            if io is not None and psi_prev[2] is not None:
                rec["io_some_pct"] = round(100.0 * (io - psi_prev[2]) / span_us, 1)
            series.write(json.dumps(rec) + "\n")
            psi_prev = (now, cpu, io)
        owner = descendants(roots, parent_map())
        sums = {label: [0, 0, 0] for label in labels}  # rss, fds, processes
        for pid, label in owner.items():
            st = read_status(pid)
            if st is None:
                continue
            name, rss = st
            fds = count_fds(pid) if args.fds else 0
            s = sums[label]
            s[0] += rss
            s[1] += fds
            s[2] += 1
            p = procs.setdefault(pid, {"label": label, "pid": pid, "name": name,
                                       "rss_kib_max": 0, "rss_kib_last": 0, "fds_max": 0})
            p["name"] = name
            p["rss_kib_max"] = max(p["rss_kib_max"], rss)
            p["rss_kib_last"] = rss
            p["fds_max"] = max(p["fds_max"], fds)
        for label, (rss, fds, n) in sums.items():
            g = labels[label]
            if n == 0:
                continue
            if not g:
                g.update(rss_kib_first=rss, fds_first=fds, rss_kib_max=0, fds_max=0, procs_max=0)
            g["rss_kib_max"] = max(g["rss_kib_max"], rss)
            g["fds_max"] = max(g["fds_max"], fds)
            g["procs_max"] = max(g["procs_max"], n)
            g["rss_kib_last"] = rss
            g["fds_last"] = fds
            if series:
                rec = {"t": round(now - start, 3), "label": label, "rss_kib": rss}
                if args.fds:
                    rec["fds"] = fds
                series.write(json.dumps(rec) + "\n")
        samples += 1
        next_t += args.interval
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_t = time.monotonic()
    if series:
        series.close()
    json.dump({"interval_s": args.interval, "samples": samples,
               "duration_s": round(time.monotonic() - start, 3), "labels": labels,
               "processes": sorted(procs.values(), key=lambda p: (p["label"], p["pid"]))},
              sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
