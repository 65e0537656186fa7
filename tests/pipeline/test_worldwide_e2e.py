"""The worldwide recipe end to end on the multilingual sample: queries from the de, ja, ru, th
and zh dumps, a pool of captions in those languages served from a loopback server, match
(language identified, each text against its own language's entries), balance (t per
language by equal tail share), shards and the audit's per-language table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.wiki import dump as wd
from pipeline.wiki.markup import clean_wikitext
from pipeline.wiki.sites import local_namespaces
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline.collect.test_tail_share import reference_p_to_t, reference_t_to_p
from tests.support.httpserver import make_png, serve_directory
from tests.support.multiwiki import sample_dir, worldwide_queries

pytestmark = pytest.mark.sample

LANGS = ("de", "ja", "ru", "th", "zh")
PER_LANG = 40
T_DE = 3  # the reference language's t: small enough that balancing drops pairs


@pytest.fixture(scope="module")
def sample() -> Path:
    return sample_dir()


def captions(sample: Path) -> list[tuple[str, str]]:
    """(language, caption): short lines of each dump's article text, as alt-texts are."""
    out = []
    for lang in LANGS:
        url = str(sample / f"{lang}wiki-sample-pages-articles-multistream.xml.bz2")
        names, n = local_namespaces(url), 0
        for page in wd.iter_pages(url):
            if not page.is_article:
                continue
            for line in clean_wikitext(page.text, names).splitlines():
                cap = line.strip()[:24] if lang in ("ja", "th", "zh") else " ".join(line.split()[:9])
                if len(cap) >= 8 and n < PER_LANG:
                    out.append((lang, cap))
                    n += 1
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample: Path) -> dict:
    root = tmp_path_factory.mktemp("worldwide")
    queries = root / "queries"
    res = worldwide_queries(sample, queries)
    assert res.returncode == 0, res.stderr
    rows = captions(sample)
    site = root / "site"
    site.mkdir()
    for i, _ in enumerate(rows):
        (site / f"{i}.png").write_bytes(make_png(24, 24, (i % 256, 40, 90)))
    shards = root / "shards"
    with serve_directory(site) as base:
        pool = root / "pool.parquet"
        pq.write_table(
            pa.table(
                {
                    "url": [f"{base}/{i}.png" for i in range(len(rows))],
                    "caption": [c for _, c in rows],
                    "truth": [lang for lang, _ in rows],
                }
            ),
            pool,
        )
        common = ["--pool", str(pool), "--queries", str(queries / "queries.parquet"), "--recipe", "worldwide"]
        common += ["--allow-private-hosts", "--samples-per-shard", "64", "--per-query", str(T_DE), "--quiet"]
        refused = run_cli("shards", *common, "--out", str(root / "refused"))
        res = run_cli("shards", *common, "--balance-reference", "de", "--out", str(shards))
    assert res.returncode == 0, res.stderr
    audit = run_cli("audit", "--queries", str(queries), "--shards", str(shards))
    assert audit.returncode == 0, audit.stderr
    return {"root": root, "queries": queries, "shards": shards, "rows": rows, "refused": refused}


def test_the_list_has_every_language(run):
    table = pq.read_table(run["queries"] / "queries.parquet")
    langs = Counter(table.column("lang").to_pylist())
    assert set(langs) == set(LANGS) and all(n > 200 for n in langs.values())
    build = json.loads((run["queries"] / "build.json").read_text())
    assert build["unsegmented_languages"] == [] and build["omw"]["lemmas"]["th"] > 1000
    # pageview lines of Wikipedias without a dump are counted, not taken for another language
    assert {"fr", "ko", "en", "zh_yue"} <= set(build["pageviews"]["lines_of_languages_without_a_dump"])


def test_each_text_is_identified_and_matched_in_its_own_language(run):
    curation = run["shards"] / "curation"
    stats = json.loads((curation / "match_stats.json").read_text())
    truth = Counter(lang for lang, _ in run["rows"])
    for lang in LANGS:  # the identifier gets most captions of every language right
        assert stats["languages"][lang]["rows"] >= 0.6 * truth[lang], (lang, stats["languages"])
        assert stats["languages"][lang]["matched"] > 0
    query_lang = pq.read_table(run["queries"] / "queries.parquet").column("lang").to_pylist()
    matches = pa.concat_tables(pq.read_table(f) for f in sorted((curation / "matches").glob("part-*.parquet")))
    for ids, lang in zip(matches.column("query_ids").to_pylist(), matches.column("lang").to_pylist()):
        assert {query_lang[i] for i in ids} == {lang}


def test_each_language_gets_its_own_t_by_equal_tail_share(run):
    curation = run["shards"] / "curation"
    balance = json.loads((curation / "balance_stats.json").read_text())
    assert balance["reference_lang"] == "de"
    counts = pq.read_table(curation / "entry_counts.parquet").column("count").to_numpy()
    query_lang = np.array(pq.read_table(run["queries"] / "queries.parquet").column("lang").to_pylist(), dtype=object)
    p = reference_t_to_p(counts[query_lang == "de"], T_DE)
    assert balance["languages"]["de"]["t"] == T_DE
    for lang in LANGS:
        if lang != "de":
            assert balance["languages"][lang]["t"] == int(reference_p_to_t(counts[query_lang == lang], p)), lang
    assert balance["kept"] < balance["matched"]  # t = 3 drops pairs of the head entries


def test_shards_and_audit_carry_the_language(run):
    shard_rows = [r for f in sorted(run["shards"].glob("[0-9]*.parquet")) for r in pq.read_table(f).to_pylist()]
    selected_parts = sorted((run["shards"] / "curation" / "selected").glob("part-*.parquet"))
    selected = [r for f in selected_parts for r in pq.read_table(f, columns=["uid", "lang"]).to_pylist()]
    assert {(r["uid"], r["lang"]) for r in shard_rows} == {(r["uid"], r["lang"]) for r in selected}
    summary = json.loads((run["shards"] / "audit" / "summary.json").read_text())
    table = {r["lang"]: r for r in summary["balancing"]["languages"]}
    downloaded = Counter(r["lang"] for r in shard_rows if r["status"] == "success")
    for lang in LANGS:
        assert table[lang]["downloaded"] == downloaded[lang] > 0
        assert table[lang]["kept"] == sum(1 for r in selected if r["lang"] == lang)
    assert "By language" in (run["shards"] / "audit" / "report.html").read_text()
    # the dataset card lists the languages (the Hub's `language` field) and each one's t
    card = (run["shards"] / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["language"] == sorted(LANGS)
    balance = json.loads((run["shards"] / "curation" / "balance_stats.json").read_text())
    for lang in LANGS:
        assert f"| {lang} | {balance['languages'][lang]['t']:,} |" in card


def test_without_the_reference_language_balancing_is_a_one_line_error(run):
    assert_one_line_error(run["refused"], "reference language 'en'", "--balance-reference")
