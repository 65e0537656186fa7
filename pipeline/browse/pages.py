"""The browser's HTML: server-rendered pages in the reports' shell (`pipeline.page`).

No scripts and nothing loaded from elsewhere: the images come from this server's `/image/`
route, the stylesheet is inline. Every text from the data (queries, captions, URLs, error
messages) goes through `esc`; every path segment built from it through `quote`.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from .. import page
from ..page import esc, table, thumbs, tiles
from ..plots import fmt_int

CSS = """
nav.top{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;margin:0 0 14px}
nav.top a{color:#3b6fb6;text-decoration:none}nav.top a.home{color:#1d2430;font-weight:650;font-size:15px}
nav.top form{margin:0}
input[type=search]{font:inherit;padding:4px 8px;border:1px solid #c9ced6;border-radius:4px;width:240px}
button{font:inherit;padding:4px 10px;border:1px solid #3b6fb6;background:#3b6fb6;color:#fff;border-radius:4px}
a{color:#3b6fb6}
.sheet{grid-template-columns:repeat(auto-fill,minmax(172px,1fr))}
.sheet img{width:160px;height:160px}
.pager{display:flex;gap:14px;align-items:center;margin:8px 0}
.big img{max-width:100%;max-height:560px;display:block;background:#fff;border:1px solid #eceef2}
pre.reason{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;padding:8px 10px;border-radius:4px}
td.wrap{word-break:break-all;max-width:640px}
"""


def query_href(query: str) -> str:
    return "/query/" + quote(query, safe="")


def sample_href(shard: str, key: str) -> str:
    return f"/sample/{quote(shard, safe='')}/{quote(key, safe='')}"


def image_src(shard: str, key: str) -> str:
    return f"/image/{quote(shard, safe='')}/{quote(key, safe='')}"


def failure_href(reason: str) -> str:
    return "/failures/" + quote(reason, safe="")


def _link(href: str, text) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _nav(q: str = "", text: str = "") -> str:
    return (
        '<nav class="top"><a class="home" href="/">Dataset browser</a>'
        '<form action="/" method="get"><input type="search" name="q" placeholder="find a query (prefix or part)" '
        f'value="{esc(q)}" aria-label="find a query"> <button>Find</button></form>'
        '<form action="/search" method="get"><input type="search" name="text" placeholder="captions containing…" '
        f'value="{esc(text)}" aria-label="search captions"> <button>Search</button></form>'
        '<a href="/failures">failures</a></nav>'
    )


def shell(title: str, body: list[str], q: str = "", text: str = "") -> str:
    return "\n".join([*page.head(title, CSS), _nav(q, text), *body, page.END]) + "\n"


def _grid(rows: list[dict]) -> str:
    images = [{**r, "src": image_src(str(r["shard"]), str(r["key"]))} for r in rows]
    return thumbs(images, href=lambda im: sample_href(str(im["shard"]), str(im["key"])))


def _pager(base: str, params: dict, page_no: int, last: int | None, has_next: bool) -> str:
    """Previous/next links; `last` is None when the total is not known (a caption search)."""

    def href(n: int) -> str:
        return base + "?" + urlencode({**params, "page": n})

    parts = []
    if page_no > 1:
        parts.append(f'<a rel="prev" href="{esc(href(page_no - 1))}">← previous</a>')
    parts.append(f"<span>page {fmt_int(page_no)}" + (f" of {fmt_int(last)}" if last else "") + "</span>")
    if has_next:
        parts.append(f'<a rel="next" href="{esc(href(page_no + 1))}">next →</a>')
    return '<div class="pager">' + "".join(parts) + "</div>"


def _queries_table(rows: list[dict], kept: bool) -> str:
    head = ["query", "source", "images in the shards", "download attempts"] + (["texts kept"] if kept else [])
    body = []
    for r in rows:
        cells = [
            f"<td>{_link(query_href(r['query']), r['query'])}</td>",
            f"<td>{esc(r['source'])}</td>",
            f'<td class="n">{fmt_int(r["images"])}</td>',
            f'<td class="n">{fmt_int(r["attempts"])}</td>',
        ]
        if kept:
            cells.append(f'<td class="n">{fmt_int(r["kept"])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    th = "".join(f'<th class="n">{esc(h)}</th>' if i >= 2 else f"<th>{esc(h)}</th>" for i, h in enumerate(head))
    return f'<table data-table="queries"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def home(where: dict, totals: dict, q: str, found: list[dict] | None, top: list[dict], reasons: list[dict]) -> str:
    kept = totals.get("kept_after_balancing") is not None
    body = [
        "<header><h1>Dataset browser</h1>",
        f'<p class="sub">shards <code>{esc(where["shards"])}</code> · queries <code>{esc(where["queries"])}</code></p>'
        "</header>",
        tiles(
            [
                ("queries", fmt_int(totals["queries"]), "queries in the list"),
                ("queries_with_images", fmt_int(totals["queries_with_images"]), "queries with images"),
                ("kept", fmt_int(totals.get("kept_after_balancing")), "texts kept by balancing"),
                ("attempts", fmt_int(totals["attempts"]), "download attempts"),
                ("images", fmt_int(totals["images"]), "images in the shards"),
                ("failures", fmt_int(totals["failures"]), "failed downloads"),
                ("shards", fmt_int(totals["shards"]), "shards"),
            ]
        ),
    ]
    if found is not None:
        body.append(f'<section id="found"><h2>Queries containing “{esc(q)}”</h2>')
        if found:
            body.append(
                f'<p class="small">{len(found)} shown: the exact query first, then those that start with it, '
                "then the rest, each by images (case-insensitive here; a query page is case-sensitive)</p>"
            )
            body.append(_queries_table(found, kept))
        else:
            body.append(
                f"<p>No query contains “{esc(q)}”.</p><p>{_link('/search?' + urlencode({'text': q}), 'Search the captions for it')}</p>"
            )
        body.append("</section>")
    body.append('<section id="top"><h2>Top queries by images</h2>')
    body.append(_queries_table(top, kept) if top else "<p>No query has an image in the shards.</p>")
    body.append("</section>")
    body.append('<section id="failures"><h2>Failed downloads</h2>')
    if reasons:
        body.append(
            f"<p>{fmt_int(totals['failures'])} of {fmt_int(totals['attempts'])} attempts failed, for "
            f"{fmt_int(totals['failure_reasons'])} reason{'' if totals['failure_reasons'] == 1 else 's'}. "
            f"{_link('/failures', 'All reasons')}</p>"
        )
        body.append(_reasons_table(reasons))
    else:
        body.append("<p>No download failed.</p>")
    body.append("</section>")
    return shell("Dataset browser", body, q=q)


def _reasons_table(reasons: list[dict]) -> str:
    rows = []
    for r in reasons:
        rows.append(
            f'<tr><td class="wrap">{_link(failure_href(r["reason"]), r["reason"].strip())}</td>'
            f'<td>{esc(", ".join(r["statuses"]))}</td><td class="n">{fmt_int(r["n"])}</td></tr>'
        )
    return (
        '<table data-table="reasons"><thead><tr><th>reason (img2dataset error message)</th><th>status</th>'
        f'<th class="n">samples</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _num(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return fmt_int(v)
    return f"{v:,.{digits}f}"


def query_page(info: dict, images: list[dict], page_no: int, last: int) -> str:
    q = info["query"]
    wiki = info.get("wikipedia", {})
    items = [
        ("source", str(info.get("source") or "–"), "source of the query"),
        ("count", _num(wiki.get("count")), "occurrences in Wikipedia"),
        ("pmi", _num(wiki.get("pmi")), "PMI (bigrams)"),
        ("views", _num(wiki.get("views")), "page views (titles)"),
        ("matches", _num(info.get("matches_before_balancing")), "texts matched (before balancing)"),
        ("keep_prob", _num(info.get("keep_probability"), 4), "keep probability min(1, t/count)"),
        ("kept", _num(info.get("kept_after_balancing")), "texts kept after balancing"),
        ("attempts", _num(info.get("download_attempts")), "download attempts"),
        ("images", _num(info.get("images_in_shards")), "images in the shards"),
    ]
    body = [
        f"<header><h1>“{esc(q)}”</h1>",
        f'<p class="sub">query id {info["query_id"]} · source {esc(info.get("source"))}'
        + (f" · cap per query t = {fmt_int(info['per_query_cap'])}" if "per_query_cap" in info else "")
        + (f" · also ids {esc(', '.join(map(str, info['duplicate_ids'])))}" if info.get("duplicate_ids") else "")
        + "</p></header>",
        tiles(items),
        '<section id="outcomes"><h2>Downloads</h2>',
    ]
    outcomes = info.get("outcomes", [])
    if outcomes:
        rows = []
        for o in outcomes:
            reason = o["reason"]
            what = "downloaded" if reason is None else _link(failure_href(reason), reason.strip())
            rows.append(
                f'<tr><td>{esc(o["status"])}</td><td class="wrap">{what}</td><td class="n">{fmt_int(o["count"])}</td></tr>'
            )
        body.append(
            '<table data-table="outcomes"><thead><tr><th>status</th><th>reason</th><th class="n">samples</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        body.append("<p>No download was attempted for this query.</p>")
    body.append("</section>")
    n = info.get("images_in_shards") or 0
    body.append(f'<section id="images"><h2>Images ({fmt_int(n)})</h2>')
    if images:
        pager = _pager(query_href(q), {}, page_no, last, page_no < last)
        body += [pager, _grid(images), pager]
    else:
        body.append("<p>No image of this query is in the shards.</p>")
    body.append("</section>")
    return shell(f"“{q}”: dataset browser", body, q=q)


def search_page(text: str, rows: list[dict], page_no: int, has_next: bool) -> str:
    body = [f"<header><h1>Captions containing “{esc(text)}”</h1>"]
    body.append(
        '<p class="sub">case-insensitive, in shard and key order; the filter reads the captions until it has '
        "a page, so a rare word takes longer</p></header>"
    )
    body.append('<section id="results">')
    if rows:
        pager = _pager("/search", {"text": text}, page_no, None, has_next)
        body += [pager, _grid(rows), pager]
    elif page_no > 1:
        body.append(
            f"<p>No more images (page {fmt_int(page_no)}). {_link('/search?' + urlencode({'text': text}), 'First page')}</p>"
        )
    else:
        body.append("<p>No caption contains it.</p>")
    body.append("</section>")
    return shell(f"captions “{text}”: dataset browser", body, text=text)


def search_form() -> str:
    body = [
        "<header><h1>Search captions</h1>",
        '<p class="sub">images whose caption contains a word or phrase (case-insensitive)</p></header>',
        '<section><form action="/search" method="get"><input type="search" name="text" aria-label="caption text"> '
        "<button>Search</button></form></section>",
    ]
    return shell("Search captions: dataset browser", body)


def _value(v) -> str:
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return "–" if v is None else str(v)


def _fields(row: dict) -> str:
    rows = [f'<tr><th>{esc(k)}</th><td class="wrap mono">{esc(_value(v))}</td></tr>' for k, v in row.items()]
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def sample_page(
    shard: str,
    key: str,
    row: dict,
    has_image: bool,
    members: dict[str, int],
    meta: dict | None,
    tar: str,
    queries: dict[int, str],
) -> str:
    caption = row.get("caption")
    body = [
        f"<header><h1>Sample {esc(shard)}/{esc(key)}</h1>",
        f'<p class="sub">shard <code>{esc(tar)}</code> · key <code>{esc(key)}</code> · status {esc(row.get("status"))}</p>',
        "</header>",
        '<section class="big">',
    ]
    if has_image:
        body.append(f'<img src="{esc(image_src(shard, key))}" alt="{esc((caption or "")[:200])}">')
    else:
        body.append(
            f"<p>No image in the tar for this sample (status {esc(row.get('status'))}"
            + (f": {esc(str(row.get('error_message')).strip())}" if row.get("error_message") else "")
            + ").</p>"
        )
    body.append(f"<h2>Caption</h2><p>{esc(caption) if caption is not None else '–'}</p>")
    if queries:
        links = ", ".join(_link(query_href(name), name) for _, name in sorted(queries.items()))
        body.append(f"<p>Matched queries: {links}</p>")
    body.append("</section>")
    body.append(f'<section id="parquet"><h2>Parquet row</h2><p class="small"><code>{esc(shard)}.parquet</code></p>')
    body.append(_fields(row))
    body.append("</section>")
    if meta is not None:
        body.append(f'<section id="json"><h2>{esc(key)}.json</h2><p class="small">from <code>{esc(tar)}</code></p>')
        body.append(_fields(meta))
        body.append("</section>")
    if members:
        body.append(f'<section id="members"><h2>Members in {esc(shard)}.tar</h2>')
        body.append(table(["member", "bytes"], [[f"{key}.{ext}", size] for ext, size in sorted(members.items())], {1}))
        body.append("</section>")
    return shell(f"{shard}/{key}: dataset browser", body)


def failures_page(totals: dict, reasons: list[dict]) -> str:
    body = [
        "<header><h1>Failed downloads</h1>",
        f'<p class="sub">{fmt_int(totals["failures"])} of {fmt_int(totals["attempts"])} download attempts failed; '
        "grouped by img2dataset's error message (a failure without one under its status)</p></header>",
        "<section>",
        _reasons_table(reasons) if reasons else "<p>No download failed.</p>",
    ]
    if totals["failure_reasons"] > len(reasons):
        body.append(
            f'<p class="small">The {fmt_int(len(reasons))} most frequent of {fmt_int(totals["failure_reasons"])} '
            "reasons.</p>"
        )
    body.append("</section>")
    return shell("Failed downloads: dataset browser", body)


def failure_page(reason: str, count: int, rows: list[dict], page_no: int, last: int) -> str:
    body = [
        "<header><h1>Failed downloads: one reason</h1>",
        f'<p class="sub">{fmt_int(count)} samples · {_link("/failures", "all reasons")}</p></header>',
        f'<section><pre class="reason">{esc(reason)}</pre>',
    ]
    items = []
    for r in rows:
        items.append(
            f"<tr><td>{_link(sample_href(r['shard'], r['key']), str(r['shard']) + '/' + str(r['key']))}</td>"
            f'<td>{esc(r["status"])}</td><td class="wrap mono">{esc(r["url"])}</td>'
            f"<td>{esc(r['caption'])}</td></tr>"
        )
    pager = _pager(failure_href(reason), {}, page_no, last, page_no < last)
    body += [
        pager,
        '<table data-table="failures"><thead><tr><th>sample</th><th>status</th><th>url</th><th>caption</th></tr>'
        f"</thead><tbody>{''.join(items)}</tbody></table>",
        pager,
        "</section>",
    ]
    return shell("Failed downloads: dataset browser", body)


def not_found(message: str, suggestions: list[dict] | None = None) -> str:
    body = [f"<header><h1>Not found</h1><p>{esc(message)}</p></header>"]
    if suggestions:
        body.append('<section><h2>Queries like it</h2><ul class="find">')
        body += [f"<li>{_link(query_href(s['query']), s['query'])}</li>" for s in suggestions]
        body.append("</ul></section>")
    body.append(f"<p>{_link('/', 'Back to the start')}</p>")
    return shell("Not found: dataset browser", body)


def error_page(status: int, title: str, message: str) -> str:
    body = [f"<header><h1>{esc(title)}</h1><p>{esc(message)}</p></header>", f"<p>{_link('/', 'Back to the start')}</p>"]
    return shell(f"{status} {title}: dataset browser", body)
