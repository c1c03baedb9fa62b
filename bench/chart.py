#!/usr/bin/env python3
"""Draw the concurrency sweep of the side-by-side comparison as an SVG chart.

    chart.py RESULTS.jsonl OUT.svg [--payload get1] [--scenario compare]

Reads the records bench/scenarios.sh wrote (each holds one trackbench --json output), keeps the
closed-loop runs of one payload, takes the median over rounds of each (system, connections)
point, and draws two panels side by side: requests/s against connections (left) and p99
latency against connections (right, logarithmic, since the systems differ by orders of
magnitude). Connections are on a logarithmic axis. The SVG is written by hand: no third-party
package, so the chart can be redrawn anywhere Python 3 runs.
"""
import argparse
import json
import math
import statistics
from xml.sax.saxutils import escape

# One colour and dash per system, fixed so that charts of different runs compare at a glance.
STYLE = {
    "nginx200": ("#555555", "6,4"),
    "nginxlog": ("#999999", "2,3"),
    "eventlet": ("#d62728", ""),
    "trackd-none": ("#9ecae1", ""),
    "trackd-write": ("#1f77b4", ""),
    "trackd-fsync": ("#08306b", ""),
    "nginx+trackd-write": ("#2ca02c", "5,3"),
    "nginx+trackd-fsync": ("#00441b", "5,3"),
}
ORDER = list(STYLE)

W, H = 1000, 440
PANEL_W, PANEL_H = 380, 300
LEFT1, LEFT2, TOP = 80, 560, 50


def points(path, scenario, payload):
    """{system: [(connections, median requests/s, median p99 ms)]} sorted by connections."""
    runs = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("scenario") != scenario or r.get("payload") != payload:
                continue
            tb = r["tb"]
            key = (r["system"], r["connections"])
            runs.setdefault(key, []).append(
                (tb["rates"]["requests_per_s"], tb["latency_ms"]["p99"]))
    out = {}
    for (system, conns), vals in runs.items():
        out.setdefault(system, []).append(
            (conns, statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)))
    for v in out.values():
        v.sort()
    return out


def nice_max(v):
    """A round number >= v for the top of a linear axis."""
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def human(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def panel(svg, x0, title, xs, series, ylog, ylabel):
    """Axes, grid and one polyline per system. series: {system: [(x, y)]}."""
    ys = [y for pts in series.values() for _, y in pts if y > 0]
    xmin, xmax = math.log2(min(xs)), math.log2(max(xs))
    if xmax == xmin:
        xmax += 1
    if ylog:
        lo = 10 ** math.floor(math.log10(min(ys))) if ys else 0.1
        hi = 10 ** math.ceil(math.log10(max(ys))) if ys else 10
        if hi <= lo:
            hi = lo * 10
        ymap = lambda y: TOP + PANEL_H - (math.log10(max(y, lo)) - math.log10(lo)) / (
            math.log10(hi) - math.log10(lo)) * PANEL_H
        ticks = [10 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    else:
        hi = nice_max(max(ys) if ys else 1)
        ymap = lambda y: TOP + PANEL_H - y / hi * PANEL_H
        ticks = [hi * i / 5 for i in range(6)]
    xmap = lambda x: x0 + (math.log2(x) - xmin) / (xmax - xmin) * PANEL_W

    svg.append(f'<text x="{x0 + PANEL_W / 2}" y="{TOP - 18}" class="title">{escape(title)}</text>')
    for t in ticks:
        y = ymap(t)
        svg.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" class="grid"/>')
        svg.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" class="ytick">{human(t)}</text>')
    for x in xs:
        px = xmap(x)
        svg.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{TOP + PANEL_H}" class="grid"/>')
        svg.append(f'<text x="{px:.1f}" y="{TOP + PANEL_H + 16}" class="xtick">{x}</text>')
    svg.append(f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" class="frame"/>')
    svg.append(f'<text x="{x0 + PANEL_W / 2}" y="{TOP + PANEL_H + 34}" class="axis">'
               'connections (closed loop, log scale)</text>')
    svg.append(f'<text transform="translate({x0 - 58},{TOP + PANEL_H / 2}) rotate(-90)" '
               f'class="axis">{escape(ylabel)}</text>')
    for system in ORDER:
        pts = series.get(system)
        if not pts:
            continue
        colour, dash = STYLE[system]
        coords = " ".join(f"{xmap(x):.1f},{ymap(y):.1f}" for x, y in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        svg.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/>')
        for x, y in pts:
            svg.append(f'<circle cx="{xmap(x):.1f}" cy="{ymap(y):.1f}" r="3" fill="{colour}">'
                       f'<title>{escape(system)}: {x} connections, {y:,.2f}</title></circle>')


def main():
    ap = argparse.ArgumentParser(description="SVG chart of the concurrency sweep")
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--payload", default="get1")
    ap.add_argument("--scenario", default="compare")
    ap.add_argument("--subtitle", default="")
    a = ap.parse_args()

    data = points(a.results, a.scenario, a.payload)
    if not data:
        raise SystemExit(f"chart: no {a.scenario}/{a.payload} runs in {a.results}")
    xs = sorted({c for pts in data.values() for c, _, _ in pts})
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           "<style>.grid{stroke:#e5e5e5;stroke-width:1}.frame{fill:none;stroke:#333}"
           ".title{font-size:14px;font-weight:bold;text-anchor:middle}"
           ".axis{text-anchor:middle;fill:#333}.xtick{text-anchor:middle;fill:#555}"
           ".ytick{text-anchor:end;fill:#555}.legend{fill:#222}</style>",
           f'<rect width="{W}" height="{H}" fill="white"/>']
    panel(svg, LEFT1, "Throughput (requests/s, median)", xs,
          {s: [(c, r) for c, r, _ in pts] for s, pts in data.items()}, False, "requests/s")
    panel(svg, LEFT2, "p99 latency (ms, median, log scale)", xs,
          {s: [(c, p) for c, _, p in pts] for s, pts in data.items()}, True, "p99 ms")
    # Legend along the bottom, in the fixed order.
    lx, ly = LEFT1, H - 22
    for system in [s for s in ORDER if s in data]:
        colour, dash = STYLE[system]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        svg.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/>')
        svg.append(f'<text x="{lx + 27}" y="{ly + 4}" class="legend">{escape(system)}</text>')
        lx += 30 + 6.5 * len(system)
    if a.subtitle:
        svg.append(f'<text x="{W / 2}" y="16" class="axis">{escape(a.subtitle)}</text>')
    svg.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
