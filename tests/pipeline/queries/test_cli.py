"""The queries CLI as a user meets it: help, bad input, multistream, resume after SIGKILL."""

from __future__ import annotations

import bz2
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli, small_tmpfs
from tests.support.synthetic_wiki import write_dump

SMALL = ["--min-count", "5", "--min-bigram-count", "3", "--min-pmi", "8", "--quiet"]


def queries(dump, wordnet, out, *extra) -> subprocess.CompletedProcess:
    return run_cli("queries", "--wiki-dump", str(dump), "--wordnet", str(wordnet), "--out", str(out), *SMALL, *extra)


def test_help_documents_options_and_tokens():
    res = run_cli("queries", "--help")
    assert res.returncode == 0
    for text in (
        "--wiki-dump",
        "--pageviews",
        "--wordnet",
        "--min-pmi",
        "--memory-limit",
        "--workers",
        "Tokens: maximal runs of Unicode letters/digits",
        "multistream",
        "--recipe",
        "recipe metaclip",
        "split on [^\\w\\-']",
    ):
        assert text in res.stdout


def test_truncated_bz2_fails_cleanly_and_keeps_previous_output(tmp_path, wiki_sample_dump, wordnet_dir):
    out = tmp_path / "out"
    assert queries(wiki_sample_dump, wordnet_dir, out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(wiki_sample_dump.read_bytes()[:800_000])
    res = queries(cut, wordnet_dir, out)
    assert_one_line_error(res, "cut.xml.bz2", "truncated or corrupt at byte")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before, "a failed run must not replace or half-write the outputs"


def test_xml_cut_mid_page(tmp_path, wiki_sample_dump, wordnet_dir):
    xml = bz2.decompress(wiki_sample_dump.read_bytes())
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml[: len(xml) // 3])
    res = queries(cut, wordnet_dir, tmp_path / "out")
    assert_one_line_error(res, "cut.xml: line ", "XML ends before the document is complete")
    assert not (tmp_path / "out" / "queries.parquet").exists()


def test_empty_dump_missing_wordnet_and_unmatched_glob(tmp_path, wiki_sample_dump, wordnet_dir):
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(bz2.compress(b""))
    assert_one_line_error(queries(empty, wordnet_dir, tmp_path / "o1"), "empty.xml.bz2: the dump is empty")
    assert_one_line_error(queries(wiki_sample_dump, tmp_path / "no-wordnet", tmp_path / "o2"), "no-wordnet")
    assert_one_line_error(
        queries(tmp_path / "nothing-*.bz2", wordnet_dir, tmp_path / "o3"), "nothing-*.bz2", "no wiki dump file matches"
    )


def test_invalid_utf8_is_counted_not_fatal(tmp_path, wiki_sample_dump, wordnet_dir):
    xml = bz2.decompress(wiki_sample_dump.read_bytes())
    at = xml.index(b"Anarchism is")
    bad = tmp_path / "bad.xml.bz2"
    bad.write_bytes(bz2.compress(xml[:at] + b"\xff\xfe" + xml[at:]))
    res = queries(bad, wordnet_dir, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    build = json.loads((tmp_path / "out" / "build.json").read_text())
    assert build["dump"]["invalid_utf8_bytes"] == 2


@pytest.mark.slow
def test_multistream_reads_in_parallel_to_the_same_result(tmp_path, wordnet_dir):
    plain = write_dump(str(tmp_path / "synthetic.xml.bz2"), 3, seed=7)
    multi = write_dump(
        str(tmp_path / "synthetic-multistream.xml.bz2"), 3, seed=7, multistream=True, pages_per_stream=20
    )
    assert multi.index_path and Path(multi.index_path).exists()
    a = queries(plain.path, wordnet_dir, tmp_path / "a", "--workers", "2", "--chunk-mb", "0.5")
    b = run_cli(
        "queries",
        "--wiki-dump",
        multi.path,
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(tmp_path / "b"),
        *SMALL[:-1],
        "--workers",
        "2",
        "--chunk-mb",
        "0.5",
    )
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "multistream index found" in b.stderr
    for name in ("queries.parquet", "queries.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    sa = json.loads((tmp_path / "a" / "build.json").read_text())["dump"]
    sb = json.loads((tmp_path / "b" / "build.json").read_text())["dump"]
    assert sa["tokens"] == sb["tokens"] > 100_000 and sa["articles"] == sb["articles"] == plain.articles


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path, wordnet_dir):
    dump = write_dump(str(tmp_path / "synthetic.xml.bz2"), 6, seed=3)
    ref = tmp_path / "ref"
    assert queries(dump.path, wordnet_dir, ref, "--chunk-mb", "0.25", "--workers", "1").returncode == 0

    out, work = tmp_path / "out", tmp_path / "work"
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "queries",
        "--wiki-dump",
        dump.path,
        "--wordnet",
        str(wordnet_dir),
        "--out",
        str(out),
        "--work-dir",
        str(work),
        "--chunk-mb",
        "0.25",
        "--workers",
        "1",
        *SMALL,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = work / "dump" / "stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(stats.glob("*.json"))) < 4 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in stats.glob("*.json")}
    assert len(done_before) >= 4, "the run was killed before it counted anything"
    assert not (out / "queries.parquet").exists()

    res = run_cli(*args[3:])
    assert res.returncode == 0, res.stderr
    total_chunks = len(list(stats.glob("*.json")))
    assert total_chunks > len(done_before), "the kill came too late to test resuming"
    assert all(p.stat().st_mtime_ns == m for p, m in done_before.items()), "counted chunks were redone"
    for name in ("queries.parquet", "queries.txt"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_odd_output_path_and_bad_resource_options(tmp_path, wiki_sample_dump, wordnet_dir):
    out = tmp_path / "it's [q]"
    assert queries(wiki_sample_dump, wordnet_dir, out).returncode == 0
    assert (out / "queries.parquet").exists()
    for bad in (["--memory-limit", "2 lots"], ["--chunk-mb", "nan"], ["--workers", "0"]):
        res = queries(wiki_sample_dump, wordnet_dir, tmp_path / "o", *bad)
        assert res.returncode == 2 and "error: argument" in res.stderr and "Traceback" not in res.stderr


def fill(fs: Path, leave: int) -> Path:
    """Fill the filesystem at `fs` until `leave` bytes are free; the filler, to free it again."""
    st = os.statvfs(fs)
    filler = fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def assert_disk_full(res, *needles: str) -> None:
    """A storage fault: exit 1 and one `error:` line saying the device is full."""
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "No space left on device" in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_disk_full_is_one_line_and_the_rerun_succeeds(tmp_path, wiki_sample_dump, wordnet_dir):
    """A full disk in a worker (counting chunks), in DuckDB (aggregation) and in the final
    write: one line, exit 1, no queries.parquet, nothing half-written; once space is freed
    the same command finishes with the same list."""
    ref = tmp_path / "ref"
    assert queries(wiki_sample_dump, wordnet_dir, ref).returncode == 0
    expected = {name: (ref / name).read_bytes() for name in ("queries.parquet", "queries.txt")}

    def check_done(out: Path) -> None:
        assert {name: (out / name).read_bytes() for name in expected} == expected
        assert not [p for p in out.rglob("*.tmp-*")], "temporary files left behind"

    with small_tmpfs(tmp_path / "mnt", "6m") as mnt:
        # 1. counting: the chunk parts are written by the worker processes
        out, work = tmp_path / "a", mnt / "work"
        args = ("--work-dir", str(work), "--workers", "2", "--chunk-mb", "0.5")
        filler = fill(mnt, 600_000)
        assert_disk_full(queries(wiki_sample_dump, wordnet_dir, out, *args), "(part f0000-c0000")
        assert not (out / "queries.parquet").exists()
        filler.unlink()
        assert queries(wiki_sample_dump, wordnet_dir, out, *args).returncode == 0
        check_done(out)

        # 2. aggregation: DuckDB, in this process, says it only in its message
        (work / "dump" / "aggregate.duckdb").unlink()
        (out / "queries.parquet").unlink()
        filler = fill(mnt, 200_000)
        assert_disk_full(queries(wiki_sample_dump, wordnet_dir, out, *args), str(work / "dump"))
        assert not (out / "queries.parquet").exists()
        filler.unlink()
        assert queries(wiki_sample_dump, wordnet_dir, out, *args).returncode == 0
        check_done(out)

        # 3. the outputs themselves
        shutil.rmtree(work)
        out, args = mnt / "out", ("--work-dir", str(tmp_path / "work3"))
        filler = fill(mnt, 400_000)
        assert_disk_full(queries(wiki_sample_dump, wordnet_dir, out, *args), f"--out {out}")
        assert not (out / "queries.parquet").exists()
        assert not [p for p in out.rglob("*.tmp-*")], "temporary files left behind"
        filler.unlink()
        assert queries(wiki_sample_dump, wordnet_dir, out, *args).returncode == 0
        check_done(out)
