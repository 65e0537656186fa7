"""Train-test overlap (`train.overlap`), on real images.

Planted duplicates: a webdataset shard holding copies of held-in digits and openclipart
images (a lossless PNG, a JPEG at quality 75, scaled 0.5x and 2x, cropped by 2% and 3% a
side) and non-duplicates (other images of the same classes, animal-mnist silhouettes);
the scan with a randomly initialised tiny-ViT-64 at the default thresholds must find the
copies (recall) and nothing else (precision). Also: the statistics against hand-computed
numbers, the CLI's one-line errors and its output. The detectors alone are
tests/train/test_duplicates.py; the shards without the pairs found, tests/pipeline/test_decontaminate.py."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, assert_one_line_error, required_path
from tests.support.trained_run import random_checkpoint

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
COPIES = ("png", "jpeg75", "half", "double", "crop2", "crop3")


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.Resampling.BICUBIC
    )


def copy_bytes(image: Image.Image, how: str) -> tuple[str, bytes]:
    """(extension, encoded bytes) of a copy of `image` made `how`."""
    from train.duplicates import cropped

    if how == "png":
        return "png", _png(image)
    if how == "jpeg75":
        return "jpg", _jpeg(image, 75)
    if how in ("half", "double"):
        return "jpg", _jpeg(_scaled(image, 0.5 if how == "half" else 2.0))
    return "jpg", _jpeg(cropped(image, {"crop2": 0.02, "crop3": 0.03}[how]))


def write_shard(path: Path, samples: list[tuple[str, str, bytes]], extra: list[tuple[str, bytes]] = ()) -> None:
    """A webdataset tar: KEY.EXT image, KEY.txt, KEY.json (uid) per sample, then `extra` members."""
    with tarfile.open(path, "w") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o444
            tf.addfile(info, io.BytesIO(data))

        for key, ext, data in samples:
            add(f"{key}.{ext}", data)
            add(f"{key}.txt", f"caption {key}".encode())
            add(f"{key}.json", json.dumps({"uid": f"uid-{key}"}).encode())
        for name, data in extra:
            add(name, data)


# ---------------------------------------------------------------------------------------
# Planted duplicates


@pytest.fixture(scope="module")
def tiny_model():
    """A randomly initialised tiny-ViT-64: (model, tokenizer, preprocess)."""
    import open_clip
    import torch

    from train import model as models

    torch.manual_seed(0)
    models.register_builtin()
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-ViT-64", pretrained=None)
    return model.eval(), open_clip.get_tokenizer("tiny-ViT-64"), preprocess


def _pick(labels: np.ndarray, n_held: int, n_other: int, seed: int, keep=lambda i: True):
    """(held-in indices, other indices of the same classes), disjoint, drawn with `seed`."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(labels)) if keep(int(i))]
    held = order[:n_held]
    classes = set(labels[held].tolist())
    others = [i for i in order[n_held:] if labels[i] in classes][:n_other]
    return held, others


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model):
    """The shard, the evaluation subsets (EvalSets with a random model) and the truth per key."""
    from train import eval_data
    from train.duplicates import fingerprint
    from train.overlap import build_eval_set

    model, tokenizer, preprocess = tiny_model
    digits = eval_data.sklearn_digits()
    clipart = eval_data.openclipart_heldout(required_path("OPENCLIPART_DIR"))
    animals = eval_data.animal_mnist(required_path("ANIMAL_MNIST_DIR"))
    d_held, d_other = _pick(digits.labels, 30, 20, seed=1)
    # openclipart images with a stable phash only: the others are left to the exact and embedding
    # detectors by design (test_unstable_hashes_match_nothing)
    c_held, c_other = _pick(clipart.labels, 20, 20, seed=2, keep=lambda i: fingerprint(clipart.image(i)).phash_ok)
    sets = {
        name: build_eval_set(
            name,
            (ds.image(i) for i in held),
            ds.labels[held],
            ds.classnames,
            model,
            tokenizer,
            preprocess,
            batch_size=64,
        )
        for name, ds, held in (("digits", digits, d_held), ("openclipart", clipart, c_held))
    }
    samples, truth = [], {}
    for name, ds, held, others in (("digits", digits, d_held, d_other), ("openclipart", clipart, c_held, c_other)):
        for j, i in enumerate(held):
            for how in COPIES:
                key = f"{len(samples):08d}"
                samples.append((key, *copy_bytes(ds.image(i), how)))
                truth[key] = (name, j, how)
        for i in others:
            key = f"{len(samples):08d}"
            samples.append((key, "jpg", _jpeg(ds.image(i))))
            truth[key] = None
    for i in range(10):  # another set's images
        key = f"{len(samples):08d}"
        samples.append((key, "jpg", _jpeg(animals.image(i * 997))))
        truth[key] = None
    shard = tmp_path_factory.mktemp("planted") / "00000.tar"
    write_shard(shard, samples, extra=[("99999998.jpg", b"\xff\xd8 not a jpeg"), ("99999999.txt", b"no image")])
    return shard, sets, truth


@pytest.mark.sample
def test_planted_duplicates_found_and_nothing_else(planted, tiny_model):
    from train.duplicates import Matcher
    from train.overlap import MIN_COSINE, PHASH_MAX_DISTANCE, dataset_result, scan_shards

    shard, sets, truth = planted
    model, _, preprocess = tiny_model
    matchers = {name: Matcher(s, PHASH_MAX_DISTANCE[name], MIN_COSINE[name]) for name, s in sets.items()}
    scan = scan_shards([str(shard)], matchers, model, preprocess, batch_size=64, progress=False)
    assert scan.n_images == len(truth) and dict(scan.skipped) == {"bad_image": 1, "missing_image": 1}
    found = {(p["key"], p["dataset"], p["eval_index"]) for p in scan.pairs}
    correct = {f for f in found if truth[f[0]] is not None and truth[f[0]][:2] == f[1:]}
    precision = len(correct) / len(found)
    false_on_non_duplicates = [f for f in found if truth[f[0]] is None]
    print(f"\nplanted: {len(truth)} shard images, {len(found)} pairs found, precision {precision:.3f}")
    for name in sets:
        planted_keys = {k: t for k, t in truth.items() if t is not None and t[0] == name}
        recall = {
            how: np.mean([(k, name, t[1]) in correct for k, t in planted_keys.items() if t[2] == how]) for how in COPIES
        }
        overall = np.mean([(k, name, t[1]) in correct for k, t in planted_keys.items()])
        print(f"  {name}: recall {overall:.3f} ({', '.join(f'{h} {r:.2f}' for h, r in recall.items())})")
        assert overall >= 0.9, (name, recall)
        assert recall["png"] == 1.0 and recall["jpeg75"] >= 0.9
    assert precision == 1.0 and not false_on_non_duplicates, false_on_non_duplicates
    kinds = {p["kind"] for p in scan.pairs if truth[p["key"]][2] == "png"}
    assert kinds == {"exact"}, "a lossless copy is an exact match"
    assert all(p["uid"] == f"uid-{p['key']}" and p["cosine"] is not None for p in scan.pairs)
    digits = dataset_result(sets["digits"], [p for p in scan.pairs if p["dataset"] == "digits"])
    assert digits["all"] == 30 and digits["overlap"] == len(
        {p["eval_index"] for p in scan.pairs if p["dataset"] == "digits"}
    )
    assert digits["by_kind"]["exact"] == 30 and sum(digits["by_kind"].values()) == digits["overlap"]


# ---------------------------------------------------------------------------------------
# Statistics


def test_overlap_stats_against_hand_computed_numbers():
    from scipy.stats import beta

    from train.overlap import overlap_stats

    # Overlap: 10 images, 9 right; Clean: 10 images, 5 right (accuracy 0.5)
    correct = [1] * 9 + [0] + [1] * 5 + [0] * 5
    is_overlap = [1] * 10 + [0] * 10
    r = overlap_stats(correct, is_overlap, chance=0.1)
    assert (r["all"], r["overlap"], r["clean"], r["overlap_rate"]) == (20, 10, 10, 0.5)
    assert (r["top1_all"], r["top1_overlap"], r["top1_clean"]) == (0.7, 0.9, 0.5)
    assert r["all_minus_clean"] == pytest.approx(0.2) and r["chance_top1"] == 0.1
    tail = sum(math.comb(10, k) for k in (9, 10)) / 2**10  # P(X >= 9), X ~ Binomial(10, 0.5)
    assert r["binomial_p"] == pytest.approx(tail, rel=1e-12) and tail == 11 / 1024
    lo, hi = r["overlap_top1_ci995"]  # Clopper-Pearson, alpha = 0.005
    assert lo == pytest.approx(beta.ppf(0.0025, 9, 2), rel=1e-9)
    assert hi == pytest.approx(beta.ppf(0.9975, 10, 1), rel=1e-9)

    none = overlap_stats([1, 0, 1], [0, 0, 0], chance=0.5)
    assert none["overlap"] == 0 and none["top1_overlap"] is None and none["binomial_p"] is None
    assert none["overlap_top1_ci995"] is None and none["all_minus_clean"] == 0
    every = overlap_stats([0, 0, 1], [1, 1, 1], chance=0.5)
    assert every["clean"] == 0 and every["top1_clean"] is None and every["all_minus_clean"] is None
    assert every["binomial_p"] is None and every["overlap_top1_ci995"][0] == pytest.approx(beta.ppf(0.0025, 1, 3))
    zero = overlap_stats([0, 0, 1, 1], [1, 1, 0, 0], chance=0.5)
    assert zero["overlap_top1_ci995"][0] == 0.0 and zero["binomial_p"] == 1.0


# ---------------------------------------------------------------------------------------
# The CLI


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A randomly initialised tiny-ViT-64 checkpoint whose run names training shards that do not exist."""
    run = tmp_path_factory.mktemp("runs") / "overlap"
    random_checkpoint(run, 3, train_data=[str(run / "missing-*.tar")])
    return run


def test_help_answers_before_torch_is_imported():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "train.overlap", "--help"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m train.overlap"), res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert len(imported) > 10 and not {"torch", "open_clip", "numpy", "imagehash"} & imported


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--datasets", "nope"], "unknown dataset 'nope'"),
        (["--shards", "/nonexistent/*.tar"], "matches no shard"),
        ([], "missing-*.tar: matches no shard"),  # the checkpoint's own --train-data
        (["--phash-distance", "cifar=3"], "'cifar' is not among --datasets"),
        (["--phash-distance", "64"], "between 0 and 63"),
        (["--min-cosine", "digits=2"], "between -1 and 1"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_run, capsys, args, needle):
    from train.overlap import main

    given = ["--checkpoint", str(tiny_run)] + ([] if "--datasets" in args else ["--datasets", "digits"])
    assert main(given + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_cli_bad_checkpoint_and_unreadable_shards(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = subprocess.run(
        [sys.executable, "-m", "train.overlap", "--checkpoint", str(bad), "--shards", str(bad)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(res, "not a readable checkpoint")


@pytest.mark.sample
def test_cli_writes_the_report(trained_run, planted, tmp_path, capsys):
    import pyarrow.parquet as pq

    from train.overlap import PAIR_COLUMNS, main

    shard, _, truth = planted
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--checkpoint",
                str(trained_run.run),
                "--shards",
                str(shard),
                str(empty),
                "--datasets",
                "digits",
                "--out",
                str(out),
                "--min-cosine",
                "off",
                "--phash-distance",
                "digits=1",
                "--batch-size",
                "128",
                "--feature-cache",
                str(tmp_path / "features"),  # not the repository's .cache: every run encodes
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "overlap digits: " in err and "p " in err
    result = json.loads((out / "eval" / "overlap.json").read_text())
    assert set(result) >= {
        "checkpoint",
        "model",
        "step",
        "shards",
        "n_shard_images",
        "shard_errors",
        "seconds",
        "thresholds",
        "datasets",
    }
    assert result["step"] == 3 and result["model"] == "tiny-ViT-64" and result["checkpoint"].endswith(".pt")
    assert result["shards"] == sorted([str(shard), str(empty)]) and result["n_shard_images"] == len(truth)
    assert result["shard_errors"] == 3 and result["skipped"] == {
        "bad_image": 1,
        "missing_image": 1,
        "shard_unreadable": 1,
    }
    assert result["thresholds"] == {"phash_max_distance": {"digits": 1}, "min_cosine": {"digits": None}}
    d = result["datasets"]["digits"]
    assert d["all"] == 1797 and d["overlap"] + d["clean"] == 1797 and d["overlap"] >= 30
    # here every digit is an evaluation image: the PNG copies, and the "others" whose JPEG decodes to the
    # very pixels (8x8 blocks survive quality 95), match exactly
    assert d["by_kind"]["exact"] >= 30 and d["chance_top1"] == 0.1
    assert set(d) >= {
        "overlap_rate",
        "top1_all",
        "top1_overlap",
        "top1_clean",
        "all_minus_clean",
        "binomial_p",
        "overlap_top1_ci995",
    }
    pairs = pq.read_table(out / "eval" / "overlap_pairs.parquet")
    assert pairs.column_names == list(PAIR_COLUMNS)
    rows = pairs.to_pylist()
    assert rows == sorted(rows, key=lambda r: (r["dataset"], r["eval_index"], r["shard"], r["key"]))
    assert len({r["eval_index"] for r in rows}) == d["overlap"]
