"""The download step plugs into img2dataset without changing it: after our download has run
in a process, img2dataset's modules hold what they held, and img2dataset called there
behaves as img2dataset (its own downloader, without our host policy)."""

from __future__ import annotations

import os
import signal
import sys
import urllib.request

import img2dataset
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.distribute import Engine
from tests.pipeline.collect.test_egress import selection
from tests.support.collect import download
from tests.support.httpserver import make_png, serve_directory

pytestmark = pytest.mark.slow

MODULES = (
    "img2dataset.main",
    "img2dataset.distributor",
    "img2dataset.downloader",
    "img2dataset.reader",
    "img2dataset.writer",
    "img2dataset.logger",
)


def _statuses(folder) -> list[tuple[str, str | None]]:
    rows = pq.read_table(folder / "00000.parquet", columns=["status", "error_message"]).to_pylist()
    return [(r["status"], r["error_message"]) for r in rows]


def test_our_download_leaves_img2dataset_and_the_process_as_they_were(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "red.png").write_bytes(make_png(64, 48))
    modules = [sys.modules[name] for name in MODULES]
    before = {m.__name__: dict(vars(m)) for m in modules}
    sigint = signal.getsignal(signal.SIGINT)
    opener = urllib.request._opener  # type: ignore[attr-defined]
    pixels = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS")

    with serve_directory(site) as base:
        port = base.rsplit(":", 1)[1]
        # ours: the host guard on, this loopback address let through as a public one would be
        stats = download(
            selection(tmp_path / "ours", [f"{base}/red.png"]),
            tmp_path / "ours" / "shards",
            processes=1,
            threads=2,
            samples_per_shard=10,
            timeout=5,
            quiet=True,
            engine=Engine(),
            allowed_addresses=(f"127.0.0.1:{port}",),
        )
        assert stats["successes"] == 1, _statuses(tmp_path / "ours" / "shards")

        for m in modules:
            now = vars(m)
            changed = sorted(
                k for k in before[m.__name__].keys() | now.keys() if now.get(k) is not before[m.__name__].get(k)
            )
            assert not changed, f"{m.__name__}: {changed} changed by our download"
        assert signal.getsignal(signal.SIGINT) is sigint
        assert urllib.request._opener is opener  # type: ignore[attr-defined]
        assert os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS") == pixels

        # img2dataset itself, in the same process, knows nothing of our policy: a name for
        # this machine, which our guard refuses, downloads.
        urls = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"url": [f"http://localhost:{port}/red.png"], "caption": ["red"]}), urls)
        try:
            img2dataset.download(
                url_list=str(urls),
                input_format="parquet",
                url_col="url",
                caption_col="caption",
                output_format="webdataset",
                output_folder=str(tmp_path / "plain"),
                processes_count=1,
                thread_count=2,
                number_sample_per_shard=10,
                timeout=5,
            )
        finally:
            signal.signal(signal.SIGINT, sigint)  # img2dataset.download installs its own handler
    assert _statuses(tmp_path / "plain") == [("success", None)]
