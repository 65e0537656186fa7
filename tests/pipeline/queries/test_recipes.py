"""The two recipes of the query list: MetaCLIP's rules reproduced exactly (against an
independent recount of the sample and the real WordNet), PMI equal to nltk's, and the clip
recipe choosing a real collocation where MetaCLIP's rule picks a hapax pair."""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.queries.aggregate import Aggregates
from pipeline.queries.combine import Row, combine
from pipeline.queries.counting import count_dumps
from pipeline.queries.recipes import is_entry, metaclip_wordnet, resolve_rules
from pipeline.queries.wordnet import read_head_words
from pipeline.wiki import dump as wd
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline.wiki.test_dump import FOOTER, HEADER, page

SAMPLE_METACLIP = ["--recipe", "metaclip", "--min-count", "20", "--min-pmi", "14"]


def test_metaclip_wordnet_is_86654_entries(wordnet_dir):
    wn = read_head_words(str(wordnet_dir))
    rows, report = combine(
        [("wordnet", (Row(w, "wordnet") for w in metaclip_wordnet(wn.words)), None)], None, accept=is_entry
    )
    assert len(rows) == 86_654
    assert [r.query for r in rows[:100]] == [str(i) for i in range(100)]
    queries = {r.query for r in rows}
    assert "st" in queries and "dog" in queries and "new york" in queries
    assert not any(q != q.lower() or "." in q for q in queries)
    assert report["wordnet"]["refused"] == 3  # ".22 caliber", ".38 caliber", ".45 caliber" cut to ""


def test_rules_per_recipe():
    clip, meta = resolve_rules("clip"), resolve_rules("metaclip")
    assert (clip.min_bigram_count, clip.min_pmi, clip.max_bigrams) == (100, None, 100_646)
    assert (meta.min_bigram_count, meta.min_pmi, meta.max_bigrams, meta.size) == (1, 30.0, None, None)
    assert resolve_rules("clip", max_bigrams="none", min_pmi=12.0).max_bigrams is None
    with pytest.raises(InputError, match="--min-doc-freq does not apply to --recipe clip"):
        resolve_rules("clip", min_doc_freq=3)
    with pytest.raises(InputError, match="--unigram-case does not apply to --recipe metaclip"):
        resolve_rules("metaclip", unigram_case="fold")
    assert not is_entry("") and not is_entry(",") and not is_entry("\u00bf") and is_entry("a") and is_entry("..")


# --- the sample, counted once per recipe -------------------------------------------------


def _aggregates(tmp: Path, dump: Path, recipe: str, min_doc_freq: int) -> Aggregates:
    count_dumps([str(dump)], tmp / "dump", workers=2, chunk_mb=1, recipe=recipe)
    agg = Aggregates(tmp / "dump", memory_limit="1GB")
    agg.build(min_bigram_count=1, min_doc_freq=min_doc_freq)
    return agg


@pytest.mark.parametrize("recipe,min_doc_freq", [("clip", 1), ("metaclip", 3)])
def test_pmi_equals_nltk_on_the_sample(tmp_path, wiki_sample_dump, recipe, min_doc_freq):
    from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder
    from nltk.probability import FreqDist

    agg = _aggregates(tmp_path, wiki_sample_dump, recipe, min_doc_freq)
    try:
        uni = dict(agg.con.execute("SELECT w, c FROM uni").fetchall())
        bi = dict(agg.con.execute("SELECT b, c FROM bi").fetchall())
        ours = {b: pmi for b, _, pmi in agg.bigrams(None)}
    finally:
        agg.close()
    pairs = {tuple(b.split(" ")): c for b, c in bi.items()}
    candidates = {p: c for p, c in pairs.items() if p[0] in uni and p[1] in uni}
    finder = BigramCollocationFinder(FreqDist(uni), FreqDist(candidates))
    theirs = {" ".join(p): s for p, s in finder.score_ngrams(BigramAssocMeasures.pmi)}
    assert len(candidates) > 50_000
    assert set(ours) == set(theirs)
    worst = max(abs(ours[b] - theirs[b]) for b in ours)
    assert worst < 1e-9, worst
    if recipe == "metaclip":  # pairs with a word outside the table (a digit, < 3 articles) are no candidates
        assert len(candidates) < len(pairs)


@pytest.fixture(scope="module")
def metaclip_pageviews(tmp_path_factory, wiki_sample_dump) -> list[Path]:
    titles = [p.title.replace(" ", "_") for p in wd.iter_pages(str(wiki_sample_dump)) if p.is_article][:6]
    d = tmp_path_factory.mktemp("pv")
    hour = [f"en {t} 60 0" for t in titles[:4]] + [f"en.m {t} 500 0" for t in titles[4:6]]
    hour += [
        "en Percent%2C_title 80 0",
        "en Talk:Some_page 900 0",
        "en Not_in_the_dump_at_all 75 0",
        "en Quiet_page 49 0",
        "en.m Mobile_only 900 0",
        "en ! 300 0",
        "en , 300 0",
    ]
    paths = []
    for i in range(2):
        p = d / f"pageviews-20240101-{i:02d}0000.gz"
        p.write_bytes(gzip.compress(("\n".join(hour) + "\n").encode(), mtime=0))
        paths.append(p)
    return paths


def _metaclip_reference(
    articles: list[str], wordnet_words: list[str], pageview_lines: list[str], min_count: int, min_pmi: float
) -> list[tuple[str, str]]:
    """MetaCLIP's list built from the rule as written, with plain Counters."""
    uni, docs, bi = Counter(), Counter(), Counter()
    for text in articles:
        words = [w for w in re.split(r"[^\w\-']", text.lower()) if w]
        kept = [w for w in words if not re.search(r"\d", w)]
        uni.update(kept)
        docs.update(set(kept))
        bi.update(zip(words, words[1:]))
    table = {w: c for w, c in uni.items() if docs[w] >= 3}
    n = sum(table.values())
    pmi = {p: math.log2(n * c / (table[p[0]] * table[p[1]])) for p, c in bi.items() if p[0] in table and p[1] in table}
    views = Counter()
    for line in pageview_lines:
        dom, title, v, _ = line.split(" ")
        if dom == "en" and int(v) >= 50:
            views[title.replace("_", " ")] += int(v)
    wordnet = [str(i) for i in range(100)] + [w.lower().split(".")[0] for w in wordnet_words]
    unigrams = sorted((w for w, c in table.items() if c >= min_count), key=lambda w: (-table[w], w))
    bigrams = sorted((p for p, s in pmi.items() if s >= min_pmi), key=lambda p: (-pmi[p], -bi[p], " ".join(p)))
    titles = sorted((t for t, v in views.items() if v >= 70 and ":" not in t), key=lambda t: (-views[t], t))
    out, seen = [], set()
    for source, entries in (
        ("wordnet", wordnet),
        ("unigram", unigrams),
        ("bigram", [" ".join(p) for p in bigrams]),
        ("title", titles),
    ):
        for e in entries:
            if e and not (len(e) == 1 and not e.isalnum()) and e not in seen:
                seen.add(e)
                out.append((e, source))
    return out


def test_metaclip_list_is_exact_on_the_sample(
    tmp_path, wiki_sample_dump, wordnet_dir, sample_articles, metaclip_pageviews
):
    out = tmp_path / "meta"
    args = [
        "queries",
        "--wiki-dump",
        str(wiki_sample_dump),
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(out),
        "--workers",
        "2",
        "--chunk-mb",
        "1",
        "--quiet",
        *SAMPLE_METACLIP,
    ]
    for p in metaclip_pageviews:
        args += ["--pageviews", str(p)]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    table = pq.read_table(out / "queries.parquet").to_pylist()
    lines = [ln for p in metaclip_pageviews for ln in gzip.decompress(p.read_bytes()).decode().splitlines()]
    expected = _metaclip_reference(sample_articles, read_head_words(str(wordnet_dir)).words, lines, 20, 14.0)
    got = [(r["query"], r["source"]) for r in table]
    assert got == expected
    by_source = Counter(s for _, s in got)
    assert by_source["wordnet"] == 86_654 and by_source["unigram"] > 500 and by_source["bigram"] > 100
    titles = [q for q, s in got if s == "title"]
    # Not percent-decoded, ':' dropped, missing pages kept, mobile lines and quiet hours ignored.
    assert "Percent%2C title" in titles and "Not in the dump at all" in titles
    assert not any(":" in t or t in ("Quiet page", "Mobile only") for t in titles)

    build = json.loads((out / "build.json").read_text())
    assert build["recipe"] == "metaclip" == build["parameters"]["recipe"]
    assert build["parameters"]["min_doc_freq"] == 3 and build["parameters"]["max_unigrams"] is None
    assert build["parameters"]["min_pmi"] == 14.0
    assert build["sources"]["title"]["refused"] == 2  # "!" and ","


def test_metaclip_refuses_daily_pageviews(tmp_path, wiki_sample_dump, wordnet_dir):
    daily = tmp_path / "pageviews-20240101-user.bz2"
    import bz2

    daily.write_bytes(bz2.compress(b"en.wikipedia Foo 12 desktop 300 A100B200\n"))
    res = run_cli(
        "queries",
        "--wiki-dump",
        str(wiki_sample_dump),
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(tmp_path / "o"),
        "--pageviews",
        str(daily),
        "--quiet",
        *SAMPLE_METACLIP,
    )
    assert_one_line_error(res, "pageviews-20240101-user.bz2", "daily pageview file", "hourly")


def test_clip_only_option_is_refused_with_metaclip(tmp_path, wiki_sample_dump, wordnet_dir):
    res = run_cli(
        "queries",
        "--wiki-dump",
        str(wiki_sample_dump),
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(tmp_path / "o"),
        "--unigram-case",
        "fold",
        "--recipe",
        "metaclip",
    )
    assert_one_line_error(res, "--unigram-case does not apply to --recipe metaclip")


# --- a collocation and a hapax pair ------------------------------------------------------

FILLER = [a + b + c for a in "bcdfg" for b in "aeiou" for c in "klmnp"]  # 125 letter-only words


def _tiny_dump(path: Path) -> Path:
    """40 articles of filler; "alpha beta" 150 times (alpha 60 and beta 40 times more,
    alone); "mnop rstu" once in each of 3 articles, its words nowhere else; "zyxw qvut" once."""
    import random

    rng = random.Random(7)
    pages = []
    for i in range(40):
        words = [rng.choice(FILLER) for _ in range(400)]
        extra = ["alpha beta"] * (150 // 40 + (1 if i < 150 % 40 else 0))
        extra += ["alpha"] * (60 // 40 + (1 if i < 60 % 40 else 0)) + ["beta"] * (1 if i < 40 else 0)
        if i < 3:
            extra.append("mnop rstu")
        if i == 5:
            extra.append("zyxw qvut")
        for e in extra:
            words.insert(rng.randrange(len(words) + 1), e)
        # full stops every 20 words keep filler from being one long phrase only
        text = " ".join(w + ("." if j % 20 == 19 else "") for j, w in enumerate(words))
        pages.append(page(f"Page {i}", i + 1, text))
    path.write_text(HEADER + "".join(pages) + FOOTER, encoding="utf-8")
    return path


def _bigrams(out: Path) -> list[str]:
    return [r["query"] for r in pq.read_table(out / "queries.parquet").to_pylist() if r["source"] == "bigram"]


def test_clip_picks_the_collocation_metaclip_the_hapax_pair(tmp_path, wordnet_dir):
    dump = _tiny_dump(tmp_path / "tiny.xml")
    common = ["queries", "--wiki-dump", str(dump), "--wordnet", str(wordnet_dir), "--workers", "1", "--quiet"]

    res = run_cli(*common, "--out", str(tmp_path / "clip"))  # the default recipe, default thresholds
    assert res.returncode == 0, res.stderr
    clip = _bigrams(tmp_path / "clip")
    assert "alpha beta" in clip and "zyxw qvut" not in clip and "mnop rstu" not in clip

    # MetaCLIP's rule (no count floor; the PMI floor lifted, as N is tiny here) ranks the
    # rare pairs above the collocation: a hapax pair reaches the largest PMI there is, log2 N.
    res = run_cli(
        *common, "--out", str(tmp_path / "meta1"), "--recipe", "metaclip", "--min-pmi", "none", "--min-doc-freq", "1"
    )
    assert res.returncode == 0, res.stderr
    meta = _bigrams(tmp_path / "meta1")
    assert meta[0] == "zyxw qvut" and meta.index("mnop rstu") < meta.index("alpha beta")
    top = pq.read_table(tmp_path / "meta1" / "queries.parquet").to_pylist()
    n = json.loads((tmp_path / "meta1" / "build.json").read_text())["dump"]["tokens_in_unigram_table"]
    assert math.isclose(next(r["pmi"] for r in top if r["query"] == "zyxw qvut"), math.log2(n))

    # With MetaCLIP's document floor (3 articles) the hapax words leave the table; the pair
    # seen in exactly 3 articles is the top one.
    res = run_cli(*common, "--out", str(tmp_path / "meta3"), "--recipe", "metaclip", "--min-pmi", "none")
    assert res.returncode == 0, res.stderr
    meta = _bigrams(tmp_path / "meta3")
    assert meta[0] == "mnop rstu" and "zyxw qvut" not in meta


def test_unigram_case_fold_sums_variants_under_the_most_frequent_spelling(
    tmp_path, wiki_sample_dump, wordnet_dir, sample_articles
):
    from pipeline.wiki.tokens import count_text

    out = tmp_path / "fold"
    res = run_cli(
        "queries",
        "--wiki-dump",
        str(wiki_sample_dump),
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(out),
        "--workers",
        "2",
        "--quiet",
        "--min-count",
        "20",
        "--min-bigram-count",
        "5",
        "--min-pmi",
        "10",
        "--unigram-case",
        "fold",
    )
    assert res.returncode == 0, res.stderr
    uni, bi = Counter(), Counter()
    for text in sample_articles:
        count_text(text, uni, bi)
    folded: dict[str, Counter] = {}
    for w, c in uni.items():
        folded.setdefault(w.lower(), Counter())[w] = c
    spelled = {min(v, key=lambda w: (-v[w], w)): sum(v.values()) for v in folded.values()}
    seen = set(read_head_words(str(wordnet_dir)).words)
    expected = [(w, c) for w, c in sorted(spelled.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 20 and w not in seen]
    table = pq.read_table(out / "queries.parquet").to_pylist()
    got = [(r["query"], r["count"]) for r in table if r["source"] == "unigram"]
    assert got == expected
    # "The" and "the" are one query now, counted together
    the = next(r for r in table if r["query"].lower() == "the")
    assert the["query"] == "the" and the["count"] == uni["the"] + uni["The"] + uni.get("THE", 0)
    assert json.loads((out / "build.json").read_text())["parameters"]["unigram_case"] == "fold"
