"""Peak memory must not grow with the dump: counts are spilled per chunk and summed out of core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.synthetic_wiki import write_dump

pytestmark = pytest.mark.slow


def peak_rss_mb(args: list[str]) -> tuple[float, dict]:
    """Run the CLI in a child process and read that child's own peak RSS from wait4."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    out = Path(args[args.index("--out") + 1])
    return usage.ru_maxrss / 1024, json.loads((out / "build.json").read_text())


def test_peak_rss_flat_from_1x_to_10x(tmp_path, wordnet_dir):
    small = write_dump(str(tmp_path / "x1.xml"), 4, seed=1)
    large = write_dump(str(tmp_path / "x10.xml"), 40, seed=1)
    common = [
        "--wordnet",
        str(wordnet_dir),
        "--workers",
        "1",
        "--chunk-mb",
        "1",
        "--memory-limit",
        "64MB",
        "--min-count",
        "50",
        "--min-bigram-count",
        "5",
        "--min-pmi",
        "12",
        "--quiet",
    ]
    rss1, b1 = peak_rss_mb(["queries", "--wiki-dump", small.path, "--out", str(tmp_path / "o1"), *common])
    rss10, b10 = peak_rss_mb(["queries", "--wiki-dump", large.path, "--out", str(tmp_path / "o10"), *common])
    # The larger dump really is ~10x the work, with many more distinct words and bigrams...
    assert b10["dump"]["tokens"] > 8 * b1["dump"]["tokens"]
    assert b10["dump"]["distinct_bigrams"] > 5 * b1["dump"]["distinct_bigrams"]
    # ...yet peak memory stays within 1.5x.
    print(
        json.dumps(
            {
                "rss_1x_mb": round(rss1, 1),
                "rss_10x_mb": round(rss10, 1),
                "ratio": round(rss10 / rss1, 3),
                "distinct_bigrams_1x": b1["dump"]["distinct_bigrams"],
                "distinct_bigrams_10x": b10["dump"]["distinct_bigrams"],
            }
        )
    )
    assert rss10 <= 1.5 * rss1, (rss1, rss10)
