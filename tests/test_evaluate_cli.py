"""`python -m train.evaluate` as a command: `--help` of it and of the other CLIs over a model
answers before torch loads; `evaluate_cli` runs it as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

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
