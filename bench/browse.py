"""Benchmark the dataset browser's index (`pipeline.browse.index`): what start-up costs and
what a page costs, against scanning the shards' parquet files for every page.

A synthetic shard folder (--rows samples over --shards parquet files, --queries queries,
1 to 3 Zipf-drawn queries per caption, 0.5% failures) is written once under --out; no
tars (the image reads are one byte-range read each, see tests/pipeline/audit/test_tars.py). Timed in
the same run, so only the ratios compare across runs (the machine is shared):

  scan          the floor for start-up: one pass over the samples view reading every
                column the index reads (DuckDB, same memory limit);
  build         `Index.build` (every table of the index);
  page:index    a query's first page of images through the index, for --pages queries
                drawn by their share of images (median and p95 milliseconds);
  page:scan     the same page as a filter over the samples view (`list_contains`): what
                each page would cost without the index, on --scan-pages of those queries.

The index must have queries with images and each page must list the images the scan
lists; otherwise the bench fails (exit 1, one line on stderr; `bench/checks.py`).

Prints one JSON object.

    .venv/bin/python bench/browse.py [--rows 2000000] [--shards 100] [--queries 200000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checks import produced, same  # noqa: E402
from pipeline.audit.views import open_inputs  # noqa: E402
from pipeline.browse.index import PER_PAGE, Index  # noqa: E402
from pipeline.options import MEMORY_LIMIT  # noqa: E402


def write_dataset(out: Path, rows: int, shards: int, n_queries: int, seed: int) -> tuple[Path, Path]:
    """query_lists/queries.parquet and shards/NNNNN.parquet; reused when already written."""
    queries_dir, shards_dir = out / "query_lists", out / "shards"
    done = out / f"done-{rows}-{shards}-{n_queries}-{seed}"
    if done.exists():
        return queries_dir, shards_dir
    queries_dir.mkdir(parents=True, exist_ok=True)
    shards_dir.mkdir(parents=True, exist_ok=True)
    for old in shards_dir.glob("*.parquet"):
        old.unlink()
    words = [f"q{i}" for i in range(n_queries)]
    pq.write_table(
        pa.table({"query": words, "source": ["unigram"] * n_queries, "count": np.full(n_queries, 100)}),
        queries_dir / "queries.parquet",
    )
    rng = np.random.default_rng(seed)
    per = -(-rows // shards)
    for s in range(shards):
        n = min(per, rows - s * per)
        if n <= 0:
            break
        k = rng.integers(1, 4, n)  # queries per caption, distinct: a Zipf-drawn one and its neighbours
        first = np.minimum(rng.zipf(1.3, n) - 1, n_queries - 1).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int32)
        within = np.arange(int(k.sum())) - np.repeat(offsets[:-1], k)
        ids = (np.repeat(first, k) + within * 7919) % n_queries
        query_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))
        ok = rng.random(n) >= 0.005
        keys = [f"{s:05d}{i:04d}" for i in range(n)]
        pq.write_table(
            pa.table(
                {
                    "key": keys,
                    "status": np.where(ok, "success", "failed_to_download"),
                    "error_message": np.where(ok, None, "HTTP Error 404: Not Found"),
                    "caption": [f"caption {s} {i} about q{ids[offsets[i]]}" for i in range(n)],
                    "url": [f"http://example.com/{s}/{i}.jpg" for i in range(n)],
                    "query_ids": query_ids,
                }
            ),
            shards_dir / f"{s:05d}.parquet",
            row_group_size=65_536,
        )
    done.write_text("")
    return queries_dir, shards_dir


def ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1e3, 2), "p95_ms": round(xs[int(0.95 * (len(xs) - 1))] * 1e3, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--pages", type=int, default=200, help="query pages timed through the index")
    ap.add_argument("--scan-pages", type=int, default=10, help="of those, timed as a scan too")
    ap.add_argument("--memory-limit", default=MEMORY_LIMIT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "browse"))
    args = ap.parse_args()

    t = time.perf_counter()
    queries_dir, shards_dir = write_dataset(Path(args.out), args.rows, args.shards, args.queries, args.seed)
    res: dict = {
        "python": platform.python_version(),
        "rows": args.rows,
        "shards": args.shards,
        "queries": args.queries,
        "write_dataset_s": round(time.perf_counter() - t, 2),
    }
    with open_inputs(queries_dir, shards_dir, memory_limit=args.memory_limit) as inp:
        t = time.perf_counter()
        floor = inp.one(
            "SELECT count(*), sum(length(caption)), sum(len(query_ids)), count(DISTINCT status), "
            "sum(length(url)), count(error_message) FROM samples"
        )
        scan_s = time.perf_counter() - t
        produced("browse", "the scan floor (samples read)", int(floor[0] or 0))
        t = time.perf_counter()
        index = Index.build(inp)
        build_s = time.perf_counter() - t
        try:
            rng = np.random.default_rng(args.seed)
            with index.cursor() as cur:
                counts = cur.execute("SELECT query_id, images FROM query_counts WHERE images > 0").fetchall()
            produced("browse", "the index (queries with images)", len(counts))
            qids = np.array([q for q, _ in counts])
            weights = np.array([n for _, n in counts], dtype=float)
            picked = rng.choice(qids, size=args.pages, p=weights / weights.sum())
            page_times, scan_times = [], []
            for i, q in enumerate(picked):
                t = time.perf_counter()
                got = index.query_images(int(q), 1)
                page_times.append(time.perf_counter() - t)
                produced("browse", f"the index's first page of query {int(q)} (images)", len(got))
                if i < args.scan_pages:
                    t = time.perf_counter()
                    naive = inp.rows(
                        "SELECT shard, key FROM samples WHERE status = 'success' AND list_contains(query_ids, ?) "
                        f"ORDER BY shard, key LIMIT {PER_PAGE}",
                        [int(q)],
                    )
                    scan_times.append(time.perf_counter() - t)
                    same(
                        "browse",
                        f"images of query {int(q)}'s first page from the scan and from the index",
                        [(r["shard"], r["key"]) for r in naive],
                        [(r["shard"], r["key"]) for r in got],
                    )
        finally:
            index.close()
    res.update(
        {
            "samples": int(floor[0]),
            "scan_s": round(scan_s, 2),
            "build_s": round(build_s, 2),
            "ratio_build_to_scan": round(build_s / scan_s, 2),
            "page:index": ms(page_times),
            "page:scan": ms(scan_times),
            "ratio_scan_page_over_index_page_median": round(
                statistics.median(scan_times) / statistics.median(page_times), 1
            ),
        }
    )
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
