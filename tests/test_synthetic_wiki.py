"""Tests for the synthetic MediaWiki dump generator (tests.support.synthetic_wiki)."""

from __future__ import annotations

import bz2
import collections
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runnable without the package installed
    sys.path.insert(0, str(ROOT))

from tests.support.synthetic_wiki import DumpInfo, Vocabulary, index_path_for, write_dump  # noqa: E402

MB = 1_000_000
SEED = 3


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_pages(xml: bytes) -> tuple[dict, list[dict]]:
    """(namespace key -> prefix, pages) from a whole dump, with iterparse."""
    namespaces: dict[int, str] = {}
    pages = []
    for _, el in ET.iterparse(io.BytesIO(xml)):
        tag = _local(el.tag)
        if tag == "namespace":
            namespaces[int(el.get("key"))] = el.text or ""
        elif tag == "page":
            pages.append(_page_dict(el))
            el.clear()
    return namespaces, pages


def _page_dict(el) -> dict:
    kids = {_local(c.tag): c for c in el}
    rev = {_local(c.tag): c for c in kids["revision"]}
    text = rev["text"]
    red = kids.get("redirect")
    return {
        "title": kids["title"].text,
        "ns": int(kids["ns"].text),
        "id": int(kids["id"].text),
        "redirect": None if red is None else red.get("title"),
        "text": text.text or "",
        "bytes": int(text.get("bytes")),
        "space": text.get("{http://www.w3.org/XML/1998/namespace}space"),
        "sha1": rev["sha1"].text,
        "model": rev["model"].text,
        "format": rev["format"].text,
        "rev_id": int(rev["id"].text),
        "timestamp": rev["timestamp"].text,
    }


def sha1_base36(data: bytes) -> str:
    n = int(hashlib.sha1(data).hexdigest(), 16)
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(31, "0")


def read_xml(path: str) -> bytes:
    if path.endswith(".bz2"):
        with bz2.open(path, "rb") as f:
            return f.read()
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    return Path(path).read_bytes()


def split_bz2_streams(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, decompressed bytes) of each concatenated bz2 stream, found independently
    of any index: a decompressor stops at the end of its stream."""
    out = []
    pos = 0
    while pos < len(data):
        d = bz2.BZ2Decompressor()
        plain = d.decompress(data[pos:])
        assert d.eof, f"truncated bz2 stream at offset {pos}"
        out.append((pos, plain))
        pos = len(data) - len(d.unused_data)
    return out


def article_tokens(pages: list[dict]) -> list[list[str]]:
    return [re.findall(r"[a-z]+", p["text"]) for p in pages if p["ns"] == 0 and p["redirect"] is None]


# ------------------------------------------------------------------------------------
# fixtures: a few small dumps, written once
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def plain(tmp) -> DumpInfo:
    return write_dump(str(tmp / "plain.xml"), 1.0, seed=SEED)


@pytest.fixture(scope="module")
def plain_pages(plain):
    return parse_pages(read_xml(plain.path))


@pytest.fixture(scope="module")
def multi(tmp) -> DumpInfo:
    return write_dump(
        str(tmp / "enwiki-test-pages-articles-multistream.xml.bz2"),
        1.0,
        seed=SEED,
        multistream=True,
        pages_per_stream=25,
    )


# ------------------------------------------------------------------------------------
# structure and counts
# ------------------------------------------------------------------------------------


def test_well_formed_and_counts_match_info(plain, plain_pages):
    namespaces, pages = plain_pages
    assert pages, "no pages"
    assert plain.pages == len(pages)
    assert plain.articles == sum(p["ns"] == 0 and p["redirect"] is None for p in pages)
    assert plain.redirects == sum(p["redirect"] is not None for p in pages)
    assert plain.bytes_xml == len(read_xml(plain.path)) == os.path.getsize(plain.path)
    assert plain.bytes_file == plain.bytes_xml
    assert plain.index_path is None and plain.streams == 0
    # a realistic mix, not all one kind
    assert 0.3 < plain.articles / plain.pages < 0.75
    assert 0.1 < plain.redirects / plain.pages < 0.5
    assert {0, 10, 14} <= {p["ns"] for p in pages}


def test_pages_look_like_mediawiki(plain_pages):
    namespaces, pages = plain_pages
    assert namespaces[0] == "" and namespaces[10] == "Template" and namespaces[14] == "Category"
    titles = [p["title"] for p in pages]
    assert len(set(titles)) == len(titles), "titles must be unique"
    ids = [p["id"] for p in pages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    articles = {p["title"] for p in pages if p["ns"] == 0 and p["redirect"] is None}
    for p in pages:
        prefix = namespaces[p["ns"]]
        if prefix:
            assert p["title"].startswith(prefix + ":"), p["title"]
        else:
            assert ":" not in p["title"], p["title"]
        assert p["title"][:1].isupper(), p["title"]
        assert p["bytes"] == len(p["text"].encode("utf-8"))
        assert p["sha1"] == sha1_base36(p["text"].encode("utf-8"))
        assert p["space"] == "preserve"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["timestamp"])
        if p["ns"] == 828:
            assert (p["model"], p["format"]) == ("Scribunto", "text/plain")
        else:
            assert (p["model"], p["format"]) == ("wikitext", "text/x-wiki")
        if p["redirect"] is not None:
            m = re.match(r"#REDIRECT \[\[([^\]#|]+)(#[^\]]*)?\]\]", p["text"])
            assert m and m.group(1) == p["redirect"], p["text"][:100]
            assert p["redirect"] != p["title"]
            if p["ns"] == 0:
                assert p["redirect"] in articles
            else:
                assert p["redirect"].startswith(namespaces[p["ns"]] + ":")
        else:
            assert not p["text"].startswith("#REDIRECT")


def test_wikitext_markup_present_and_escaped(plain, plain_pages):
    raw = read_xml(plain.path)
    # escaped like real dumps: no raw tags inside <text>, entities instead
    assert b"&lt;ref" in raw and b"&quot;" in raw and b"&amp;" in raw
    assert b"<ref" not in raw and b"<br" not in raw
    _, pages = plain_pages
    texts = [p["text"] for p in pages if p["ns"] == 0 and p["redirect"] is None]
    body = "\n".join(texts)
    for needle in (
        "'''",
        "== ",
        "<ref",
        "</ref>",
        "{{cite ",
        "{{Infobox ",
        "[[Category:",
        "[[File:",
        "|thumb",
        "{|",
        "|}",
        "\n* ",
        "{{Reflist}}",
    ):
        assert needle in body, needle
    assert re.search(r"\[\[[^\[\]|]+\|[^\[\]|]+\]\]", body), "no [[target|label]] link"
    assert re.search(r"\{\{[^{}]*\{\{[^{}]*\}\}[^{}]*\}\}", body, re.S), "no nested template"
    assert re.search(r"\[\[File:[^\]]*\[\[[^\]]+\]\][^\]]*\]\]", body), "no link inside a caption"
    assert re.search(r"^==+ [^=\n]+ ==+$", body, re.M), "no heading"
    # every article starts its lead with the bolded title
    for p in pages:
        if p["ns"] == 0 and p["redirect"] is None:
            assert f"'''{p['title']}'''" in p["text"]
    # some non-ASCII text, as in real dumps
    assert any(ord(c) > 127 for c in body)
    # balanced markup in every article
    for t in texts:
        assert t.count("{{") == t.count("}}"), t[:200]
        assert t.count("[[") == t.count("]]"), t[:200]
        assert len(re.findall(r'<ref(?: name="[^"]*")?>', t)) == t.count("</ref>"), t[:200]


def test_words_counts_article_prose(plain, plain_pages):
    _, pages = plain_pages
    ntok = sum(len(t) for t in article_tokens(pages))
    # `words` counts vocabulary draws for article prose; lowercase tokens also include
    # markup words (cite, web, url, ...), so somewhat more, never fewer than 80%
    assert plain.words > 0
    assert 0.8 * plain.words < ntok < 1.6 * plain.words
    # prose is most of the bytes: a few bytes of XML per word
    assert 4 < plain.bytes_xml / plain.words < 20


# ------------------------------------------------------------------------------------
# size, formats, determinism
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mb", [0.5, 1.5])
def test_size_is_approximate(tmp, mb):
    info = write_dump(str(tmp / f"size{mb}.xml.gz"), mb, seed=SEED)
    xml = read_xml(info.path)
    assert info.bytes_xml == len(xml)
    assert mb * MB <= info.bytes_xml < mb * MB * 1.15
    assert info.bytes_file == os.path.getsize(info.path) < info.bytes_xml / 2
    assert xml.endswith(b"  </page>\n</mediawiki>\n")


def test_formats_give_the_same_xml(tmp, plain):
    xml = read_xml(plain.path)
    for name in ("fmt.xml.gz", "fmt.xml.bz2"):
        info = write_dump(str(tmp / name), 1.0, seed=SEED)
        assert read_xml(info.path) == xml, name
        assert (info.pages, info.articles, info.redirects, info.words, info.bytes_xml) == (
            plain.pages,
            plain.articles,
            plain.redirects,
            plain.words,
            plain.bytes_xml,
        )
    assert not list(tmp.glob("*.partial")), "temporary files left behind"


@pytest.mark.parametrize("ext", [".xml.bz2", ".xml.gz", ".xml"])
def test_deterministic_bytes(tmp, ext):
    a = write_dump(str(tmp / f"det_a{ext}"), 0.5, seed=11)
    b = write_dump(str(tmp / f"det_b{ext}"), 0.5, seed=11)
    c = write_dump(str(tmp / f"det_c{ext}"), 0.5, seed=12)
    da, db, dc = (Path(i.path).read_bytes() for i in (a, b, c))
    assert da == db
    assert da != dc
    assert read_xml(a.path) != read_xml(c.path)
    if ext == ".xml.gz":
        assert da[4:8] == b"\0\0\0\0", "gzip mtime must be 0"
        assert not da[3] & 0x08, "gzip header must not carry a file name"


def test_deterministic_across_processes(tmp):
    """Nothing may depend on Python's per-process string hash salt."""
    code = "import sys; from tests.support.synthetic_wiki import write_dump; write_dump(sys.argv[1], 0.3, seed=5)"
    outs = []
    for i, salt in enumerate(("1", "2")):
        out = tmp / f"proc{i}.xml"
        env = dict(os.environ, PYTHONHASHSEED=salt, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT, env=env)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_bad_arguments(tmp):
    with pytest.raises(ValueError, match="multistream"):
        write_dump(str(tmp / "bad.xml.gz"), 0.1, multistream=True)
    with pytest.raises(ValueError, match=r"\.xml"):
        write_dump(str(tmp / "bad.txt"), 0.1)
    with pytest.raises(ValueError):
        write_dump(str(tmp / "bad.xml"), 0)
    with pytest.raises(ValueError):
        write_dump(str(tmp / "bad.xml.bz2"), 0.1, multistream=True, pages_per_stream=0)
    assert not list(tmp.glob("bad*")), "nothing written for bad arguments"


# ------------------------------------------------------------------------------------
# multistream
# ------------------------------------------------------------------------------------


def test_index_name_like_wikipedia():
    assert (
        index_path_for("d/enwiki-20240601-pages-articles-multistream.xml.bz2")
        == "d/enwiki-20240601-pages-articles-multistream-index.txt.bz2"
    )
    assert index_path_for("x.xml.bz2") == "x-index.txt.bz2"
    with pytest.raises(ValueError):
        index_path_for("x.xml.gz")


def test_multistream_layout(multi):
    assert multi.index_path == index_path_for(multi.path)
    assert multi.index_path.endswith("-multistream-index.txt.bz2")
    data = Path(multi.path).read_bytes()
    streams = split_bz2_streams(data)
    assert multi.streams == len(streams)
    assert multi.bytes_file == len(data)
    head, last = streams[0][1], streams[-1][1]
    assert head.startswith(b"<mediawiki ") and head.endswith(b"  </siteinfo>\n")
    assert b"<page>" not in head
    assert last == b"</mediawiki>\n"
    page_streams = streams[1:-1]
    expected = -(-multi.pages // 25)
    assert len(page_streams) == expected
    for i, (_, plain) in enumerate(page_streams):
        assert plain.startswith(b"  <page>\n") and plain.endswith(b"  </page>\n")
        n = plain.count(b"<page>")
        assert n == (25 if i < expected - 1 else multi.pages - 25 * (expected - 1))


def test_multistream_index_points_at_streams(multi):
    data = Path(multi.path).read_bytes()
    with bz2.open(multi.index_path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == multi.pages
    entries = collections.OrderedDict()
    for line in lines:
        offset, pid, title = line.split(":", 2)  # titles may contain ':'
        entries.setdefault(int(offset), []).append((int(pid), title))
    starts = [off for off, _ in split_bz2_streams(data)]
    ends = dict(zip(starts, starts[1:] + [len(data)]))
    assert list(entries) == sorted(entries)
    assert set(entries) == set(starts[1:-1]), "one index offset per page stream"
    for offset, expected in entries.items():
        assert offset in ends
        # the stream alone, decompressed on its own, holds exactly these pages
        plain = bz2.decompress(data[offset : ends[offset]])
        root = ET.fromstring(b"<pages>" + plain + b"</pages>")
        assert all(_local(c.tag) == "page" for c in root)
        got = [(int(c.find("id").text), c.find("title").text) for c in root]
        assert got == expected
        # a reader that seeks to the offset and reads one stream gets the same
        d = bz2.BZ2Decompressor()
        assert d.decompress(data[offset:]) == plain and d.eof


def test_multistream_same_xml_as_single_stream(tmp, multi, plain):
    whole = read_xml(multi.path)  # bz2.open reads all concatenated streams
    assert whole == read_xml(plain.path)
    assert (multi.pages, multi.articles, multi.redirects, multi.words, multi.bytes_xml) == (
        plain.pages,
        plain.articles,
        plain.redirects,
        plain.words,
        plain.bytes_xml,
    )
    other = write_dump(str(tmp / "pps7-multistream.xml.bz2"), 1.0, seed=SEED, multistream=True, pages_per_stream=7)
    assert read_xml(other.path) == whole
    assert other.streams == 2 + -(-other.pages // 7)


def test_multistream_deterministic(tmp, multi):
    again = write_dump(str(tmp / "again-multistream.xml.bz2"), 1.0, seed=SEED, multistream=True, pages_per_stream=25)
    assert Path(again.path).read_bytes() == Path(multi.path).read_bytes()
    assert Path(again.index_path).read_bytes() == Path(multi.index_path).read_bytes()


# ------------------------------------------------------------------------------------
# text statistics: Zipf, growth, names
# ------------------------------------------------------------------------------------


def test_distinct_words_and_bigrams_grow_with_size(tmp, plain, plain_pages):
    small = write_dump(str(tmp / "half.xml"), 0.5, seed=SEED)
    _, small_pages = parse_pages(read_xml(small.path))

    def distinct(pages):
        toks = article_tokens(pages)
        words = {w for t in toks for w in t}
        bigrams = {b for t in toks for b in zip(t, t[1:])}
        return len(words), len(bigrams)

    w1, b1 = distinct(small_pages)
    w2, b2 = distinct(plain_pages[1])
    assert 1.8 < plain.words / small.words < 2.2
    assert w2 > 1.5 * w1, (w1, w2)  # iid Zipf s=1.1 gives about N^0.9
    assert b2 > 1.6 * b1, (b1, b2)


def test_zipf_shape(plain_pages):
    counts = collections.Counter(w for t in article_tokens(plain_pages[1]) for w in t)
    freq = [c for _, c in counts.most_common()]
    # rank 1 vs rank 10 and rank 10 vs rank 100: about 10**1.1 = 12.6 for s = 1.1
    assert 6 < freq[0] / freq[9] < 25
    assert 6 < freq[9] / freq[99] < 25
    # long tail: many words seen once
    assert sum(c == 1 for c in freq) > 0.3 * len(freq)


def test_recurring_names_give_high_pmi_bigrams(plain_pages):
    _, pages = plain_pages
    toks = [re.findall(r"[^\W\d_]+", p["text"]) for p in pages if p["ns"] == 0 and p["redirect"] is None]
    uni = collections.Counter(w for t in toks for w in t)
    bi = collections.Counter(b for t in toks for b in zip(t, t[1:]))
    names = [
        (a, b)
        for (a, b), c in bi.items()
        if c >= 10 and a[:1].isupper() and b[:1].isupper() and c >= 0.5 * uni[a] and c >= 0.5 * uni[b]
    ]
    assert len(names) >= 5, names


def test_sentences_start_with_capitals(plain_pages):
    _, pages = plain_pages
    body = " ".join(p["text"] for p in pages if p["ns"] == 0 and p["redirect"] is None)
    starts = re.findall(r"[a-z]{2,}\. ([A-Za-z])", body)
    assert len(starts) > 100
    assert sum(s.isupper() for s in starts) / len(starts) > 0.95


# ------------------------------------------------------------------------------------
# vocabulary
# ------------------------------------------------------------------------------------


def test_vocabulary_unique_pronounceable_and_seeded():
    v = Vocabulary(0, 400_000)
    words = v.words(range(400_000))
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)
    assert words[0] == "the"
    assert v.word(123_456) == words[123_456] == Vocabulary(0, 400_000).word(123_456)
    other = Vocabulary(1, 400_000).words(range(1000, 2000))
    assert other != words[1000:2000]
    # frequent ranks are short, rare ranks longer
    assert sum(map(len, words[100:1100])) < sum(map(len, words[300_000:301_000]))
    with pytest.raises(IndexError):
        v.word(400_000)


# ------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tests.support.synthetic_wiki", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_writes_and_prints_one_json_line(tmp):
    out = tmp / "cli-multistream.xml.bz2"
    r = _cli(str(out), "--mb", "0.3", "--seed", "2", "--multistream", "--pages-per-stream", "10")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["path"] == str(out)
    assert summary["index_path"] == str(tmp / "cli-multistream-index.txt.bz2")
    assert Path(summary["index_path"]).exists()
    assert summary["bytes_xml"] >= 0.3 * MB
    assert summary["pages"] > 0 and summary["xml_mb_per_s"] > 0
    assert summary["bytes_xml"] == len(read_xml(str(out)))
    api = write_dump(str(tmp / "cli-api.xml"), 0.3, seed=2)
    assert read_xml(str(out)) == read_xml(api.path)


def test_cli_help_and_errors(tmp):
    r = _cli("--help")
    assert r.returncode == 0
    for opt in ("--mb", "--seed", "--multistream", "--pages-per-stream", "--vocab-size"):
        assert opt in r.stdout
    r = _cli(str(tmp / "wrong.txt"), "--mb", "0.1")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and ".xml" in r.stderr
    r = _cli(str(tmp / "wrong.xml.gz"), "--mb", "0.1", "--multistream")
    assert r.returncode == 2 and "Traceback" not in r.stderr
