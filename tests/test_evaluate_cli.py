"""`python -m train.evaluate` on models from elsewhere: a real open_clip_train checkpoint
(and its DDP form, keys under `module.`), a run folder (its newest checkpoint), open_clip's
hub sources offline (one line, exit 2); and `--help` of the three CLIs before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, assert_one_line_error
from .test_train_e2e import shards, tiny_imagefolder  # noqa: F401 - shards: the module fixture, reused

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


@pytest.fixture(scope="module")
def open_clip_run(tmp_path_factory, shards) -> Path:  # noqa: F811
    """open_clip_train itself, 2 steps of tiny-ViT-64 on one CPU process: logs/oc/checkpoints/epoch_1.pt."""
    logs = tmp_path_factory.mktemp("open_clip_train")
    script = (
        "import sys\nfrom train import model\nmodel.register_builtin()  # tiny-ViT-64 into open_clip's registry\n"
        "from open_clip_train.main import main\nmain(sys.argv[1:])\n"
    )
    cmd = [
        sys.executable,
        "-c",
        script,
        "--train-data",
        f"{shards}/00000.tar",
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--model",
        "tiny-ViT-64",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--lr",
        "1e-3",
        "--warmup",
        "1",
        "--save-frequency",
        "1",
        "--report-to",
        "",
        "--logs",
        str(logs),
        "--name",
        "oc",
    ]
    res = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return logs / "oc" / "checkpoints" / "epoch_1.pt"


@pytest.mark.slow
def test_open_clip_train_checkpoints(open_clip_run, tmp_path, capsys):
    from train.evaluate import load_checkpoint, main

    folder = tiny_imagefolder(tmp_path / "imgs")
    sets = ["--datasets", f"imagefolder:{folder}", "--retrieval", "--templates", "simple"]
    res = evaluate_cli(
        "--checkpoint", str(open_clip_run), "--model", "tiny-ViT-64", "--out", str(tmp_path / "a"), *sets
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "eval" / "final.json").read_text())
    assert a["checkpoint_epoch"] == 1 and a["model"] == "tiny-ViT-64" and a["checkpoint"] == str(open_clip_run)

    saved = torch.load(open_clip_run, map_location="cpu", weights_only=True)
    model, _, _, meta = load_checkpoint(open_clip_run, model_name="tiny-ViT-64")
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in model.state_dict().items()), "its weights"
    ddp = tmp_path / "epoch_1.pt"  # what open_clip_train saves under torchrun: DDP's keys
    torch.save({**saved, "state_dict": {f"module.{k}": v for k, v in saved["state_dict"].items()}}, ddp)
    assert main(["--model", "tiny-ViT-64", "--pretrained", str(ddp), "--out", str(tmp_path / "b"), *sets]) == 0
    b = json.loads((tmp_path / "b" / "eval" / "final.json").read_text())
    assert b["datasets"] == {k: {**v, "seconds": b["datasets"][k]["seconds"]} for k, v in a["datasets"].items()}
    capsys.readouterr()

    assert main(["--checkpoint", str(ddp), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "pass --model NAME" in err
    assert main(["--checkpoint", str(open_clip_run), *sets]) == 2
    assert "params.txt says model: tiny-ViT-64" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_folder_means_its_newest_checkpoint(tmp_path):
    from train import checkpoint
    from train import model as models

    run = tmp_path / "runs" / "r"
    config = json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    for step in (2, 4):
        net, _, _ = models.create("tiny-ViT-64", config)
        checkpoint.save(
            run / "checkpoints",
            step,
            {
                "format": checkpoint.FORMAT,
                "model": net.state_dict(),
                "optimizer": {},
                "step": step,
                "rng": [checkpoint.rng_state()],
                "config": {"model": "tiny-ViT-64", "model_config": config},
            },
        )
    folder = tiny_imagefolder(tmp_path / "imgs")
    res = evaluate_cli("--checkpoint", str(run), "--datasets", f"imagefolder:{folder}", "--templates", "simple")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((run / "eval" / "final.json").read_text())
    assert result["checkpoint"] == str(run / "checkpoints" / "step-00000004.pt") and result["checkpoint_step"] == 4
    lines = res.stderr.splitlines()  # no terminal: a line as each set starts, one with its result
    assert f"eval imagefolder:{folder}: 6 images, 2 classes" in lines
    assert any(line.startswith(f"eval imagefolder:{folder}: top1 ") for line in lines)

    (tmp_path / "runs" / "none" / "checkpoints").mkdir(parents=True)
    assert_one_line_error(
        evaluate_cli("--checkpoint", str(tmp_path / "runs" / "none"), "--datasets", "digits"), "no checkpoint in it"
    )


@pytest.mark.slow
def test_hub_weights_offline_are_one_line_errors(tmp_path):
    env = {**ENV, "HF_HOME": str(tmp_path / "hf")}  # an empty Hugging Face cache
    res = evaluate_cli("--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--datasets", "digits", env=env)
    assert_one_line_error(
        res, "--model ViT-B-32 --pretrained laion2b_s34b_b79k", "not in the Hugging Face cache", "HF_HUB_OFFLINE=1"
    )
    res = evaluate_cli("--model", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "--datasets", "digits", env=env)
    assert_one_line_error(res, "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "HF_HUB_OFFLINE=1")


def test_bad_model_sources_are_one_line_errors(tmp_path, capsys):
    from train.evaluate import main

    (tmp_path / "cfg-only").mkdir()
    (tmp_path / "cfg-only" / "open_clip_config.json").write_text('{"model_cfg": {}}')
    for args, needle in [
        (["--model", "ViT-B-32", "--pretrained", "no-such-tag"], "neither a file nor a tag"),
        (["--model", "tiny-ViT-64"], "pass --pretrained"),
        (["--model", f"local-dir:{tmp_path}"], "no open_clip_config.json"),
        (["--model", f"local-dir:{tmp_path / 'cfg-only'}"], "no weights"),
        (["--model", "no-such-arch", "--pretrained", "x"], "unknown model 'no-such-arch'"),
    ]:
        assert main([*args, "--datasets", "digits"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and needle in err, err
