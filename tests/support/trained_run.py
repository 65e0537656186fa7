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


def openclipart_shard(path: Path, openclipart_dir: Path, n: int = 48) -> Path:
    """A webdataset shard of the first `n` captioned openclipart pairs of the sample, as JPEGs."""
    import webdataset as wds

    from pipeline.sample.openclipart import roots_from_cache, sample_rows

    png_root, svg_root = roots_from_cache(str(openclipart_dir))
    rows = [r for r, _ in zip((r for r in sample_rows(png_root, svg_root) if r["text"]), range(n))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as tw:
        for i, r in enumerate(rows):
            img = Image.open(Path(png_root) / r["path"]).convert("RGBA").convert("RGB")
            img.thumbnail((96, 96))
            buf = io.BytesIO()
            img.save(buf, format="JPEG")
            uid = f"{i:016d}"
            tw.write({"__key__": f"{i:08d}", "jpg": buf.getvalue(), "txt": r["text"], "json": {"uid": uid}})
    return path


def train_run(root: Path, openclipart_dir: Path) -> TrainedRun:
    """Train the shared run under `root` (see the module docstring)."""
    shard = openclipart_shard(root / "shards" / "00000.tar", openclipart_dir)
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
