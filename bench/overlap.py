"""Benchmark the overlap scan (`train.overlap`): what a million shard images cost, per core.

One process, one thread (torch, BLAS and OpenMP pinned to 1), over the sample shards
repeated until there are at least --min-images images, each phase timed on the same
images in the same run (the machine is shared: only ratios taken together mean much):

  decode       the floor: read the tars, decode each image (`train.shards`' reader);
  hash         decode + fingerprint (sha256 of the pixels, phash and its stability);
  hash_scan    `scan_shards` without a model: decode + fingerprint + the exact and
               multi-index phash lookups against the three evaluation sets;
  embed:MODEL  decode + the model's preprocessing + ``encode_image`` in batches of
               --batch-size (randomly initialised weights: the cost does not depend on them),
               on the first --embed-images images for the larger models;
  scan:MODEL   `scan_shards` with the model: everything the CLI does per shard image.

Reported as seconds per million shard images on one core, and as a multiple of the decode
floor. Every phase must go over as many images as the floor (`n`, or the embedding
pass's limit), else the bench fails (exit 1, one line on stderr; `bench/checks.py`).
Prints one JSON object.

    .venv/bin/python bench/overlap.py [--models tiny-ViT-64 ViT-B-32] [--min-images 8000] [--device cpu]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load: one core means one core

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checks import produced, same  # noqa: E402


def shard_list(pattern: str, min_images: int) -> tuple[list[str], int]:
    """The sample shards, repeated until they hold `min_images` images; (urls, images per pass)."""
    from train.overlap import shard_images
    from train.shards import expand_urls

    urls = expand_urls(pattern)
    per_pass = sum(1 for u in urls for _ in shard_images(u, Counter(), None))
    repeat = max(1, -(-min_images // per_pass))
    return urls * repeat, per_pass


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def decode_only(urls: list[str], limit: int | None = None) -> int:
    from train.overlap import shard_images

    n = 0
    for url in urls:
        for _ in shard_images(url, Counter(), None):
            n += 1
            if limit and n == limit:
                return n
    return n


def hash_only(urls: list[str]) -> int:
    from train.duplicates import fingerprint
    from train.overlap import shard_images

    n = 0
    for url in urls:
        for _, _, image in shard_images(url, Counter(), None):
            fingerprint(image)
            n += 1
    return n


def embed_only(urls: list[str], model, preprocess, device: str, batch_size: int, limit: int) -> int:
    from train.overlap import embed, shard_images

    n, pending = 0, []
    for url in urls:
        for _, _, image in shard_images(url, Counter(), None):
            pending.append(preprocess(image))
            n += 1
            if len(pending) == batch_size or n == limit:
                embed(model, pending, device, None)
                pending = []
            if n == limit:
                return n
    if pending:
        embed(model, pending, device, None)
    return n


def random_model(name: str, device: str):
    import open_clip

    from train import model as models
    from train.sources import quiet_random_init_warning

    models.register_builtin()
    with quiet_random_init_warning():
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model.to(device).eval(), preprocess


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=str(ROOT / "shards" / "[0-9]*.tar"))
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "sample"))
    ap.add_argument("--min-images", type=int, default=8000)
    ap.add_argument("--models", nargs="+", default=["tiny-ViT-64", "ViT-B-32"])
    ap.add_argument(
        "--embed-images",
        type=int,
        default=1000,
        help="images for the embedding pass of models other than tiny-ViT-64 (default: %(default)s)",
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from train import overlap as ov
    from train.config import DEFAULT_DATASETS

    torch.set_num_threads(1)
    urls, per_pass = shard_list(args.shards, args.min_images)
    floor_s, n = timed(lambda: decode_only(urls))
    produced("overlap", "decode (images)", n)
    per_million = lambda s, k: round(s / k * 1e6, 1)  # noqa: E731
    out: dict = {
        "images": n,
        "sample_images": per_pass,
        "passes": len(urls) // max(1, len(set(urls))),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "seconds_per_million": {},
        "ratio_to_decode": {},
    }

    def record(name: str, seconds: float, k: int, floor_k: int | None = None) -> None:
        """A phase's cost; it must have gone over the floor's images (all `n`, or `floor_k`)."""
        same("overlap", f"images gone over by {name} and by the decode floor", k, n if floor_k is None else floor_k)
        cost = per_million(seconds, k)
        floor = per_million(floor_s, n) if floor_k is None else per_million(*timed(lambda: decode_only(urls, floor_k)))
        out["seconds_per_million"][name] = cost
        out["ratio_to_decode"][name] = round(cost / floor, 2)

    out["seconds_per_million"]["decode"] = per_million(floor_s, n)
    record("hash", *timed(lambda: hash_only(urls)))
    t0 = time.perf_counter()
    sets = {name: ov.load_eval_set(name, args.cache) for name in DEFAULT_DATASETS}
    out["eval_fingerprint_seconds"] = round(time.perf_counter() - t0, 1)
    thresholds = ov.thresholds_for(list(sets))
    matchers = {name: ov.Matcher(s, thresholds["phash_max_distance"][name], None) for name, s in sets.items()}
    record("hash_scan", *timed(lambda: ov.scan_shards(urls, matchers, progress=False).n_images))
    for name in args.models:
        model, preprocess = random_model(name, args.device)
        limit = n if name == "tiny-ViT-64" else min(n, args.embed_images)
        s, k = timed(partial(embed_only, urls, model, preprocess, args.device, args.batch_size, limit))
        record(f"embed:{name}", s, k, limit)
        if name == "tiny-ViT-64":
            tokenizer = __import__("open_clip").get_tokenizer(name)
            sets_m = {
                d: ov.load_eval_set(d, args.cache, model, tokenizer, preprocess, args.device, args.batch_size)
                for d in DEFAULT_DATASETS
            }
            matchers_m = {d: ov.Matcher(s, thresholds["phash_max_distance"][d], 0.999) for d, s in sets_m.items()}
            scan = partial(ov.scan_shards, urls, matchers_m, model, preprocess, args.device, args.batch_size)
            s, k = timed(lambda scan=scan: scan(progress=False).n_images)
            record(f"scan:{name}", s, k)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
