"""A full disk stops the download stage; it is never reported as success.

img2dataset catches the failed write of each sample, logs it and goes on, then writes the
shard's `NNNNN_stats.json` (which incremental mode takes for "done") over a truncated tar.
Here `--out` is a real 30 MB tmpfs, mostly taken by a filler file, and `pipeline shards`
downloads more images than fit: it must exit non-zero with one line naming the problem,
write no done marker and no download stats, leave a stats file only beside complete
shards and no files of the shards it could not finish. Once the filler is deleted, the
same command finishes the rest.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.sample.server import serve_directory
from tests.conftest import run_cli, small_tmpfs

pytestmark = pytest.mark.slow

IMAGES = 30  # 512 x 512 noise: ~300 kB each as JPEG q95, ~9 MB in all
FREE_MB = 4  # left free on the tmpfs next to the filler


@pytest.fixture()
def tmpfs(tmp_path: Path):
    with small_tmpfs(tmp_path / "mnt", "30m") as mnt:
        yield mnt


def _noise_site(root: Path) -> None:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        (root / f"n{i}.png").write_bytes(buf.getvalue())


def _tar_members(tar: Path) -> list[str]:
    with tarfile.open(tar) as tf:
        return tf.getnames()


def test_full_disk_stops_the_stage_and_a_rerun_finishes(tmp_path: Path, tmpfs: Path):
    site = tmp_path / "www"
    _noise_site(site)
    pq.write_table(pa.table({"query": ["noise"]}), tmp_path / "queries.parquet")
    free = os.statvfs(tmpfs)
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - (FREE_MB << 20)))
    out = tmpfs / "out"

    with serve_directory(site) as base:
        pq.write_table(
            pa.table(
                {"url": [f"{base}/n{i}.png" for i in range(IMAGES)], "caption": [f"noise {i}" for i in range(IMAGES)]}
            ),
            tmp_path / "pool.parquet",
        )
        args = (
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
            "2",
            "--threads",
            "4",
            "--samples-per-shard",
            "5",
            "--image-size",
            "512",
            "--workers",
            "1",
            "--quiet",
        )
        r = run_cli(*args, timeout=300)

        assert r.returncode == 1, r.stderr[-3000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0], r.stderr
        assert not (out / "curation" / "keys" / "download.done").exists()
        assert not (out / "curation" / "download_stats.json").exists()
        stats_files = sorted(out.glob("[0-9]*_stats.json"))
        assert len(stats_files) < IMAGES // 5, "every shard was reported done on a full disk"
        for path in stats_files:  # a shard with a stats file is complete: tar and parquet agree with it
            shard = path.name.split("_")[0]
            stats = json.loads(path.read_text())
            rows = pq.read_table(out / f"{shard}.parquet").to_pylist()
            assert len(rows) == stats["count"] == 5 and stats["successes"] == 5, (shard, stats)
            assert len(_tar_members(out / f"{shard}.tar")) == 3 * stats["successes"], shard
        # and a shard whose writing failed left nothing behind (its partial files held the space)
        leftovers = {p.name.split(".")[0] for p in [*out.glob("[0-9]*.tar"), *out.glob("[0-9]*.parquet")]}
        assert leftovers == {p.name.split("_")[0] for p in stats_files}

        filler.unlink()
        r = run_cli(*args, timeout=300)

    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "curation" / "keys" / "download.done").exists()
    summary = json.loads((out / "curation" / "download_stats.json").read_text())
    assert summary["count"] == summary["successes"] == IMAGES
    jpgs = [m for tar in sorted(out.glob("[0-9]*.tar")) for m in _tar_members(tar) if m.endswith(".jpg")]
    assert len(jpgs) == IMAGES
