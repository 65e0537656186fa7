"""One writer per output folder: real `python -m pipeline` processes on the same --out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.outlock import LOCK_NAME, hold, holder
from tests.conftest import ROOT, assert_one_line_error, required_path, run_cli

SMALL = ["--min-count", "5", "--min-bigram-count", "3", "--min-pmi", "8", "--quiet"]
OUTPUTS = ("queries.parquet", "queries.txt")


def queries_args(dump, wordnet, out, *extra) -> list[str]:
    return ["queries", "--wiki-dump", str(dump), "--wordnet", str(wordnet), "--out", str(out), *SMALL, *extra]


def start(*args: str) -> subprocess.Popen:
    """A pipeline run in its own process group, so it can be paused or killed with its workers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_until_held(proc: subprocess.Popen, folder: Path, timeout: float = 60) -> dict:
    """The holder's record, once `proc` holds `folder`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        info = holder(folder)
        if info and info["pid"] == proc.pid:
            return info
        time.sleep(0.01)
    out, err = proc.communicate(timeout=5) if proc.poll() is not None else ("", "")
    raise AssertionError(f"the run never held {folder} (exit {proc.poll()}): {err[-2000:]}")


def test_second_queries_run_is_refused_and_the_first_completes(tmp_path, wiki_sample_dump, wordnet_dir):
    ref = tmp_path / "ref"
    assert run_cli(*queries_args(wiki_sample_dump, wordnet_dir, ref)).returncode == 0

    out = tmp_path / "out"
    first = start(*queries_args(wiki_sample_dump, wordnet_dir, out))
    try:
        info = wait_until_held(first, out)
        assert info["verb"] == "queries" and info["host"] == socket.gethostname()
        os.killpg(first.pid, signal.SIGSTOP)  # it holds the lock for as long as the second run takes
        second = run_cli(*queries_args(wiki_sample_dump, wordnet_dir, out))
        os.killpg(first.pid, signal.SIGCONT)
        assert_one_line_error(second, f"{out} is in use by pid {first.pid} (queries since {info['since']})")
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, err
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert holder(out) is None, "a finished run leaves no holder record"


def test_lock_of_a_killed_run_does_not_block_the_rerun(tmp_path, wiki_sample_dump, wordnet_dir):
    out = tmp_path / "out"
    proc = start(*queries_args(wiki_sample_dump, wordnet_dir, out))
    wait_until_held(proc, out)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert holder(out)["pid"] == proc.pid, "the dead run's record stays in the lock file"
    res = run_cli(*queries_args(wiki_sample_dump, wordnet_dir, out))
    assert res.returncode == 0, res.stderr
    assert (out / "queries.parquet").exists() and holder(out) is None


def test_queries_work_dir_is_held_too(tmp_path, wiki_sample_dump, wordnet_dir):
    work = tmp_path / "work"
    with hold(work, "another queries"):
        res = run_cli(*queries_args(wiki_sample_dump, wordnet_dir, tmp_path / "out", "--work-dir", str(work)))
    assert_one_line_error(res, f"{work} is in use by pid {os.getpid()} (another queries since")
    assert not (tmp_path / "out" / "queries.parquet").exists()


@pytest.mark.sample
def test_second_sample_shards_run_is_refused_and_keeps_the_port(tmp_path):
    """The sample's port file names the port of a finished dataset: a refused (or failed)
    second run must not overwrite it, or the next rerun would rebuild with other uids."""
    openclipart = required_path("OPENCLIPART_DIR")
    queries = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"query": ["frog", "cat", "dog", "bird", "tree", "star"]}), queries)
    out = tmp_path / "shards"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [
        "--sample-openclipart",
        str(openclipart),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--per-query",
        "5",
        "--samples-per-shard",
        "50",
        "--processes",
        "1",
        "--threads",
        "4",
        "--workers",
        "1",
        "--quiet",
    ]
    first = start("shards", *common, "--sample-port", str(port))
    try:
        info = wait_until_held(first, out)
        os.killpg(first.pid, signal.SIGSTOP)
        second = run_cli("shards", *common)  # port taken by the first run's server: today it picked another
        os.killpg(first.pid, signal.SIGCONT)
        assert_one_line_error(second, f"{out} is in use by pid {first.pid} (shards since {info['since']})")
        assert not (out / "sample" / "port").exists(), "the port file is written when a run succeeds"
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, err
    assert (out / "sample" / "port").read_text().strip() == str(port)
    stats = json.loads((out / "curation" / "download_stats.json").read_text())
    assert stats["successes"] > 0 and stats["successes"] == stats["count"]
    assert (out / "curation" / "keys" / "download.done").exists()


def test_every_shards_step_and_audit_refuse_a_held_folder(tmp_path):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": ["http://example.com/a.jpg"], "caption": ["a cat"]}), pairs)
    out = tmp_path / "shards"
    with hold(out, "shards"):
        for verb, extra in (
            ("pool", ["--pool", str(pairs)]),
            ("match", []),
            ("balance", []),
            ("download", []),
            ("shards", ["--pool", str(pairs)]),
        ):
            res = run_cli(verb, "--out", str(out), *extra, "--quiet")
            assert_one_line_error(res, f"{out} is in use by pid {os.getpid()} (shards since")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "a refused run writes nothing"

    # The audit holds its report folder (default SHARDS/audit).
    assert run_cli("pool", "--pool", str(pairs), "--out", str(out), "--quiet").returncode == 0
    (tmp_path / "q").mkdir()  # an empty query list folder: its section is unavailable, the report is written
    report = out / "audit"
    with hold(report, "audit"):
        res = run_cli("audit", "--queries", str(tmp_path / "q"), "--shards", str(out), "--quiet")
        assert_one_line_error(res, f"{report} is in use by pid {os.getpid()} (audit since")
        assert not (report / "summary.json").exists()
    res = run_cli("audit", "--queries", str(tmp_path / "q"), "--shards", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (report / "summary.json").exists()


def test_hold_is_reentrant_and_a_failed_first_run_leaves_no_folder(tmp_path):
    folder = tmp_path / "new" / "out"
    with hold(folder, "outer"):
        with hold(folder, "inner"):  # the same process: e.g. the sample wraps the steps
            assert holder(folder)["verb"] == "outer"
    assert holder(folder) is None
    try:
        with hold(tmp_path / "fresh", "queries"):
            raise ValueError("bad input found after the lock was taken")
    except ValueError:
        pass
    assert not (tmp_path / "fresh").exists()
