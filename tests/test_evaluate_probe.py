"""`python -m train.evaluate --linear-probe`: the CLIP paper's linear probe and k-shot probes on a
tiny model's digits features, written beside the zero-shot results."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from .conftest import ROOT
from .test_evaluate_cli import evaluate_cli


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny-ViT-64 saved as this trainer's checkpoint (as test_evaluate_cli does)."""
    import torch

    from train import checkpoint
    from train import model as models

    torch.manual_seed(0)  # the same weights, so the same timing and accuracies, every run
    run = tmp_path_factory.mktemp("runs") / "probe"
    config = json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    net, _, _ = models.create("tiny-ViT-64", config)
    checkpoint.save(
        run / "checkpoints",
        2,
        {
            "format": checkpoint.FORMAT,
            "model": net.state_dict(),
            "optimizer": {},
            "step": 2,
            "rng": [checkpoint.rng_state()],
            "config": {"model": "tiny-ViT-64", "model_config": config},
        },
    )
    return run


@pytest.mark.slow
def test_linear_probe_cli_on_digits(tiny_checkpoint, tmp_path):
    t0 = time.perf_counter()
    res = evaluate_cli(
        "--checkpoint",
        str(tiny_checkpoint),
        "--datasets",
        "digits",
        "--linear-probe",
        "--templates",
        "simple",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--batch-size",
        "256",
        "--feature-cache",
        str(tmp_path / "features"),
    )
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "final.json").read_text())
    digits = result["datasets"]["digits"]
    assert digits["n"] == 1797 and 0 <= digits["top1"] <= 1, "the zero-shot results are still there"
    probe = digits["linear_probe"]
    for key in (
        "features",
        "split",
        "test_acc",
        "lambda",
        "log10_lambda",
        "val_acc",
        "n_train",
        "n_val",
        "n_test",
        "n_fit",
        "chance",
        "num_classes",
        "zero_shot_top1",
        "few_shot",
    ):
        assert key in probe, key
    assert probe["n_train"] + probe["n_val"] + probe["n_test"] == 1797
    assert abs(probe["n_test"] - 0.2 * 1797) <= 10 and abs(probe["n_val"] - 0.2 * 1797) <= 10
    assert probe["n_fit"] == probe["n_train"] + probe["n_val"]
    assert probe["chance"] == pytest.approx(0.1) and probe["num_classes"] == 10
    assert 0 <= probe["test_acc"] <= 1 and 0 <= probe["val_acc"] <= 1 and 0 <= probe["zero_shot_top1"] <= 1
    assert 1e-6 <= probe["lambda"] <= 1e6
    assert probe["test_acc"] > 0.3, "even random tiny-ViT features separate digits well above chance"
    # the zero-shot top-1 on the probe's test split: an exact fraction of its n_test images
    assert probe["zero_shot_top1"] * probe["n_test"] == pytest.approx(round(probe["zero_shot_top1"] * probe["n_test"]))
    few = probe["few_shot"]
    assert few["seeds"] == [0, 1, 2] and few["chance"] == pytest.approx(0.1)
    assert few["zero_shot_top1"] == probe["zero_shot_top1"]
    assert sorted(map(int, few["shots"])) == [1, 2, 4, 8, 16], "keys as strings; the JSON sorts them"
    for k, entry in few["shots"].items():
        assert len(entry["acc"]) == 3 and len(entry["lambda"]) == 3, k
        assert all(0 <= a <= 1 for a in entry["acc"]) and 0 <= entry["mean"] <= 1 and entry["std"] >= 0
        assert entry["mean"] == pytest.approx(float(np.mean(entry["acc"])))
        assert entry["short_classes"] == {}
    lines = [line for line in res.stderr.splitlines() if line.startswith("probe digits: ")]
    assert len(lines) == 1 and "linear probe " in lines[0] and "16-shot " in lines[0], res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["digits"]["linear_probe"]["test_acc"] == probe["test_acc"]
    assert probe["features"].startswith("pre-projection") and probe["cached_features"] is False
    print(f"CLI with --linear-probe on digits: {seconds:.1f}s")

    # The same weights again: the features come from the cache, the results are the same.
    cached = list((tmp_path / "features").glob("digits-*.safetensors"))
    assert len(cached) == 1, "one file per (weights, dataset)"
    again = evaluate_cli(
        "--checkpoint",
        str(tiny_checkpoint),
        "--datasets",
        "digits",
        "--linear-probe",
        "--templates",
        "simple",
        "--out",
        str(tmp_path / "again"),
        "--device",
        "cpu",
        "--batch-size",
        "256",
        "--feature-cache",
        str(tmp_path / "features"),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "again" / "eval" / "final.json").read_text())["datasets"]["digits"]
    assert second["linear_probe"]["cached_features"] is True
    drop = ("seconds", "cached_features")
    assert {k: v for k, v in second["linear_probe"].items() if k not in drop} == {
        k: v for k, v in probe.items() if k not in drop
    }
    assert second["top1"] == digits["top1"] and second["per_class_top1"] == digits["per_class_top1"]


def test_probe_features_are_the_vit_features_before_the_projection():
    import torch

    from train import features
    from train import model as models

    torch.manual_seed(0)
    net, _, size = models.create("tiny-ViT-64")
    net.eval()
    images = torch.randn(6, 3, size, size)
    feats = features.encode(net, [(images[:4], torch.arange(4)), (images[4:], torch.arange(2))])
    width = net.visual.proj.shape[0]
    assert feats.probe.shape == (6, width) and feats.embedding.shape == (6, net.visual.proj.shape[1])
    assert width != feats.embedding.shape[1], "tiny-ViT-64's width differs from its embedding size"
    with torch.no_grad():
        reference = torch.nn.functional.normalize(net.encode_image(images), dim=-1)
        assert torch.allclose(feats.embedding, reference, atol=1e-5), "the embedding is encode_image's"
        assert torch.allclose(feats.probe @ net.visual.proj, net.visual(images), atol=1e-5)
    assert feats.kind == features.PRE_PROJECTION and net.visual.proj is not None, "the projection is put back"
    assert feats.labels.tolist() == [0, 1, 2, 3, 0, 1]


def test_feature_cache_key_follows_the_weights_and_survives_a_checkpoint(tiny_checkpoint):
    """The trainer's in-memory model and the checkpoint it saved hash alike; another step does not."""
    import torch

    from train import features
    from train.sources import load_checkpoint

    loaded, _, _, _ = load_checkpoint(tiny_checkpoint)
    ckpt = torch.load(next((tiny_checkpoint / "checkpoints").glob("*.pt")), weights_only=True)
    digest = features.weights_digest(loaded)
    assert features.weights_digest(_StateOnly(ckpt["model"])) == digest
    with torch.no_grad():
        loaded.logit_scale.add_(1e-3)
    assert features.weights_digest(loaded) != digest


class _StateOnly:
    """A model as far as `weights_digest` looks: a state dict."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """imagefolder ROOT/train and ROOT/test from sklearn's digits (3 classes, 40 + 15 images each)."""
    from train.eval_data import sklearn_digits

    digits = sklearn_digits()
    root = tmp_path_factory.mktemp("split")
    for c in range(3):
        picks = np.flatnonzero(digits.labels == c)[:55]
        for n, i in enumerate(picks):
            part = "train" if n < 40 else "test"
            folder = root / part / f"d{c}"
            folder.mkdir(parents=True, exist_ok=True)
            digits.image(i).save(folder / f"{i}.png")
    (root / "classnames.txt").write_text("zero\none\ntwo\n")
    return root


@pytest.mark.slow
def test_imagefolder_with_train_and_test_probes_on_its_own_split(tiny_checkpoint, split_folder, tmp_path):
    res = evaluate_cli(
        "--checkpoint",
        str(tiny_checkpoint),
        "--datasets",
        f"imagefolder:{split_folder}",
        "--linear-probe",
        "--templates",
        "simple",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--feature-cache",
        "",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "final.json").read_text())["datasets"][f"imagefolder:{split_folder}"]
    assert result["n"] == 45 and result["classnames"] == ["zero", "one", "two"], "zero-shot is on test/"
    assert result["info"]["split"] == "test" and result["info"]["n_train"] == 120
    probe = result["linear_probe"]
    assert probe["n_test"] == 45 and probe["n_train"] + probe["n_val"] == 120
    assert probe["n_val"] == 30, "a quarter of each class's 40 train/ images validates lambda"
    assert probe["split"]["given"] is True and probe["test_acc"] > 0.6
    assert probe["zero_shot_top1"] == result["top1"], "zero-shot on the probe's test split is the set's own"
    assert not (tmp_path / "features").exists()


def test_imagefolder_split_with_different_classes_is_one_line(split_folder, tmp_path):
    import shutil

    from pipeline.errors import InputError
    from train.eval_data import load_dataset

    bad = tmp_path / "bad"
    shutil.copytree(split_folder, bad)
    shutil.rmtree(bad / "test" / "d2")
    with pytest.raises(InputError, match="different class folders .*d2"):
        load_dataset(f"imagefolder:{bad}")
