"""The trainer under faults: ranks die with their launcher, decompression bombs
are skipped unread, and bad --resume files or unreadable shards are one-line errors.
Real processes: torchrun with gloo ranks, `python -m train`, real tar shards."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error
from tests.support.httpserver import bomb_png
from tests.support.shards import sample, write_tar
from tests.support.trainer import ENV, ROOT, train_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    for s in range(2):
        write_tar(root / f"{s:05d}.tar", [sample(s * 100 + i) for i in range(24)])
    return root


def train_cmd(*args: str, **options) -> list[str]:
    return train_command("--no-final-eval", *args, **options)


def run_all(cmds: dict[str, list[str]], timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands side by side (each mostly waits on imports); their results by key."""
    procs = {
        k: subprocess.Popen(c, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, c in cmds.items()
    }
    out = {}
    try:
        for k, p in procs.items():
            stdout, stderr = p.communicate(timeout=timeout)
            out[k] = subprocess.CompletedProcess(cmds[k], p.returncode, stdout, stderr)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


# --------------------------------------------------------------------------- orphans


def _alive(pid: int) -> bool:
    """Running (a zombie whose parent does not reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pids: set[int]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in pids:
                found.add(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ranks_and_their_loader_workers_die_with_a_killed_launcher(tmp_path, shards):
    """torchrun starts its ranks in sessions of their own: SIGKILL to the launcher's process
    group would leave them training (and writing checkpoints) with nobody to stop them."""
    cmd = train_cmd(
        "--train-data",
        f"{shards}/{{00000..00001}}.tar",
        "--runs",
        str(tmp_path),
        "--name",
        "orphans",
        "--steps",
        "100000",
        "--save-every",
        "100000",
        "--workers",
        "1",
        ranks=2,
    )
    launcher = subprocess.Popen(
        cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    run = tmp_path / "orphans"
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and launcher.poll() is None:
            if (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert launcher.poll() is None, "the run stopped by itself"
        ranks = {r["pid"] for r in json.loads((run / "config.json").read_text())["ranks"]}
        loaders = _children(ranks)
        assert len(ranks) == 2 and len(loaders) == 2, "2 ranks, each with its DataLoader worker"
        pids = ranks | loaders
        assert all(os.getsid(p) != os.getsid(launcher.pid) for p in ranks), "ranks run in sessions of their own"
        # While it trains, a second run of the same name cannot start beside it.
        rank0 = json.loads((run / "config.json").read_text())["ranks"][0]["pid"]
        beside = subprocess.run(
            train_cmd(
                "--train-data",
                f"{shards}/00000.tar",
                "--runs",
                str(tmp_path),
                "--name",
                "orphans",
                "--steps",
                "3",
                "--resume",
                "latest",
                "--workers",
                "0",
            ),
            env=ENV,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert_one_line_error(beside, str(run), f"is in use by pid {rank0}")

        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 10 and any(_alive(p) for p in pids):
            time.sleep(0.1)
        survivors = sorted(p for p in pids if _alive(p))
        assert not survivors, f"processes {survivors} outlived their launcher"
        lines = (run / "metrics.jsonl").read_text().count("\n")
        time.sleep(1.5)
        assert (run / "metrics.jsonl").read_text().count("\n") == lines, "nothing trains on"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- decompression bombs


def test_a_decompression_bomb_in_a_shard_is_skipped_and_training_goes_on(tmp_path):
    """A 12000x12000 PNG of a few kB (432 MB once decoded to RGB; Pillow only warns) is
    refused from its header and counted by reason in the metrics; the run trains on."""
    rows = [sample(i) for i in range(10)]
    rows[3] = sample(3, jpg=None, png=bomb_png(12000))
    write_tar(tmp_path / "bomb.tar", rows)
    res = subprocess.run(
        train_cmd(
            "--train-data",
            str(tmp_path / "bomb.tar"),
            "--runs",
            str(tmp_path),
            "--name",
            "bomb",
            "--steps",
            "3",
            "--workers",
            "0",
            "--shuffle-buffer",
            "0",
            "--val-fraction",
            "0",
        ),
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "DecompressionBomb" not in res.stderr
    metrics = [json.loads(line) for line in (tmp_path / "bomb" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    last = metrics[-1]
    assert last["skipped_by_reason"].get("image_too_large", 0) >= 1
    assert last["skipped_samples"] == sum(v for k, v in last["skipped_by_reason"].items() if not k.startswith("shard_"))
    # the reason survives in the checkpoint, for a resumed run's totals
    state = torch.load(tmp_path / "bomb" / "checkpoints" / "step-00000003.pt", map_location="cpu", weights_only=True)
    assert state["data"]["skipped_by_reason"]["image_too_large"] == last["skipped_by_reason"]["image_too_large"]


# --------------------------------------------------------------------------- one-line errors


class NotAllowed:  # a class the safe loader refuses (module level: picklable)
    pass


def test_bad_resume_files_and_unreadable_shards_are_one_line_errors(tmp_path, shards):
    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.pt").write_text("these are my notes\n")
    torch.save(torch.zeros(3), files / "tensor.pt")
    torch.save({"weights": {}}, files / "dict.pt")
    torch.save(
        {"model": collections.OrderedDict(), "optimizer": {}, "step": 2, "rng": [{}], "extra": NotAllowed()},
        files / "pickle.pt",
    )
    torch.save(
        {
            "model": {"some.other.weight": torch.zeros(2)},
            "optimizer": {},
            "step": 2,
            "rng": [{}],
            "config": {"model": "RN50"},
        },
        files / "othermodel.pt",
    )
    # --resume latest over a run whose only checkpoint is damaged: an error, not a fresh start over it
    (tmp_path / "damaged" / "checkpoints").mkdir(parents=True)
    (tmp_path / "damaged" / "checkpoints" / "step-00000004.pt").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "bad.tar").write_bytes(os.urandom(3000))

    data = ["--train-data", f"{shards}/00000.tar", "--runs", str(tmp_path), "--steps", "2", "--workers", "0"]
    cases = {
        "pickle": (["--resume", str(files / "pickle.pt")], [str(files / "pickle.pt"), "NotAllowed", "not loaded"]),
        "tensor": (["--resume", str(files / "tensor.pt")], [str(files / "tensor.pt"), "not a training checkpoint"]),
        "dict": (["--resume", str(files / "dict.pt")], [str(files / "dict.pt"), "no 'model', 'optimizer'"]),
        "notes": (["--resume", str(files / "notes.pt")], [str(files / "notes.pt"), "not a checkpoint"]),
        "missing": (["--resume", str(files / "missing.pt")], [str(files / "missing.pt"), "no such file"]),
        "othermodel": (
            ["--resume", str(files / "othermodel.pt")],
            [str(files / "othermodel.pt"), "do not fit --model tiny-ViT-64", "saved from RN50"],
        ),
        "damaged": (["--resume", "latest"], ["step-00000004.pt", "not a checkpoint"]),
    }
    cmds = {k: train_cmd(*data, "--name", k, *args) for k, (args, _) in cases.items()}
    unreadable = f"{tmp_path}/{{bad,gone}}.tar"  # random bytes, and a gap in the range
    cmds["shards"] = train_cmd(
        "--train-data", unreadable, "--runs", str(tmp_path), "--name", "shards", "--steps", "2", "--workers", "1"
    )
    results = run_all(cmds)
    for k, (_, needles) in cases.items():
        res = results[k]
        assert_one_line_error(res, "--resume", *needles)
        assert "weights_only" not in res.stderr and "Traceback" not in res.stderr, (k, res.stderr)
        assert not (tmp_path / k / "checkpoints" / "step-00000002.pt").exists(), "nothing was trained"
    assert_one_line_error(results["shards"], unreadable, "no trainable sample", "shard_unreadable 2")
