"""Step time against model size, lamina and PyTorch, as an SVG: one point per benchmark model
of a `bench/compare.sh` CSV, parameters on a log x axis and step milliseconds on a log y axis.

Usage: python3 bench/plot.py target/bench/compare_adamw.csv docs/step_time.svg

Plain Python (no plotting library), so that it runs wherever compare.sh does.
"""
import csv
import math
import sys

W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 40, 50
SERIES = [("lamina_step_ms", "lamina", "#1f77b4"), ("torch_step_ms", "PyTorch eager", "#d62728")]
MARKERS = {"pre_ln": "circle", "macaron": "square", "peri_ln": "diamond"}


def log_ticks(lo, hi):
    """Powers of ten and their 2x and 5x multiples inside [lo, hi]."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10**e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def label(v):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def marker(kind, x, y, color):
    if kind == "square":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{color}"/>'
    if kind == "diamond":
        return f'<path d="M{x:.1f} {y - 5:.1f} L{x + 5:.1f} {y:.1f} L{x:.1f} {y + 5:.1f} L{x - 5:.1f} {y:.1f} Z" fill="{color}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>'


def plot(rows, title):
    params = [float(r["params"]) for r in rows]
    times = [float(r[k]) for r in rows for k, _, _ in SERIES]
    xlo, xhi = min(params) / 1.5, max(params) * 1.5
    ylo, yhi = min(times) / 1.5, max(times) * 1.5
    px = lambda v: LEFT + (math.log(v) - math.log(xlo)) / (math.log(xhi) - math.log(xlo)) * (W - LEFT - RIGHT)
    py = lambda v: H - BOTTOM - (math.log(v) - math.log(ylo)) / (math.log(yhi) - math.log(ylo)) * (H - TOP - BOTTOM)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14">{title}</text>',
    ]
    for v in log_ticks(xlo, xhi):
        x = px(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{label(v)}</text>')
    for v in log_ticks(ylo, yhi):
        y = py(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">parameters</text>')
    out.append(f'<text transform="translate(18 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">step ms</text>')
    for key, name, color in SERIES:
        pts = sorted((float(r["params"]), float(r[key]), r["model"]) for r in rows)
        for variant, kind in MARKERS.items():
            line = [(px(p), py(t)) for p, t, m in pts if m.endswith(variant)]
            if len(line) > 1:
                d = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f} {y:.1f}" for i, (x, y) in enumerate(line))
                out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-opacity="0.5"/>')
        for p, t, m in pts:
            kind = next((k for v, k in MARKERS.items() if m.endswith(v)), "circle")
            out.append(marker(kind, px(p), py(t), color))
    lx = W - RIGHT + 16
    for i, (_, name, color) in enumerate(SERIES):
        out.append(f'<rect x="{lx}" y="{TOP + 18 * i}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 18}" y="{TOP + 18 * i + 10}">{name}</text>')
    for i, (variant, kind) in enumerate(MARKERS.items()):
        y = TOP + 60 + 18 * i
        out.append(marker(kind, lx + 6, y + 6, "#555"))
        out.append(f'<text x="{lx + 18}" y="{y + 10}">{variant.replace("_", "-")}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py COMPARE.csv OUT.svg")
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    optimizer = "AdamW" if "adamw" in sys.argv[1] else "SGD" if "sgd" in sys.argv[1] else "training"
    svg = plot(rows, f"{optimizer} step time against model size (lower is faster)")
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(svg)
    import os

    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
