"""The trainer as its tests start it: `python -m train` (or under torchrun) in a subprocess,
with small settings for 2 CPU cores that each test overrides where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

# A tiny ViT, one thread, no loader processes, a line per step, no progress bar.
DEFAULTS = {
    "model": "tiny-ViT-64",
    "batch-size": "4",
    "workers": "0",
    "threads": "1",
    "warmup": "1",
    "log-every": "1",
}


def train_command(
    *args: str, ranks: int = 1, torchrun: tuple[str, ...] = (), quiet: bool = True, **options
) -> list[str]:
    """`python -m train` with DEFAULTS, then `options` (`steps=6` -> `--steps 6`; they replace
    a default of the same name), then `args`. Under torchrun with `torchrun` (its arguments),
    or `--standalone` with `ranks` > 1."""
    flags = {**DEFAULTS, **{k.replace("_", "-"): str(v) for k, v in options.items()}}
    if ranks > 1 and not torchrun:
        torchrun = ("--standalone", "--nproc_per_node", str(ranks))
    launcher = ["-m", "torch.distributed.run", *torchrun] if torchrun else []
    cmd = [sys.executable, *launcher, "-m", "train"]
    for k, v in flags.items():
        cmd += [f"--{k}", v]
    return cmd + (["--quiet"] if quiet else []) + list(args)


def run_train(*args: str, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """Run `train_command(...)` to the end; stdout and stderr captured as text."""
    return subprocess.run(
        train_command(*args, **options), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def start_train(*args: str, **options) -> subprocess.Popen:
    """`train_command(...)` in its own session (kill it with os.killpg), output discarded."""
    return subprocess.Popen(
        train_command(*args, **options),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def metrics(run: Path) -> list[dict]:
    """RUN/metrics.jsonl's rows."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
