"""`make test`'s two workers keep a test file on one worker (tests/conftest.py's scheduler),
so module and session fixtures are built once: xdist's own --dist loadgroup cannot under
pytest 9 (each test was its own unit, and fixtures were built on both workers)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from tests.conftest import ROOT

FILES = ["tests/train/test_optim.py", "tests/train/test_loss.py"]


def test_each_file_runs_on_one_worker():
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-v", *FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    workers = defaultdict(set)
    for worker, path in re.findall(r"^\[(gw\d)\] .*?PASSED (tests/[^:]+)::", res.stdout, re.MULTILINE):
        workers[path].add(worker)
    assert set(workers) == set(FILES), res.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
