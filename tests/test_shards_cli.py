"""The shards verbs as a user meets them: help, and one-line errors with exit code 2."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .conftest import assert_one_line_error as one_line_error, run_cli


def test_help_lists_the_steps():
    res = run_cli("shards", "--help")
    assert res.returncode == 0
    for text in ("--pool", "--per-query", "--image-size", "--sample-openclipart", "entry_counts.parquet",
                 "1 - prod(1 - min(1, t / count_q))"):
        assert text in res.stdout
    for verb in ("pool", "match", "balance", "download"):
        assert run_cli(verb, "--help").returncode == 0


def test_no_pool_and_missing_columns(tmp_path):
    one_line_error(run_cli("shards", "--out", str(tmp_path / "o")), "no --pool given")
    bad = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"image": ["http://example.com/a.jpg"], "alt": ["a cat"]}), bad)
    one_line_error(run_cli("pool", "--pool", str(bad), "--out", str(tmp_path / "o")), "pairs.parquet", "image", "alt")
    one_line_error(run_cli("pool", "--pool", str(tmp_path / "none-*.csv"), "--out", str(tmp_path / "o")),
                   "none-*.csv")


def test_steps_out_of_order_and_missing_queries(tmp_path):
    one_line_error(run_cli("match", "--out", str(tmp_path / "o")), "'pool' step has not run yet")
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": ["http://example.com/a.jpg"], "caption": ["a cat"]}), pairs)
    assert run_cli("pool", "--pool", str(pairs), "--out", str(tmp_path / "o"), "--quiet").returncode == 0
    one_line_error(run_cli("match", "--out", str(tmp_path / "o"), "--queries", str(tmp_path / "q.parquet")),
                   "q.parquet: query list not found")
