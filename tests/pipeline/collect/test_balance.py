"""Class balancing: probabilities, expected kept counts on a Zipf pool, determinism."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.collect import balance as bal
from tests.support.collect import balance


def uid(i: int) -> str:
    return hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest()


def write_curation(root: Path, rows: list[list[int]], n_queries: int, parts: int) -> tuple[Path, Path]:
    """Pool and match parts (same rows, same order per part) plus a query list."""
    cur = root / "curation"
    (cur / "pool").mkdir(parents=True)
    (cur / "matches").mkdir()
    per = math.ceil(len(rows) / parts)
    for k in range(parts):
        idx = range(k * per, min(len(rows), (k + 1) * per))
        uids = [uid(i) for i in idx]
        pq.write_table(
            pa.table(
                {
                    "uid": uids,
                    "url": [f"http://x/{i}.png" for i in idx],
                    "text": [f"text {i}" for i in idx],
                    "source": ["t"] * len(uids),
                }
            ),
            cur / "pool" / f"part-{k:05d}.parquet",
        )
        pq.write_table(
            pa.table({"uid": uids, "query_ids": pa.array([rows[i] for i in idx], pa.list_(pa.int32()))}),
            cur / "matches" / f"part-{k:05d}.parquet",
        )
        counts = Counter(q for i in idx for q in rows[i])  # the match step's per-part sums
        (cur / "matches" / "_counts").mkdir(exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "query_id": pa.array(sorted(counts), pa.int32()),
                    "count": pa.array([counts[q] for q in sorted(counts)], pa.int64()),
                }
            ),
            cur / "matches" / "_counts" / f"part-{k:05d}.parquet",
        )
    qpath = root / "queries.parquet"
    pq.write_table(pa.table({"query": [f"q{i}" for i in range(n_queries)]}), qpath)
    return cur, qpath


def zipf_rows(n_rows: int, n_queries: int, seed: int, multi: float = 0.0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_queries + 1) ** 1.1
    w /= w.sum()
    first = rng.choice(n_queries, size=n_rows, p=w)
    rows = []
    for q in first:
        r = {int(q)}
        if rng.random() < multi:
            r.add(int(rng.choice(n_queries, p=w)))
        rows.append(sorted(r))
    return rows


def test_keep_probabilities():
    assert bal.keep_probabilities(np.array([0, 5, 10, 100, 4000]), 10).tolist() == [1.0, 1.0, 1.0, 0.1, 0.0025]


def test_draws_are_uniform_and_depend_on_every_input():
    uids = np.arange(1, 200_001, dtype=np.uint64) * np.uint64(2654435761)
    q = np.zeros(len(uids), dtype=np.int64)
    u = bal.uniform_draws(uids, q, seed=0)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs((u < 0.1).mean() - 0.1) < 0.003
    assert not np.array_equal(u, bal.uniform_draws(uids, q + 1, seed=0))
    assert not np.array_equal(u, bal.uniform_draws(uids, q, seed=1))
    assert np.array_equal(u, bal.uniform_draws(uids, q, seed=0))


def kept_rows(cur: Path) -> list[dict]:
    return [r for p in sorted((cur / "selected").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_kept_counts_match_expectation_on_zipf_pool(tmp_path):
    t, n_queries = 200, 300
    rows = zipf_rows(60_000, n_queries, seed=1)  # one query per text: kept ~ Binomial(count, p)
    cur, qpath = write_curation(tmp_path, rows, n_queries, parts=3)
    stats = balance(cur, str(qpath), per_query=t, seed=0)
    counts = Counter(q for r in rows for q in r)
    kept = Counter(q for r in kept_rows(cur) for q in r["query_ids"])
    over = [q for q in counts if counts[q] > t]
    assert len(over) >= 10 and stats["queries_over_cap"] == len(over)
    for q, c in counts.items():
        if c <= t:
            assert kept[q] == c, "queries under the cap keep every text"
        else:
            sd = math.sqrt(c * (t / c) * (1 - t / c))
            assert abs(kept[q] - t) <= 4.5 * sd + 1, (q, c, kept[q])
    assert stats["kept"] == sum(kept.values()) == len(kept_rows(cur))
    assert stats["kept"] + stats["dropped_by_balance"] == stats["matched"] == len(rows)
    assert abs(stats["kept"] - stats["expected_kept"]) < 4 * math.sqrt(stats["expected_kept"])
    ec = pq.read_table(cur / "entry_counts.parquet").to_pylist()
    assert len(ec) == n_queries and all(r["count"] == counts.get(r["query_id"], 0) for r in ec)


def test_multi_query_keep_probability_and_columns(tmp_path):
    rows = [[0, 1]] * 400 + [[0]] * 600 + [[2]] * 3
    cur, qpath = write_curation(tmp_path, rows, 3, parts=1)
    balance(cur, str(qpath), per_query=100, seed=5)
    kept = kept_rows(cur)
    p0, p1 = 100 / 1000, 100 / 400
    for r in kept:
        expected = {(0, 1): 1 - (1 - p0) * (1 - p1), (0,): p0, (2,): 1.0}[tuple(r["query_ids"])]
        assert math.isclose(r["keep_prob"], expected, rel_tol=1e-12)
        assert r["queries"] == [f"q{i}" for i in r["query_ids"]]
        assert r["url"].startswith("http://x/") and r["source"] == "t"
    assert sum(1 for r in kept if r["query_ids"] == [2]) == 3
    assert len({r["uid"] for r in kept}) == len(kept), "no row is duplicated"


def test_independent_of_parts_order_and_workers(tmp_path):
    rows = zipf_rows(20_000, 100, seed=2, multi=0.3)
    a, qa = write_curation(tmp_path / "a", rows, 100, parts=1)
    b, qb = write_curation(tmp_path / "b", rows, 100, parts=4)
    balance(a, str(qa), per_query=50, seed=9, workers=1)
    balance(b, str(qb), per_query=50, seed=9, workers=2)
    ka = {r["uid"]: r for r in kept_rows(a)}
    kb = {r["uid"]: r for r in kept_rows(b)}
    assert ka.keys() == kb.keys() and 0 < len(ka) < len(rows)
    assert all(ka[k]["keep_prob"] == kb[k]["keep_prob"] for k in ka)
    # A different seed draws differently.
    c, qc = write_curation(tmp_path / "c", rows, 100, parts=2)
    balance(c, str(qc), per_query=50, seed=10)
    assert {r["uid"] for r in kept_rows(c)} != ka.keys()


def test_rerun_skips_done_parts_and_redoes_an_unfinished_one(tmp_path):
    rows = zipf_rows(5_000, 50, seed=3)
    cur, qpath = write_curation(tmp_path, rows, 50, parts=2)
    balance(cur, str(qpath), per_query=20, seed=1)
    part = cur / "selected" / "part-00000.parquet"
    m = part.stat().st_mtime_ns
    first = part.read_bytes()
    balance(cur, str(qpath), per_query=20, seed=1)
    assert part.stat().st_mtime_ns == m
    (cur / "selected" / "_stats" / "part-00001.json").unlink()  # as if killed before finishing part 1
    second = (cur / "selected" / "part-00001.parquet").stat().st_mtime_ns
    balance(cur, str(qpath), per_query=20, seed=1)
    assert part.stat().st_mtime_ns == m and part.read_bytes() == first, "a finished part was redone"
    assert (cur / "selected" / "_stats" / "part-00001.json").exists()
    assert (cur / "selected" / "part-00001.parquet").stat().st_mtime_ns != second, "the unfinished part was not redone"
