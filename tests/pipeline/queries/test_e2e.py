"""End to end on the real sample dump and real WordNet: every source, exact figures, determinism."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.queries.wordnet import read_head_words
from pipeline.wiki import dump as wd
from pipeline.wiki.markup import clean_wikitext
from pipeline.wiki.tokens import count_text
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

ARGS = ["--min-count", "20", "--min-bigram-count", "5", "--min-pmi", "10", "--min-views", "70", "--quiet"]


@pytest.fixture(scope="module")
def articles(wiki_sample_dump) -> list[str]:
    return [p.title for p in wd.iter_pages(str(wiki_sample_dump)) if p.is_article]


@pytest.fixture(scope="module")
def pageview_files(tmp_path_factory, articles) -> list[Path]:
    """Two hourly files: views that pass, fail the sum, fail the hourly rule, other domains."""
    d = tmp_path_factory.mktemp("pageviews")
    u = [t.replace(" ", "_") for t in articles]
    hour1 = [f"en {t} 60 0" for t in u[0:10]] + [f"en {t} 60 0" for t in u[10:15]]
    hour1 += [f"en {t} 40 0" for t in u[15:20]] + [f"en.m {t} 200 0" for t in u[20:25]]
    hour1 += ["en Special:Search 1000 0", "en Not_an_article_in_the_dump 500 0", "en OnlyThreeFields 5"]
    hour2 = [f"en {t} 60 0" for t in u[0:10]] + [f"en {t} 40 0" for t in u[15:20]]
    paths = []
    for i, lines in enumerate([hour1, hour2]):
        p = d / f"pageviews-20240101-{i:02d}0000.gz"
        p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        paths.append(p)
    return paths


def build(out: Path, dump: Path, wordnet: Path, pageviews: list[Path], workers: int, *extra: str) -> Path:
    args = [
        "queries",
        "--wiki-dump",
        str(dump),
        "--wordnet",
        str(wordnet),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--chunk-mb",
        "1",
        *ARGS,
        *extra,
    ]
    for p in pageviews:
        args += ["--pageviews", str(p)]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, wiki_sample_dump, wordnet_dir, pageview_files) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("queries")
    return {
        "w2": build(base / "w2", wiki_sample_dump, wordnet_dir, pageview_files, 2),
        "w2_again": build(base / "w2_again", wiki_sample_dump, wordnet_dir, pageview_files, 2),
        "w1": build(base / "w1", wiki_sample_dump, wordnet_dir, pageview_files, 1),
    }


def _without_timings(path: Path) -> dict:
    build = json.loads(path.read_text())
    build.pop("timings_s")
    build.pop("built_at")
    return build


def test_byte_identical_across_runs_and_worker_counts(outputs):
    ref = outputs["w2"]
    for other in ("w2_again", "w1"):
        for name in ("queries.parquet", "queries.txt"):
            assert (ref / name).read_bytes() == (outputs[other] / name).read_bytes(), (other, name)
        assert _without_timings(ref / "build.json") == _without_timings(outputs[other] / "build.json")
    assert not (ref / ".work").exists(), "the work dir is removed after success"


def test_every_source_and_exact_counts(outputs, wiki_sample_dump, wordnet_dir, pageview_files, articles):
    table = pq.read_table(outputs["w2"] / "queries.parquet").to_pylist()
    txt = (outputs["w2"] / "queries.txt").read_text(encoding="utf-8").splitlines()
    assert txt == [r["query"] for r in table]
    by_source = Counter(r["source"] for r in table)
    assert set(by_source) == {"wordnet", "unigram", "bigram", "title"}
    build = json.loads((outputs["w2"] / "build.json").read_text())
    assert {k: v["added"] for k, v in build["sources"].items()} == dict(by_source)
    assert build["total"] == len(table) == len({r["query"] for r in table})

    # WordNet comes first and whole: ~87k distinct head words from 117,659 synsets.
    wn = read_head_words(str(wordnet_dir))
    assert wn.synsets == 117_659
    assert [r["query"] for r in table[: len(wn.words)]] == wn.words
    assert 80_000 < by_source["wordnet"] < 95_000

    # Independent recount of the sample with a plain Counter (no chunks, no spill, no DuckDB).
    uni, bi = Counter(), Counter()
    n = sum(count_text(clean_wikitext(p.text), uni, bi) for p in wd.iter_pages(str(wiki_sample_dump)) if p.is_article)
    assert build["dump"]["tokens"] == n
    assert build["dump"]["distinct_unigrams"] == len(uni)
    assert build["dump"]["distinct_bigrams"] == len(bi)
    seen = set(wn.words)
    expected_uni = [w for w, c in sorted(uni.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 20 and w not in seen]
    got_uni = [(r["query"], r["count"]) for r in table if r["source"] == "unigram"]
    assert got_uni == [(w, uni[w]) for w in expected_uni]
    seen.update(expected_uni)

    def pmi(b: str) -> float:
        x, y = b.split(" ")
        return math.log2(n * bi[b] / (uni[x] * uni[y]))

    expected_bi = sorted(
        (b for b, c in bi.items() if c >= 5 and pmi(b) >= 10 and b not in seen), key=lambda b: (-pmi(b), -bi[b], b)
    )
    got_bi = [r for r in table if r["source"] == "bigram"]
    assert [r["query"] for r in got_bi] == expected_bi
    for r in got_bi:
        assert r["count"] == bi[r["query"]] and math.isclose(r["pmi"], pmi(r["query"]), rel_tol=1e-12)
    seen.update(expected_bi)

    # Titles: only dump articles with >= 70 views summed over hours that reached 50.
    expected_titles = sorted(t for t in articles[0:10] if t not in seen and ":" not in t)
    got_titles = [(r["query"], r["views"]) for r in table if r["source"] == "title"]
    assert got_titles == [(t, 120) for t in expected_titles]
    assert build["pageviews"]["bad_lines"] == 1
    assert build["titles_from"] == "pageviews"

    # WordNet entries get a count where the dump counted them as a token.
    dog = next(r for r in table if r["query"] == "dog")
    assert dog["source"] == "wordnet" and dog["count"] == uni["dog"]


def test_without_pageviews_titles_come_from_the_dump(tmp_path, wiki_sample_dump, wordnet_dir, articles):
    out = build(tmp_path / "nopv", wiki_sample_dump, wordnet_dir, [], 2, "--max-titles", "5")
    table = pq.read_table(out / "queries.parquet").to_pylist()
    titles = [r["query"] for r in table if r["source"] == "title"]
    assert len(titles) == 5
    order = {t: i for i, t in enumerate(articles)}
    assert all(t in order for t in titles)
    assert [order[t] for t in titles] == sorted(order[t] for t in titles)
    assert json.loads((out / "build.json").read_text())["titles_from"] == "dump (no pageviews given)"
