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
