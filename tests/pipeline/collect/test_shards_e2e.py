"""`pipeline shards` on the real openclipart sample over a real loopback HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.conftest import ROOT, required_path, run_cli

pytestmark = pytest.mark.slow

QUERIES = [
    "frog",
    "cat",
    "dog",
    "bird",
    "fish",
    "car",
    "tree",
    "flower",
    "house",
    "star",
    "sun",
    "computer",
    "book",
    "apple",
    "train",
    "boat",
    "guitar",
    "horse",
    "Linux",
    "Christmas",
]


@pytest.fixture(scope="module")
def openclipart() -> Path:
    return required_path("OPENCLIPART_DIR")


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("q") / "queries.parquet"
    pq.write_table(pa.table({"query": QUERIES, "source": ["wordnet"] * len(QUERIES)}), path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_args(openclipart: Path, queries: Path, out: Path, port: int) -> list[str]:
    return [
        "shards",
        "--sample-openclipart",
        str(openclipart),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--sample-port",
        str(port),
        "--per-query",
        "25",
        "--samples-per-shard",
        "50",
        "--processes",
        "2",
        "--threads",
        "8",
        "--workers",
        "2",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, openclipart, queries, port) -> Path:
    out = tmp_path_factory.mktemp("shards") / "ref"
    res = run_cli(*shard_args(openclipart, queries, out, port))
    assert res.returncode == 0, res.stderr
    return out


def stats(out: Path, step: str) -> dict:
    return json.loads((out / "curation" / f"{step}_stats.json").read_text())


def shard_rows(out: Path) -> list[dict]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}/[0-9]*.parquet') ORDER BY key").to_arrow_table().to_pylist()


def test_every_row_accounted_for_from_pool_to_shards(reference):
    pool, match, bal, dl = (stats(reference, s) for s in ("pool", "match", "balance", "download"))
    drops = sum(v for k, v in pool.items() if k.startswith("dropped_"))
    assert pool["rows_in"] == pool["kept"] + drops > 5000
    assert match["rows"] == pool["kept"] == match["matched"] + match["dropped_no_match"] + match["null_text"]
    assert bal["matched"] == match["matched"] == bal["kept"] + bal["dropped_by_balance"]
    assert bal["dropped_by_balance"] > 0 and bal["queries_over_cap"] > 0, "the cap must visibly drop pairs"
    rows = shard_rows(reference)
    selected = duckdb.sql(f"SELECT uid FROM read_parquet('{reference}/curation/selected/part-*.parquet')").fetchall()
    assert len(rows) == dl["count"] == bal["kept"] == len(selected), "one parquet row per attempted sample"
    assert sorted(r["uid"] for r in rows) == sorted(u for (u,) in selected)
    assert dl["successes"] == sum(r["status"] == "success" for r in rows) > 0.95 * len(rows)
    for r in rows:
        assert r["status"] == "success" or r["error_message"], r


def test_shards_stream_with_webdataset_and_carry_curation(reference):
    tars = sorted(str(p) for p in reference.glob("[0-9]*.tar"))
    assert len(tars) >= 2
    rows = {r["key"]: r for r in shard_rows(reference)}
    seen = 0
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("pil"):
        meta = sample["json"]
        assert set(QUERIES) >= set(meta["queries"]) and meta["queries"]
        assert [QUERIES[i] for i in meta["query_ids"]] == meta["queries"]
        assert meta["uid"] == rows[sample["__key__"]]["uid"] and meta["url"].startswith("http://127.0.0.1:")
        assert sample["txt"] == meta["caption"]
        assert any(q in sample["txt"] for q in meta["queries"])
        w, h = sample["jpg"].size
        ow, oh = meta["original_width"], meta["original_height"]
        assert (w, h) == (meta["width"], meta["height"])
        if min(ow, oh) >= 256:
            assert min(w, h) == 256, "shorter side resized to 256, aspect kept"
            assert abs(w / h - ow / oh) < 0.02
        else:
            assert (w, h) == (ow, oh), "never upscaled"
        seen += 1
    assert seen == stats(reference, "download")["successes"]


def test_server_is_stopped_after_the_run(reference, port):
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_killed_and_restarted_run_ends_with_the_same_samples(tmp_path, reference, openclipart, queries, port):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", *shard_args(openclipart, queries, out, port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("[0-9]*_stats.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # img2dataset's worker processes die with it
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in out.glob("[0-9]*_stats.json")}
    total = len(list(reference.glob("[0-9]*_stats.json")))
    assert 2 <= len(done) < total, "the kill must land mid-download"

    res = run_cli(*shard_args(openclipart, queries, out, port))
    assert res.returncode == 0, res.stderr
    assert all(p.stat().st_mtime_ns == m for p, m in done.items()), "finished shards were downloaded again"
    got = sorted((r["uid"], r["status"]) for r in shard_rows(out))
    want = sorted((r["uid"], r["status"]) for r in shard_rows(reference))
    assert got == want
    assert stats(out, "balance") == stats(reference, "balance")
    match = stats(out, "match")
    assert match["matched"] == stats(reference, "match")["matched"]
    assert match["parts_skipped"] == match["parts"], "the rerun re-matched parts finished before the kill"


@pytest.fixture(scope="module")
def online(tmp_path_factory, openclipart, queries, port) -> Path:
    """The same sample, downloaded with `--balance online` (every matched pair)."""
    out = tmp_path_factory.mktemp("shards") / "online"
    res = run_cli(*shard_args(openclipart, queries, out, port), "--balance", "online")
    assert res.returncode == 0, res.stderr
    return out


def test_offline_and_online_balancing_agree_on_the_sample(reference, online):
    """Per entry, what the offline balance step at t = 25 keeps in expectation (from its own
    matches and counts: each matched text with 1 - prod(1 - min(1, t / count))) is the
    trainer's expectation for a pass at T = 25 on the online shards (`train.balance`), over
    the texts both hold (the few failed downloads aside); and over 200 passes each sample is
    drawn Binomial(200, p) times (chi-square over samples, false-alarm rate 1e-4)."""
    import numpy as np

    from tests.support.online import assert_binomial_draws, draws_over_passes
    from train.balance import load_entry_table, make_balance, pass_record

    t = 25
    counts = pq.read_table(reference / "curation" / "entry_counts.parquet").column("count").to_numpy()
    matches = duckdb.sql(
        f"SELECT uid, query_ids FROM read_parquet('{reference}/curation/matches/part-*.parquet')"
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
    assert (table.counts == counts).all(), "the table beside the online shards is the offline step's count"
    balance = make_balance(table, t, seed=0)
    record, totals = pass_record(table, balance, urls, 0, lambda uid: False)
    trainer = np.zeros(len(counts))
    trainer[record.column("query_id").to_numpy()] = record.column("expected").to_numpy()
    assert trainer == pytest.approx(offline, abs=1e-9)
    heads = counts > 4 * t
    assert heads.any() and (offline[heads] < counts[heads] / 2).all(), "heads flattened towards t"
    samples = [(uid, ids) for uid, ids in matches if uid in downloaded]
    times, keep_p = draws_over_passes(balance, samples, 200)
    assert_binomial_draws(times, keep_p, 200, 1e-4)
