"""`python -m train.evaluate --linear-probe`: the CLIP paper's linear probe and k-shot probes on a
tiny model's digits features, written beside the zero-shot results; and the probe's split."""

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

    from train import checkpoint, model as models

    torch.manual_seed(0)  # the same weights, so the same timing and accuracies, every run
    run = tmp_path_factory.mktemp("runs") / "probe"
    config = json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    net, _, _ = models.create("tiny-ViT-64", config)
    checkpoint.save(run / "checkpoints", 2, {"format": checkpoint.FORMAT, "model": net.state_dict(), "optimizer": {},
                                             "step": 2, "rng": [checkpoint.rng_state()],
                                             "config": {"model": "tiny-ViT-64", "model_config": config}})
    return run


def test_probe_split_is_stratified_disjoint_and_seeded():
    from train.evaluate import probe_split

    labels = np.repeat(np.arange(4), [10, 5, 3, 1])
    tr, va, te = probe_split(labels, seed=3)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(labels)))
    assert [int((labels[te] == c).sum()) for c in range(4)] == [2, 1, 1, 0]
    assert [int((labels[va] == c).sum()) for c in range(4)] == [2, 1, 1, 0]
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), probe_split(labels, seed=3)))
    assert not np.array_equal(te, probe_split(labels, seed=4)[2])


def test_a_set_too_small_for_few_shot_keeps_the_probe():
    import torch

    from train.evaluate import probe_dataset, probe_line

    labels = torch.arange(2).repeat_interleave(5)  # 5 per class: 3/1/1, nothing beyond 16 shots to validate on
    feats = torch.nn.functional.normalize(torch.randn(10, 8) + 3 * labels[:, None].float(), dim=-1)
    classifier = torch.nn.functional.normalize(torch.randn(8, 2), dim=0)
    probe = probe_dataset(feats, labels, classifier)
    assert (probe["n_train"], probe["n_val"], probe["n_test"]) == (6, 2, 2) and 0 <= probe["test_acc"] <= 1
    assert probe["chance"] == 0.5 and "skipped" in probe["few_shot"] and "few-shot skipped" in probe_line("x", probe)
    tiny = probe_dataset(feats[:4], torch.tensor([0, 0, 1, 1]), classifier)
    assert "skipped" in tiny and "test_acc" not in tiny and "skipped" in probe_line("x", tiny)


def test_linear_probe_cli_on_digits(tiny_checkpoint, tmp_path):
    t0 = time.perf_counter()
    res = evaluate_cli("--checkpoint", str(tiny_checkpoint), "--datasets", "digits", "--linear-probe",
                       "--templates", "simple", "--out", str(tmp_path), "--device", "cpu", "--batch-size", "256")
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "final.json").read_text())
    digits = result["datasets"]["digits"]
    assert digits["n"] == 1797 and 0 <= digits["top1"] <= 1, "the zero-shot results are still there"
    probe = digits["linear_probe"]
    for key in ("features", "split", "test_acc", "lambda", "log10_lambda", "val_acc", "n_train", "n_val", "n_test",
                "n_fit", "chance", "num_classes", "zero_shot_top1", "few_shot"):
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
    print(f"CLI with --linear-probe on digits: {seconds:.1f}s")
