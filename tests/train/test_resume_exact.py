"""Step-exact resume: a run killed (a real SIGKILL) at a random step and resumed with
`--resume latest` logs the same per-step losses and skip counts, bit for bit, as the same run
uninterrupted: the resumed data stream continues exactly where the checkpoint left it.
Real processes (torchrun with 2 gloo ranks, or a single `python -m train`), real shards with
bad samples in them, 0 or 2 DataLoader workers per rank, one CPU thread per rank."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.online import assert_pass_records, write_online_dataset
from tests.support.shards import sample, write_tar
from tests.support.trainer import ENV, ROOT, train_command
from train import optim

pytestmark = pytest.mark.slow

STEPS = 9
SAVE_EVERY = 3  # checkpoints at 3 (odd: with 2 workers the second worker's turn is next) and 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """3 shards of 30 samples, each with an undecodable image and a sample without text."""
    root = tmp_path_factory.mktemp("shards")
    for s in range(3):
        rows = [sample(s * 100 + i) for i in range(30)]
        rows[2 + s] = sample(s * 100 + 2 + s, jpg=b"\xff\xd8 not a jpeg")
        rows[9 + s] = sample(s * 100 + 9 + s, txt=None)
        write_tar(root / f"{s:05d}.tar", rows)
    return root


@pytest.fixture(scope="module")
def online(tmp_path_factory) -> Path:
    """7 shards of an online-balanced dataset (tests/support/online.py), two tail samples
    (drawn every pass) with undecodable images."""
    return write_online_dataset(tmp_path_factory.mktemp("online"), corrupt=2)


def command(ranks: int, workers: int, logs: Path, name: str, shards: Path, *extra: str) -> list[str]:
    return train_command(
        "--no-final-eval",
        *extra,
        ranks=ranks,
        train_data=f"{shards}/[0-9]*.tar",
        runs=logs,
        name=name,
        workers=workers,
        warmup=2,
        lr="1e-3",
        steps=STEPS,
        save_every=SAVE_EVERY,
        shuffle_buffer=24,
        val_fraction=0.1,
    )


def rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def kill_leftovers(run: Path) -> None:
    """Ranks that outlived their launcher (torchrun starts them in sessions of their own):
    killed by pid, so that they cannot write beside the resumed run."""
    try:
        ranks = json.loads((run / "config.json").read_text())["ranks"]
    except (OSError, ValueError, KeyError):
        return
    for r in ranks:
        try:
            os.kill(r["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


# One process reading in the training process, and two ranks with two loader workers each
# balancing while training (--balance-t 5 on an online dataset: a pass every two shard draws
# of a stream, so the shuffle buffer spans passes): the stream's own exact resume for 0 and
# 2 workers, with and without balancing, is in test_stream.py and test_balance.py, in seconds.
@pytest.mark.parametrize("ranks,workers,balance", [(1, 0, False), (2, 2, True)])
def test_a_run_killed_at_a_random_step_resumes_to_the_same_losses(tmp_path, request, ranks, workers, balance):
    shards = request.getfixturevalue("online" if balance else "shards")
    flags = ("--balance-t", "5") if balance else ()
    # The uninterrupted run and the one to kill start together (they only share the CPU).
    ref = subprocess.Popen(
        command(ranks, workers, tmp_path, "ref", shards, *flags),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    kill_after = random.randint(SAVE_EVERY + 1, STEPS - 2)  # a checkpoint exists, the run is not over
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        command(ranks, workers, tmp_path, "killed", shards, *flags),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if rows(run) and rows(run)[-1]["step"] >= kill_after:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the kill at step {kill_after}: {proc.stderr.read()[-2000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kill_leftovers(run)
        try:
            ref_err = ref.communicate(timeout=300)[1]
        finally:
            if ref.poll() is None:
                os.killpg(ref.pid, signal.SIGKILL)
                ref.wait()
    assert ref.returncode == 0, ref_err[-3000:]
    expected = [(r["step"], r["loss"], r["skipped_samples"]) for r in rows(tmp_path / "ref")]
    assert [s for s, *_ in expected] == list(range(1, STEPS + 1))
    assert expected[-1][2] > 0, "the bad samples were met, and counted"
    if balance:  # rank 0's streams went past their first pass (its record is written as it begins)
        assert assert_pass_records(tmp_path / "ref", shards, 5, 0, 0.1) >= 2
    killed_at = rows(run)[-1]["step"]
    assert SAVE_EVERY < killed_at < STEPS

    res = subprocess.run(
        command(ranks, workers, tmp_path, "killed", shards, *flags, "--resume", "latest"),
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "reseeded" not in res.stderr, res.stderr[-2000:]
    # the newest checkpoint at the kill (the metrics line of a step is written before its checkpoint)
    (resumed_from,) = [
        int(line.rsplit(" ", 1)[1]) for line in res.stderr.splitlines() if line.startswith("resumed from")
    ]
    assert resumed_from in (SAVE_EVERY, 2 * SAVE_EVERY) and resumed_from <= killed_at
    got = [(r["step"], r["loss"], r["skipped_samples"]) for r in rows(run)]
    assert got == expected, f"killed after step {killed_at}, resumed at {resumed_from}"
    # the schedule and the clock go on from the checkpoint; the run ends at the requested step
    assert all(r["lr"] == pytest.approx(optim.cosine_lr(r["step"] - 1, 1e-3, 2, STEPS)) for r in rows(run))
    elapsed = [r["elapsed_time"] for r in rows(run)]
    assert elapsed == sorted(elapsed), "elapsed training time goes on from the checkpoint"
    assert (run / "checkpoints" / f"step-{STEPS:08d}.pt").is_file()
