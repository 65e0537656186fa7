"""`make shards` on the embedded sample: openclipart served over real loopback HTTP.

The pool's URLs contain the server's port, uids hash the URL, and the balancing draws
hash the uid: the same port gives the same dataset. So the server prefers a fixed port
(PREFERRED_PORT, or `--sample-port`), and a rerun reuses the port of the last run that
finished (the port file is written only on success, under OUT's lock); only
when that port is taken does it fall back to a free one (and says that the pool, and so
the selection, changes). The server runs only while the steps run, and stops on success,
error or Ctrl-C.

A deterministic 10% of the images (by path hash) never enter the pool: they are the
held-out set the trainer's zero-shot evaluation uses.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

from .. import layout
from ..collect.config import ShardParams
from ..collect.shards import progress_log, run_all
from ..errors import InputError
from ..io import atomic_path, write_json
from ..outlock import hold
from .openclipart import LICENSE, roots_from_cache, write_sample_pool
from .server import serve_directory

HELD_OUT_IMAGES = 0.1
HELD_OUT_SEED = 0
PREFERRED_PORT = 8642


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(port_file: Path, requested: int | None, log) -> int:
    """The requested port (must be free), else the previous run's, else PREFERRED_PORT, else any."""
    if requested:
        if not _port_free(requested):
            raise InputError(f"--sample-port {requested}: port is in use")
        return requested
    try:
        previous = int(port_file.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: the default
        previous = PREFERRED_PORT
    if _port_free(previous):
        return previous
    log(
        f"sample: port {previous} is in use; serving on a free port instead, so URLs, uids and the "
        f"balanced selection differ from runs on port {previous}"
    )
    return 0


def run_sample(p: ShardParams, cache: str, port: int | None = None) -> dict:
    png_root, svg_root = roots_from_cache(cache)
    if not Path(png_root).is_dir() or not Path(svg_root).is_dir():
        raise InputError(f"{cache}: openclipart sample not found; run `make sample-data`")
    if "://" in p.out and not p.out.startswith("file://"):
        raise InputError(f"--out {p.out}: the embedded sample is served from this machine; give a local --out")
    out = Path(p.out.removeprefix("file://"))
    with hold(out, "shards", progress_log(p)):  # before the port is chosen: a second run must not touch it
        sample_dir = out / "sample"
        sample_dir.mkdir(parents=True, exist_ok=True)
        port_file = sample_dir / "port"
        with serve_directory(png_root, port=choose_port(port_file, port, progress_log(p))) as base_url:
            pool_file = sample_dir / "openclipart_pool.parquet"
            stats_file = sample_dir / f"openclipart_pool{layout.STATS_JSON}"
            previous = json.loads(stats_file.read_text()) if stats_file.exists() else {}
            if not pool_file.exists() or previous.get("base_url") != base_url:
                stats = write_sample_pool(
                    png_root, svg_root, base_url, pool_file, held_out_images=HELD_OUT_IMAGES, seed=HELD_OUT_SEED
                )
                write_json(stats_file, stats)
            progress_log(p)(f"sample: serving {png_root} at {base_url}")
            run_all(
                replace(
                    p,
                    inputs=(str(pool_file),),
                    # the loopback server is a private host: the pool keeps its URLs, the download reaches them
                    pool=replace(p.pool, allow_private_hosts=True, keep_cols=("category", "path")),
                    download=replace(p.download, allow_private_hosts=True),
                    licenses={str(pool_file): LICENSE},
                )
            )
        # Only now: the port file names the port of a finished dataset, so a failed or
        # refused run can never make the next rerun discard it for a different port.
        with atomic_path(port_file) as tmp:
            tmp.write_text(base_url.rsplit(":", 1)[1] + "\n")
    return {"base_url": base_url}
