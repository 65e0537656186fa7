"""`make test`'s two workers keep a test file on one worker (tests/conftest.py's scheduler),
so module and session fixtures are built once: xdist's own --dist loadgroup cannot under
pytest 9 (each test was its own unit, and fixtures were built on both workers)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict

from tests.conftest import ROOT


def test_each_file_runs_on_one_worker(tmp_path):
    """Two files of quick tests, run on two workers with this suite's conftest as a plugin."""
    for name in ("test_one.py", "test_two.py"):
        (tmp_path / name).write_text("".join(f"def test_{i}():\n    pass\n\n\n" for i in range(6)))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "2", "--dist", "loadgroup", "-v"]
        + ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    workers = defaultdict(set)
    for worker, path in re.findall(r"^\[(gw\d)\] .*?PASSED (\S+?)::", res.stdout, re.MULTILINE):
        workers[path].add(worker)
    assert set(workers) == {"test_one.py", "test_two.py"}, res.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
