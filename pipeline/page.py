"""The page shell of the project's self-contained HTML reports (the dataset audit, a
training run's report) and of the dataset browser's pages (`pipeline.browse`): one
stylesheet, the <head>, tables, headline tiles and image grids.

Both reports are single files with inline CSS and inline SVG (`pipeline.plots`), no scripts
and no external resources, so they open offline from disk; sharing the shell keeps them
looking alike and escaping text (names come from users) in one place.
"""

from __future__ import annotations

from html import escape

from .plots import fmt_int

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2430;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1280px;margin:0 auto;padding:20px 28px 40px}
header h1{font-size:24px;margin:0 0 2px}
.sub{color:#5b6573;margin:0 0 14px;font-size:12.5px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eceef2;padding:1px 4px;border-radius:3px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;margin:6px 0 14px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08);border-top:3px solid #3b6fb6}
.tile b{display:block;font-size:24px;font-weight:650;letter-spacing:-.5px}
.tile span{color:#5b6573;font-size:12px}
.tile.na{border-top-color:#c9ced6}.tile.na b{color:#a0a7b1}
section{background:#fff;border-radius:8px;padding:14px 18px 16px;margin:14px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{font-size:18px;margin:0 0 6px}
section h3{font-size:14px;margin:14px 0 6px;color:#333}
.find{margin:0 0 10px;padding-left:18px}.find li{margin:2px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px 22px;align-items:start}
svg.plot{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0 8px}
th,td{padding:3px 10px 3px 0;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{color:#5b6573;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;padding-left:12px}
.unavail{color:#8a5a00;background:#fff6e0;border-left:4px solid #e0a100;padding:8px 12px;border-radius:4px}
.warn{color:#7a1f12;background:#fdecea;border-left:4px solid #c0392b;padding:8px 12px;border-radius:4px;margin:8px 0}
details summary{cursor:pointer;color:#3b6fb6;margin:6px 0}
.small{font-size:12px;color:#5b6573}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11.5px}
footer{color:#8a929d;font-size:12px;margin-top:18px}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px;margin:4px 0 12px}
.sheet figure{margin:0;background:#f7f8fa;border-radius:4px;padding:4px}
.sheet img{display:block;width:112px;height:112px;object-fit:contain;margin:0 auto;background:#fff}
.sheet figcaption{font-size:11px;line-height:1.3;color:#333;margin-top:3px;overflow:hidden;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical}
"""

END = "</main></body></html>"


def esc(s) -> str:
    return escape("" if s is None else str(s), quote=True)


def head(title: str, css: str = "") -> list[str]:
    """The lines from <!DOCTYPE> to <main> (close with `END`); `css` is appended to the
    stylesheet (the dataset browser's own rules)."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}{css}</style></head><body><main>",
    ]


def table(headers: list[str], rows: list[list], numeric: set[int] | None = None, cls: str = "") -> str:
    """Columns in `numeric` are right-aligned and their ints get thousands separators; None is '–'."""
    numeric = numeric or set()
    h = "".join(f'<th class="n">{esc(x)}</th>' if i in numeric else f"<th>{esc(x)}</th>" for i, x in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            txt = fmt_int(v) if i in numeric and isinstance(v, int) else ("–" if v is None else str(v))
            cells.append(f'<td class="n">{esc(txt)}</td>' if i in numeric else f"<td>{esc(txt)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def thumbs(images: list[dict], href=None) -> str:
    """A grid of images: each dict has `src` and `caption` (shown under it, whole on hover);
    `href(image)` makes each one a link."""
    cells = []
    for im in images:
        cap = "" if im.get("caption") is None else str(im["caption"])
        img = f'<img src="{esc(im["src"])}" alt="{esc(cap[:200])}" title="{esc(cap)}">'
        if href is not None:
            img = f'<a href="{esc(href(im))}">{img}</a>'
        cells.append(f"<figure>{img}<figcaption>{esc(cap[:160])}</figcaption></figure>")
    return '<div class="sheet">' + "".join(cells) + "</div>"


def tiles(items: list[tuple[str, str, str]]) -> str:
    """Headline numbers: (key, big text, label); a '–' value is drawn greyed out."""
    out = []
    for key, big, label in items:
        na = " na" if big == "–" else ""
        out.append(f'<div class="tile{na}" data-tile="{esc(key)}"><b>{esc(big)}</b><span>{esc(label)}</span></div>')
    return '<div class="tiles">' + "".join(out) + "</div>"
