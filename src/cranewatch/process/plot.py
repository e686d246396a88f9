"""A small inline SVG per finding: the signals around it, one lane each, the incident shaded.

No JavaScript, no fonts beyond the viewer's sans-serif, no external references: the HTML report
embeds the text as is (``Evidence.values["svg"]``). Values are drawn as polylines scaled to each
lane's own range; the onset and detection instants are marked.
"""

from __future__ import annotations

from html import escape

import numpy as np

from cranewatch.process.checks import CheckContext, Incident

WIDTH = 480
LANE = 46
LEFT = 118
MAX_POINTS = 400
COLOURS = ("#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400")


def _lane(t: np.ndarray, x: np.ndarray, top: float, t0: float, t1: float) -> str:
    known = ~np.isnan(x)
    if not known.any():
        return ""
    lo, hi = float(np.min(x[known])), float(np.max(x[known]))
    span = hi - lo if hi > lo else 1.0
    xs = LEFT + (t - t0) / max(t1 - t0, 1e-9) * (WIDTH - LEFT - 6)
    ys = top + LANE - 6 - (np.where(known, x, lo) - lo) / span * (LANE - 12)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs[known], ys[known], strict=True))
    return points


def render(ctx: CheckContext, incident: Incident) -> str:
    frame = ctx.frame
    span = incident.end - incident.start + 1
    pad = max(ctx.seconds(5.0), span // 2)
    lo = max(0, incident.start - pad)
    hi = min(len(frame.t), incident.end + pad + 1)
    step = max(1, (hi - lo) // MAX_POINTS)
    idx = np.arange(lo, hi, step)
    t = frame.t[idx]
    t0, t1 = float(frame.t[lo]), float(frame.t[hi - 1])
    names = [incident.signal, *[r for r in incident.related if r != incident.signal]][:5]
    names = [n for n in names if n in frame]
    height = LANE * max(1, len(names)) + 22

    def x_of(ts: float) -> float:
        return LEFT + (ts - t0) / max(t1 - t0, 1e-9) * (WIDTH - LEFT - 6)

    a, b = x_of(float(frame.t[incident.start])), x_of(float(frame.t[incident.end]))
    d = x_of(float(frame.t[incident.detect]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="10">',
        f"<title>{escape(incident.title)}</title>",
        f'<rect x="{a:.1f}" y="0" width="{max(b - a, 1.5):.1f}" height="{height - 18}" '
        'fill="#f5b7b1" opacity="0.5"/>',
        f'<line x1="{d:.1f}" y1="0" x2="{d:.1f}" y2="{height - 18}" stroke="#922b21" '
        'stroke-dasharray="3,2"/>',
    ]
    for i, name in enumerate(names):
        top = i * LANE
        x = frame[name][idx]
        known = x[~np.isnan(x)]
        label = escape(name)
        rng = f"{known.min():.4g}…{known.max():.4g}" if len(known) else "no data"
        parts.append(f'<text x="2" y="{top + 18}">{label}</text>')
        parts.append(f'<text x="2" y="{top + 31}" fill="#666">{escape(rng)}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{top + LANE - 2}" x2="{WIDTH - 4}" '
                     f'y2="{top + LANE - 2}" stroke="#ddd"/>')
        points = _lane(t, x, top, t0, t1)
        if points:
            parts.append(f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" '
                         f'stroke-width="1.2" points="{points}"/>')
    parts.append(f'<text x="{LEFT}" y="{height - 5}" fill="#444">'
                 f'{t1 - t0:.0f} s shown; shaded: incident; dashed: detection</text>')
    parts.append("</svg>")
    return "".join(parts)
