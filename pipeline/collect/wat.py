"""Image links with their alt text from Common Crawl WAT files.

A WAT file (``*.warc.wat.gz``) is a WARC file, gzipped record by record, whose ``metadata``
records carry one JSON document each about a record of the crawl. For an HTML response
the JSON holds what the page links to (the layout written by Common Crawl's
ia-web-commons, `ExtractingParseObserver` / `HTMLMetaData`)::

    {"Envelope": {
       "WARC-Header-Metadata": {"WARC-Target-URI": "https://example.com/a/page.html", ...},
       "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
           "Head": {"Title": "...", "Base": "https://example.com/b/", ...},
           "Links": [{"path": "IMG@/src", "url": "img/cat.jpg", "alt": "a cat", "title": "Tom"},
                     {"path": "A@/href", "url": "/next", "text": "next"}, ...]}}}}}

Every ``IMG@/src`` link becomes one candidate pair: the image URL resolved against the page
(``Head.Base`` when the page has a ``<base href>``, itself resolved against the page URL),
and its ``alt`` text, or its ``title`` when the alt text is empty or missing. Request
records, non-HTML responses and crawl-metadata records have no HTML metadata: they are
counted (``wat_non_html_records``) and skipped. Records that are not JSON objects or lack
the ``Envelope`` are counted as ``wat_bad_records`` and skipped, never fatal. Records are
read with warcio's WARCIterator (gzip member by member, as Common Crawl writes them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import fsspec
from warcio.archiveiterator import WARCIterator
from warcio.exceptions import ArchiveLoadFailed

from ..errors import InputError, one_line

WAT_STAT_KEYS = (
    "wat_records",  # metadata (JSON) records read
    "wat_bad_records",  # of those: not JSON, not an object, no Envelope, Links not a list, cut short
    "wat_non_html_records",  # of those: no HTML-Metadata (requests, non-HTML, crawl metadata)
    "wat_html_pages",  # of those: pages with HTML metadata
    "wat_img_links",  # IMG@/src links found (each is one candidate row)
    "wat_bad_links",  # entries of Links that are not JSON objects
    "wat_truncated_files",  # files that end inside a record (an interrupted download)
)

_TAB_NEWLINE_RE = re.compile("[\t\n\r]")
_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))


def _clean_ref(ref: str) -> str:
    """What a browser does to an attribute URL before parsing it (WHATWG URL, step 1-3)."""
    ref = ref.strip(_C0_AND_SPACE)
    if "\t" in ref or "\n" in ref or "\r" in ref:
        ref = _TAB_NEWLINE_RE.sub("", ref)
    return ref


def _http_base(url: str | None) -> str | None:
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def resolve_link(ref: str, page_url: str | None, base_href: str | None = None) -> str:
    """Absolute URL of `ref` as the page would load it; `ref` unchanged if it can't be."""
    ref = _clean_ref(ref)
    base = _http_base(page_url)
    if base_href:
        try:
            b = urljoin(base, _clean_ref(base_href)) if base else _clean_ref(base_href)
        except ValueError:
            b = None
        base = _http_base(b) or base  # a data:/javascript: <base> is ignored, as browsers do
    if base is None:
        return ref
    try:
        return urljoin(base, ref)
    except ValueError:
        return ref


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _as_str(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _pairs_of_record(doc, header_uri: str | None, stats: dict) -> Iterator[tuple]:
    envelope = doc.get("Envelope") if isinstance(doc, dict) else None
    if not isinstance(envelope, dict):
        stats["wat_bad_records"] += 1
        return
    html = _get(envelope, "Payload-Metadata", "HTTP-Response-Metadata", "HTML-Metadata")
    if html is None:
        stats["wat_non_html_records"] += 1
        return
    links = html.get("Links", []) if isinstance(html, dict) else None
    if not isinstance(links, list):
        stats["wat_bad_records"] += 1
        return
    stats["wat_html_pages"] += 1
    page_url = _as_str(_get(envelope, "WARC-Header-Metadata", "WARC-Target-URI")) or header_uri
    base_href = _as_str(_get(html, "Head", "Base"))
    for link in links:
        if not isinstance(link, dict):
            stats["wat_bad_links"] += 1
            continue
        if link.get("path") != "IMG@/src":
            continue
        stats["wat_img_links"] += 1
        ref = _as_str(link.get("url"))
        url = resolve_link(ref, page_url, base_href) if ref is not None else None
        alt = _as_str(link.get("alt"))
        title = _as_str(link.get("title"))
        text = alt if alt is not None and alt.strip() else title
        yield url, text, {"page_url": page_url, "alt": alt, "title": title}


def iter_wat_pairs(path: str, stats: dict | None = None) -> Iterator[tuple[str | None, str | None, dict]]:
    """(image url, caption, extra) for every ``IMG@/src`` link of a WAT file, in file order.

    `url` is absolute when it could be resolved and None when the link had none; `caption`
    is the raw alt (or title) text, None when both are missing; `extra` has ``page_url``,
    ``alt`` and ``title``. Counters in `WAT_STAT_KEYS` are added to `stats` when given.
    A file that is not WARC at all raises InputError (quoting warcio's reason, which quotes
    the file's first line, escaped by `errors.printable`); a stream that breaks later is
    counted in ``wat_truncated_files`` and ends the file.
    """
    if stats is None:
        stats = {}
    for k in WAT_STAT_KEYS:
        stats.setdefault(k, 0)
    seen_any = False
    with fsspec.open(path, "rb") as f:
        it = iter(WARCIterator(f, check_digests=False))
        while True:
            try:
                record = next(it)
            except StopIteration:
                break
            except (ArchiveLoadFailed, EOFError, OSError, ValueError) as e:
                if not seen_any:  # warcio quotes the file's first line: escaped, never raw on a terminal
                    raise InputError(f"{path}: not a readable WARC/WAT file ({one_line(e, limit=120)})") from None
                stats["wat_truncated_files"] += 1
                break
            seen_any = True
            if record.rec_type != "metadata":
                continue
            ctype = (record.rec_headers.get_header("Content-Type") or "").lower()
            if "json" not in ctype:
                continue
            stats["wat_records"] += 1
            try:
                payload = record.content_stream().read()
                expected = int(record.rec_headers.get_header("Content-Length") or -1)
            except (EOFError, OSError, ValueError):
                payload, expected = b"", 1
            if len(payload) < expected:  # the file ends inside this record
                stats["wat_bad_records"] += 1
                stats["wat_truncated_files"] += 1
                break
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
                stats["wat_bad_records"] += 1
                continue
            header_uri = record.rec_headers.get_header("WARC-Target-URI")
            yield from _pairs_of_record(doc, header_uri, stats)
