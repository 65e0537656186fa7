"""The shards verbs as a user meets them: help, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_one_line_error as one_line_error
from tests.conftest import run_cli
from tests.support.httpserver import make_png, serve_directory


def test_help_lists_the_steps():
    res = run_cli("shards", "--help")
    assert res.returncode == 0
    for text in (
        "--pool",
        "--per-query",
        "--image-size",
        "--sample-openclipart",
        "entry_counts.parquet",
        "1 - prod(1 - min(1, t / count_q))",
    ):
        assert text in res.stdout
    for verb in ("pool", "match", "balance", "download"):
        assert run_cli(verb, "--help").returncode == 0


def test_no_pool_and_missing_columns(tmp_path):
    one_line_error(run_cli("shards", "--out", str(tmp_path / "o")), "no --pool given")
    bad = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"image": ["http://example.com/a.jpg"], "alt": ["a cat"]}), bad)
    one_line_error(run_cli("pool", "--pool", str(bad), "--out", str(tmp_path / "o")), "pairs.parquet", "image", "alt")
    one_line_error(run_cli("pool", "--pool", str(tmp_path / "none-*.csv"), "--out", str(tmp_path / "o")), "none-*.csv")


def test_steps_out_of_order_and_missing_queries(tmp_path):
    one_line_error(run_cli("match", "--out", str(tmp_path / "o")), "'pool' step has not finished")
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": ["http://example.com/a.jpg"], "caption": ["a cat"]}), pairs)
    assert run_cli("pool", "--pool", str(pairs), "--out", str(tmp_path / "o"), "--quiet").returncode == 0
    one_line_error(
        run_cli("match", "--out", str(tmp_path / "o"), "--queries", str(tmp_path / "q.parquet")),
        "q.parquet: query list not found",
    )


def test_balance_refuses_another_query_list_and_bad_options(tmp_path):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table(
            {
                "url": [f"http://example.com/{i}.jpg" for i in range(4)],
                "caption": ["a cat", "a dog", "a cat and a dog", "a bird"],
            }
        ),
        pairs,
    )
    q1, q2 = tmp_path / "q1.parquet", tmp_path / "q2.parquet"
    pq.write_table(pa.table({"query": ["cat", "dog", "bird"]}), q1)
    pq.write_table(pa.table({"query": ["bird", "dog", "cat"]}), q2)  # same size, other order
    out = tmp_path / "it's [out]"  # a quote and glob characters in the path are fine
    assert run_cli("pool", "--pool", str(pairs), "--out", str(out), "--quiet").returncode == 0
    assert run_cli("match", "--out", str(out), "--queries", str(q1), "--quiet").returncode == 0
    one_line_error(
        run_cli("balance", "--out", str(out), "--queries", str(q2), "--quiet"),
        "q2.parquet: not the query list the matches were made with",
    )
    res = run_cli("balance", "--out", str(out), "--queries", str(q1), "--quiet", "--per-query", "1")
    assert res.returncode == 0, res.stderr
    for bad in (["--per-query", "0"], ["--seed", "-1"], ["--workers", "0"]):
        res = run_cli("balance", "--out", str(out), "--queries", str(q1), *bad)
        assert res.returncode == 2 and "error: argument" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("pool", "--out", str(out), "--pool", str(q1), "--memory-limit", "lots")
    assert res.returncode == 2 and "error: argument --memory-limit" in res.stderr
    res = run_cli("balance", "--out", str(out), "--queries", str(q1), "--memory-limit", "4GB")
    assert res.returncode == 2 and "unrecognized arguments: --memory-limit" in res.stderr, "only the pool uses DuckDB"


@pytest.mark.slow
def test_the_four_verbs_download_from_a_private_host_as_shards_does(tmp_path):
    """`pool --allow-private-hosts`, `match`, `balance`, `download --allow-private-hosts`
    give the shards `shards --allow-private-hosts` gives, from a loopback server: the
    download verb must accept the flag too, or its connect-time guard refuses every URL
    the pool let through."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(6):
        (site / f"{i}.png").write_bytes(make_png(40 + i, 30, (20 * i, 90, 200)))
    pq.write_table(pa.table({"query": ["cat", "dog"]}), tmp_path / "q.parquet")
    with serve_directory(site) as base:
        urls = [f"{base}/{i}.png" for i in range(6)]
        captions = [f"a {'cat' if i % 2 else 'dog'}, picture {i}" for i in range(6)]
        pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "pool.parquet")
        common = ["--quiet", "--workers", "1"]
        download = ["--processes", "1", "--threads", "4", "--samples-per-shard", "4"]
        whole = tmp_path / "whole"
        res = run_cli(
            "shards",
            "--out",
            str(whole),
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--queries",
            str(tmp_path / "q.parquet"),
            "--allow-private-hosts",
            *common,
            *download,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        verbs = tmp_path / "verbs"
        for step, extra in (
            ("pool", ["--pool", str(tmp_path / "pool.parquet"), "--allow-private-hosts"]),
            ("match", ["--queries", str(tmp_path / "q.parquet")]),
            ("balance", ["--queries", str(tmp_path / "q.parquet")]),
            ("download", ["--allow-private-hosts", *download]),
        ):
            res = run_cli(step, "--out", str(verbs), *common, *extra)
            assert res.returncode == 0, (step, res.stderr[-3000:])

    names = sorted(p.name for p in whole.glob("[0-9]*.*") if not p.name.endswith("_stats.json"))
    assert names == ["00000.parquet", "00000.tar", "00000.tar.idx", "00001.parquet", "00001.tar", "00001.tar.idx"]
    assert sorted(p.name for p in verbs.glob("[0-9]*.*") if not p.name.endswith("_stats.json")) == names
    statuses = [r["status"] for n in names if n.endswith(".parquet") for r in pq.read_table(verbs / n).to_pylist()]
    assert statuses == ["success"] * 6
    for name in names:
        assert (verbs / name).read_bytes() == (whole / name).read_bytes(), name


def test_the_step_keys_decide_what_is_redone(tmp_path):
    """An unchanged rerun keeps every part; a changed setting redoes its step and the steps
    after it, never the ones before (one redo mechanism: the step keys in curation/keys/)."""
    pairs = tmp_path / "pairs.parquet"
    captions = [f"{'a cat' if i % 3 else 'A Cat'} and {'a dog' if i % 2 else 'no pet'}, photo {i}" for i in range(60)]
    pq.write_table(pa.table({"url": [f"http://example.com/{i}.jpg" for i in range(60)], "caption": captions}), pairs)
    q = tmp_path / "q.parquet"
    pq.write_table(pa.table({"query": ["cat", "dog"]}), q)
    out = tmp_path / "o"
    cur = out / "curation"

    def step(*args: str) -> str:
        res = run_cli(*args, "--out", str(out), "--workers", "1")
        assert res.returncode == 0, res.stderr
        return res.stderr

    def stamps(folder: str) -> dict:
        return {p.name: p.stat().st_mtime_ns for p in (cur / folder).glob("part-*.parquet")}

    def selected() -> list[str]:
        return sorted(r["uid"] for p in (cur / "selected").glob("part-*.parquet") for r in pq.read_table(p).to_pylist())

    step("pool", "--pool", str(pairs), "--rows-per-part", "20")
    step("match", "--queries", str(q))
    step("balance", "--queries", str(q), "--per-query", "5", "--seed", "1")
    pool, matches, kept = stamps("pool"), stamps("matches"), selected()
    assert len(pool) == len(matches) == 3 and 0 < len(kept) < 60

    assert "changed" not in step("match", "--queries", str(q))
    assert json.loads((cur / "match_stats.json").read_text())["parts_skipped"] == 3
    assert "changed" not in step("balance", "--queries", str(q), "--per-query", "5", "--seed", "1")
    assert stamps("matches") == matches and selected() == kept

    assert "balance: inputs or settings changed" in step(
        "balance", "--queries", str(q), "--per-query", "5", "--seed", "2"
    )
    assert selected() != kept, "another seed draws another selection"
    assert stamps("pool") == pool and stamps("matches") == matches, "balance's seed redid an earlier step"

    assert "match: inputs or settings changed" in step("match", "--queries", str(q), "--ignore-case")
    assert json.loads((cur / "match_stats.json").read_text())["matched"] == 60  # 'A Cat' matches too
    assert stamps("pool") == pool
    # the matches changed, so the balance made from the old ones is cleared and redone
    assert "balance: inputs or settings changed" in step(
        "balance", "--queries", str(q), "--per-query", "5", "--seed", "2"
    )


@pytest.mark.slow
def test_a_step_refuses_the_outputs_of_a_step_made_from_an_earlier_one(tmp_path):
    """Verb by verb, a step reads what the step before it left, and that step's outputs must
    be made from the current outputs of the one before it: after `match --ignore-case`,
    `download` without `balance` would fetch the selection balanced from the old matches."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(4):
        (site / f"{i}.png").write_bytes(make_png(30 + i, 20))
    pq.write_table(pa.table({"query": ["cat"]}), tmp_path / "q.parquet")
    with serve_directory(site) as base:
        captions = ["a cat", "A Cat", "a cat again", "CAT"]
        pq.write_table(
            pa.table({"url": [f"{base}/{i}.png" for i in range(4)], "caption": captions}), tmp_path / "pool.parquet"
        )
        out = tmp_path / "o"

        def step(*args: str):
            return run_cli(*args, "--out", str(out), "--quiet", "--workers", "1")

        download = ("download", "--allow-private-hosts", "--processes", "1", "--threads", "2")
        q = ("--queries", str(tmp_path / "q.parquet"))
        for args in (("pool", "--pool", str(tmp_path / "pool.parquet"), "--allow-private-hosts"), ("match", *q)):
            assert step(*args).returncode == 0
        assert step("balance", *q).returncode == 0
        assert step(*download).returncode == 0
        assert json.loads((out / "curation" / "download_stats.json").read_text())["successes"] == 2

        assert step("match", *q, "--ignore-case").returncode == 0
        one_line_error(step(*download), "'balance' step", "earlier 'match' step", "run 'balance' again")
        assert step("balance", *q).returncode == 0
        assert step(*download).returncode == 0
        assert json.loads((out / "curation" / "download_stats.json").read_text())["successes"] == 4
