"""Offline and online balancing agree on the embedded sample: `pipeline shards --balance
online` on the real openclipart sample over a real loopback HTTP server, then the offline
balance step's expectation against the trainer's draws (`train.balance`)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import required_path, run_cli
from tests.pipeline.collect.test_shards_e2e import QUERIES, free_port, shard_args, shard_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def online(tmp_path_factory) -> Path:
    """The sample, downloaded with `--balance online` (every matched pair), with
    the first ten queries of test_shards_e2e.py."""
    root = tmp_path_factory.mktemp("shards")
    queries = root / "queries.parquet"
    few = QUERIES[:10]  # fewer pairs to download; heads enough (over 4 t) among them
    pq.write_table(pa.table({"query": few, "source": ["wordnet"] * len(few)}), queries)
    out = root / "online"
    res = run_cli(*shard_args(required_path("OPENCLIPART_DIR"), queries, out, free_port()), "--balance", "online")
    assert res.returncode == 0, res.stderr
    return out


def test_offline_and_online_balancing_agree_on_the_sample(online):
    """Per entry, what the offline balance step at t = 5 keeps in expectation (from the
    matches and counts it balances: each matched text with 1 - prod(1 - min(1, t / count)))
    is the trainer's expectation for a pass at T = 5 on the online shards, over the texts
    the shards hold (the few failed downloads aside); and over 200 passes each sample is
    drawn Binomial(200, p) times (chi-square over samples, false-alarm rate 1e-4)."""
    from tests.support.online import assert_binomial_draws, draws_over_passes
    from train.balance import load_entry_table, make_balance, pass_record

    t = 5
    counts = pq.read_table(online / "curation" / "entry_counts.parquet").column("count").to_numpy()
    matches = duckdb.sql(
        f"SELECT uid, query_ids FROM read_parquet('{online}/curation/matches/part-*.parquet')"
    ).fetchall()
    p = np.minimum(1.0, t / np.maximum(counts, 1))
    urls = sorted(str(x) for x in online.glob("[0-9]*.tar"))
    downloaded = {r["uid"] for r in shard_rows(online) if r["status"] == "success"}
    assert len(downloaded) > 0.95 * len(matches), "online keeps every matched pair"
    offline = np.zeros(len(counts))
    for uid, ids in matches:
        if uid in downloaded:
            np.add.at(offline, ids, 1 - np.prod(1 - p[ids]))
    table = load_entry_table(urls)
    assert (table.counts == counts).all(), "the table beside the shards is the balance step's count"
    balance = make_balance(table, t, seed=0)
    record, _ = pass_record(table, balance, urls, 0, lambda uid: False)
    trainer = np.zeros(len(counts))
    trainer[record.column("query_id").to_numpy()] = record.column("expected").to_numpy()
    assert trainer == pytest.approx(offline, abs=1e-9)
    heads = counts > 4 * t
    assert heads.any() and (offline[heads] < counts[heads] / 2).all(), ("heads flattened towards t", counts)
    samples = [(uid, ids) for uid, ids in matches if uid in downloaded]
    times, keep_p = draws_over_passes(balance, samples, 200)
    assert_binomial_draws(times, keep_p, 200, 1e-4)
