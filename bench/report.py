#!/usr/bin/env python3
"""Result records and tables for the load scenarios (bench/scenarios.sh).

Every trackbench run of a scenario becomes one record, one JSON object per line of
bench/results/scenarios-<stamp>.jsonl, holding trackbench's own --json output untouched ("tb"),
the memory samples of the servers under test ("mem", from bench/procmon.py), and whatever else
the scenario measured (per-second progress, ledger verification). This file builds those
records and turns a results file into the markdown tables of bench/RESULTS.md:

    report.py record --scenario S --system NAME [--payload P] [--connections N] [--round R]
                     [--role ROLE] --tb FILE [--mem FILE] [--series FILE] [--progress FILE]
                     [--verify FILE] [--errlog FILE] [--note KEY=VALUE ...]
                                          (prints one record)
    report.py tables RESULTS.jsonl        (markdown for every scenario present)
    report.py line < RECORDS.jsonl        (one summary line per record, for progress output)
    report.py median RESULTS.jsonl SYSTEM PAYLOAD CONNECTIONS FIELD   (one number, e.g. for
                                          the long run's rate; FIELD: requests_per_s, ...)

Figures from several interleaved rounds are medians. Every comparison figure is also given as
a ratio to nginx `return 200` measured in the same run, because the machine is shared and
absolute figures move with its other load while ratios move much less. Standard library only.
"""
import argparse
import json
import re
import statistics
import sys
import time

# The systems of the side-by-side comparison, in table order, with what each one is.
SYSTEMS = [
    ("nginx200", "nginx `return 200 \"1\"` (ceiling)"),
    ("nginxlog", "nginx access_log of the query string"),
    ("eventlet", "nginx + Python eventlet WSGI (2011 design), `write`-like"),
    ("trackd-none", "trackd, durability none"),
    ("trackd-write", "trackd, durability write"),
    ("trackd-fsync", "trackd, durability fsync"),
    ("nginx+trackd-write", "nginx + trackd, durability write"),
    ("nginx+trackd-fsync", "nginx + trackd, durability fsync"),
]
DESC = dict(SYSTEMS)
BASE = "nginx200"

PROGRESS_RE = re.compile(
    r"\[\s*(\d+)s\]\s+(\d+) conns\s+([\d.]+) req/s\s+([\d.]+) ev/s\s+p50\s+([\d.]+) ms\s+"
    r"p99\s+([\d.]+) ms\s+errors (\d+)(?: \((.*)\))?")


def load_json(path):
    if not path:
        return None
    with open(path) as f:
        text = f.read().strip()
    return json.loads(text) if text else None


def parse_progress(path):
    """trackbench's per-second lines on stderr, as a list of dicts."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = PROGRESS_RE.search(line)
            if not m:
                continue
            rec = {"t": int(m.group(1)), "conns": int(m.group(2)), "rps": float(m.group(3)),
                   "evps": float(m.group(4)), "p50_ms": float(m.group(5)),
                   "p99_ms": float(m.group(6)), "errors": int(m.group(7))}
            if m.group(8):
                rec["status"] = {k.strip(): int(v) for k, v in
                                 (p.split(":") for p in m.group(8).split(",") if ":" in p)}
            out.append(rec)
    return out


def summarize_errlog(path):
    """nginx error log lines counted by message (timestamps, ids and addresses cut off)."""
    counts = {}
    try:
        f = open(path, errors="replace")
    except FileNotFoundError:
        return counts
    with f:
        for line in f:
            m = re.match(r"\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$", line.rstrip())
            if not m:
                continue
            msg = re.sub(r"\d+", "N", f"[{m.group(1)}] {m.group(2)}")
            counts[msg] = counts.get(msg, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def cmd_record(a):
    rec = {"scenario": a.scenario, "system": a.system, "payload": a.payload,
           "connections": a.connections, "round": a.round, "role": a.role,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "tb": load_json(a.tb)}
    if a.mem:
        rec["mem"] = load_json(a.mem)
    if a.series:
        with open(a.series) as f:
            rec["series"] = [json.loads(line) for line in f if line.strip()]
    if a.progress:
        rec["progress"] = parse_progress(a.progress)
    if a.verify:
        rec["verify"] = load_json(a.verify)
    if a.errlog:
        rec["nginx_errors"] = summarize_errlog(a.errlog)
    for kv in a.note or []:
        k, _, v = kv.partition("=")
        try:
            v = json.loads(v)
        except ValueError:
            pass
        rec.setdefault("notes", {})[k] = v
    json.dump(rec, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- figures of one record

def rps(r):
    return r["tb"]["rates"]["requests_per_s"]


def evps(r):
    return r["tb"]["rates"]["events_per_s"]


def p99(r):
    return r["tb"]["latency_ms"]["p99"]


def rss_mib(r, label=None):
    labels = (r.get("mem") or {}).get("labels") or {}
    if label is None:
        return sum(g.get("rss_kib_max", 0) for g in labels.values()) / 1024.0
    return labels.get(label, {}).get("rss_kib_max", 0) / 1024.0


def errors(r):
    return r["tb"]["errors"]["total"]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, nd=0):
    if v is None:
        return "n/a"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def ratio(v, base):
    if v is None or not base:
        return "n/a"
    return f"{v / base:.2f}"


def select(recs, scenario, **kw):
    out = []
    for r in recs:
        if r["scenario"] != scenario:
            continue
        if all(r.get(k) == v for k, v in kw.items()):
            out.append(r)
    return out


def median_of(recs, scenario, system, payload, conns, fn):
    return med([fn(r) for r in select(recs, scenario, system=system, payload=payload,
                                      connections=conns)])


def tb_command(r):
    """The trackbench command line, with the run's scratch paths shortened."""
    c = " ".join(r["tb"]["command"])
    c = re.sub(r"\S*/bin/trackbench", "bin/trackbench", c)
    return re.sub(r"\S*/trackd-scen\.\w+/runs/", "$WORK/", c)


def ratio_median(recs, scen, system, payload, conns, fn):
    """Median over rounds of system/BASE, each round against the BASE run of the same round:
    the machine's other load drifts between rounds, much less within one."""
    base = {r["round"]: fn(r) for r in select(recs, scen, system=BASE, payload=payload,
                                               connections=conns)}
    vals = [fn(r) / base[r["round"]] for r in select(recs, scen, system=system, payload=payload,
                                                     connections=conns)
            if base.get(r["round"])]
    return med(vals)


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}"


# ---- tables

def table_compare(recs, scen="compare"):
    rs = select(recs, scen)
    if not rs:
        return []
    systems = [s for s, _ in SYSTEMS if any(r["system"] == s for r in rs)]
    table_conns = max(set(r["connections"] for r in rs if r["payload"] == "post50") or {64})
    sweep = sorted(set(r["connections"] for r in rs if r["payload"] == "get1"))
    top = max(sweep)
    rounds = max(r["round"] for r in rs)
    out = []
    title = "Side by side" if scen == "compare" else "Throughput per core (one trackd worker)"
    out.append(f"### {title}: medians of {rounds} interleaved rounds, one server core")
    out.append("")
    out.append("Values are medians over the rounds; each ratio is the median over the rounds of "
               "system / nginx `return 200 \"1\"` measured in the same round. get1 = one event "
               "per `GET /track?data=<base64>`; post50 = 50 events per form POST "
               f"(`data=<base64>`), both closed loop over {table_conns} keep-alive connections. "
               f"Memory: peak resident set of all the system's processes during the "
               f"{top}-connection get1 run.")
    out.append("")
    out.append("| system | get1 requests/s | ratio | post50 events/s | ratio | get1 p99 ms | ratio "
               f"| post50 p99 ms | memory MiB @{top} | ratio | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        g = median_of(rs, scen, s, "get1", table_conns, rps)
        e = median_of(rs, scen, s, "post50", table_conns, evps)
        p = median_of(rs, scen, s, "get1", table_conns, p99)
        pp = median_of(rs, scen, s, "post50", table_conns, p99)
        m = median_of(rs, scen, s, "get1", top, rss_mib)
        errs = sum(errors(r) for r in rs if r["system"] == s)
        rr = lambda payload, conns, fn: fmt_ratio(ratio_median(rs, scen, s, payload, conns, fn))
        out.append(f"| {DESC.get(s, s)} | {fmt(g)} | {rr('get1', table_conns, rps)} | {fmt(e)} | "
                   f"{rr('post50', table_conns, evps)} | {fmt(p, 2)} | "
                   f"{rr('get1', table_conns, p99)} | {fmt(pp, 2)} | {fmt(m, 1)} | "
                   f"{rr('get1', top, rss_mib)} | {errs} |")
    out.append("")
    if rounds > 1:
        # The least disturbed round of each system: on a shared machine the best of N runs is the
        # better estimate of what the system can do, the median of what it did.
        out.append(f"Best of the {rounds} rounds (the run least disturbed by the machine's other "
                   "load), as a ratio to the best nginx `return 200` run:")
        out.append("")
        out.append("| system | get1 requests/s | ratio | post50 events/s | ratio | lowest get1 p99 ms |")
        out.append("|---|---:|---:|---:|---:|---:|")
        best = lambda sys_, payload, fn: max(
            [fn(r) for r in select(rs, scen, system=sys_, payload=payload,
                                   connections=table_conns)] or [None], key=lambda v: v or 0)
        bg, be = best(BASE, "get1", rps), best(BASE, "post50", evps)
        for s in systems:
            g, e = best(s, "get1", rps), best(s, "post50", evps)
            lo = min([p99(r) for r in select(rs, scen, system=s, payload="get1",
                                             connections=table_conns)] or [None],
                     key=lambda v: v if v is not None else 0)
            out.append(f"| {s} | {fmt(g)} | {ratio(g, bg)} | {fmt(e)} | {ratio(e, be)} | "
                       f"{fmt(lo, 2)} |")
        out.append("")
    if len(sweep) > 1:
        out.append("Sweep (get1, closed loop): requests/s and p99 (ms) by connections, medians.")
        out.append("")
        out.append("| system | " + " | ".join(f"{c} conns" for c in sweep) + " |")
        out.append("|---|" + "---:|" * len(sweep))
        for s in systems:
            cells = []
            for c in sweep:
                v = median_of(rs, scen, s, "get1", c, rps)
                q = median_of(rs, scen, s, "get1", c, p99)
                cells.append(f"{fmt(v)} / {fmt(q, 1)}")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("Every run (round, system, payload, connections: requests/s, events/s, p99 ms, "
               "peak MiB, errors):")
    out.append("")
    out.append("| round | system | payload | conns | requests/s | events/s | p99 ms | MiB | errors |")
    out.append("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rs:
        out.append(f"| {r['round']} | {r['system']} | {r['payload']} | {r['connections']} | "
                   f"{fmt(rps(r))} | {fmt(evps(r))} | {fmt(p99(r), 2)} | {fmt(rss_mib(r), 1)} | "
                   f"{errors(r)} |")
    out.append("")
    return out


def table_throughput(recs):
    """Per-core figures of trackd alone, from the compare scenario or its own."""
    for scen in ("compare", "throughput"):
        rs = [r for r in select(recs, scen) if r["system"] in
              ("trackd-none", "trackd-write", "trackd-fsync")]
        if rs:
            break
    else:
        return []
    conns = max(set(r["connections"] for r in rs if r["payload"] == "post50") or {64})
    out = ["### Throughput per core: one trackd worker on CPU 0, load on CPU 1", ""]
    out.append(f"Closed loop, {conns} keep-alive connections, medians of the interleaved rounds.")
    out.append("")
    out.append("| durability | get1 requests/s (= events/s) | get1 p99 ms | post50 requests/s "
               "| post50 events/s | post50 p99 ms |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for s in ("trackd-none", "trackd-write", "trackd-fsync"):
        if not any(r["system"] == s for r in rs):
            continue
        out.append(f"| {s.split('-')[1]} | {fmt(median_of(rs, scen, s, 'get1', conns, rps))} | "
                   f"{fmt(median_of(rs, scen, s, 'get1', conns, p99), 2)} | "
                   f"{fmt(median_of(rs, scen, s, 'post50', conns, rps))} | "
                   f"{fmt(median_of(rs, scen, s, 'post50', conns, evps))} | "
                   f"{fmt(median_of(rs, scen, s, 'post50', conns, p99), 2)} |")
    out.append("")
    return out


def success(tb):
    req = tb["requests"]
    attempts = req["ok"] + req["rejected_2xx"] + tb["errors"]["total"] + req["unsent"]
    return 100.0 * req["ok"] / attempts if attempts else 0.0


def procs_lines(r):
    out = []
    for p in (r.get("mem") or {}).get("processes", []):
        out.append(f"| {p['label']} | {p['pid']} | {p['name']} | {p['rss_kib_max'] / 1024:.1f} | "
                   f"{p['rss_kib_last'] / 1024:.1f} |")
    return out


def table_users(recs):
    rs = select(recs, "users")
    if not rs:
        return []
    r = rs[-1]
    tb = r["tb"]
    lat = tb["latency_ms"]
    labels = r["mem"]["labels"]
    g = labels.get("trackd", {})
    conns = r["connections"]
    per_conn = (g.get("rss_kib_max", 0) - g.get("rss_kib_first", 0)) / conns if conns else 0
    out = [f"### {conns:,} concurrent connections at a modest rate", ""]
    out.append(f"`{tb_command(r)}`")
    out.append("")
    out.append("| figure | value |")
    out.append("|---|---:|")
    peak = max((p["conns"] for p in r.get("progress", [])), default=None)
    if peak is not None:
        out.append(f"| connections open at once (peak of the per-second counts) | {peak:,} |")
    out.append(f"| requests ok / completed | {tb['requests']['ok']:,} / "
               f"{tb['requests']['completed']:,} |")
    out.append(f"| success rate (ok / all attempts incl. errors and unsent) | "
               f"{success(tb):.3f} % |")
    out.append(f"| errors | {tb['errors']['total']:,} "
               f"({', '.join(f'{k} {v}' for k, v in tb['errors'].items() if k != 'total' and v)}) |")
    out.append(f"| requests/s achieved (target {tb['options']['rate']:,.0f}) | {rps(r):,.0f} |")
    out.append(f"| latency p50 / p90 / p99 / p99.9 / max ms | {lat['p50']:.2f} / {lat['p90']:.2f} / "
               f"{lat['p99']:.2f} / {lat['p99.9']:.2f} / {lat['max']:.2f} |")
    out.append(f"| trackd RSS, all processes, before / peak | {g.get('rss_kib_first', 0) / 1024:.1f} / "
               f"{g.get('rss_kib_max', 0) / 1024:.1f} MiB |")
    out.append(f"| trackd RSS per connection (peak - before) / connections | {per_conn:.2f} KiB |")
    out.append("")
    out.append("| group | pid | process | peak RSS MiB | last RSS MiB |")
    out.append("|---|---:|---|---:|---:|")
    out.extend(procs_lines(r))
    out.append("")
    return out


SPIKE_TITLES = {
    "deployed": "conf/nginx.conf.in as deployed (adapted to one client address)",
    "capped": "proposal: nginx caps API requests in flight, keeps upstream connections, "
              "never marks a worker down",
}


def table_spike(recs):
    rs = select(recs, "spike")
    if not rs:
        return []
    out = ["### The 2012 spike: 100 connections to the maximum within one second, through nginx",
           ""]
    variants = []
    for r in rs:
        if r["system"] not in variants:
            variants.append(r["system"])
    for variant in variants:
        vr = [r for r in rs if r["system"] == variant]
        out.extend(spike_variant(variant, vr))
    return out


def spike_variant(variant, rs):
    flood = next((r for r in rs if r["role"] == "flood"), None)
    canary = next((r for r in rs if r["role"] == "canary"), None)
    notes = (flood or {}).get("notes") or {}
    out = [f"#### Spike, {SPIKE_TITLES.get(variant, variant)}", ""]
    if notes:
        out.append("trackd: " + ", ".join(f"{k} {v}" for k, v in notes.items()))
        out.append("")
    for r in (flood, canary):
        if r is None:
            continue
        tb = r["tb"]
        lat = tb["latency_ms"]
        st = ", ".join(f"{k}: {v:,}" for k, v in sorted(tb["status"].items()))
        ra = tb["retry_after"]
        out.append(f"**{r['role']}**: `{tb_command(r)}`")
        out.append("")
        out.append("| figure | value |")
        out.append("|---|---:|")
        out.append(f"| requests completed / ok | {tb['requests']['completed']:,} / "
                   f"{tb['requests']['ok']:,} |")
        out.append(f"| statuses | {st or 'none'} |")
        out.append(f"| Retry-After seen | {ra.get('count', 0):,}"
                   + (f" ({ra['min_s']}..{ra['max_s']} s)" if ra.get("count") else "") + " |")
        e = tb["errors"]
        out.append(f"| transport errors: connect / timeout / read / write / parse | "
                   f"{e['connect']:,} / {e['timeout']:,} / {e['read']:,} / {e['write']:,} / "
                   f"{e['parse']:,} |")
        if tb["requests"]["unsent"]:
            out.append(f"| unsent (open loop, no free connection) | {tb['requests']['unsent']:,} |")
        out.append(f"| latency p50 / p99 / p99.9 / max ms (all answers) | {lat['p50']:.2f} / "
                   f"{lat['p99']:.2f} / {lat['p99.9']:.2f} / {lat['max']:.2f} |")
        v = r.get("verify")
        if v:
            out.append(f"| ledger: acknowledged / found / missing / duplicated | "
                       f"{v['acknowledged']:,} / {v['found']:,} / {v['missing']:,} / "
                       f"{v['duplicated']:,} ({'OK' if v['ok'] else 'FAIL'}) |")
        out.append("")
    if flood is None:
        return out
    labels = flood["mem"]["labels"]
    out.append("Memory, sampled every 100 ms over the whole spike (sum over each program's "
               "processes):")
    out.append("")
    out.append("| program | before MiB | peak MiB | after MiB | processes |")
    out.append("|---|---:|---:|---:|---:|")
    for k, g in labels.items():
        if not g:
            continue
        out.append(f"| {k} | {g['rss_kib_first'] / 1024:.1f} | {g['rss_kib_max'] / 1024:.1f} | "
                   f"{g['rss_kib_last'] / 1024:.1f} | {g['procs_max']} |")
    out.append("")
    out.append("| group | pid | process | peak RSS MiB | last RSS MiB |")
    out.append("|---|---:|---|---:|---:|")
    out.extend(procs_lines(flood))
    out.append("")
    errs = flood.get("nginx_errors") or {}
    if errs:
        out.append("nginx error log, by message:")
        out.append("")
        out.append("| count | message |")
        out.append("|---:|---|")
        for msg, n in list(errs.items())[:8]:
            out.append(f"| {n:,} | {msg.replace('|', '/')} |")
        out.append("")
    prog = flood.get("progress") or []
    if prog:
        out.append("Flood, second by second (trackbench progress; p99 over all answers of "
                   "that second):")
        out.append("")
        out.append("| s | conns | requests/s | p99 ms | errors | non-2xx |")
        out.append("|---:|---:|---:|---:|---:|---|")
        for p in prog:
            st = ", ".join(f"{k}: {v}" for k, v in (p.get("status") or {}).items())
            out.append(f"| {p['t']} | {p['conns']:,} | {p['rps']:,.0f} | {p['p99_ms']:.1f} | "
                       f"{p['errors']:,} | {st} |")
        out.append("")
    return out


def table_long(recs):
    rs = select(recs, "long")
    if not rs:
        return []
    r = rs[-1]
    tb = r["tb"]
    lat = tb["latency_ms"]
    prog = r.get("progress") or []
    p99s = [p["p99_ms"] for p in prog if p["rps"] > 0]
    out = [f"### Long run: {tb['options']['duration_s']:.0f} s at a fixed rate", ""]
    out.append(f"`{tb_command(r)}`")
    out.append("")
    out.append("| figure | value |")
    out.append("|---|---:|")
    notes = r.get("notes") or {}
    if notes.get("capacity"):
        out.append(f"| capacity measured (closed loop) / rate asked (70 %) | "
                   f"{notes['capacity']:,.0f} / {tb['options']['rate']:,.0f} req/s |")
    else:
        out.append(f"| rate asked (LONG_RATE) | {tb['options']['rate']:,.0f} req/s |")
    out.append(f"| requests/s achieved | {rps(r):,.0f} |")
    out.append(f"| success rate | {success(tb):.3f} % ({tb['errors']['total']:,} errors, "
               f"{tb['requests']['unsent']:,} unsent) |")
    out.append(f"| latency p50 / p99 / p99.9 / max ms (whole run, corrected for coordinated "
               f"omission) | {lat['p50']:.2f} / {lat['p99']:.2f} / {lat['p99.9']:.2f} / "
               f"{lat['max']:.2f} |")
    if p99s:
        qs = statistics.quantiles(p99s, n=10) if len(p99s) >= 2 else [p99s[0]] * 9
        out.append(f"| per-second p99 ms: min / median / 90th pct / max of {len(p99s)} seconds | "
                   f"{min(p99s):.2f} / {statistics.median(p99s):.2f} / {qs[8]:.2f} / "
                   f"{max(p99s):.2f} |")
        n = len(p99s)
        if n >= 4:
            q = n // 4
            first, last = statistics.median(p99s[:q]), statistics.median(p99s[-q:])
            out.append(f"| median per-second p99, first quarter vs last quarter | "
                       f"{first:.2f} vs {last:.2f} ms |")
    series = [s for s in r.get("series", []) if s["label"] == "trackd"]
    if series:
        rss = [s["rss_kib"] for s in series]
        fds = [s.get("fds", 0) for s in series]
        out.append(f"| trackd RSS (all processes) first / max / last, {len(series)} samples | "
                   f"{rss[0] / 1024:.1f} / {max(rss) / 1024:.1f} / {rss[-1] / 1024:.1f} MiB |")
        out.append(f"| trackd open descriptors first / max / last | {fds[0]} / {max(fds)} / "
                   f"{fds[-1]} |")
        out.append("")
        out.append("Samples every 5 s (t s: RSS MiB, fds): " + ", ".join(
            f"{s['t']:.0f}: {s['rss_kib'] / 1024:.1f}, {s.get('fds', 0)}" for s in series))
    out.append("")
    if prog:
        # Ten-second windows keep the table short for a 5-minute run. The machine's pressure
        # (procmon --psi) tells a stall of trackd from a moment when the shared machine was busy.
        psi = [x for x in r.get("series", []) if x["label"] == "machine"]
        out.append("Per 10-second window: requests/s (mean), worst per-second p99, and the "
                   "machine's CPU / I/O pressure (share of time some task waited, mean of the "
                   "samples in the window; includes this benchmark's own load):")
        out.append("")
        out.append("| seconds | requests/s | worst p99 ms | CPU pressure % | I/O pressure % |")
        out.append("|---|---:|---:|---:|---:|")
        for i in range(0, len(prog), 10):
            w = prog[i:i + 10]
            t0, t1 = w[0]["t"] - 1, w[-1]["t"]
            ps = [x for x in psi if t0 < x["t"] <= t1 + 0.5]
            cpu = statistics.mean(x.get("cpu_some_pct", 0) for x in ps) if ps else None
            io = statistics.mean(x.get("io_some_pct", 0) for x in ps) if ps else None
            out.append(f"| {w[0]['t']}-{w[-1]['t']} | {statistics.mean(p['rps'] for p in w):,.0f} | "
                       f"{max(p['p99_ms'] for p in w):.2f} | {fmt(cpu, 1)} | {fmt(io, 1)} |")
        out.append("")
    return out


def table_capacity(recs):
    """Events/s per core and memory per 1,000 connections, for sizing a fleet."""
    out = []
    src = "compare" if select(recs, "compare") else "throughput"
    rs = select(recs, src)
    users = select(recs, "users")
    if not rs and not users:
        return out
    out.append("### Capacity planning figures (from this run)")
    out.append("")
    out.append("| figure | value |")
    out.append("|---|---:|")
    for s in ("trackd-fsync", "trackd-write"):
        if not any(r["system"] == s for r in rs):
            continue
        conns = max(set(r["connections"] for r in rs if r["payload"] == "post50") or {64})
        g = median_of(rs, src, s, "get1", conns, rps)
        e = median_of(rs, src, s, "post50", conns, evps)
        out.append(f"| {s}: events/s per core, single-event requests | {fmt(g)} |")
        out.append(f"| {s}: events/s per core, 50-event batches | {fmt(e)} |")
    if users:
        r = users[-1]
        g = r["mem"]["labels"].get("trackd", {})
        conns = r["connections"]
        if conns:
            per = (g.get("rss_kib_max", 0) - g.get("rss_kib_first", 0)) / conns * 1000 / 1024
            out.append(f"| trackd memory per 1,000 open connections | {per:.2f} MiB |")
            out.append(f"| trackd resident memory, all processes, with {conns:,} connections | "
                       f"{g.get('rss_kib_max', 0) / 1024:.1f} MiB |")
    out.append("")
    return out


def cmd_tables(a):
    recs = read_records(a.results)
    lines = []
    for part in (table_throughput, table_compare, table_users, table_spike, table_long,
                 table_capacity):
        lines.extend(part(recs))
    cmds = []
    for r in recs:
        c = tb_command(r)
        if r["scenario"] in ("compare", "throughput"):
            # One line per distinct shape of command (rounds repeat them).
            c = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", c)
        if c not in cmds:
            cmds.append(c)
    lines.append("### trackbench command lines of this run")
    lines.append("")
    lines.extend(f"    {c}" for c in cmds)
    lines.append("")
    sys.stdout.write("\n".join(lines))


def cmd_line(a):
    """A one-line summary of each record read on stdin (progress output of the scenarios)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        r = json.loads(line)
        print(f"  r{r['round']} {r['system']:<19} {r['payload']:<6} c{r['connections']:<5} "
              f"{rps(r):9.0f} req/s {evps(r):9.0f} ev/s p99 {p99(r):8.2f} ms "
              f"{rss_mib(r):6.1f} MiB  errors {errors(r)}")


def cmd_median(a):
    recs = read_records(a.results)
    fields = {"requests_per_s": rps, "events_per_s": evps, "p99_ms": p99}
    rs = [r for r in recs if r["system"] == a.system and r["payload"] == a.payload
          and r["connections"] == a.connections and r["scenario"] in ("compare", "throughput")]
    v = med([fields[a.field](r) for r in rs])
    if v is None:
        sys.exit(f"report: no runs of {a.system} {a.payload} at {a.connections} connections")
    print(f"{v:.0f}")


def main():
    ap = argparse.ArgumentParser(description="benchmark result records and tables")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--scenario", required=True)
    r.add_argument("--system", required=True)
    r.add_argument("--payload", default="")
    r.add_argument("--connections", type=int, default=0)
    r.add_argument("--round", type=int, default=1)
    r.add_argument("--role", default="")
    r.add_argument("--tb", required=True)
    r.add_argument("--mem")
    r.add_argument("--series")
    r.add_argument("--progress")
    r.add_argument("--verify")
    r.add_argument("--errlog", help="nginx error log to summarize")
    r.add_argument("--note", action="append")
    t = sub.add_parser("tables")
    t.add_argument("results")
    sub.add_parser("line")
    m = sub.add_parser("median")
    m.add_argument("results")
    m.add_argument("system")
    m.add_argument("payload")
    m.add_argument("connections", type=int)
    m.add_argument("field", choices=["requests_per_s", "events_per_s", "p99_ms"])
    a = ap.parse_args()
    {"record": cmd_record, "tables": cmd_tables, "median": cmd_median, "line": cmd_line}[a.cmd](a)


if __name__ == "__main__":
    main()
