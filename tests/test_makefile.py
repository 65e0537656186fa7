"""`make help` is generated from the targets' own `## text`, so it lists every target a user
can run; CI runs the lint gate before the tests."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def phony_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", text, re.M)
    assert block, "Makefile has no .PHONY line"
    return set(block.group(1).replace("\\\n", " ").split())


def test_help_lists_every_phony_target_with_its_text():
    res = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    listed = {}
    for line in res.stdout.splitlines():
        m = re.match(r"make (\S+)\s+(\S.*)$", line)
        assert m, f"`make help` line without a description: {line!r}"
        listed[m.group(1)] = m.group(2)
    targets = phony_targets()
    assert {"queries", "shards", "train", "audit", "test", "test-fast", "lint"} <= targets
    assert targets == set(listed), (
        f"targets missing from `make help`: {sorted(targets - set(listed))}; "
        f"listed but not .PHONY: {sorted(set(listed) - targets)}"
    )


def test_ci_runs_lint_before_the_tests():
    steps = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("make ")]
    assert steps[:2] == ["make lint", "make test"], steps
