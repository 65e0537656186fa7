"""WAT reading: a small WAT file written with warcio the way Common Crawl writes them
(one gzip member per record, a warcinfo record first, one JSON metadata record per crawled
record, the JSON layout of ia-web-commons' HTMLMetaData)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.warcwriter import WARCWriter

from pipeline.collect.pool import DROP_KEYS
from pipeline.collect.wat import iter_wat_pairs, resolve_link
from pipeline.errors import InputError
from tests.support.collect import build_pool

PAGE = "https://example.com/a/page.html"
BASE_PAGE = "https://example.com/shop/item.html"


def _envelope(uri: str, payload_metadata: dict, record_type: str = "response") -> dict:
    return {
        "Container": {
            "Filename": "CC-MAIN-20240518015810-20240518045810-00000.warc.gz",
            "Compressed": True,
            "Offset": "1234",
            "Gzip-Metadata": {"Inflated-Length": "25358", "Footer-Length": "8", "Deflate-Length": "5952"},
        },
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": "647",
            "WARC-Header-Metadata": {
                "WARC-Type": record_type,
                "WARC-Target-URI": uri,
                "WARC-Date": "2024-05-18T01:58:10Z",
                "Content-Type": f"application/http; msgtype={record_type}",
            },
            "Payload-Metadata": payload_metadata,
        },
    }


def _html_page(uri: str, links: list, head: dict | None = None) -> dict:
    html = {"Head": head or {"Title": "A page"}, "Links": links}
    return _envelope(
        uri,
        {
            "Actual-Content-Type": "application/http; msgtype=response",
            "HTTP-Response-Metadata": {
                "Response-Message": {"Status": "200", "Version": "HTTP/1.1", "Reason": "OK"},
                "Headers": {"Content-Type": "text/html; charset=utf-8"},
                "HTML-Metadata": html,
            },
        },
    )


def _request_record(uri: str) -> dict:
    return _envelope(
        uri,
        {
            "Actual-Content-Type": "application/http; msgtype=request",
            "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": "/a/page.html"}},
        },
        record_type="request",
    )


def write_wat(path: Path, records: list[tuple[str, bytes]]) -> Path:
    """records: (target uri, JSON payload bytes); gzip per record like Common Crawl."""
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        info = w.create_warcinfo_record(path.name, {"software": "test", "format": "WAT"})
        w.write_record(info)
        for uri, payload in records:
            rec = w.create_warc_record(
                uri, "metadata", payload=io.BytesIO(payload), warc_content_type="application/json"
            )
            w.write_record(rec)
    return path


def _j(doc) -> bytes:
    return json.dumps(doc).encode("utf-8")


def sample_records() -> list[tuple[str, bytes]]:
    links = [
        {"path": "A@/href", "url": "/next", "text": "next page"},
        {"path": "IMG@/src", "url": "img/cat.jpg", "alt": "a grey cat", "title": "Tom"},
        {"path": "IMG@/src", "url": "/abs/dog.png", "alt": "", "title": "a brown dog"},
        {"path": "IMG@/src", "url": "//cdn.example.net/bird.gif", "alt": "  a   bird\n"},
        {"path": "IMG@/src", "url": "../up/fish.jpg", "title": "fish"},
        {"path": "IMG@/src", "url": "https://other.example.org/x.webp", "alt": "absolute"},
        {"path": "IMG@/src", "url": "spacer.gif"},  # no alt, no title
        {"path": "IMG@/src", "url": "data:image/png;base64,iVBORw0KGgo=", "alt": "inline"},
        {"path": "IMG@/src", "alt": "no url at all"},
        {"path": "LINK@/href", "url": "/style.css", "rel": "stylesheet"},
        "not an object",
    ]
    base_links = [
        {"path": "IMG@/src", "url": "pic.jpg", "alt": "with base"},
        {"path": "IMG@/src", "url": "/root.jpg", "alt": "root with base"},
    ]
    rel_base_links = [{"path": "IMG@/src", "url": "p.png", "alt": "relative base"}]
    return [
        (PAGE, _j(_request_record(PAGE))),
        (PAGE, _j(_html_page(PAGE, links))),
        (
            BASE_PAGE,
            _j(_html_page(BASE_PAGE, base_links, head={"Title": "Shop", "Base": "https://static.example.org/assets/"})),
        ),
        (
            "https://example.com/x/y.html",
            _j(_html_page("https://example.com/x/y.html", rel_base_links, head={"Base": "/media/"})),
        ),
        (PAGE, b"{this is not json"),
        (PAGE, _j({"Container": {}, "NoEnvelope": True})),
        (PAGE, _j(["a", "list"])),
        (PAGE, _j(_envelope(PAGE, {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": "oops"}}}))),
    ]


@pytest.fixture()
def wat_file(tmp_path) -> Path:
    return write_wat(tmp_path / "CC-MAIN-test-00000.warc.wat.gz", sample_records())


def test_wat_file_is_gzip_per_record(wat_file):
    data = wat_file.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    assert data.count(b"\x1f\x8b\x08") >= 9  # warcinfo + 8 metadata records, one member each


def test_pairs_resolution_alt_title_and_counts(wat_file):
    stats: dict = {}
    pairs = list(iter_wat_pairs(str(wat_file), stats))
    got = [(u, t) for u, t, _ in pairs]
    assert got == [
        ("https://example.com/a/img/cat.jpg", "a grey cat"),  # alt wins over title
        ("https://example.com/abs/dog.png", "a brown dog"),  # empty alt -> title
        ("https://cdn.example.net/bird.gif", "  a   bird\n"),  # protocol-relative
        ("https://example.com/up/fish.jpg", "fish"),  # no alt -> title
        ("https://other.example.org/x.webp", "absolute"),
        ("https://example.com/a/spacer.gif", None),
        ("data:image/png;base64,iVBORw0KGgo=", "inline"),
        (None, "no url at all"),
        ("https://static.example.org/assets/pic.jpg", "with base"),  # <base href> honoured
        ("https://static.example.org/root.jpg", "root with base"),
        ("https://example.com/media/p.png", "relative base"),  # relative <base> -> page URL
    ]
    assert pairs[0][2] == {"page_url": PAGE, "alt": "a grey cat", "title": "Tom"}
    assert pairs[8][2]["page_url"] == BASE_PAGE
    assert stats["wat_records"] == 8
    assert stats["wat_bad_records"] == 4  # bad JSON, no Envelope, a list, Links not a list
    assert stats["wat_non_html_records"] == 1  # the request record
    assert stats["wat_html_pages"] == 3
    assert stats["wat_img_links"] == 11
    assert stats["wat_bad_links"] == 1


def test_resolve_link_edge_cases():
    assert resolve_link(" img.png\n", "http://h.example/a/b") == "http://h.example/a/img.png"
    assert resolve_link("im\tg.png", "http://h.example/") == "http://h.example/img.png"
    # a javascript:/data: <base> is ignored, as browsers do
    assert resolve_link("x.png", "http://h.example/d/p", "javascript:void(0)") == "http://h.example/d/x.png"
    # no usable page URL: left as it was (and later dropped as relative)
    assert resolve_link("x.png", None) == "x.png"


def test_not_a_warc_file_is_an_input_error(tmp_path):
    bad = tmp_path / "junk.warc.wat.gz"
    bad.write_bytes(b"this is not a warc file at all\n" * 10)
    with pytest.raises(InputError) as e:
        list(iter_wat_pairs(str(bad)))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_truncated_wat_keeps_earlier_records(tmp_path):
    rng = random.Random(1)
    big = [
        {"path": "IMG@/src", "url": f"/i/{rng.getrandbits(128):x}.jpg", "alt": f"{rng.getrandbits(256):x}"}
        for _ in range(400)
    ]
    records = sample_records() + [("https://e.example/big", _j(_html_page("https://e.example/big", big)))]
    data = write_wat(tmp_path / "full.warc.wat.gz", records).read_bytes()
    cut = tmp_path / "cut.warc.wat.gz"
    cut.write_bytes(data[: len(data) - 5000])  # the download stopped inside the last record
    stats: dict = {}
    pairs = list(iter_wat_pairs(str(cut), stats))
    assert len(pairs) == 11  # every link of the complete records
    assert stats["wat_truncated_files"] == 1
    assert stats["wat_bad_records"] == 5  # the 4 malformed ones + the cut one
    assert stats["wat_records"] == 9


def test_wat_in_pool(tmp_path, wat_file):
    table = tmp_path / "t.csv"
    table.write_text("url,caption\nhttps://example.com/a/img/cat.jpg,a grey cat\nhttps://z.example/1.jpg,one\n")
    out = tmp_path / "pool"
    stats = build_pool([str(table), str(wat_file)], str(out))
    rows = [r for p in stats["parts"] for r in pq.read_table(out / p).to_pylist()]
    assert [(r["url"], r["text"]) for r in rows] == [
        ("https://example.com/a/img/cat.jpg", "a grey cat"),  # from the csv; the WAT copy is a duplicate
        ("https://z.example/1.jpg", "one"),
        ("https://example.com/abs/dog.png", "a brown dog"),
        ("https://cdn.example.net/bird.gif", "a bird"),  # caption normalised
        ("https://example.com/up/fish.jpg", "fish"),
        ("https://other.example.org/x.webp", "absolute"),
        ("https://static.example.org/assets/pic.jpg", "with base"),
        ("https://static.example.org/root.jpg", "root with base"),
        ("https://example.com/media/p.png", "relative base"),
    ]
    assert rows[0]["source"] == str(table) and rows[2]["source"] == str(wat_file)
    # every image link is a row, and every row is accounted for
    assert stats["rows_in"] == 2 + stats["wat_img_links"] == 13
    assert stats["dropped_empty_text"] == 1  # spacer.gif
    assert stats["dropped_scheme"] == 1  # data: URL
    assert stats["dropped_null_url"] == 1
    assert stats["dropped_duplicate"] == 1
    assert stats["rows_in"] == stats["kept"] + sum(stats[k] for k in DROP_KEYS)
    assert stats["wat_bad_records"] == 4 and stats["wat_records"] == 8


def test_wat_keep_cols(tmp_path, wat_file):
    out = tmp_path / "pool"
    build_pool([str(wat_file)], str(out), keep_cols=["page_url", "alt", "title", "nothing"])
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert rows[0] == {
        "uid": rows[0]["uid"],
        "url": "https://example.com/a/img/cat.jpg",
        "text": "a grey cat",
        "source": str(wat_file),
        "page_url": PAGE,
        "alt": "a grey cat",
        "title": "Tom",
        "nothing": None,
    }
    assert rows[1]["alt"] == "" and rows[1]["title"] == "a brown dog"
