"""Runs for the tests of what reads a model or a run folder (evaluate, sources, overlap,
export): one small run trained by `python -m train`, shared by the session (`train_run`,
the `trained_run` fixture in tests/conftest.py), and a randomly initialised checkpoint
(`random_checkpoint`) where no training is needed and no sample data should be.

The trained run: tiny-ViT-64, 3 steps of 4 real openclipart pairs (lr 1e-3 after 1 warm-up
step) on one process, checkpoints at steps 2 and 3, evaluated at step 3 on a 6-image
imagefolder and on its held-out samples (``val``). Tests read it and never write into it:
a test that needs to change a run copies what it changes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .trainer import run_train

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3


@dataclass(frozen=True)
class TrainedRun:
    run: Path  # RUN: config.json, checkpoints/step-0000000{2,3}.pt, eval/step-00000003.json
    shard: Path  # the one shard it was trained on, 48 openclipart pairs
    imagefolder: Path  # the labelled set it was evaluated on: 2 classes (cat, dog) x 3 images


def tiny_imagefolder(root: Path) -> Path:
    """An ImageFolder set of 2 classes x 3 images: a zero-shot evaluation that takes a second."""
    for name, colour in (("cat", (200, 60, 40)), ("dog", (40, 60, 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48, 40), tuple(c + 15 * i for c in colour)).save(root / name / f"{i}.png")
    return root


def openclipart_shards(
    folder: Path, openclipart_dir: Path, shards: int = 1, per_shard: int = 48, corrupt: frozenset = frozenset()
) -> Path:
    """`folder`/NNNNN.tar: the sample's first shards x per_shard captioned openclipart pairs as
    96 px JPEGs; the samples (shard, index) in `corrupt` get bytes that are not a JPEG."""
    import webdataset as wds

    from pipeline.sample.openclipart import roots_from_cache, sample_rows

    png_root, svg_root = roots_from_cache(str(openclipart_dir))
    captioned = (r for r in sample_rows(png_root, svg_root) if r["text"])
    rows = [r for r, _ in zip(captioned, range(shards * per_shard))]
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as tw:
            for i, r in enumerate(rows[s * per_shard : (s + 1) * per_shard]):
                img = Image.open(Path(png_root) / r["path"]).convert("RGBA").convert("RGB")
                img.thumbnail((96, 96))
                buf = io.BytesIO()
                img.save(buf, format="JPEG")
                jpg = b"\xff\xd8 not a jpeg" if (s, i) in corrupt else buf.getvalue()
                meta = {"uid": f"{s:02d}{i:014d}", "caption": r["text"]}
                tw.write({"__key__": f"{s:05d}{i:04d}", "jpg": jpg, "txt": r["text"], "json": meta})
    return folder


def train_run(root: Path, openclipart_dir: Path) -> TrainedRun:
    """Train the shared run under `root` (see the module docstring)."""
    shard = openclipart_shards(root / "shards", openclipart_dir) / "00000.tar"
    folder = tiny_imagefolder(root / "imgs")
    res = run_train(
        "--eval-datasets",
        f"imagefolder:{folder}",
        train_data=str(shard),
        runs=str(root),
        name="trained",
        steps=STEPS,
        save_every=2,
        lr="1e-3",
        val_shards=1,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = root / "trained"
    assert (run / "eval" / f"step-{STEPS:08d}.json").is_file(), sorted(p.name for p in run.rglob("*"))
    return TrainedRun(run, shard, folder)


def random_checkpoint(run: Path, step: int, **config) -> Path:
    """A randomly initialised tiny-ViT-64 (seed 0: the same weights every time) saved as this
    trainer's checkpoint RUN/checkpoints/step-NNNNNNNN.pt; `config` adds to its config."""
    import torch

    from train import checkpoint
    from train import model as models

    torch.manual_seed(0)
    model_config = json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    net, _, _ = models.create("tiny-ViT-64", model_config)
    state = {
        "format": checkpoint.FORMAT,
        "model": net.state_dict(),
        "optimizer": {},
        "step": step,
        "rng": [checkpoint.rng_state()],
        "config": {"model": "tiny-ViT-64", "model_config": model_config, **config},
    }
    return Path(checkpoint.save(run / "checkpoints", step, state))
