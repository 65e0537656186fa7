"""The dump reader: page fields, compression, multistream ranges, and bad input."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.wiki import dump as wd

HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n"
)
FOOTER = "</mediawiki>\n"


def page(title: str, pid: int, text: str, ns: int = 0, redirect: str | None = None) -> str:
    red = f'<redirect title="{redirect}" />' if redirect else ""
    return (
        f"  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n    {red}\n"
        f"    <revision><id>{pid * 1000}</id><contributor><username>x</username><id>77</id></contributor>\n"
        f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n'
    )


PAGES = [
    page("Anarchism", 12, "'''Anarchism''' is a [[political philosophy]] &lt;ref&gt;x&lt;/ref&gt;."),
    page("AccessibleComputing", 10, "#REDIRECT [[Computer accessibility]]", redirect="Computer accessibility"),
    page("Template:Infobox", 20, "{{{1}}}", ns=10),
    page("Zürich &amp; Co", 30, "Zürich is a city."),
]


def write(path: Path, xml: str | bytes) -> Path:
    data = xml.encode() if isinstance(xml, str) else xml
    if path.suffix == ".bz2":
        data = bz2.compress(data)
    elif path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["d.xml", "d.xml.bz2", "d.xml.gz"])
def test_pages_fields_and_compression(tmp_path, name):
    path = write(tmp_path / name, HEADER + "".join(PAGES) + FOOTER)
    stats = wd.ReadStats()
    pages = list(wd.iter_pages(str(path), stats))
    assert [(p.title, p.ns, p.page_id, p.redirect) for p in pages] == [
        ("Anarchism", 0, 12, False),
        ("AccessibleComputing", 0, 10, True),
        ("Template:Infobox", 10, 20, False),
        ("Zürich & Co", 0, 30, False),
    ]
    assert pages[0].text.startswith("'''Anarchism''' is a [[political philosophy]] <ref>x</ref>")
    assert [p.is_article for p in pages] == [True, False, False, True]
    assert stats.pages == 4 and stats.invalid_utf8_bytes == 0


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    xml = (HEADER + page("Bad", 1, "caf\x00") + FOOTER).encode().replace(b"caf\x00", b"caf\xe9 ok")
    path = write(tmp_path / "d.xml.bz2", xml)
    stats = wd.ReadStats()
    pages = list(wd.iter_pages(str(path), stats))
    assert pages[0].text == "caf\ufffd ok"
    assert stats.invalid_utf8_bytes == 1


def test_truncated_bz2_names_file_and_position(tmp_path):
    data = bz2.compress((HEADER + "".join(PAGES * 50) + FOOTER).encode())
    path = tmp_path / "cut.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.xml\.bz2: compressed data is truncated or corrupt at byte"):
        list(wd.iter_pages(str(path)))


def test_xml_cut_mid_page_names_line(tmp_path):
    xml = HEADER + PAGES[0] + PAGES[3][:60]
    path = write(tmp_path / "cut.xml", xml)
    with pytest.raises(InputError, match=r"cut\.xml: line \d+, column \d+: XML ends before the document is complete"):
        list(wd.iter_pages(str(path)))


def test_malformed_xml_names_line(tmp_path):
    path = write(tmp_path / "bad.xml", HEADER + "<page><title>x</titel></page>" + FOOTER)
    with pytest.raises(InputError, match=r"bad\.xml: line 3, column \d+: mismatched tag"):
        list(wd.iter_pages(str(path)))


def multistream(tmp_path: Path, pages: list[str], per_stream: int) -> Path:
    """Wikipedia's layout: header stream, streams of `per_stream` pages, footer stream, index."""
    path = tmp_path / "x-pages-articles-multistream.xml.bz2"
    blobs = [bz2.compress(HEADER.encode())]
    index = []
    offset = len(blobs[0])
    for i in range(0, len(pages), per_stream):
        group = pages[i : i + per_stream]
        for j, _ in enumerate(group):
            index.append(f"{offset}:{i + j}:title{i + j}\n")
        blob = bz2.compress("".join(group).encode())
        blobs.append(blob)
        offset += len(blob)
    blobs.append(bz2.compress(FOOTER.encode()))
    path.write_bytes(b"".join(blobs))
    (tmp_path / "x-pages-articles-multistream-index.txt.bz2").write_bytes(bz2.compress("".join(index).encode()))
    return path


def test_multistream_ranges_read_every_page_once(tmp_path):
    pages = [page(f"P{i}", i + 1, f"text {i}") for i in range(23)]
    path = multistream(tmp_path, pages, per_stream=4)
    index = wd.multistream_index_url(str(path))
    assert index is not None and index.endswith("-multistream-index.txt.bz2")
    offsets = wd.read_stream_offsets(index)
    assert len(offsets) == 6
    for target in (1, 300, 10**9):
        ranges = wd.stream_ranges(str(path), offsets, target)
        got = [p.title for r in ranges for p in wd.read_range_pages(r)]
        assert got == [f"P{i}" for i in range(23)]
    # The whole file is also a valid plain dump.
    assert [p.title for p in wd.iter_pages(str(path))] == [f"P{i}" for i in range(23)]


def test_split_multistream_index_name(tmp_path):
    dump = tmp_path / "enwiki-20240601-pages-articles-multistream1.xml-p1p41242.bz2"
    index = tmp_path / "enwiki-20240601-pages-articles-multistream-index1.txt-p1p41242.bz2"
    dump.write_bytes(b"")
    assert wd.multistream_index_url(str(dump)) is None
    index.write_bytes(b"")
    assert wd.multistream_index_url(str(dump)) == str(index)


def test_multistream_cut_range_is_an_error(tmp_path):
    pages = [page(f"P{i}", i + 1, f"text {i}") for i in range(8)]
    path = multistream(tmp_path, pages, per_stream=4)
    offsets = wd.read_stream_offsets(wd.multistream_index_url(str(path)))
    rng = wd.ByteRange(str(path), offsets[0], offsets[1] - 10)
    with pytest.raises(InputError, match=r"multistream\.xml\.bz2 \(bytes .*truncated or corrupt"):
        wd.read_range_pages(rng)


def test_bad_index_line(tmp_path):
    idx = tmp_path / "i-index.txt.bz2"
    idx.write_bytes(bz2.compress(b"100:1:A\nnot an index line\n"))
    with pytest.raises(InputError, match=r"i-index\.txt\.bz2:2: expected 'offset:page_id:title'"):
        wd.read_stream_offsets(str(idx))
