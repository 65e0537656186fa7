"""Small, dependency-free charts as inline SVG strings, for the self-contained HTML reports
(the dataset audit, `pipeline.audit`; a training run's report, `train.report`).

Why not matplotlib: the reports need a few chart kinds (horizontal bars, a histogram, a
log-log line chart, line charts over steps or shots), and hand-written SVG keeps a report
byte-for-byte deterministic (no embedded dates, random ids or font subsets), text in the
charts stays selectable and searchable, the file stays small, it scales crisply, and the
project gains no dependency. Every chart is `<svg class="plot" data-plot=NAME>` with a <title>.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
BLUE, ORANGE, GREEN, GREY, RED = "#3b6fb6", "#e07b39", "#3f9a5a", "#9aa3ad", "#c0392b"
PALETTE = (BLUE, ORANGE, GREEN, "#8e5fb5", GREY)


def fmt_int(v) -> str:
    return "–" if v is None else f"{int(v):,}"


def fmt_pct(v, digits: int = 1) -> str:
    """Percent; shares too small for `digits` keep two significant digits (0.04%, not 0.0%)."""
    if v is None:
        return "–"
    p = 100 * v
    if 0 < abs(p) < 10**-digits:
        return f"{p:.2g}%"
    return f"{p:.{digits}f}%"


def fmt_num(v) -> str:
    if v is None:
        return "–"
    v = float(v)
    if v >= 1e9:
        return f"{v / 1e9:.3g}B"
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:,.0f}" if v == int(v) else f"{v:.3g}"


def fmt_bytes(v) -> str:
    if v is None:
        return "–"
    v = float(v)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if v < 1000 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{v:.1f} PB"


def _t(s) -> str:
    return escape(str(s), quote=True)


def _clip(s: str, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _open(name: str, title: str, w: int, h: int) -> list[str]:
    return [
        f'<svg class="plot" data-plot="{_t(name)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'role="img" aria-label="{_t(title)}" style="{FONT}">',
        f"<title>{_t(title)}</title>",
        f'<text x="0" y="14" font-size="13" font-weight="600" fill="#222">{_t(title)}</text>',
    ]


def hbars(
    name: str,
    title: str,
    items: list[tuple[str, float]],
    *,
    values: list[str] | None = None,
    colors: list[str] | None = None,
    width: int = 560,
    label_width: int = 170,
    note: str = "",
    overlay: list[float] | None = None,
    overlay_color: str = BLUE,
) -> str:
    """Horizontal bars: one row per (label, value); `values` overrides the printed value;
    `overlay` draws a second value over each bar (e.g. after vs before)."""
    row, top = 22, 26
    h = top + row * max(1, len(items)) + (22 if note else 8)
    out = _open(name, title, width, h)
    vmax = max([v for _, v in items if v is not None] + [0]) or 1
    bar_w = width - label_width - 110
    for i, (label, v) in enumerate(items):
        y = top + i * row
        v = v or 0
        w = max(0.0, bar_w * v / vmax)
        color = colors[i] if colors else BLUE
        text = values[i] if values else fmt_int(v)
        out.append(
            f'<text x="{label_width - 6}" y="{y + 14}" font-size="11" text-anchor="end" fill="#333">'
            f"<title>{_t(label)}</title>{_t(_clip(label, 30))}</text>"
        )
        out.append(f'<rect x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row - 7}" rx="2" fill="{color}"/>')
        if overlay is not None and overlay[i] is not None:
            ow = max(0.0, bar_w * overlay[i] / vmax)
            out.append(
                f'<rect x="{label_width}" y="{y + 3}" width="{ow:.1f}" height="{row - 7}" rx="2" '
                f'fill="{overlay_color}"/>'
            )
        out.append(f'<text x="{label_width + w + 5:.1f}" y="{y + 14}" font-size="11" fill="#333">{_t(text)}</text>')
    if not items:
        out.append(f'<text x="{label_width}" y="{top + 14}" font-size="11" fill="#777">no data</text>')
    if note:
        out.append(f'<text x="0" y="{h - 6}" font-size="10" fill="#666">{_t(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def columns(
    name: str,
    title: str,
    bins: list[tuple[str, float]],
    *,
    xlabel: str = "",
    ylabel: str = "count",
    color: str = BLUE,
    width: int = 560,
    height: int = 230,
    highlight: set[int] | None = None,
) -> str:
    """A histogram over fixed, labelled bins (vertical bars with counts above them)."""
    left, right, top, bottom = 48, 8, 30, 44
    out = _open(name, title, width, height)
    pw, ph = width - left - right, height - top - bottom
    vmax = max([v for _, v in bins] + [0]) or 1
    ticks = _nice_ticks(vmax)
    vtop = ticks[-1]
    for tv in ticks:
        y = top + ph - ph * tv / vtop
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" fill="#666">'
            f"{_t(fmt_num(tv))}</text>"
        )
    n = max(1, len(bins))
    slot = pw / n
    for i, (label, v) in enumerate(bins):
        bh = ph * (v or 0) / vtop
        x = left + i * slot + slot * 0.12
        y = top + ph - bh
        fill = ORANGE if highlight and i in highlight else color
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.76:.1f}" height="{bh:.1f}" fill="{fill}">'
            f"<title>{_t(label)}: {fmt_int(v)}</title></rect>"
        )
        if v:
            out.append(
                f'<text x="{x + slot * 0.38:.1f}" y="{y - 3:.1f}" font-size="9" text-anchor="middle" '
                f'fill="#444">{_t(fmt_num(v))}</text>'
            )
        out.append(
            f'<text x="{x + slot * 0.38:.1f}" y="{top + ph + 13}" font-size="9.5" text-anchor="middle" '
            f'fill="#444">{_t(label)}</text>'
        )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>')
    if xlabel:
        out.append(
            f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="10.5" text-anchor="middle" '
            f'fill="#555">{_t(xlabel)}</text>'
        )
    if ylabel:
        out.append(
            f'<text x="11" y="{top + ph / 2:.1f}" font-size="10.5" text-anchor="middle" fill="#555" '
            f'transform="rotate(-90 11 {top + ph / 2:.1f})">{_t(ylabel)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _nice_ticks(vmax: float, n: int = 4, vmin: float = 0.0) -> list[float]:
    """About `n` round steps (1, 2, 2.5, 5 x 10^k) from at or below `vmin` to at or above `vmax`."""
    raw = (vmax - vmin) / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(vmin / step) * step
    k = math.ceil((vmax - start) / step)
    return [start + step * i for i in range(k + 1)]


def loglog(
    name: str,
    title: str,
    series: list[tuple[str, list[list[int]], str]],
    *,
    xlabel: str,
    ylabel: str,
    hline: tuple[float, str] | None = None,
    width: int = 560,
    height: int = 300,
) -> str:
    """Rank-frequency lines on log-log axes: series = [(label, [[x, y], ...], color)]."""
    left, right, top, bottom = 52, 12, 30, 40
    out = _open(name, title, width, height)
    pw, ph = width - left - right, height - top - bottom
    xs = [p[0] for _, pts, _ in series for p in pts if p[0] > 0]
    ys = [p[1] for _, pts, _ in series for p in pts if p[1] > 0] + ([hline[0]] if hline else [])
    if not xs or not ys:
        out.append(f'<text x="{left}" y="{top + 20}" font-size="11" fill="#777">no data</text></svg>')
        return "\n".join(out)
    x1 = 10 ** max(1, math.ceil(math.log10(max(xs)) + 1e-9))
    y0 = 10 ** math.floor(math.log10(min(ys)))
    y1 = 10 ** max(math.log10(y0) + 1, math.ceil(math.log10(max(ys)) + 1e-9))
    lx0, lx1, ly0, ly1 = 0.0, math.log10(x1), math.log10(y0), math.log10(y1)

    def px(x: float) -> float:
        return left + pw * (math.log10(x) - lx0) / (lx1 - lx0)

    def py(y: float) -> float:
        return top + ph - ph * (math.log10(y) - ly0) / (ly1 - ly0)

    for k in range(int(lx0), int(lx1) + 1):
        x = px(10**k)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 13}" font-size="10" text-anchor="middle" fill="#666">'
            f"{_t(fmt_num(10**k))}</text>"
        )
    for k in range(int(ly0), int(ly1) + 1):
        y = py(10**k)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" fill="#666">'
            f"{_t(fmt_num(10**k))}</text>"
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    if hline:
        y = py(hline[0])
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="{RED}" '
            f'stroke-dasharray="5,4" stroke-width="1.2"/>'
        )
        out.append(
            f'<text x="{left + pw - 4}" y="{y - 4:.1f}" font-size="10" text-anchor="end" fill="{RED}">'
            f"{_t(hline[1])}</text>"
        )
    for i, (label, pts, color) in enumerate(series):
        good = [(x, y) for x, y in pts if x > 0 and y > 0]
        if not good:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
        # Later series are drawn thinner and dotted, so one lying exactly on another stays visible.
        dash = ' stroke-dasharray="2,3"' if i >= 2 else ""
        sw = (3.0, 2.0, 1.6, 1.6)[min(i, 3)]
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{sw}"{dash} '
            f'stroke-linejoin="round"><title>{_t(label)}</title></polyline>'
        )
        ly = top + 10 + 15 * i
        out.append(
            f'<line x1="{left + pw - 190}" y1="{ly}" x2="{left + pw - 166}" y2="{ly}" stroke="{color}" '
            f'stroke-width="{sw}"{dash}/>'
        )
        out.append(f'<text x="{left + pw - 160}" y="{ly + 4}" font-size="10.5" fill="#333">{_t(label)}</text>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="10.5" text-anchor="middle" fill="#555">'
        f"{_t(xlabel)}</text>"
    )
    out.append(
        f'<text x="12" y="{top + ph / 2:.1f}" font-size="10.5" text-anchor="middle" fill="#555" '
        f'transform="rotate(-90 12 {top + ph / 2:.1f})">{_t(ylabel)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


@dataclass
class Line:
    """A series of `lines`: `points` [(x, y)]; `spread` (a ± value per point, e.g. a std) is
    drawn as a shaded band; `markers` draws each point (a lone point always is)."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str = BLUE
    dashed: bool = False
    spread: Sequence[float | None] | None = None
    markers: bool = False


@dataclass
class Ref:
    """A horizontal reference line across a `lines` chart (a chance level, a baseline)."""

    y: float
    label: str
    color: str = GREY
    dashed: bool = True


def finite(*vs) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in vs)


def _dash(dashed: bool) -> str:
    return ' stroke-dasharray="6,4"' if dashed else ""


def lines(
    name: str,
    title: str,
    series: list[Line],
    *,
    xlabel: str,
    ylabel: str,
    refs: Sequence[Ref] = (),
    log2x: bool = False,
    y_from_zero: bool = False,
    yfmt: Callable[[float], str] = fmt_num,
    width: int = 560,
    height: int = 250,
) -> str:
    """Line chart on linear axes (x from 0), or with a log2 x axis (ticks at powers of 2), and
    a legend under the plot that names every series and reference line. Points that are None,
    NaN or infinite (or x <= 0 on a log2 axis) are left out, so a missing metric leaves a gap
    in the data rather than breaking the chart."""
    left, right, top = 58, 14, 30
    pts: list[list[tuple[float, float, float]]] = []  # per series: [(x, y, spread)]
    for s in series:
        spread: list[float | None] = list(s.spread) if s.spread is not None else [None] * len(s.points)
        pts.append(
            [
                (x, y, d if d is not None and finite(d) else 0.0)
                for (x, y), d in zip(s.points, spread)
                if finite(x, y) and (x > 0 or not log2x)
            ]
        )
    refs = [r for r in refs if finite(r.y)]
    legend = [(s.label, s.color, s.dashed) for s, p in zip(series, pts) if p] + [
        (r.label, r.color, r.dashed) for r in refs
    ]
    rows: list[list[tuple[float, str, str, bool]]] = [[]]  # the legend, wrapped into rows under the plot
    x_at = 0.0
    for label, color, dashed in legend:
        w = 44 + 6.3 * len(label)  # swatch, gap and a generous width per character
        if rows[-1] and x_at + w > width - left - right:
            rows.append([])
            x_at = 0.0
        rows[-1].append((x_at, label, color, dashed))
        x_at += w
    ph = height - top - 40
    pw = width - left - right
    total_h = height + 15 * len(rows) + 6
    out = _open(name, title, width, total_h)
    xs = [x for p in pts for x, _, _ in p]
    if not xs:
        out.append(f'<text x="{left}" y="{top + 20}" font-size="11" fill="#777">no data</text></svg>')
        return "\n".join(out)
    ys = [y + sgn * d for p in pts for _, y, d in p for sgn in (1, -1)] + [r.y for r in refs]
    lo, hi = min(ys + [0.0] if y_from_zero else ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    yt = _nice_ticks(hi, vmin=lo)
    if log2x:
        k0, k1 = math.floor(math.log2(min(xs))), math.ceil(math.log2(max(xs)))
        k1 = max(k1, k0 + 1)
        xt = [2.0**k for k in range(k0, k1 + 1)]
        fx = math.log2
    else:
        xt = _nice_ticks(max(max(xs), 1e-9), n=5, vmin=min(0.0, min(xs)))
        fx = float
    x0, x1, y0, y1 = fx(xt[0]), fx(xt[-1]), yt[0], yt[-1]

    def px(x: float) -> float:
        return left + pw * (fx(x) - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + ph - ph * (y - y0) / (y1 - y0)

    for t in xt:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 13}" font-size="10" text-anchor="middle" fill="#666">'
            f"{_t(fmt_num(t))}</text>"
        )
    for t in yt:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" fill="#666">{_t(yfmt(t))}</text>'
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    for r in refs:
        y = py(r.y)
        out.append(
            f'<line data-ref="{_t(r.label)}" x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
            f'stroke="{r.color}" stroke-width="1.3"{_dash(r.dashed)}><title>{_t(r.label)}: {_t(yfmt(r.y))}'
            f"</title></line>"
        )
    for s, p in zip(series, pts):
        if len(p) > 1 and any(d for _, _, d in p):
            band = [(px(x), py(y + d)) for x, y, d in p] + [(px(x), py(y - d)) for x, y, d in reversed(p)]
            out.append(
                f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in band)}" fill="{s.color}" '
                f'fill-opacity="0.18" stroke="none"><title>{_t(s.label)}: spread</title></polygon>'
            )
        if len(p) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in p)
            out.append(
                f'<polyline data-series="{_t(s.label)}" points="{path}" fill="none" stroke="{s.color}" '
                f'stroke-width="2"{_dash(s.dashed)} stroke-linejoin="round"><title>{_t(s.label)}</title>'
                f"</polyline>"
            )
        if s.markers or len(p) == 1:
            for x, y, d in p:
                pm = f" ± {yfmt(d)}" if d else ""
                out.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{s.color}"><title>'
                    f"{_t(s.label)}: {_t(fmt_num(x))} → {_t(yfmt(y) + pm)}</title></circle>"
                )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{top + ph + 28}" font-size="10.5" text-anchor="middle" '
        f'fill="#555">{_t(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{top + ph / 2:.1f}" font-size="10.5" text-anchor="middle" fill="#555" '
        f'transform="rotate(-90 12 {top + ph / 2:.1f})">{_t(ylabel)}</text>'
    )
    for i, row in enumerate(rows):
        ly = height + 4 + 15 * i
        for x_at, label, color, dashed in row:
            x = left + x_at
            out.append(
                f'<line x1="{x:.1f}" y1="{ly}" x2="{x + 24:.1f}" y2="{ly}" stroke="{color}" stroke-width="2"'
                f"{_dash(dashed)}/>"
            )
            out.append(
                f'<text class="legend" x="{x + 29:.1f}" y="{ly + 4}" font-size="10.5" fill="#333">{_t(label)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)
