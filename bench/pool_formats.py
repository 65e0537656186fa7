"""Benchmark curating a DataComp-shaped pool: pool -> match -> balance -> subset on N rows
of CommonPool-shaped metadata (`--pool-format datacomp`: its uids kept, five extra columns
carried), against the same rows read as url/text only (our own uids, no extra columns).

Data (generated once, under bench/out/pool_formats/): `--files` parquet inputs holding N
rows in all, DataComp's column names and types (32-hex-digit uid, url, text, sizes, two
CLIP scores, face boxes, sha256), captions drawn Zipf-like over `--queries` words so a
few entries are heads, 0.1% of the uids repeated (half on another URL).

Each step runs as `python -m pipeline STEP` in a fresh folder per contender, the two
alternating; the subset file is written for the DataComp run. Figures: rows/s per step
and contender and `datacomp / plain` wall time per step; checks: both pools keep rows, the
DataComp pool's stats count the repeated uids, and the subset's uids (hex -> u8,u8 -> hex)
are exactly the selected rows' (else exit 1).

    .venv/bin/python bench/pool_formats.py [--rows 1000000] [--files 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import fail, produced, same  # noqa: E402

BENCH = "pool_formats"
OUT = ROOT / "bench" / "out" / "pool_formats"


def generate(rows: int, files: int, queries: int) -> tuple[list[Path], Path, int]:
    """The inputs, the query list and how many rows repeat an earlier row's uid."""
    folder = OUT / f"inputs-{rows}-{files}"
    q = folder / "queries.parquet"
    meta = folder / "meta.json"
    paths = [folder / f"commonpool-{i:03d}.parquet" for i in range(files)]
    if meta.exists() and all(p.exists() for p in paths):
        return paths, q, json.loads(meta.read_text())["repeated"]
    folder.mkdir(parents=True, exist_ok=True)
    words = [f"word{i}" for i in range(queries)]
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, queries + 1)
    per = -(-rows // files)
    repeated = 0
    for i, path in enumerate(paths):
        n = min(per, rows - i * per)
        r = random.Random(i)
        uids = [f"{r.getrandbits(128):032x}" for _ in range(n)]
        urls = [f"https://img{j % 97}.example.com/{i}/{j}.jpg" for j in range(n)]
        for j in range(0, n - 1, 1000):  # 0.1% repeated uids: half the same sample, half another URL
            uids[j + 1] = uids[j]
            repeated += 1
            if (j // 1000) % 2:
                urls[j + 1] = urls[j]
        picks = rng.choice(queries, size=(n, 2), p=weights / weights.sum())
        texts = [f"a photo of {words[a]} near the {words[b]}, item {j}" for j, (a, b) in enumerate(picks)]
        table = pa.table(
            {
                "uid": uids,
                "url": urls,
                "text": texts,
                "original_width": pa.array(rng.integers(64, 4096, n), pa.int64()),
                "original_height": pa.array(rng.integers(64, 4096, n), pa.int64()),
                "clip_b32_similarity_score": pa.array(rng.random(n), pa.float32()),
                "clip_l14_similarity_score": pa.array(rng.random(n), pa.float32()),
                "face_bboxes": pa.array([[] for _ in range(n)], pa.list_(pa.list_(pa.float64()))),
                "sha256": [f"{r.getrandbits(256):064x}" for _ in range(n)],
            }
        )
        pq.write_table(table, path, row_group_size=100_000)
    pq.write_table(pa.table({"query": words}), q)
    meta.write_text(json.dumps({"repeated": repeated}))
    return paths, q, repeated


def cli(*args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        fail(BENCH, f"pipeline {args[0]} failed: {res.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-query", type=int, default=200)
    args = ap.parse_args(argv)
    inputs, queries, repeated = generate(args.rows, args.files, args.queries)
    contenders = {
        "datacomp": ["--pool-format", "datacomp"],
        "plain": ["--url-col", "url", "--text-col", "text"],
    }
    folders = {k: OUT / f"run-{k}" for k in contenders}
    for f in folders.values():
        shutil.rmtree(f, ignore_errors=True)
    pools = [a for p in inputs for a in ("--pool", str(p))]
    common = ["--workers", str(args.workers)]
    seconds: dict[str, dict[str, float]] = {k: {} for k in contenders}
    steps = {
        "pool": lambda k: ["pool", *pools, *contenders[k]],
        "match": lambda k: ["match", "--queries", str(queries)],
        "balance": lambda k: ["balance", "--queries", str(queries), "--per-query", str(args.per_query)],
    }
    for i, (step, make) in enumerate(steps.items()):
        order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
        for k in order:
            seconds[k][step] = cli(*make(k), "--out", str(folders[k]), *common)
    subset = OUT / "subset.npy"
    seconds["datacomp"]["subset"] = cli("subset", "--curation", str(folders["datacomp"]), "--out", str(subset))

    stats = {k: json.loads((folders[k] / "curation" / "pool" / "_stats.json").read_text()) for k in contenders}
    for k in contenders:
        produced(BENCH, f"{k} pool", stats[k]["kept"])
    dc = stats["datacomp"]
    same(BENCH, "repeated uids found", dc["dropped_duplicate"], repeated)
    selected = pq.read_table(folders["datacomp"] / "curation" / "selected", columns=["uid"]).column("uid").to_pylist()
    got = np.load(subset)
    back = [f"{int(a):016x}{int(b):016x}" for a, b in got]
    same(BENCH, "subset uids (hex -> u8,u8 -> hex) against the selected rows", back, sorted(selected))
    result = {
        "bench": BENCH,
        "rows": args.rows,
        "files": args.files,
        "workers": args.workers,
        "pool_stats": {k: {s: stats[k][s] for s in ("kept", "dropped_duplicate")} for k in contenders},
        "duplicate_uid_other_url": dc.get("duplicate_uid_other_url"),
        "selected": len(selected),
        "rows_per_s": {k: {s: round(args.rows / t) for s, t in v.items()} for k, v in seconds.items()},
        "datacomp_over_plain_seconds": {s: round(seconds["datacomp"][s] / seconds["plain"][s], 3) for s in steps},
        "subset_seconds": round(seconds["datacomp"]["subset"], 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
