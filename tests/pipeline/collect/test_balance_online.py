"""`shards --balance online`: every matched pair is downloaded (or at most about K x t per
query), with what a trainer needs to balance each pass beside the shards."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.support.httpserver import make_png, serve_directory

T = 10
HEAD, TAIL = 300, 5  # texts matching "cat" only, and "bird" only

# whole `pipeline shards` runs with downloads from a loopback server: out of `make test-fast`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("online")
    site = root / "site"
    site.mkdir()
    captions = [f"a cat number {i}" for i in range(HEAD)] + [f"a bird number {i}" for i in range(TAIL)]
    for i in range(len(captions)):
        (site / f"{i}.png").write_bytes(make_png(8, 8, (i % 256, 10, 10)))
    queries = root / "q.parquet"
    pq.write_table(pa.table({"query": ["cat", "bird"]}), queries)
    out = {}
    with serve_directory(site) as base:
        pool = root / "pool.parquet"
        pq.write_table(pa.table({"url": [f"{base}/{i}.png" for i in range(len(captions))], "caption": captions}), pool)
        common = ["--pool", str(pool), "--queries", str(queries), "--per-query", str(T), "--allow-private-hosts"]
        common += ["--samples-per-shard", "100", "--quiet"]
        for name, extra in (
            ("online", ["--balance", "online"]),
            ("capped", ["--balance", "online", "--online-cap", "2"]),
        ):
            res = run_cli("shards", *common, *extra, "--out", str(root / name))
            assert res.returncode == 0, res.stderr
            out[name] = root / name
        out["bad_cap"] = run_cli(
            "shards", *common, "--balance", "online", "--online-cap", "0.5", "--out", str(root / "b")
        )
        out["cap_offline"] = run_cli("shards", *common, "--online-cap", "2", "--out", str(root / "c"))
    # a folder balanced online, then offline (the steps alone, no download): the table goes
    switch = ["--out", str(root / "switch"), "--quiet"]
    for step in (
        ["pool", "--pool", str(pool), "--allow-private-hosts"],
        ["match", "--queries", str(queries)],
        ["balance", "--queries", str(queries), "--per-query", str(T), "--balance", "online"],
    ):
        res = run_cli(*step, *switch)
        assert res.returncode == 0, res.stderr
    out["online_before"] = (root / "switch" / "entry_counts.parquet").exists()
    res = run_cli("balance", "--queries", str(queries), "--per-query", str(T), *switch)
    assert res.returncode == 0, res.stderr
    out["offline_after"] = root / "switch"
    audit = run_cli("audit", "--queries", str(root), "--shards", str(out["capped"]))
    assert audit.returncode == 0, audit.stderr
    out["queries"] = queries
    return out


def shard_rows(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("[0-9]*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_online_downloads_every_matched_pair_with_its_keep_probability(runs):
    rows = shard_rows(runs["online"])
    assert sum(r["status"] == "success" for r in rows) == HEAD + TAIL
    curation = pq.read_table(runs["online"] / "curation" / "entry_counts.parquet").column("count").to_pylist()
    beside = pq.read_table(runs["online"] / "entry_counts.parquet")
    assert beside.column("count").to_pylist() == curation == [HEAD, TAIL]
    # keep_prob is what offline balancing at t gives each text
    assert sorted({round(r["keep_prob"], 6) for r in rows}) == [round(T / HEAD, 6), 1.0]


def test_capped_online_keeps_about_k_times_t_per_query_and_the_tail_whole(runs):
    rows = [r for r in shard_rows(runs["capped"]) if r["status"] == "success"]
    cats = [r for r in rows if r["queries"] == ["cat"]]
    birds = [r for r in rows if r["queries"] == ["bird"]]
    assert len(birds) == TAIL
    # each cat text is kept with min(1, 2 t / 300) = 1/15: Binomial(300, 1/15), mean 20; the
    # draws are fixed by the seed, and 6..38 holds with probability > 0.9999 for any seed
    assert 6 <= len(cats) <= 38
    # keep_prob is the chance a pass at t keeps a downloaded text: the capped head stands
    # for min(300, 2 t) = 20 pairs, so 10 / 20 (not 10 / 300: a pass keeps about t cats)
    assert all(r["keep_prob"] == pytest.approx(T / (2 * T)) for r in cats)
    assert all(r["keep_prob"] == 1.0 for r in birds)
    table = pq.read_table(runs["capped"] / "entry_counts.parquet")
    assert table.to_pydict() == {"query_id": [0, 1], "query": ["cat", "bird"], "count": [HEAD, TAIL], "t": [T, T]}
    meta = json.loads(table.schema.metadata[b"balance"])
    assert meta == {"mode": "online", "online_cap": 2.0, "per_query": T, "seed": 0}
    stats = json.loads((runs["capped"] / "curation" / "balance_stats.json").read_text())
    assert stats["mode"] == "online" and stats["expected_kept"] == pytest.approx(round(len(cats) / 2 + TAIL, 1))


def test_card_and_audit_say_the_dataset_is_not_balanced(runs):
    card = (runs["capped"] / "README.md").read_text()
    assert "**none in these shards** (`--balance online`)" in card and "at most about 2.0 x t" in card
    summary = json.loads((runs["capped"] / "audit" / "summary.json").read_text())
    online = summary["balancing"]["online"]
    selected_cats = sum(1 for r in shard_rows(runs["capped"]) if r["queries"] == ["cat"])
    assert online["t"] == T and online["expected_texts_per_pass"] == pytest.approx(round(selected_cats / 2 + TAIL, 1))
    by_id = {r["query_id"]: r for r in online["top_queries"]}
    # a pass keeps each selected cat text with 10/20: the expectation over what was selected
    assert by_id[0]["expected_at_t"] == pytest.approx(round(selected_cats * T / (2 * T), 1))
    assert by_id[1]["expected_at_t"] == TAIL
    assert "not balanced" in (runs["capped"] / "audit" / "report.md").read_text()


def test_offline_rebalancing_removes_the_online_table(runs):
    assert runs["online_before"] and not (runs["offline_after"] / "entry_counts.parquet").exists()
    stats = json.loads((runs["offline_after"] / "curation" / "balance_stats.json").read_text())
    assert "mode" not in stats and stats["kept"] < HEAD


def test_bad_online_options_are_one_line_errors(runs):
    assert_one_line_error(runs["bad_cap"], "--online-cap must be at least 1")
    assert_one_line_error(runs["cap_offline"], "--online-cap applies to --balance online only")


def test_each_shard_has_an_index_of_its_samples_byte_ranges(runs):
    """NNNNN.tar.idx: per sample its key, uid, query ids and the byte range of its members,
    which a reader can open alone as a tar of that one sample."""
    import io
    import tarfile

    for tar in sorted(runs["online"].glob("[0-9]*.tar")):
        index = pq.read_table(f"{tar}.idx")
        assert int(index.schema.metadata[b"tar_size"]) == tar.stat().st_size
        data = tar.read_bytes()
        meta = {r["key"]: r for r in pq.read_table(tar.with_suffix(".parquet")).to_pylist()}
        rows = index.to_pylist()
        assert [r["key"] for r in rows] == sorted(k for k, r in meta.items() if r["status"] == "success")
        for r in rows:
            chunk = data[r["offset"] : r["offset"] + r["size"]]
            with tarfile.open(fileobj=io.BytesIO(chunk), mode="r|") as tf:
                names = sorted(m.name for m in tf)
            assert names == sorted(f"{r['key']}.{ext}" for ext in ("jpg", "json", "txt"))
            assert r["uid"] == meta[r["key"]]["uid"] and r["query_ids"] == meta[r["key"]]["query_ids"]


def test_offline_expectation_equals_the_trainers_and_its_draws_converge_to_it(runs):
    """On shards built online, the trainer's expectation for a pass at t (`train.balance`)
    is, per entry, the balance step's: the sum of its texts' keep_prob at t, which is what
    offline balancing at t keeps in expectation (head t, tail whole). Over 200 passes the
    trainer's drawn head count stays in its exact binomial bounds each pass (Bonferroni,
    false-alarm rate <= 1e-4) and the per-pass mean converges to t."""
    from scipy import stats

    from train.balance import load_entry_table, make_balance, pass_record

    urls = sorted(str(p) for p in runs["online"].glob("[0-9]*.tar"))
    table = load_entry_table(urls)
    balance = make_balance(table, T, seed=0)
    rows = [r for r in shard_rows(runs["online"]) if r["status"] == "success"]
    offline = {q: sum(r["keep_prob"] for r in rows if q in r["query_ids"]) for q in (0, 1)}
    assert offline == pytest.approx({0: T, 1: TAIL})
    passes = 200
    records = [pass_record(table, balance, urls, e, lambda uid: False) for e in range(passes)]
    for record, _ in records:
        assert dict(zip(record.column("query_id").to_pylist(), record.column("expected").to_pylist())) == (
            pytest.approx(offline)
        )
    cats = [r.column("drawn").to_pylist()[0] for r, _ in records]
    lo, hi = (f(1e-4 / (2 * passes), HEAD, T / HEAD) for f in (stats.binom.ppf, stats.binom.isf))
    assert lo <= min(cats) and max(cats) <= hi
    assert abs(sum(cats) / passes - T) <= stats.norm.isf(1e-4 / 2) * (T * (1 - T / HEAD) / passes) ** 0.5
    assert all(r.column("drawn").to_pylist()[1] == TAIL for r, _ in records)


def test_an_index_made_from_a_tars_headers_is_the_one_the_download_step_wrote(runs, tmp_path):
    import shutil

    from pipeline.shard_format import write_index

    for tar in sorted(runs["online"].glob("[0-9]*.tar")):
        copy = tmp_path / tar.name
        shutil.copy(tar, copy)
        assert pq.read_table(write_index(str(copy))).equals(pq.read_table(f"{tar}.idx"))
