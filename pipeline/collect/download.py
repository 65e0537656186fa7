"""Download the balanced selection into webdataset shards with img2dataset.

img2dataset already does this well at scale (threaded fetching, resizing, incremental
mode, opt-out directives), so this stage assembles its pieces (`Reader`, `Resizer`, its
`Downloader` and webdataset writer, its logger process) around our own distributors,
the way `img2dataset.download` does, without replacing anything in img2dataset's modules:
other code in the same process gets img2dataset as it is.
- inputs: `curation/selected/part-*.parquet`; each sample's `.json` and each shard's
  `.parquet` carry `uid`, the matched `query_ids`/`queries` and the keep probability;
- resize keeping the aspect ratio so the shorter side is `image_size`, never upscaling
  (the trainer takes the random square crop);
- `incremental` mode: a shard counts as done when its `NNNNN_stats.json` exists, so a
  killed run redoes only unfinished shards;
- once every shard is done, `sizes.json` and the dataset card `README.md` (`card.py`)
  are written from all shards' stats;
- decompression bombs: OpenCV (img2dataset's decoder) refuses images above
  `max_image_pixels` before allocating them, and img2dataset's `max_image_area` drops the
  rest;
- egress (`egress.py`): the host policy at connect time, and per download a total
  deadline and a body size cap, which img2dataset's per-read timeout does not give;
- storage faults (disk full, quota, read-only, I/O error) while writing shards stop the
  stage: img2dataset would log each failed sample and report the shard done.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sys
import tempfile
import traceback
from functools import partial
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before img2dataset: else albumentations calls home
import fsspec  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from img2dataset.downloader import Downloader as Img2datasetDownloader  # noqa: E402
from img2dataset.logger import LoggerProcess  # noqa: E402
from img2dataset.reader import Reader  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402
from img2dataset.writer import WebDatasetSampleWriter  # noqa: E402

from .. import layout
from ..distribute import Engine, PartFailed, connect_ray, run_parts
from ..errors import STORAGE_ERRNOS, InputError
from ..io import atomic_path
from ..shard_format import INDEX_FORMAT, INDEX_SUFFIX
from ..storage import is_remote, listing, location, parquet_file
from . import egress
from .card import remove_derived, write_derived
from .config import DownloadConfig

CURATION_COLUMNS = ("uid", "query_ids", "queries", "keep_prob")
# img2dataset's own defaults, which `img2dataset.download` would apply: the opt-out
# directives a response header may carry (X-Robots-Tag) to be refused, how many more times
# a failed shard is tried, and the digits of a shard's number (00000.tar).
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
MAX_SHARD_RETRY = 1
SHARD_DIGITS = 5


def _extra_columns(selected: Path) -> list[str]:
    first = sorted(selected.glob(layout.PART_GLOB), key=str)[0]
    with parquet_file(first) as pf:
        names = pf.schema_arrow.names
    missing = [c for c in ("url", "text", *CURATION_COLUMNS) if c not in names]
    if missing:
        raise InputError(f"{first}: missing columns {missing} (has {names}); rerun the balance step")
    return [c for c in names if c not in ("url", "text")]


class _StopShard(BaseException):
    """A storage fault while writing a shard. img2dataset catches every Exception per sample
    and goes on with the next one (thousands of failed writes, then a truncated tar that
    looks done); only a BaseException gets out of its loop, to `ShardDownloader.__call__`."""

    def __init__(self, error: OSError):
        super().__init__(error)
        self.error = error


class _ShardWriter(WebDatasetSampleWriter):
    """img2dataset's webdataset writer, writing each shard in key order and stopping it at
    the first storage fault.

    img2dataset hands samples over as its download threads finish them, so its tars and
    parquets list them in an order that changes from run to run (and with them the
    trainer's data stream). Here each image goes to a local spool file (unlinked, one
    shard's images at most) and its key, caption and metadata stay in memory; `close`
    writes the shard in key order, members stamped with a fixed time, so the same rows
    give byte-identical shards.

    It also writes the shard's index, `NNNNN.tar.idx` (`pipeline.shard_format`): each
    sample's byte range, read off the tar writer as it writes, so a trainer can read only
    the samples it draws.

    On a storage fault the files are closed at once (an unlinked file that is still open
    keeps its space); `ShardDownloader` then deletes them.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # webdataset stamps members with the time of writing unless told: the reproducible-builds
        # convention instead (SOURCE_DATE_EPOCH, else 0), so a rerun's tar is the same bytes
        self.tarwriter.mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
        self._spool = tempfile.TemporaryFile(prefix="shard-spool-")
        self._held: list[tuple[str, int, int, object, dict]] = []  # key, offset, length (-1: no image), caption, meta
        shard_id, output_folder, oom_shard_count = args[0], args[1], args[3]
        self._index_path = f"{output_folder}/{shard_id:0{oom_shard_count}d}.tar{INDEX_SUFFIX}"

    def write(self, img_str, key, caption, meta):
        try:
            offset, length = self._spool.tell(), -1
            if img_str is not None:
                self._spool.write(img_str)
                length = len(img_str)
        except OSError as e:
            self._stop(e)
        self._held.append((key, offset, length, caption, meta))

    def close(self):
        held, self._held = sorted(self._held, key=lambda h: h[0]), []
        index: dict[str, list] = {"key": [], "uid": [], "query_ids": [], "offset": [], "size": []}
        tar = self.tarwriter.tarstream  # its `offset`: where the next member's header goes
        try:
            for key, offset, length, caption, meta in held:
                image = None
                if length >= 0:
                    self._spool.seek(offset)
                    image = self._spool.read(length)
                start = tar.offset
                super().write(image, key, caption, meta)
                if image is not None:
                    for name, value in (("key", key), ("uid", meta.get("uid")), ("query_ids", meta.get("query_ids"))):
                        index[name].append(value)
                    index["offset"].append(start)
                    index["size"].append(tar.offset - start)
            self._spool.close()
            self.buffered_parquet_writer.close()
            self.tarwriter.close()
            tar_size = self.tar_fd.tell()
            self.tar_fd.close()
            _write_index(self._index_path, index, tar_size)
        except OSError as e:
            self._stop(e)

    def _stop(self, e: OSError):
        if e.errno not in STORAGE_ERRNOS:
            raise e
        self._abort()
        raise _StopShard(e) from e

    def _abort(self) -> None:
        self._spool.close()
        pq_writer = self.buffered_parquet_writer
        for close in (
            getattr(pq_writer.parquet_writer, "close", None),
            pq_writer.output_fd.close,
            self.tarwriter.close,
            self.tar_fd.close,
        ):
            try:
                if close is not None:
                    close()
            except Exception:  # noqa: BLE001 - the disk is failing: closing the descriptor is all that matters
                pass
        pq_writer.parquet_writer = None


def _write_index(path: str, columns: dict[str, list], tar_size: int) -> None:
    """A shard's index (`pipeline.shard_format`), written after its tar is complete."""
    table = pa.table(
        {
            "key": pa.array(columns["key"], pa.string()),
            "uid": pa.array([None if u is None else str(u) for u in columns["uid"]], pa.string()),
            "query_ids": pa.array(columns["query_ids"], pa.list_(pa.int32())),
            "offset": pa.array(columns["offset"], pa.int64()),
            "size": pa.array(columns["size"], pa.int64()),
        }
    ).replace_schema_metadata({"format": INDEX_FORMAT, "tar_size": str(tar_size)})
    with fsspec.open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


class _Failed(tuple):
    """A shard row returned as failed, with the storage fault that stopped it:
    (errno, strerror, filename), or None for any other failure (retried)."""

    fault: tuple | None = None


def _failed(row, fault: tuple | None) -> _Failed:
    failed = _Failed(row)
    failed.fault = fault
    return failed


def _say(msg: str) -> None:
    """Print to img2dataset's log, which may sit on the disk that just filled up."""
    try:
        print(msg, flush=True)
    except OSError:
        pass


class ShardDownloader(Img2datasetDownloader):
    """img2dataset's Downloader under our egress policy, writing with `_ShardWriter` and
    stopping a shard on a storage fault.

    The distributors pickle it to spawned workers; unpickling this class imports this
    module there, and each call installs the policy (host guard, deadline, size cap) as the
    process's urllib opener: a Ray worker keeps its opener from task to task, so every
    shard sets its own. A shard that hits ENOSPC, EDQUOT, EROFS or EIO has its files
    deleted (no `NNNNN_stats.json` is left, so incremental mode redoes it) and comes back
    failed with the fault, which the distributors turn into the stage's error.
    """

    def __init__(self, *, policy: egress.Policy, **kwargs):
        super().__init__(sample_writer_class=_ShardWriter, **kwargs)
        self.policy = policy

    def __call__(self, row):
        egress.install(self.policy)
        try:
            self.download_shard(row)
            return True, row
        except _StopShard as stop:
            fault = stop.error
        except OSError as e:  # opening the shard's files, closing them, writing its stats
            if e.errno not in STORAGE_ERRNOS:
                traceback.print_exc()
                _say(f"shard {row[0]} failed with error {e}")
                return False, row
            fault = e
        except Exception as e:  # noqa: BLE001 - as img2dataset does: the shard is retried
            traceback.print_exc()
            _say(f"shard {row[0]} failed with error {e}")
            return False, row
        shard = f"{row[0]:0{self.oom_shard_count}d}"
        fs, folder = fsspec.core.url_to_fs(self.output_folder)
        for suffix in (
            layout.STATS_JSON,
            ".tar",
            ".parquet",
            f".tar{INDEX_SUFFIX}",
        ):  # the stats first: never a done shard without its tar
            try:
                fs.rm(f"{folder}/{shard}{suffix}")
            except (OSError, ValueError):
                pass
        filename = fault.filename or f"{self.output_folder}/{shard}.tar"
        _say(f"shard {row[0]} stopped, its files deleted: {fault.strerror or fault}: {filename}")
        return False, _failed(row, (fault.errno, fault.strerror, filename))


def _storage_failure(shard_id: int | None, fault: tuple, out: str) -> PartFailed:
    """The stage's error for a storage fault, chained to the OSError (the CLI reads both)."""
    errno_, strerror, filename = fault
    filename = filename or f"{out}/_tmp"
    what = f"shard {shard_id:05d} not written" if shard_id is not None else "splitting the selection into shards"
    exc = PartFailed(
        f"'{filename}': {strerror} ({what}); free the space or fix the disk, then rerun the same "
        "command: finished shards are kept"
    )
    exc.__cause__ = OSError(errno_, strerror, filename)
    return exc


def local_distributor(downloader, reader, processes_count: int, max_shard_retry: int) -> None:
    """img2dataset's multiprocessing distributor, except that a storage fault stops the stage.

    Not img2dataset's own because that one keeps only (ok, row) and retries every failed
    shard: it cannot tell a full disk from a flaky shard. This one hands a shard to each process
    as one frees up; once a shard comes back with a storage fault (see `ShardDownloader`),
    or the reader fails to write the shards' rows to OUT/_tmp in this process, it starts
    no more shards, lets the running ones end (on a full disk they stop at their first
    write and delete their files; killing them would leave partial files behind) and
    raises the fault as `PartFailed`. Other failed shards are retried `max_shard_retry`
    times, as img2dataset does.
    """
    out = getattr(downloader, "output_folder", "")
    done: queue.SimpleQueue = queue.SimpleQueue()
    failures: list[PartFailed] = []

    def run(pool, rows) -> list:
        """Every row of `rows` (until a storage fault); returns the rows that failed otherwise."""
        rows, running, feeding = iter(rows), 0, True
        failed: list[tuple] = []  # img2dataset's shard rows: (shard_id, shard file, ...)
        while True:
            while feeding and running < processes_count:
                try:
                    row = next(rows)
                except StopIteration:
                    feeding = False
                    break
                except OSError as e:
                    if e.errno not in STORAGE_ERRNOS:
                        raise
                    failures.append(_storage_failure(None, (e.errno, e.strerror, e.filename), out))
                    feeding = False
                    break
                pool.apply_async(downloader, (row,), callback=done.put, error_callback=done.put)
                running += 1
            if not running:
                return failed
            result = done.get()
            running -= 1
            if isinstance(result, BaseException):  # as img2dataset's imap_unordered would
                raise result
            ok, row = result
            if ok:
                continue
            if getattr(row, "fault", None) is not None:
                failures.append(_storage_failure(row[0], row.fault, out))
                feeding = False
            else:
                failed.append(row)

    with get_context("spawn").Pool(processes_count, maxtasksperchild=5) as pool:
        failed = run(pool, reader)
        for attempt in range(1, max_shard_retry + 1):
            if failures or not failed:
                break
            _say(f"Retrying {len(failed)} shards, try {attempt}")
            failed = run(pool, failed)
        if failed and not failures:
            _say(
                f"Retried {max_shard_retry} times, but {len(failed)} shards still failed. "
                "You may restart the same command to retry again."
            )
        pool.close()
        pool.join()
    if failures:
        raise failures[0]


_WORKER_DOWNLOADER: list = []


def _install_downloader(downloader) -> None:
    """Ray worker setup: the (pickled once) downloader, kept for every shard this process runs."""
    _WORKER_DOWNLOADER[:] = [downloader]


def _download_shard(row) -> int:
    ok, back = _WORKER_DOWNLOADER[0](row)
    if not ok:  # raising lets the engine retry the shard
        fault = getattr(back, "fault", None)
        if fault is not None:
            raise OSError(*fault)
        raise RuntimeError(f"shard {row[0]}: img2dataset could not write it (see the worker log)")
    return row[0]


def ray_distributor(downloader, reader, engine: Engine) -> None:
    """The shards as part tasks of our engine, when --engine ray.

    img2dataset's own Ray distributor pickles the downloader into every task and neither
    retries a failed shard nor stops on one; this one ships the downloader once per
    worker, retries a shard `--max-part-retries` times (Ray also re-runs a shard whose
    worker died) and fails the step if one still fails, like every other step.
    """
    run_parts(
        _download_shard,
        reader,
        engine,
        setup=_install_downloader,
        setup_args=(downloader,),
        describe=lambda row: f"shard {row[0]:05d}",
    )


def _fetch(url_list: str, out: str, columns: list[str], make_downloader, samples_per_shard: int, distribute) -> None:
    """What `img2dataset.download` does for webdataset output in incremental mode, with our
    downloader and distributor: the shards whose `NNNNN_stats.json` exists are done; the
    reader splits the rest of the selection into shard files under OUT/_tmp; img2dataset's
    logger process reports progress from the shards' stats until the distributor returns
    (or fails: it is stopped either way, so no process is left behind)."""
    fs, out_path = fsspec.core.url_to_fs(out)
    tmp_path = out + "/_tmp"
    tmp_fs, tmp_dir = fsspec.core.url_to_fs(tmp_path)
    if not tmp_fs.exists(tmp_dir):
        tmp_fs.mkdir(tmp_dir)
    done_shards = {int(x.split("/")[-1].split("_")[0]) for x in fs.glob(out_path + "/*.json")}
    reader = Reader(
        url_list=url_list,
        input_format="parquet",
        url_col="url",
        caption_col="text",
        verify_hash_col=None,
        verify_hash_type=None,
        save_additional_columns=columns,
        number_sample_per_shard=samples_per_shard,
        done_shards=done_shards,
        tmp_path=tmp_path,
        start_shard_id=0,
    )
    downloader = make_downloader(output_folder=out, column_list=reader.column_list)
    logger = LoggerProcess(out, False, "img2dataset", {})
    logger.done_shards = done_shards
    logger.start()
    try:
        distribute(downloader, reader)
    finally:
        logger.join()  # asks it to stop after a last pass over the shards' stats
    if not hasattr(tmp_fs, "s3"):
        tmp_fs.rm(tmp_dir, recursive=True)


@contextlib.contextmanager
def _environ(name: str, value: str):
    """`name` set to `value` in this process's environment while the block runs, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


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


def download(curation: Path, out: Path, config: DownloadConfig, engine: Engine, *, quiet: bool) -> dict:
    """Run img2dataset over the selection with `config`; returns summed shard statistics.

    `timeout` bounds each socket operation (img2dataset's); `download_deadline` (seconds)
    bounds each download as a whole and `max_bytes` its body (see `egress`); a URL over
    either fails with the reason as its `error_message`. `allowed_addresses` ("IP:PORT")
    pass the host policy although not public: tests use it to let a loopback server play
    a public one. On a local engine the shards run on `processes` processes. `quiet` sends
    img2dataset's output to `curation/download.log`. A full, read-only or failing disk
    under `out` stops the stage with `PartFailed` (the CLI's exit code 1); the shards
    finished before it are kept.
    """
    make_downloader = _downloader(config)  # refuses bad limits before any work
    curation, out = location(curation), location(out)
    selected = curation / layout.SELECTED
    if not list(selected.glob(layout.PART_GLOB)):
        raise InputError(f"{selected}: no selected parts; run the balance step first")
    columns = _extra_columns(selected)
    if engine.name == "ray":
        connect_ray(engine)
        distribute = partial(ray_distributor, engine=engine)
    else:
        distribute = partial(local_distributor, processes_count=config.processes, max_shard_retry=MAX_SHARD_RETRY)

    out.mkdir(parents=True, exist_ok=True)
    remove_derived(out)
    log = (
        (curation / layout.DOWNLOAD_LOG if not is_remote(curation) else Path(tempfile.mkdtemp()) / layout.DOWNLOAD_LOG)
        if quiet
        else None
    )
    try:
        # OpenCV reads its pixel limit once, when cv2 is first imported: the processes
        # started meanwhile (download workers, img2dataset's logger) get it.
        with _redirect_output(log), _environ("OPENCV_IO_MAX_IMAGE_PIXELS", str(config.max_image_pixels)):
            _fetch(str(selected), str(out), columns, make_downloader, config.samples_per_shard, distribute)
    finally:
        if log is not None and is_remote(curation):  # the log of img2dataset's processes, kept beside the stats
            with atomic_path(curation / layout.DOWNLOAD_LOG) as tmp:
                shutil.move(log, tmp)
    totals = summarise(out, layout.step_stats(curation, "download"))
    expected = 0
    for f in selected.glob(layout.PART_GLOB):
        with parquet_file(f) as pf:
            expected += pf.metadata.num_rows
    if totals["count"] != expected:  # a shard img2dataset gave up on: never report a short run as done
        raise PartFailed(
            f"{out}: shards hold {totals['count']:,} of the {expected:,} selected samples "
            "(a shard failed on every try); rerun the same command to retry the missing shards"
        )
    write_derived(curation, out, config.image_size, config.samples_per_shard)
    return totals


def _downloader(c: DownloadConfig):
    """`ShardDownloader` with everything but where it writes (`output_folder`, `column_list`,
    known once the reader has the selection): our egress policy, img2dataset's resizer set
    to keep the aspect ratio and never upscale, JPEG at quality 95, sha256 per sample."""
    if c.download_deadline is not None and not c.download_deadline > 0:
        raise InputError(f"download deadline must be a positive number of seconds (got {c.download_deadline})")
    if c.max_bytes is not None and int(c.max_bytes) < 1:
        raise InputError(f"max bytes must be at least 1 (got {c.max_bytes})")
    policy = egress.Policy(
        guard=not c.allow_private_hosts,
        deadline=c.download_deadline,
        max_bytes=None if c.max_bytes is None else int(c.max_bytes),
        allow=tuple(c.allowed_addresses),
    )
    resizer = Resizer(
        image_size=c.image_size,
        resize_mode="keep_ratio",
        resize_only_if_bigger=True,
        upscale_interpolation="lanczos",
        downscale_interpolation="area",
        encode_quality=95,
        encode_format="jpg",
        skip_reencode=False,
        disable_all_reencoding=False,
        min_image_size=0,
        max_image_area=float(c.max_image_pixels),
        max_aspect_ratio=float("inf"),
        blurrer=None,
    )
    directives = OPT_OUT_DIRECTIVES if c.disallowed_header_directives is None else c.disallowed_header_directives
    return partial(
        ShardDownloader,
        policy=policy,
        resizer=resizer,
        thread_count=c.threads,
        save_caption=True,
        extract_exif=True,
        timeout=c.timeout,
        number_sample_per_shard=c.samples_per_shard,
        oom_shard_count=SHARD_DIGITS,
        compute_hash="sha256",
        verify_hash_type=None,
        encode_format="jpg",
        retries=c.retries,
        user_agent_token=None,
        disallowed_header_directives=list(directives) or None,
    )


def summarise(out: Path, summary_path: Path) -> dict:
    """Sum every shard's `NNNNN_stats.json` (failures by reason kept).

    The summary lives outside the shard folder: img2dataset's incremental mode reads every
    `*.json` there as a shard number.
    """
    totals: dict = {
        "shards": 0,
        "count": 0,
        "successes": 0,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "status_dict": {},
    }
    for path in listing(out, layout.SHARD_STATS_GLOB):
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
