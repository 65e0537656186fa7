"""Benchmark the training loader alone, per core: samples/s of `train.stream`'s loader
against the decode floor and an open_clip-style webdataset pipeline, with where its time goes.

One process, one torch thread, no loader workers (`--workers 0`): the figure is per core,
and a node needs (GPU samples/s) / (this) cores for the loader. Sets:

Every contender decodes the same images: the ones ours yields (drawn with replacement from
the shards), also written as one tar for the open_clip pipeline (`same_images`).

  sample   the sample shards (`make shards`: openclipart drawings as small JPEGs, most
           60-256 px, upscaled to the crop)
  large    generated under bench/out/loader/: `--large` JPEGs of 512-1024 px (smooth
           texture, quality 90), where decoding at reduced size matters

Contenders, at each `--sizes` (224: B/32's input; 64: the CPU configs'), batch `--batch-size`:

  floor      PIL decode + RGB + one bicubic resize of the image's centre square to S x S
             (no crop draw, no normalisation, no tokenizer, no batching): the least a loader
             can do per image
  floor_reduced  the same with ours' reduced-size JPEG decode (`draft_size`): what is left
             of the loader's own cost once the decode trick is taken out
  ours       `make_train_loader` (random square crop, open_clip's tokenizer, held-out
             split, shuffle buffer), timed over `--batches` batches after one warm-up batch
  open_clip  webdataset 0.2.86 as open_clip_train's `get_wds_dataset` builds it, minus
             the shard shuffling: `decode("pilrgb")`, `to_tuple("jpg;png;jpeg;webp",
             "txt")`, open_clip's train transform (RandomResizedCrop(S, scale 0.9-1,
             bicubic), ToTensor, Normalize) and tokenizer, `batched`

Ratios are per round (`--repeats` rounds, alternating contenders), then the median:
`ours_over_floor`, `ours_over_floor_reduced` and `ours_over_open_clip` in images/s. Every contender must yield its
full count of images (else exit 1: a contender that does nothing would look fast), and
ours must yield batches of exactly B images of S x S.

The breakdown times ours' stages one by one over the same samples, held in memory:
read (tar parsing of the shard files: `train.shards.iter_shard`), check (members, json,
uid, held-out hash, text), decode (`decode_image`, a large JPEG at reduced size), crop_resize
(the transform's one resize, to uint8), collate (per batch), normalize_on_cpu (the float
pass the trainer does per batch on its device; on the CPU only without a GPU), tokenize
(per batch). Figures in microseconds per sample.

    .venv/bin/python bench/loader.py [--sizes 224 64] [--batches 20] [--batch-size 64]
        [--repeats 3] [--large 600] [--sets sample large]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checks import fail, produced  # noqa: E402

BENCH = "loader"
OUT = ROOT / "bench" / "out" / "loader"


def large_shards(n: int, per_shard: int = 150) -> list[str]:
    """`n` 512-1024 px JPEGs with captions and uids in shards of `per_shard` (cached)."""
    folder = OUT / f"large-{n}"
    done = folder / "done"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for s in range(-(-n // per_shard)):
            with wds.TarWriter(str(folder / f"{s:05d}.tar")) as tw:
                for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                    w, h = (int(v) for v in rng.integers(512, 1025, size=2))
                    small = rng.integers(0, 256, size=(h // 16, w // 16, 3), dtype=np.uint8)
                    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=90)
                    text = f"a photo of sample {i}, large"
                    tw.write({"__key__": f"{i:09d}", "jpg": buf.getvalue(), "txt": text, "json": {"uid": f"L{i:08d}"}})
        done.write_text("")
    return sorted(str(p) for p in folder.glob("*.tar"))


def sample_shards() -> list[str]:
    urls = sorted(str(p) for p in (ROOT / "shards").glob("[0-9]*.tar"))
    if not urls:
        fail(BENCH, "no shards/NNNNN.tar: run `make shards` first")
    return urls


def image_bytes(raw: dict) -> bytes:
    from pipeline.shard_format import image_ext

    return raw[image_ext(raw)]


# --------------------------------------------------------------------------- contenders


def floor(samples: list[dict], size: int, draft: bool = False) -> int:
    from train.transforms import draft_size

    n = 0
    for raw in samples:
        img = Image.open(io.BytesIO(image_bytes(raw)))
        want = draft_size(img.size, size) if draft and img.format == "JPEG" else None
        if want is not None:
            img.draft(None, want)
        img = img.convert("RGB")
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + s, top + s))
        n += 1
    return n


def ours(urls: list[str], size: int, batch: int, batches: int, tokenizer) -> tuple[int, float, list[str]]:
    from train.config import StreamConfig
    from train.stream import make_train_loader

    cfg = StreamConfig(batch_size=batch, image_size=size, workers=0, val_fraction=0.0)
    loader = iter(make_train_loader(urls, tokenizer, cfg, num_batches=batches + 1))
    next(loader)  # warm-up: the shuffle buffer fills, the first shard opens
    t0, n, uids = time.perf_counter(), 0, []
    for images, tokens, info in loader:
        if tuple(images.shape) != (batch, 3, size, size) or len(tokens) != batch:
            fail(BENCH, f"ours: a batch of shape {tuple(images.shape)}, not {(batch, 3, size, size)}")
        n += len(images)
        uids += info["uids"]
    return n, time.perf_counter() - t0, uids


def same_images(urls: list[str], uids: list[str], out: Path) -> list[dict]:
    """The raw samples ours yielded, in its order (its shard draws are with replacement, so
    a few shards' first samples would be another mix of image sizes), and the same written
    as one tar at `out` for the open_clip pipeline: every contender sees the same images."""
    from pipeline.shard_format import read_meta, sample_uid
    from train.shards import iter_shard

    by_uid: dict[str, dict] = {}
    for url in urls:
        for raw in iter_shard(url, Counter()):
            by_uid[sample_uid(read_meta(raw.get("json", b"{}")), raw["__key__"], url)] = raw
    samples = [by_uid[u] for u in uids]
    out.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(out)) as tw:
        for i, raw in enumerate(samples):
            tw.write({"__key__": f"{i:09d}", "jpg": image_bytes(raw), "txt": raw["txt"]})
    return samples


def open_clip_style(urls: list[str], size: int, batch: int, batches: int, tokenizer) -> tuple[int, float]:
    import open_clip

    preprocess = open_clip.image_transform(size, is_train=True)
    ds = (
        wds.WebDataset(urls, shardshuffle=False)
        .repeat()
        .decode("pilrgb")
        .to_tuple("jpg;png;jpeg;webp", "txt")
        .map_tuple(preprocess, lambda t: tokenizer(t)[0])
        .batched(batch, partial=False)
    )
    it = iter(ds)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        images, _tokens = next(it)
        n += len(images)
    return n, time.perf_counter() - t0


# --------------------------------------------------------------------------- breakdown


def breakdown(urls: list[str], samples: list[dict], size: int, batch: int, tokenizer) -> dict:
    """Microseconds per sample of each stage of ours, timed alone over `samples`."""
    import random

    from train import transforms as T
    from train.shards import decode_image, iter_shard
    from train.stream import accept

    n = len(samples)
    us: dict[str, float] = {}

    t0, counts, read = time.perf_counter(), Counter(), 0
    for url in urls:
        for _ in iter_shard(url, counts):
            read += 1
            if read == n:
                break
        if read == n:
            break
    us["read"] = (time.perf_counter() - t0) / read * 1e6

    t0 = time.perf_counter()
    checked = [accept(dict(raw), counts, 0.0, False) for raw in samples]
    us["check"] = (time.perf_counter() - t0) / n * 1e6
    kept = [s for s in checked if s is not None]

    t0 = time.perf_counter()
    images = [decode_image(s["image"], counts, None, reduce_for=size) for s in kept]
    us["decode"] = (time.perf_counter() - t0) / len(kept) * 1e6
    decoded = [i for i in images if i is not None]

    transform = T.train_transform(size)
    t0 = time.perf_counter()
    tensors = [transform(img, random.Random(i), source=img.info["source_size"]) for i, img in enumerate(decoded)]
    us["crop_resize"] = (time.perf_counter() - t0) / len(decoded) * 1e6

    collate = normalize = 0.0
    for i in range(0, len(tensors), batch):  # one batch alive at a time, as in the loader
        t0 = time.perf_counter()
        images = T.stack(tensors[i : i + batch])
        t1 = time.perf_counter()
        T.normalize(images)
        collate, normalize = collate + t1 - t0, normalize + time.perf_counter() - t1
    us["collate"] = collate / len(tensors) * 1e6
    us["normalize_on_cpu"] = normalize / len(tensors) * 1e6  # on the GPU when there is one

    texts = [s["text"] for s in kept]
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        tokenizer(texts[i : i + batch])
    us["tokenize"] = (time.perf_counter() - t0) / len(texts) * 1e6
    return {k: round(v, 1) for k, v in us.items()}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    ap.add_argument("--sets", nargs="+", choices=("sample", "large"), default=["sample", "large"])
    ap.add_argument("--batches", type=int, default=20, help="batches timed per contender and round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", type=int, default=600, help="images of the generated large set")
    args = ap.parse_args(argv)

    import open_clip
    import torch

    torch.set_num_threads(1)
    from train.tokens import batch_tokenizer

    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # open_clip's, for its pipeline
    ours_tokenizer = batch_tokenizer(open_clip.get_tokenizer("ViT-B-32"))  # the trainer's (train.model.create)
    results: dict = {"bench": BENCH, "batch_size": args.batch_size, "threads": 1, "workers": 0, "sets": {}}
    for name in args.sets:
        urls = sample_shards() if name == "sample" else large_shards(args.large)
        n_images = args.batches * args.batch_size
        per_set: dict = {}
        for size in args.sizes:
            _, _, order = ours(urls, size, args.batch_size, args.batches, ours_tokenizer)
            same = OUT / f"{name}-{size}-same.tar"
            samples = same_images(urls, order, same)
            produced(BENCH, f"{name}: samples in the shards", len(samples))
            rounds = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                n_floor = floor(samples, size)
                t_floor = time.perf_counter() - t0
                t0 = time.perf_counter()
                n_draft = floor(samples, size, draft=True)
                t_draft = time.perf_counter() - t0
                n_ours, t_ours, uids = ours(urls, size, args.batch_size, args.batches, ours_tokenizer)
                if uids != order:
                    fail(BENCH, f"{name} {size}px ours: another sample order than its first run's")
                n_oc, t_oc = open_clip_style([str(same)], size, args.batch_size, args.batches, tokenizer)
                for what, count, want in (
                    ("floor", n_floor, len(samples)),
                    ("ours", n_ours, n_images),
                    ("open_clip", n_oc, n_images),
                ):
                    produced(BENCH, f"{name} {size}px {what}", count)
                    if count != want:
                        fail(BENCH, f"{name} {size}px {what}: {count} images, not {want}")
                rounds.append(
                    {
                        "floor": n_floor / t_floor,
                        "floor_reduced": n_draft / t_draft,
                        "ours": n_ours / t_ours,
                        "open_clip": n_oc / t_oc,
                    }
                )
            med = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
            per_set[str(size)] = {
                "images_per_s": med,
                "ours_over_floor": round(statistics.median(r["ours"] / r["floor"] for r in rounds), 3),
                "ours_over_open_clip": round(statistics.median(r["ours"] / r["open_clip"] for r in rounds), 3),
                "ours_over_floor_reduced": round(statistics.median(r["ours"] / r["floor_reduced"] for r in rounds), 3),
                "breakdown_us_per_sample": breakdown(urls, samples, size, args.batch_size, ours_tokenizer),
            }
            print(json.dumps({name: {str(size): per_set[str(size)]}}), file=sys.stderr, flush=True)
        results["sets"][name] = per_set
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
