#!/usr/bin/env python3
"""Turns the CSV of `leadscore bench --scale` into an SVG chart: the engine rate, resident
bytes per user and restore time against users, one panel each, users on a log scale.

    python3 docs/scale/chart.py [CSV [SVG]]

Defaults: target/bench-scale.csv and docs/scale/scale.svg. Python standard library only.
"""

import csv
import math
import sys
from xml.sax.saxutils import escape

# (CSV column, panel title, unit shown on the axis, colour)
METRICS = [
    ("engine_events_per_s", "Engine: Partition::process (the scorer's path)", "events/s", "#1f77b4"),
    ("resident_bytes_per_user", "Resident memory per user", "bytes", "#d62728"),
    ("restore_s", "Full changelog restore", "seconds", "#2ca02c"),
]

PANEL_W, PANEL_H = 300, 220
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50
MAX_ROWS = 100  # a bench run measures at most a handful of sizes


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no rows")
    if len(rows) > MAX_ROWS:
        sys.exit(f"{path}: {len(rows)} rows, at most {MAX_ROWS}")
    missing = [m for m, *_ in METRICS + [("users",)] if m not in rows[0]]
    if missing:
        sys.exit(f"{path}: missing column(s) {', '.join(missing)}")
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            users = float(r["users"])
            values = {m: float(r[m]) for m, *_ in METRICS}
        except ValueError as e:
            sys.exit(f"{path}:{i}: {e}")
        if users <= 0:
            sys.exit(f"{path}:{i}: users must be positive for a log scale")
        out.append((users, values))
    out.sort(key=lambda r: r[0])
    return out


def nice_max(v):
    """A round number at or above v, for the top of a linear axis."""
    if v <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= v:
            return m * step
    return 10 * step


def fmt(v):
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def panel(index, metric, title, unit, colour, rows):
    x0 = index * PANEL_W
    plot_w = PANEL_W - LEFT - RIGHT
    plot_h = PANEL_H - TOP - BOTTOM
    users = [u for u, _ in rows]
    lo = math.floor(math.log10(min(users)))
    hi = math.ceil(math.log10(max(users)))
    if hi == lo:
        hi = lo + 1
    top = nice_max(max(v[metric] for _, v in rows))

    def px(u):
        return x0 + LEFT + (math.log10(u) - lo) / (hi - lo) * plot_w

    def py(v):
        return TOP + plot_h - v / top * plot_h

    parts = [f'<g class="panel" id="panel-{metric}">']
    parts.append(
        f'<text x="{x0 + LEFT + plot_w / 2:.1f}" y="20" text-anchor="middle" '
        f'font-weight="bold">{escape(title)}</text>'
    )
    # Axes and gridlines: powers of ten across, quarters of the range up.
    parts.append(
        f'<rect x="{x0 + LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        f'fill="none" stroke="#888"/>'
    )
    for e in range(lo, hi + 1):
        x = px(10 ** e)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#eee"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{fmt(10 ** e)}</text>'
        )
    for q in range(5):
        v = top * q / 4
        y = py(v)
        parts.append(f'<line x1="{x0 + LEFT}" y1="{y:.1f}" x2="{x0 + LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 + LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    parts.append(
        f'<text x="{x0 + LEFT + plot_w / 2:.1f}" y="{PANEL_H - 12}" text-anchor="middle">'
        f"users (log scale)</text>"
    )
    parts.append(
        f'<text transform="translate({x0 + 14},{TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    points = " ".join(f"{px(u):.1f},{py(v[metric]):.1f}" for u, v in rows)
    parts.append(f'<g class="series" id="series-{metric}" data-metric="{metric}">')
    parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for u, v in rows:
        parts.append(
            f'<circle cx="{px(u):.1f}" cy="{py(v[metric]):.1f}" r="3.5" fill="{colour}">'
            f"<title>{fmt(u)} users: {v[metric]:g} {escape(unit)}</title></circle>"
        )
    parts.append("</g></g>")
    return "\n".join(parts)


def main(argv):
    if len(argv) > 3:
        sys.exit(__doc__)
    src = argv[1] if len(argv) > 1 else "target/bench-scale.csv"
    dst = argv[2] if len(argv) > 2 else "docs/scale/scale.svg"
    rows = read_rows(src)
    width = PANEL_W * len(METRICS)
    body = "\n".join(panel(i, *m, rows) for i, m in enumerate(METRICS))
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" '
        f'viewBox="0 0 {width} {PANEL_H}" font-family="sans-serif" font-size="11">\n'
        f'<rect width="{width}" height="{PANEL_H}" fill="white"/>\n{body}\n</svg>\n'
    )
    with open(dst, "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main(sys.argv)
