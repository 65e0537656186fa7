"""The trainer as users run it: torchrun with 2 gloo processes on real openclipart shards."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error, required_path
from tests.support.trained_run import openclipart_shards, tiny_imagefolder
from tests.support.trainer import ENV, ROOT, metrics, run_train, train_command
from train import optim

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """3 shards of 48 real openclipart (image, caption) pairs, one image of them corrupt."""
    folder = tmp_path_factory.mktemp("shards")
    return openclipart_shards(folder, required_path("OPENCLIPART_DIR"), shards=3, corrupt=frozenset({(2, 5)}))


# two gloo ranks of 8 samples, as in the README's run but smaller
TWO_RANKS = {"ranks": 2, "batch_size": 8, "warmup": 2, "lr": "1e-3"}


def test_two_process_run_logs_checkpoints_and_evaluates(tmp_path, shards):
    res = run_train(
        "--eval-datasets",
        "digits",
        train_data=f"{shards}/{{00000..00002}}.tar",
        runs=tmp_path,
        name="e2e",
        steps=6,
        save_every=3,
        val_fraction=0.1,
        **TWO_RANKS,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "e2e"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["global_batch"] == 16 and cfg["model"] == "tiny-ViT-64"
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert set(r) >= {"loss", "lr", "logit_scale", "samples_per_s", "data_time", "batch_time", "skipped_samples"}
        assert r["lr"] == pytest.approx(optim.cosine_lr(r["step"] - 1, 1e-3, 2, 6))
    assert rows[-1]["skipped_samples"] >= 1, "the corrupt JPEG is skipped and counted"
    assert abs(rows[0]["logit_scale"] - 1 / 0.07) < 0.1
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step-00000003.pt", "step-00000006.pt"]
    state = torch.load(run / "checkpoints" / "step-00000006.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 6 and len(state["rng"]) == 2 and "optimizer" in state and "data" in state
    result = json.loads((run / "eval" / "step-00000006.json").read_text())
    digits = result["datasets"]["digits"]
    assert digits["n"] == 1797 and 0 <= digits["top1"] <= 1 and digits["chance_top1"] == pytest.approx(0.1)
    assert "image_to_text_R@1" in result["retrieval"]["val"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard logs when it is installed"


def test_single_process_bf16_with_feature_cache_accumulation(tmp_path, shards):
    res = run_train(
        "--grad-checkpointing",
        "--no-final-eval",
        train_data=f"{shards}/00000.tar",
        runs=tmp_path,
        name="bf16",
        accum_freq=2,
        steps=3,
        precision="bf16",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["global_batch"] == 8 and cfg["precision"] == "bf16"
    rows = metrics(tmp_path / "bf16")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    assert not (tmp_path / "bf16" / "eval").exists(), "--no-final-eval skips the evaluation"
    state = torch.load(tmp_path / "bf16" / "checkpoints" / "step-00000003.pt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point()), (
        "bf16 is autocast: master weights stay fp32"
    )


def test_bad_train_data_is_a_one_line_error(tmp_path):
    res = run_train(train_data=tmp_path / "none-*.tar", runs=tmp_path, timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "none-*.tar" in res.stderr


def test_fresh_run_over_old_checkpoints_is_refused_and_bad_eval_sets_fail_early(tmp_path, shards):
    run = dict(train_data=f"{shards}/00000.tar", runs=tmp_path, name="again", steps=2, timeout=300)
    res = run_train("--no-final-eval", **run)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_train("--no-final-eval", **run)
    assert res.returncode == 2 and "pass --resume latest" in res.stderr
    # A metrics line cut by a kill does not break the resume.
    with open(tmp_path / "again" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    res = run_train("--no-final-eval", **{**run, "steps": 3, "resume": "latest"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in metrics(tmp_path / "again")] == [1, 2, 3]
    res = run_train("--no-final-eval", "--eval-datasets", "no-such-set", **{**run, "name": "badeval"})
    assert_one_line_error(res, "--eval-datasets", "no-such-set")
    assert not (tmp_path / "badeval").exists(), "refused before the run folder is made"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, shards) -> tuple[Path, str]:
    """One single-process run as a batch job sees it: no terminal, stderr into a file."""
    tmp = tmp_path_factory.mktemp("logged")
    folder = tiny_imagefolder(tmp / "imgs")
    cmd = train_command(
        "--linear-probe",
        "--eval-datasets",
        f"imagefolder:{folder}",
        train_data=f"{shards}/00000.tar",
        runs=tmp,
        name="log",
        steps=4,
        log_every=2,
        save_every=4,
        val_shards=1,
        eval_every=2,
        feature_cache=tmp / "features",
        quiet=False,
    )
    with open(tmp / "stderr.txt", "w") as err:
        res = subprocess.run(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, timeout=300)
    stderr = (tmp / "stderr.txt").read_text()
    assert res.returncode == 0, stderr[-3000:]
    return tmp / "log", stderr


def test_stderr_to_a_file_gets_a_line_per_log_step(logged_run):
    run, stderr = logged_run
    steps = [line for line in stderr.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 1/4", "step 2/4", "step 4/4"], stderr
    assert all("loss " in line and "samples/s" in line and "elapsed" in line for line in steps)
    assert "eval imagefolder:" in stderr and ": 6 images, 2 classes" in stderr, "evaluation says what it starts"


def test_metrics_name_interval_and_elapsed_time(logged_run):
    run, _ = logged_run
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 4]
    elapsed = [r["elapsed_time"] for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    for before, r in zip(rows, rows[1:]):
        assert r["interval_time"] == pytest.approx(r["elapsed_time"] - before["elapsed_time"], abs=0.002)
    assert not any("wall_time" in r for r in rows), "the misleading old name is gone"
    assert (run / "eval" / "step-00000004.json").exists(), "evaluation files carry the checkpoints' 8 digits"


def test_linear_probe_runs_at_the_final_evaluation_only(logged_run):
    run, stderr = logged_run
    (name,) = json.loads((run / "eval" / "step-00000002.json").read_text())["datasets"]
    assert "linear_probe" not in json.loads((run / "eval" / "step-00000002.json").read_text())["datasets"][name]
    probe = json.loads((run / "eval" / "step-00000004.json").read_text())["datasets"][name]["linear_probe"]
    assert (probe["n_train"], probe["n_val"], probe["n_test"]) == (2, 2, 2) and 0 <= probe["test_acc"] <= 1
    assert probe["features"].startswith("pre-projection") and f"probe {name}: linear probe" in stderr
    assert len(list((run.parent / "features").glob("*.safetensors"))) == 1, "the final features are cached"
    page = (run / "report.html").read_text()
    assert "<svg" in page and "few-shot" in page.lower(), "the trainer rewrites the run's report after evaluating"


def test_evaluate_and_overlap_read_the_trainers_cached_features(logged_run, shards, tmp_path):
    """The trainer's final evaluation and the commands on its checkpoint see the same pixels and
    weights: they read its cached features, and report its accuracy."""
    run, _ = logged_run
    final = json.loads((run / "eval" / "step-00000004.json").read_text())
    (name,) = final["datasets"]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.evaluate",
            "--checkpoint",
            str(run),
            "--datasets",
            name,
            "--retrieval",
            "--linear-probe",
            "--feature-cache",
            str(run.parent / "features"),
            "--out",
            str(tmp_path),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "final.json").read_text())["datasets"][name]
    assert again["linear_probe"]["cached_features"] is True, "the trainer's features, not encoded again"
    assert again["top1"] == final["datasets"][name]["top1"]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.overlap",
            "--checkpoint",
            str(run),
            "--datasets",
            name,
            "--shards",
            f"{shards}/00000.tar",
            "--feature-cache",
            str(run.parent / "features"),
            "--out",
            str(tmp_path),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    overlap = json.loads((tmp_path / "eval" / "overlap.json").read_text())["datasets"][name]
    assert overlap["top1_all"] == final["datasets"][name]["top1"]
    assert len(list((run.parent / "features").glob("*.safetensors"))) == 1, "nothing encoded anew"


def test_tensorboard_uses_open_clip_train_names(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = logged_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    open_clip_train = {
        "train/loss",
        "train/contrastive_loss",
        "train/scale",
        "train/lr",
        "train/data_time",
        "train/batch_time",
        "train/samples_per_second",
        "train/samples_per_second_per_gpu",
    }
    assert open_clip_train <= tags, open_clip_train - tags
    assert {"val/image_to_text_R@1", "val/text_to_image_R@10", "val/image_to_text_mean_rank"} <= tags
    folder = json.loads((run / "config.json").read_text())["eval_datasets"][0]
    assert f"val/{folder}-zeroshot-val-top1" in tags, "zero-shot as open_clip's val/imagenet-zeroshot-val-top1"
    assert {"train/skipped_samples", f"eval/zeroshot/{folder}/chance_top1", "eval/retrieval/val/chance_R@1"} <= tags
    assert not {"train/logit_scale", "train/samples_per_s", "train/wall_time"} & tags
    scale = [e.value for e in events.Scalars("train/scale")]
    assert [e.step for e in events.Scalars("train/scale")] == [1, 2, 4] and abs(scale[0] - 1 / 0.07) < 0.1
