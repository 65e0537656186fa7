"""Benchmark evaluation on a webdataset set of ImageNet's size (`train.eval_wds`, `wds:ROOT`):
images/s against the decode-only floor, measured in the same run.

A synthetic set in CLIP_benchmark's layout (--images JPEGs of 200x150 over 1,000 classes,
in shards of 10,000, as DataComp's imagenet1k is cut) is written once under bench/out/ and
reused. One process, one thread (torch, BLAS and OpenMP pinned to 1): per-core figures,
each phase over the same images:

  decode      the floor: stream each tar front to back, decode every image to RGB;
  read        `wds_classification`: index the shards (headers and cls members), then read
              each image by its offset and decode it, as loader workers do;
  preprocess  read + the model's preprocessing, through the DataLoader `evaluate` uses;
  evaluate    `train.evaluate.evaluate` on ``wds:ROOT``: index, the zero-shot classifier
              from the set's own prompt over its 1,000 class names, preprocessing, the
              model's image tower (tiny-ViT-64, random weights: the cost does not depend on
              them), top-1/top-5.

Each phase is reported as images/s and as its share of the floor's rate. Every phase must
see all the images with the floor's labels (`bench/checks.py`: exit 1 and one line on
stderr otherwise). Prints one JSON object.

    .venv/bin/python bench/evaluate.py [--images 50000] [--batch-size 256]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load: one core means one core

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checks import produced, same  # noqa: E402

BENCH = "evaluate"
PER_SHARD = 10_000
N_CLASSES = 1000
SIZE = (200, 150)


def make_set(root: Path, n: int) -> Path:
    """The synthetic set (reused when a complete one is there): smooth colour fields with
    noise, as JPEG, label i % 1000 shuffled by a fixed permutation."""
    import numpy as np
    from PIL import Image

    done = root / "complete"
    if done.is_file() and done.read_text() == str(n):
        return root
    (root / "test").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    labels = rng.permutation(n) % N_CLASSES
    shards = -(-n // PER_SHARD)
    for s in range(shards):
        with tarfile.open(root / "test" / f"{s}.tar", "w") as tar:
            for i in range(s * PER_SHARD, min(n, (s + 1) * PER_SHARD)):
                a, b, c = rng.uniform(0.01, 0.1, 3)
                field = np.stack([np.sin(a * xx + i), np.cos(b * yy - i), np.sin(c * (xx + yy))], -1)
                pixels = ((field + 1) * 100 + rng.normal(0, 12, field.shape)).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
                for ext, data in (("jpg", buf.getvalue()), ("cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("".join(f"class {c}\n" for c in range(N_CLASSES)))
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    done.write_text(str(n))
    return root


def decode_floor(root: Path) -> tuple[int, Counter]:
    """Every image of every shard, streamed and decoded; (images, label counts)."""
    from PIL import Image

    n, labels = 0, Counter()
    shards = int((root / "test" / "nshards.txt").read_text())
    for s in range(shards):
        with tarfile.open(root / "test" / f"{s}.tar", "r|") as tar:
            for member in tar:
                f = tar.extractfile(member)
                if f is None:
                    continue
                data = f.read()
                if member.name.endswith(".cls"):
                    labels[int(data)] += 1
                else:
                    with Image.open(io.BytesIO(data)) as im:
                        im.convert("RGB").load()
                    n += 1
    return n, labels


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000, help="images in the set (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where the set is kept (default: %(default)s)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from train import model as models
    from train.config import EvalConfig
    from train.eval_wds import wds_classification
    from train.evaluate import _loader, evaluate

    root, make_s = timed(lambda: make_set(Path(args.out) / f"eval-wds-{args.images}", args.images))
    (n, labels), decode_s = timed(lambda: decode_floor(root))
    produced(BENCH, "decode floor images", n)
    same(BENCH, "decode floor images vs --images", n, args.images)

    def read_all():
        ds = wds_classification(str(root))
        for i in range(len(ds)):
            ds.image(i)
        return ds

    ds, read_s = timed(read_all)
    same(BENCH, "read: images", len(ds), n)
    same(BENCH, "read: label counts", Counter(ds.labels.tolist()), labels)

    torch.manual_seed(0)
    model, tokenizer, _ = models.create("tiny-ViT-64")
    model.eval()
    preprocess = models.eval_transform(model)

    def preprocess_all():
        seen = 0
        for _images, target in _loader(wds_classification(str(root), preprocess), args.batch_size, 0):
            seen += len(target)
        return seen

    seen, pre_s = timed(preprocess_all)
    same(BENCH, "preprocess: images", seen, n)

    config = EvalConfig(
        datasets=(f"wds:{root}",), retrieval=(), batch_size=args.batch_size, feature_cache=None, progress=False
    )
    result, eval_s = timed(lambda: evaluate(model, tokenizer, preprocess, config, log=None))
    got = result["datasets"][f"wds:{root}"]
    same(BENCH, "evaluate: images", got["n"], n)
    same(BENCH, "evaluate: classes", got["n_classes"], N_CLASSES)

    def phase(seconds: float) -> dict:
        return {
            "seconds": round(seconds, 2),
            "images_per_s": round(n / seconds, 1),
            "of_floor": round(decode_s / seconds, 3),
        }

    print(
        json.dumps(
            {
                "bench": BENCH,
                "images": n,
                "shards": int((root / "test" / "nshards.txt").read_text()),
                "image_size": list(SIZE),
                "classes": N_CLASSES,
                "threads": 1,
                "set_written_s": round(make_s, 1),
                "decode_floor": phase(decode_s),
                "read": phase(read_s),
                "preprocess": phase(pre_s),
                "evaluate": {
                    **phase(eval_s),
                    "model": "tiny-ViT-64",
                    "batch_size": args.batch_size,
                    "top1": got["top1"],
                },
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
