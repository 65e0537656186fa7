"""`train.evaluate`: one evaluation of a real, tiny, randomly initialised open_clip model
(zero-shot, retrieval on given pairs, the written JSON), the command on a DDP checkpoint,
`--linear-probe` on digits and on an imagefolder with its own split (and from the feature
cache the second time), the command's defaults being `EvalConfig`'s, and `--help` before
torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from train.eval_data import sklearn_digits

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def evaluate_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.evaluate", *args],
        env=env or ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("module", ["train", "train.evaluate", "train.export"])
def test_help_answers_before_torch_is_imported(module):
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m " + module), res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert len(imported) > 10, "-X importtime lists the imports"
    assert not {"torch", "open_clip", "numpy"} & imported
    assert "latest.pt" not in res.stdout, "the examples name files that exist"


def test_the_commands_defaults_are_the_configs():
    """One home per default: the options parsed from nothing but a model are EvalConfig()."""
    from train.evaluate import EvalConfig, build_parser, config_from

    assert config_from(build_parser().parse_args(["--checkpoint", "x.pt"])) == EvalConfig()
    given = build_parser().parse_args(
        ["--checkpoint", "x.pt", "--datasets", "digits", "--retrieval", "--feature-cache", "", "--workers", "2"]
    )
    assert config_from(given) == EvalConfig(datasets=("digits",), retrieval=(), feature_cache=None, num_workers=2)


def test_retrieval_defaults_to_openclipart_when_it_is_evaluated():
    from train.evaluate import EvalConfig

    assert EvalConfig(datasets=("digits", "openclipart")).retrieval_sets() == ["openclipart"]
    assert EvalConfig(datasets=("digits",)).retrieval_sets() == []
    assert EvalConfig(datasets=("openclipart",), retrieval=()).retrieval_sets() == [], "as the trainer asks"


TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    from train.model import register

    register("zs-test-tiny", TINY)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("zs-test-tiny", pretrained=None)
    tokenizer = open_clip.get_tokenizer("zs-test-tiny")
    assert tokenizer.context_length == 16
    long = tokenizer(["a photo of the hard to see signs and symbols, and many more words than fit"])
    assert long.shape == (1, 16) and long[0, -1] == tokenizer.eot_token_id  # truncated, still ends in EOT
    return model, tokenizer, preprocess


def test_evaluate_end_to_end(tiny_model, tmp_path):
    from train.evaluate import EvalConfig, evaluate, scalars

    model, tokenizer, preprocess = tiny_model
    model.train()
    digits = sklearn_digits(transform=preprocess)
    pairs = [
        (
            torch.stack([digits[i][0] for i in range(j, j + 6)]),  # (images, texts, uids) like the trainer's
            tokenizer([f"the number {digits[i][1]}" for i in range(j, j + 6)]),
            [str(i) for i in range(6)],
        )
        for j in (0, 6)
    ]
    config = EvalConfig(datasets=["digits"], cache_dir=tmp_path, templates="simple", batch_size=256)
    res = evaluate(model, tokenizer, preprocess, config, "cpu", tmp_path, step=5, retrieval_loader=pairs, log=None)
    assert model.training  # restored after evaluation
    path = tmp_path / "eval" / "step-00000005.json"
    assert res["path"] == str(path)
    saved = json.loads(path.read_text())
    assert saved["step"] == 5 and saved["templates"] == "simple" and saved["n_templates"] == 7
    d = saved["datasets"]["digits"]
    assert {
        "top1",
        "top5",
        "chance_top1",
        "chance_top5",
        "n",
        "n_classes",
        "per_class_top1",
        "classnames",
        "mean_per_class_top1",
        "info",
    } <= set(d)
    assert d["n"] == 1797 and d["n_classes"] == 10 and d["chance_top1"] == 0.1 and d["chance_top5"] == 0.5
    assert 0.0 <= d["top1"] <= d["top5"] <= 1.0
    r = saved["retrieval"]["val"]
    assert r["n"] == 12 and r["chance_R@1"] == 1 / 12
    assert 0.0 <= r["image_to_text_R@1"] <= r["image_to_text_R@10"] <= 1.0
    assert not list((tmp_path / "eval").glob(".*tmp*"))
    flat = scalars(saved)
    assert flat["zeroshot/digits/top1"] == d["top1"] and flat["retrieval/val/chance_R@1"] == 1 / 12
    assert "zeroshot/digits/mean_per_class_top1" in flat and "zeroshot/digits/per_class_top1" not in flat
    assert not any(k.endswith("seconds") for k in flat)


@pytest.mark.slow
def test_evaluate_cli(tiny_model, tmp_path, capsys):
    from train.evaluate import main

    model, _, _ = tiny_model
    run = tmp_path / "runs" / "r1"
    ckpt = run / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as saved from DDP
    torch.save({"model": state, "config": {"model": "zs-test-ckpt", "model_config": TINY}, "step": 42}, ckpt)
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--datasets",
                "digits",
                "--templates",
                "simple",
                "--batch-size",
                "512",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    saved = json.loads((run / "eval" / "final.json").read_text())
    assert saved["checkpoint_step"] == 42 and saved["model"] == "zs-test-ckpt" and saved["step"] is None
    assert saved["retrieval"] == {} and 0.0 <= saved["datasets"]["digits"]["top1"] <= 1.0
    capsys.readouterr()

    for bad in (tmp_path / "missing.pt", tmp_path / "garbage.pt"):
        if bad.name == "garbage.pt":
            bad.write_bytes(b"not a checkpoint")
        assert main(["--checkpoint", str(bad), "--datasets", "digits"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and str(bad) in err and len(err.splitlines()) == 1
    torch.save({"model": {}, "config": {"model": "zs-test-ckpt", "model_config": TINY}}, tmp_path / "empty.pt")
    assert main(["--checkpoint", str(tmp_path / "empty.pt"), "--datasets", "digits"]) == 2
    assert "weights do not fit" in capsys.readouterr().err


@pytest.mark.slow
def test_linear_probe_cli_on_digits(trained_run, tmp_path):
    t0 = time.perf_counter()
    res = evaluate_cli(
        "--checkpoint",
        str(trained_run.run),
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
    assert probe["test_acc"] > 0.3, "even barely trained tiny-ViT features separate digits well above chance"
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
        str(trained_run.run),
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
def test_imagefolder_with_train_and_test_probes_on_its_own_split(trained_run, split_folder, tmp_path):
    res = evaluate_cli(
        "--checkpoint",
        str(trained_run.run),
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
