"""Download the balanced selection into webdataset shards with img2dataset.

img2dataset already does this well at scale (threaded fetching, resizing, incremental
mode, opt-out directives, Ray/Spark distributors), so this stage only configures it:
- inputs: `curation/selected/part-*.parquet`; each sample's `.json` and each shard's
  `.parquet` carry `uid`, the matched `query_ids`/`queries` and the keep probability;
- resize keeping the aspect ratio so the shorter side is `image_size`, never upscaling
  (the trainer takes the random square crop);
- `incremental` mode: a shard counts as done when its `NNNNN_stats.json` exists, so a
  killed run redoes only unfinished shards;
- decompression bombs: OpenCV (img2dataset's decoder) refuses images above
  `max_image_pixels` before allocating them, and img2dataset's `max_image_area` drops the
  rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path


os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before img2dataset: else albumentations calls home
from img2dataset import download as img2dataset_download  # noqa: E402
from img2dataset.downloader import Downloader as Img2datasetDownloader  # noqa: E402

from ..errors import InputError
from ..distribute import Engine, PartFailed, connect_ray, run_parts
from ..io import atomic_path
from ..storage import is_remote, listing, location, parquet_file
from . import egress

CURATION_COLUMNS = ("uid", "query_ids", "queries", "keep_prob")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold


def _extra_columns(selected: Path) -> list[str]:
    first = sorted(selected.glob("part-*.parquet"), key=str)[0]
    with parquet_file(first) as pf:
        names = pf.schema_arrow.names
    missing = [c for c in ("url", "text", *CURATION_COLUMNS) if c not in names]
    if missing:
        raise InputError(f"{first}: missing columns {missing} (has {names}); rerun the balance step")
    return [c for c in names if c not in ("url", "text")]


class GuardedDownloader(Img2datasetDownloader):
    """img2dataset's Downloader whose worker process connects only to public addresses.

    img2dataset pickles its Downloader to spawned workers; unpickling this class imports
    this module there, and each call installs the connect-time host policy.
    """

    def __call__(self, row):
        egress.install()
        return super().__call__(row)


class UnguardedDownloader(Img2datasetDownloader):
    """img2dataset's Downloader with urllib's default opener (--allow-private-hosts).

    The opener is process state: a Ray worker that ran a guarded download keeps its
    opener for the next task, so the unguarded one restores the default explicitly.
    """

    def __call__(self, row):
        egress.uninstall()
        return super().__call__(row)


_WORKER_DOWNLOADER: list = []


def _install_downloader(downloader) -> None:
    """Ray worker setup: the (pickled once) downloader, kept for every shard this process runs."""
    _WORKER_DOWNLOADER[:] = [downloader]


def _download_shard(row) -> int:
    ok, _ = _WORKER_DOWNLOADER[0](row)
    if not ok:  # img2dataset caught the error and printed it; raising lets the engine retry the shard
        raise RuntimeError(f"shard {row[0]}: img2dataset could not write it (see the worker log)")
    return row[0]


def ray_distributor(engine: Engine, processes_count, downloader, reader, subjob_size, max_shard_retry) -> None:
    """img2dataset's distributor slot, filled by our engine when --engine ray.

    img2dataset's own Ray distributor pickles the downloader into every task and neither
    retries a failed shard nor stops on one; this one ships the downloader once per
    worker, retries a shard `--max-part-retries` times (Ray also re-runs a shard whose
    worker died) and fails the step if one still fails, like every other step.
    """
    run_parts(_download_shard, reader, engine, setup=_install_downloader, setup_args=(downloader,),
              describe=lambda row: f"shard {row[0]:05d}")


@contextlib.contextmanager
def _redirect_output(log: Path | None):
    """Route img2dataset's output: to `log` (quiet), else stdout onto stderr.

    img2dataset prints from worker and logger processes, which a Python-level redirect
    cannot reach; they inherit file descriptors, so the descriptors are redirected.
    Keeping stdout clean leaves it for machine-readable output.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    sink = open(log, "ab") if log is not None else None
    try:
        if sink is not None:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        else:
            os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if sink is not None:
            sink.close()


def download(
    curation: Path,
    out: Path,
    image_size: int = 256,
    processes: int = 1,
    threads: int = 32,
    samples_per_shard: int = 10_000,
    timeout: int = 10,
    retries: int = 0,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    disallowed_header_directives: list[str] | None = None,
    quiet: bool = False,
    allow_private_hosts: bool = False,
    engine: Engine | None = None,
) -> dict:
    """Run img2dataset over the selection; returns summed shard statistics."""
    curation, out = location(curation), location(out)
    selected = curation / "selected"
    if not list(selected.glob("part-*.parquet")):
        raise InputError(f"{selected}: no selected parts; run the balance step first")
    columns = _extra_columns(selected)
    # OpenCV reads this once, when cv2 is first imported: it reaches img2dataset's freshly
    # started multiprocessing workers, not a process that already imported cv2.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_image_pixels)

    # img2dataset builds its Downloader in this process and pickles it to its spawned
    # workers: a subclass defined here brings the connect-time host policy along. (The
    # package attribute `img2dataset.main` is the CLI function; the module is in sys.modules.)
    img2dataset_main = sys.modules["img2dataset.main"]
    img2dataset_main.Downloader = UnguardedDownloader if allow_private_hosts else GuardedDownloader
    engine = engine or Engine(workers=processes)
    if engine.name == "ray":
        connect_ray(engine)
        img2dataset_main.ray_distributor = partial(ray_distributor, engine)

    out.mkdir(parents=True, exist_ok=True)
    log = (curation / "download.log" if not is_remote(curation) else Path(tempfile.mkdtemp()) / "download.log") \
        if quiet else None
    with _redirect_output(log):
        img2dataset_download(
            url_list=str(selected),
            input_format="parquet",
            url_col="url",
            caption_col="text",
            save_additional_columns=columns,
            output_format="webdataset",
            output_folder=str(out),
            image_size=image_size,
            resize_mode="keep_ratio",
            resize_only_if_bigger=True,
            encode_format="jpg",
            encode_quality=95,
            processes_count=processes,
            distributor="ray" if engine.name == "ray" else "multiprocessing",
            thread_count=threads,
            number_sample_per_shard=samples_per_shard,
            timeout=timeout,
            retries=retries,
            max_image_area=float(max_image_pixels),
            incremental_mode="incremental",
            disallowed_header_directives=disallowed_header_directives,
            enable_wandb=False,
            compute_hash="sha256",
        )
    if log is not None and is_remote(curation):  # the log of img2dataset's processes, kept beside the stats
        with atomic_path(curation / "download.log") as tmp:
            shutil.move(log, tmp)
    totals = summarise(out, curation / "download_stats.json")
    expected = 0
    for f in selected.glob("part-*.parquet"):
        with parquet_file(f) as pf:
            expected += pf.metadata.num_rows
    if totals["count"] != expected:  # a shard img2dataset gave up on: never report a short run as done
        raise PartFailed(f"{out}: shards hold {totals['count']:,} of the {expected:,} selected samples "
                         "(a shard failed on every try); rerun the same command to retry the missing shards")
    return totals


def summarise(out: Path, summary_path: Path) -> dict:
    """Sum every shard's `NNNNN_stats.json` (failures by reason kept).

    The summary lives outside the shard folder: img2dataset's incremental mode reads every
    `*.json` there as a shard number.
    """
    totals: dict = {"shards": 0, "count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0,
                    "status_dict": {}}
    for path in listing(out, "[0-9]*_stats.json"):
        s = json.loads(path.read_text())
        totals["shards"] += 1
        for k in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[k] += int(s.get(k, 0))
        for reason, n in (s.get("status_dict") or {}).items():
            totals["status_dict"][reason] = totals["status_dict"].get(reason, 0) + int(n)
    totals["status_dict"] = dict(sorted(totals["status_dict"].items(), key=lambda kv: (-kv[1], kv[0])))
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(totals, indent=2) + "\n")
    return totals
