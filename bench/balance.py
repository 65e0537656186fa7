"""Benchmark balancing while training: the loader's throughput per kept sample at a ~50%
keep rate against an offline-balanced set of the same samples, locally and on S3 (moto).

Data (generated, under bench/out/balance/): N samples of 256x256 JPEG (texture, ~20 kB)
in S shards, each matching Zipf-sized entries (some two), laid out as
`pipeline shards --balance online` does: json `query_ids`, a parquet per shard, the
shard's index (`NNNNN.tar.idx`) and `entry_counts.parquet`. T is chosen so that a pass
keeps about half. The offline contender is pass 0's drawn subset written as its own
shards (shard i holding shard i's kept samples, in order): what offline balancing at T
would have downloaded.

Contenders, each `train.stream`'s loader (224 px random crops, the CLIP transform, a
shuffle buffer of 256, batch 32, one process, `--workers` loader processes), reading
`--batches` batches, fewer than a pass keeps, so every contender stays in pass 0:

  offline       the subset shards, no balancing
  online        the online shards with --balance-t T, reading only drawn samples by range (index)
  online_noidx  the same without the indexes: every sample read, the others dropped before decode

Shards are drawn by the same hash of the same shard count, so all three must yield the
same samples in the same order: the bench checks the uids batch by batch (else exit 1).
Figures: kept samples/s each, and `online / offline` and `online_noidx / offline` (median
of `--repeats` alternating rounds), for local disk and for s3:// through a moto server on
loopback.

    .venv/bin/python bench/balance.py [--samples 6000] [--shards 24] [--batches 60]
        [--workers 0] [--repeats 3] [--no-s3]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import fail, produced, same  # noqa: E402
from pipeline.shard_format import write_index  # noqa: E402
from train.balance import load_entry_table, make_balance, pass_record, uid_keys  # noqa: E402
from train.config import StreamConfig  # noqa: E402
from train.stream import make_train_loader  # noqa: E402

BENCH = "balance"
OUT = ROOT / "bench" / "out" / "balance"
ENTRIES = 200


class _Tokens:
    """A stand-in tokenizer (module level: picklable to loader workers): the text length."""

    def __call__(self, texts):
        import torch

        return torch.tensor([[len(t)] for t in texts])


def jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize((256, 256), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def entries_of(n: int, seed: int = 0) -> list[list[int]]:
    """Zipf-sized entries (entry k ~ 1 / (k + 1)), a tenth of the samples matching two."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, ENTRIES + 1)
    first = rng.choice(ENTRIES, size=n, p=weights / weights.sum())
    second = rng.choice(ENTRIES, size=n, p=weights / weights.sum())
    two = rng.random(n) < 0.1
    return [sorted({int(a), int(b)}) if t else [int(a)] for a, b, t in zip(first, second, two)]


def write_shards(folder: Path, rows: list[tuple[int, list[int]]], shards: list[list[int]]) -> None:
    """Shards of `rows` ((sample id, entry ids)), `shards[s]` listing shard s's row positions."""
    folder.mkdir(parents=True, exist_ok=True)
    for s, positions in enumerate(shards):
        tar = folder / f"{s:05d}.tar"
        meta_rows = []
        with wds.TarWriter(str(tar), encoder=False) as sink:
            for pos in positions:
                sid, ids = rows[pos]
                meta = {"uid": f"{sid * 2654435761 % 2**64:016x}", "query_ids": ids, "status": "success"}
                sink.write(
                    {
                        "__key__": f"{sid:09d}",
                        "jpg": jpeg(sid),
                        "txt": f"sample {sid}".encode(),
                        "json": json.dumps(meta).encode(),
                    }
                )
                meta_rows.append({"key": f"{sid:09d}", **meta})
        pq.write_table(
            pa.table(
                {
                    "key": [r["key"] for r in meta_rows],
                    "uid": [r["uid"] for r in meta_rows],
                    "status": [r["status"] for r in meta_rows],
                    "query_ids": pa.array([r["query_ids"] for r in meta_rows], pa.list_(pa.int32())),
                }
            ),
            tar.with_suffix(".parquet"),
        )
        write_index(str(tar))


def entry_counts(folder: Path, rows: list[tuple[int, list[int]]], t: float) -> None:
    counts = np.zeros(ENTRIES, dtype=np.int64)
    for _, ids in rows:
        counts[ids] += 1
    meta = {"balance": json.dumps({"mode": "online", "per_query": t, "online_cap": None, "seed": 0})}
    table = pa.table(
        {
            "query_id": pa.array(range(ENTRIES), pa.int32()),
            "query": [f"entry{i}" for i in range(ENTRIES)],
            "count": pa.array(counts),
            "t": pa.array(np.full(ENTRIES, int(t))),
        }
    ).replace_schema_metadata(meta)
    pq.write_table(table, folder / "entry_counts.parquet")


def keep_rate_t(rows: list[tuple[int, list[int]]], target: float) -> float:
    """The T at which a pass keeps `target` of the samples in expectation (bisection)."""
    counts = np.zeros(ENTRIES)
    for _, ids in rows:
        counts[ids] += 1

    def rate(t: float) -> float:
        p = np.minimum(1.0, t / np.maximum(counts, 1))
        return float(np.mean([1 - np.prod(1 - p[ids]) for _, ids in rows]))

    lo, hi = 1.0, float(counts.max())
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate(mid) < target else (lo, mid)
    return round((lo + hi) / 2, 1)


def build(n: int, n_shards: int) -> tuple[Path, Path, Path, float]:
    """(online, online without indexes, offline subset) folders and T; reused when present."""
    online, noidx, offline = (
        OUT / f"online-{n}-{n_shards}",
        OUT / f"noidx-{n}-{n_shards}",
        OUT / f"offline-{n}-{n_shards}",
    )
    stamp = OUT / f"built-{n}-{n_shards}.json"
    if stamp.exists():
        return online, noidx, offline, json.loads(stamp.read_text())["t"]
    for f in (online, noidx, offline):
        shutil.rmtree(f, ignore_errors=True)
    ids = entries_of(n)
    rows = list(enumerate(ids))
    per = -(-n // n_shards)
    layout = [list(range(s * per, min(n, (s + 1) * per))) for s in range(n_shards)]
    t = keep_rate_t(rows, 0.5)
    write_shards(online, rows, layout)
    entry_counts(online, rows, t)
    shutil.copytree(online, noidx, ignore=shutil.ignore_patterns("*.idx"))
    urls = [str(p) for p in sorted(online.glob("[0-9]*.tar"))]
    table = load_entry_table(urls)
    balance = make_balance(table, t, 0)
    keep = []
    for positions in layout:
        shard_ids = pa.array([rows[p][1] for p in positions], pa.list_(pa.int64()))
        uids = [f"{rows[p][0] * 2654435761 % 2**64:016x}" for p in positions]
        drawn = balance.drawn(uid_keys(uids), shard_ids, 0)
        keep.append([p for p, d in zip(positions, drawn) if d])
    write_shards(offline, rows, keep)
    _, totals = pass_record(table, balance, urls, 0, lambda uid: False)
    stamp.write_text(json.dumps({"t": t, "kept_pass0": totals["drawn"], "samples": n}))
    return online, noidx, offline, t


def read(urls: list[str], batches: int, workers: int, balance) -> tuple[float, list[list[str]]]:
    config = StreamConfig(batch_size=32, image_size=224, workers=workers, val_fraction=0.0, shuffle_buffer=256)
    loader = make_train_loader(urls, _Tokens(), config, num_batches=batches, balance=balance)
    t0 = time.perf_counter()
    uids = [info["uids"] for *_, info in loader]
    return time.perf_counter() - t0, uids


def contenders(online: str, noidx: str, offline: str, t: float) -> dict:
    """{name: (urls, balance)} for three folders or bucket prefixes."""

    def tars(where: str) -> list[str]:
        from train.shards import expand_urls

        return expand_urls(f"{where}/[0-9]*.tar")

    table = load_entry_table(tars(online))
    return {
        "offline": (tars(offline), None),
        "online": (tars(online), make_balance(table, t, 0)),
        "online_noidx": (tars(noidx), make_balance(load_entry_table(tars(noidx)), t, 0)),
    }


def measure(where: dict, args) -> dict:
    times: dict[str, list[float]] = {k: [] for k in where}
    reference = None
    for _ in range(args.repeats):
        for name, (urls, balance) in where.items():
            seconds, uids = read(urls, args.batches, args.workers, balance)
            produced(BENCH, name, sum(len(b) for b in uids))
            if reference is None:
                reference = uids
            same(BENCH, f"{name}'s batches against offline's", uids, reference)
            times[name].append(seconds)
    samples = args.batches * 32
    out = {f"{k}_samples_per_s": round(samples / statistics.median(v), 1) for k, v in times.items()}
    for k in ("online", "online_noidx"):
        ratios = [o / s for o, s in zip(times["offline"], times[k])]
        out[f"{k}_over_offline"] = round(statistics.median(ratios), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--shards", type=int, default=24)
    p.add_argument("--batches", type=int, default=60, help="batches of 32 read per contender and round")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-s3", action="store_true", help="local disk only")
    args = p.parse_args(argv)
    online, noidx, offline, t = build(args.samples, args.shards)
    built = json.loads((OUT / f"built-{args.samples}-{args.shards}.json").read_text())
    if args.batches * 32 + 256 > built["kept_pass0"]:
        fail(
            BENCH,
            f"--batches {args.batches} reads past pass 0 ({built['kept_pass0']} kept): lower it or raise --samples",
        )
    result = {
        "bench": BENCH,
        "samples": args.samples,
        "shards": args.shards,
        "t": t,
        "keep_rate": round(built["kept_pass0"] / args.samples, 3),
        "batches": args.batches,
        "workers": args.workers,
        "local": measure(contenders(str(online), str(noidx), str(offline), t), args),
    }
    if not args.no_s3:
        from tests.support.s3server import moto_s3

        with moto_s3() as server:
            server.make_bucket("bench")
            fs = server.filesystem()
            for folder in (online, noidx, offline):
                for f in sorted(folder.iterdir()):
                    fs.put_file(str(f), f"bench/{folder.name}/{f.name}")
            s3 = {
                name: f"s3://bench/{folder.name}" for name, folder in (("on", online), ("no", noidx), ("off", offline))
            }
            result["s3"] = measure(contenders(s3["on"], s3["no"], s3["off"], t), args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
