"""`train.sources`: the models every command over a model reads. A real open_clip_train
checkpoint (and its DDP form, keys under `module.`), a run folder (its newest checkpoint),
open_clip's hub sources offline, bad sources as one line (exit 2) through `python -m
train.evaluate`; where results go by default; and the commands over a model that read it
(overlap, export) without importing the evaluation."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, assert_one_line_error
from tests.support.trained_run import random_checkpoint, tiny_imagefolder
from tests.train.test_evaluate import ENV, evaluate_cli


@pytest.fixture(scope="module")
def open_clip_run(tmp_path_factory, trained_run) -> Path:
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
        str(trained_run.shard),
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
    from train.evaluate import main
    from train.sources import load_checkpoint

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
    run = tmp_path / "runs" / "r"
    for step in (2, 4):
        random_checkpoint(run, step)
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


def test_default_out_is_the_run_folder_or_a_folder_per_source(tmp_path):
    from train.sources import Loaded, default_out

    run = tmp_path / "runs" / "r"
    assert default_out("ignored", run / "checkpoints" / "step-00000004.pt") == run
    assert default_out("ignored", tmp_path / "elsewhere" / "epoch_5.pt") == tmp_path / "elsewhere"
    assert default_out("hf-hub:laion/CLIP ViT", None) == Path("runs/models/hf-hub_laion_CLIP_ViT")
    assert default_out("..", None) == Path("runs/models/model")
    hub = Loaded(None, None, None, "ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert hub.out(None) == Path("runs/models/ViT-B-32_laion2b_s34b_b79k") and hub.step is None
    assert hub.out(str(tmp_path)) == tmp_path
    saved = Loaded(None, None, None, "tiny-ViT-64", run / "checkpoints" / "step-00000004.pt", {"step": 4})
    assert saved.out(None) == run and saved.step == 4


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "pass --checkpoint FILE|RUN, or --model NAME"),
        (["--checkpoint", "x.pt", "--pretrained", "y"], "--pretrained goes with --model"),
    ],
)
def test_a_missing_or_doubled_source_is_a_usage_error(args, needle, capsys):
    from train.sources import add_model_arguments, check_model_arguments

    ap = argparse.ArgumentParser(prog="cmd")
    add_model_arguments(ap)
    with pytest.raises(SystemExit) as exit:
        check_model_arguments(ap, ap.parse_args(args))
    assert exit.value.code == 2 and needle in capsys.readouterr().err


def test_commands_over_a_model_read_it_through_sources_not_the_evaluation():
    """overlap and export load models through train.sources; importing train.evaluate for that
    would tie them to the evaluation's options and imports."""
    for name in ("overlap.py", "export.py", "sources.py"):
        tree = ast.parse((ROOT / "train" / name).read_text())
        imported = {
            (node.module or "") + ":" + ",".join(a.name for a in node.names)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not [i for i in imported if i.startswith(("evaluate", "train.evaluate")) or i == ":evaluate"], (
            name,
            imported,
        )
        assert name == "sources.py" or any(i.startswith("sources") or i == ":sources" for i in imported), name


def test_a_checkpoint_loads_without_open_clips_random_init_warning(tmp_path, caplog):
    """open_clip warns that a model built without pretrained weights is random; the weights
    come from the checkpoint right after, so that warning would be false."""
    import logging

    import open_clip

    from train import checkpoint
    from train import model as models
    from train.sources import load_checkpoint

    net, _, _ = models.create("tiny-ViT-64")
    state = {"model": net.state_dict(), "step": 1, "config": {"model": "tiny-ViT-64"}}
    checkpoint.save(tmp_path / "checkpoints", 1, state)
    with caplog.at_level(logging.INFO):
        open_clip.create_model_and_transforms("tiny-ViT-64", pretrained=None)
        assert "No pretrained weights loaded" in caplog.text, "open_clip does warn"
        caplog.clear()
        loaded, _, _, meta = load_checkpoint(tmp_path)
    assert "No pretrained weights loaded" not in caplog.text and meta["step"] == 1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
