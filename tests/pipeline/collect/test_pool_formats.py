"""Pools researchers already have: DataComp's CommonPool metadata (its own 32-hex-digit uids
kept end to end, its extra columns carried) and LAION's parquet, by `--pool-format`; then
pool -> match -> balance -> subset, the subset checked against an independent computation."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_one_line_error, run_cli

WORDS = ["cat", "dog", "bird", "tree", "house"]


def commonpool(path, n: int = 1500, seed: int = 0) -> dict:
    """A CommonPool-shaped parquet (DataComp's column names and types) with repeated uids
    (same URL, and another URL) and malformed ones; what it holds, for the checks."""
    rng = random.Random(seed)
    uids = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
    urls = [f"https://img{i % 7}.example.com/{i}.jpg" for i in range(n)]
    texts = [f"a photo of a {WORDS[min(4, int(rng.expovariate(1.2)))]} number {i}" for i in range(n)]
    uids[10] = uids[9]  # the same sample listed again, same URL: a duplicate
    urls[10] = urls[9]
    uids[20] = uids[19]  # the same uid on another URL: a duplicate, counted apart
    uids[30] = uids[30][:31]  # malformed: 31 digits
    uids[31] = "z" * 32  # malformed: not hex
    uids[32] = uids[32].upper()  # upper case is the same uid
    table = pa.table(
        {
            "uid": pa.array(uids, pa.string()),
            "url": urls,
            "text": texts,
            "original_width": pa.array([rng.randint(64, 2048) for _ in range(n)], pa.int64()),
            "original_height": pa.array([rng.randint(64, 2048) for _ in range(n)], pa.int64()),
            "clip_b32_similarity_score": pa.array([rng.random() for _ in range(n)], pa.float32()),
            "clip_l14_similarity_score": pa.array([rng.random() for _ in range(n)], pa.float32()),
            "face_bboxes": pa.array(
                [[] if i % 5 else [[0.1, 0.2, 0.3, 0.4]] for i in range(n)], pa.list_(pa.list_(pa.float64()))
            ),
            "sha256": [f"{rng.getrandbits(256):064x}" for _ in range(n)],
        }
    )
    pq.write_table(table, path)
    return {"uids": uids, "n": n}


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("datacomp")
    source = commonpool(root / "commonpool.parquet")
    queries = root / "q.parquet"
    pq.write_table(pa.table({"query": WORDS}), queries)
    out = root / "out"
    for step in (
        ["pool", "--pool", str(root / "commonpool.parquet"), "--pool-format", "datacomp"],
        ["match", "--queries", str(queries)],
        ["balance", "--queries", str(queries), "--per-query", "100"],
    ):
        res = run_cli(*step, "--out", str(out), "--quiet")
        assert res.returncode == 0, res.stderr
    res = run_cli("subset", "--curation", str(out), "--out", str(root / "subset.npy"))
    assert res.returncode == 0, res.stderr
    return {"root": root, "out": out, "source": source, "subset": root / "subset.npy"}


def test_datacomps_uids_and_columns_are_kept_and_deduplicated(curated):
    stats = json.loads((curated["out"] / "curation" / "pool" / "_stats.json").read_text())
    assert stats["dropped_bad_uid"] == 2 and stats["dropped_duplicate"] == 2
    assert stats["duplicate_uid_other_url"] == 1
    pool = pq.read_table(curated["out"] / "curation" / "pool").to_pylist()
    uids = curated["source"]["uids"]
    assert {r["uid"] for r in pool} == {u.lower() for i, u in enumerate(uids) if i not in (10, 20, 30, 31)}
    assert pool[0].keys() >= {"original_width", "sha256", "clip_b32_similarity_score", "clip_l14_similarity_score"}
    by_uid = {r["uid"]: r for r in pool}
    assert by_uid[uids[19]]["url"].endswith("/19.jpg"), "the first row of a repeated uid is kept"


def test_the_subset_is_datacomps_u8_u8_of_the_selected_uids(curated):
    selected = pq.read_table(curated["out"] / "curation" / "selected").column("uid").to_pylist()
    assert 0 < len(selected) < curated["source"]["n"], "balancing dropped part of the heads"
    # independently: DataComp's layout (high half first), np.unique's sort
    want = np.unique(np.array([(int(u[:16], 16), int(u[16:], 16)) for u in selected], dtype=np.dtype("u8,u8")))
    got = np.load(curated["subset"])
    assert got.dtype == np.dtype("u8,u8") and np.array_equal(got, want)
    back = [f"{int(a):016x}{int(b):016x}" for a, b in got]  # hex -> u8,u8 -> hex
    assert sorted(back) == sorted(selected) and set(back) <= {u.lower() for u in curated["source"]["uids"]}
    meta = json.loads((curated["root"] / "subset.npy.json").read_text())
    assert meta["count"] == len(selected) and meta["listed_twice"] == 0


def _nearest_rank(bins: np.ndarray, q: float) -> int:
    return int(np.sort(bins)[max(1, int(np.ceil(q * len(bins)))) - 1])


def test_the_audit_follows_the_pools_clip_scores_to_the_selection(curated):
    """The audit's "Scores the pool came with", against numpy over the curation's parquet:
    per stage the count, mean, quantiles of the 0.01 bins, the share at or above the pool's
    median and the histogram."""
    res = run_cli("audit", "--shards", str(curated["out"]), "--queries", str(curated["root"] / "q.parquet"), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = json.loads((curated["out"] / "audit" / "summary.json").read_text())
    sec = summary["source_scores"]
    assert sec["available"] and set(sec["columns"]) == {"clip_b32_similarity_score", "clip_l14_similarity_score"}
    for col, per in sec["columns"].items():
        stage_scores = {
            stage: pq.read_table(curated["out"] / "curation" / stage).column(col).to_numpy().astype(np.float64)
            for stage in ("pool", "selected")
        }
        median = _nearest_rank(np.floor(stage_scores["pool"] * 100), 0.5)
        assert per["pool_median"] == median / 100
        assert not per["downloaded"]["available"]  # nothing downloaded here
        for stage, scores in stage_scores.items():
            bins = np.floor(scores * 100)
            got = per[stage]
            assert got["n"] == len(scores) and got["mean"] == pytest.approx(scores.mean(), abs=1e-4)
            assert got["quantiles"] == {f"p{q}": _nearest_rank(bins, q / 100) / 100 for q in (5, 25, 50, 75, 95)}
            assert got["at_or_above_pool_median"] == pytest.approx((bins >= median).mean(), abs=1e-6)
            edges = [-np.inf, 10, 15, 20, 25, 30, 35, 40, 45, np.inf]
            want = [((bins >= lo) & (bins < hi)).mean() for lo, hi in zip(edges[:-1], edges[1:])]
            assert [h["share"] for h in got["histogram"]] == pytest.approx(want, abs=1e-6)
    html = (curated["out"] / "audit" / "report.html").read_text()
    assert "Scores the pool came with" in html and 'data-plot="scores_clip_l14_similarity_score"' in html


def test_laion_columns_by_preset(tmp_path):
    n = 50
    table = pa.table(
        {
            "SAMPLE_ID": pa.array(range(n), pa.int64()),
            "URL": [f"https://laion.example.com/{i}.jpg" for i in range(n)],
            "TEXT": [f"a cat picture {i}" for i in range(n)],
            "WIDTH": pa.array([640] * n, pa.int64()),
            "HEIGHT": pa.array([480] * n, pa.int64()),
            "similarity": pa.array([0.3] * n, pa.float64()),
            "punsafe": pa.array([0.01] * n, pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "laion.parquet")
    res = run_cli(
        "pool",
        "--pool",
        str(tmp_path / "laion.parquet"),
        "--pool-format",
        "laion",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    pool = pq.read_table(tmp_path / "o" / "curation" / "pool").to_pylist()
    assert len(pool) == n and pool[0]["WIDTH"] == "640" and pool[0]["similarity"] == "0.3"
    assert pool[0]["url"] == "https://laion.example.com/0.jpg" and len(pool[0]["uid"]) == 16
    # a preset column the file lacks, or a --uid-col it lacks: one line naming the file and the column
    pq.write_table(table.drop(["similarity"]), tmp_path / "short.parquet")
    res = run_cli(
        "pool",
        "--pool",
        str(tmp_path / "short.parquet"),
        "--pool-format",
        "laion",
        "--out",
        str(tmp_path / "s"),
        "--quiet",
    )
    assert_one_line_error(res, "short.parquet", "'similarity'")
    res = run_cli(
        "pool",
        "--pool",
        str(tmp_path / "laion.parquet"),
        "--pool-format",
        "laion",
        "--uid-col",
        "uid",
        "--out",
        str(tmp_path / "u"),
        "--quiet",
    )
    assert_one_line_error(res, "laion.parquet", "'uid'")
