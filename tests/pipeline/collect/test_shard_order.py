"""Shards list their samples in key order, whatever order the download threads finish in:
the same selection downloaded twice gives byte-identical tars and parquets (and so the same
training stream). The loopback server answers the first rows last (`/_fault/slow`), so
img2dataset's threads hand the samples over in reverse."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.support.httpserver import serve_directory

ROWS = 12


def _download(tmp_path: Path, base: str, name: str) -> Path:
    out = tmp_path / name
    r = run_cli(
        "shards",
        "--out",
        str(out),
        "--pool",
        str(tmp_path / "pool.parquet"),
        "--queries",
        str(tmp_path / "queries.parquet"),
        "--allow-private-hosts",
        "--per-query",
        "1000",
        "--processes",
        "1",
        "--threads",
        "6",
        "--samples-per-shard",
        "100",
        "--workers",
        "1",
        "--quiet",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_shards_are_written_in_key_order_and_byte_identical(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    pq.write_table(pa.table({"query": ["cat"]}), tmp_path / "queries.parquet")
    with serve_directory(site, faults=True) as base:
        # row i waits 0.08 * (ROWS - i) s: the first rows come back last
        urls = [f"{base}/_fault/slow?seconds={0.08 * (ROWS - i):.2f}&row={i}" for i in range(ROWS)]
        pq.write_table(
            pa.table({"url": urls, "caption": [f"a cat, picture {i}" for i in range(ROWS)]}), tmp_path / "pool.parquet"
        )
        first = _download(tmp_path, base, "first")
        second = _download(tmp_path, base, "second")

    with tarfile.open(first / "00000.tar") as tar:
        names = tar.getnames()
    keys = [n.split(".")[0] for n in names]
    assert len(set(keys)) == ROWS and keys == sorted(keys), f"tar members out of key order: {keys}"
    rows = pq.read_table(first / "00000.parquet").to_pylist()
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows) and len(rows) == ROWS
    assert all(r["status"] == "success" for r in rows)
    for suffix in (".tar", ".parquet"):
        assert (first / f"00000{suffix}").read_bytes() == (second / f"00000{suffix}").read_bytes(), suffix
