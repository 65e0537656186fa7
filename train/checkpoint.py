"""Atomic checkpoints of plain state dicts, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything a resumed run needs to continue at the same step, LR and
stream position: model, optimizer and grad-scaler state, the step, the RNG states and
the data-stream state. Only tensors and plain Python containers go in, so loading never
unpickles arbitrary objects. Files are written under a temporary name and renamed, so a
kill mid-save leaves the previous checkpoint intact. A checkpoint folder may also be an
fsspec URL (`s3://bucket/runs/NAME/checkpoints`): object stores cannot rename, so the file
is written locally (under $TMPDIR) and uploaded under its final key in one PUT, which the
store makes visible only once complete; loading downloads it first.

Loading refuses anything else with a one-line `CheckpointError` naming the file: a missing
file, a file that is not a `torch.save` file, one whose pickle holds other objects than
tensors and plain containers (refused by `weights_only=True`, never loaded otherwise),
and a dict that is not a training checkpoint.

Format: {"model", "optimizer", "scaler", "step", "rng": [per rank], "data": {...},
"config"}. `data["streams"]` holds every rank's data-stream position
(`train.stream.TrainLoader.state_dict()`), so a resumed run sees exactly the samples the
uninterrupted run would have; when a position does not fit (other ranks, workers or
shards), the stream is reseeded at the checkpoint's step instead.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import one_line
from pipeline.storage import filesystem, is_url, location

PATTERN = re.compile(r"^step-(\d{8})\.pt$")
FORMAT = 2  # 1: no "format" key and no data stream positions
REQUIRED = ("model", "optimizer", "step", "rng")


class CheckpointError(ValueError):
    """A file that cannot be resumed from; the message is one line and names the file."""


def rng_state() -> dict:
    """This process's RNG states: torch (CPU, and the current CUDA device's), numpy, random."""
    np_state = np.random.get_state(legacy=True)  # ("MT19937", key, pos, has_gauss, gauss)
    assert isinstance(np_state, tuple), "numpy's global RandomState is not an MT19937"
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def path_for(ckpt_dir: Path | str, step: int) -> Path | str:
    if is_url(ckpt_dir):
        return f"{str(ckpt_dir).rstrip('/')}/step-{step:08d}.pt"
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def save(ckpt_dir: Path | str, step: int, state: dict, keep: int = 2) -> Path | str:
    """Write step-NNNNNNNN.pt atomically; keep the newest `keep` checkpoints."""
    if is_url(ckpt_dir):
        return _save_remote(str(ckpt_dir), step, state, keep)
    ckpt_dir = location(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".step-*.pt.tmp-*"):  # left by a save that was killed
        stale.unlink()
    path = Path(path_for(ckpt_dir, step))  # a Path: the folder is local
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces anything, or a crash could leave it empty
        os.replace(tmp, path)
        dir_fd = os.open(ckpt_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
    for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def _save_remote(url: str, step: int, state: dict, keep: int) -> str:
    final = str(path_for(url, step))  # a URL string
    fs, key = filesystem(final)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        local = os.path.join(tmp, "checkpoint.pt")
        torch.save(state, local)
        fs.put_file(local, key)  # one (multipart) upload: the key appears only when complete
    for old in list_checkpoints(url)[:-keep] if keep > 0 else []:
        fs.rm_file(filesystem(old)[1])
    return final


def list_checkpoints(ckpt_dir: Path | str) -> list:
    """step-*.pt in the folder, oldest first: Paths, or URL strings for a remote folder."""
    if is_url(ckpt_dir):
        url = str(ckpt_dir).rstrip("/")
        fs, root = filesystem(url)
        fs.invalidate_cache(root)  # another process (an earlier run) may have written since
        try:
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(root, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(f"{url}/{n}" for n in names if PATTERN.match(n))
    ckpt_dir = location(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if PATTERN.match(p.name))


def latest(ckpt_dir: Path | str) -> Path | str | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load(path: str | Path) -> dict:
    """A training checkpoint, loaded with `weights_only=True`; CheckpointError otherwise."""
    try:
        if is_url(path):
            fs, key = filesystem(str(path))
            with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
                local = os.path.join(tmp, "checkpoint.pt")
                fs.get_file(key, local)
                state = torch.load(local, map_location="cpu", weights_only=True)
        else:
            state = torch.load(location(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a text file, a truncated zip, ...: torch's errors vary
        raise CheckpointError(f"{path}: {load_problem(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (a {type(state).__name__}, not a dict)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(repr(k) for k in missing)})")
    if (
        not isinstance(state["model"], dict)
        or not isinstance(state["optimizer"], dict)
        or not isinstance(state["rng"], list)
        or not state["rng"]
        or not isinstance(state["step"], int)
    ):
        raise CheckpointError(f"{path}: not a training checkpoint (model, optimizer, step or rng of the wrong type)")
    fmt = state.get("format", 1)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(
            f"{path}: written by a newer trainer (checkpoint format {fmt!r}, this one reads up to {FORMAT})"
        )
    return state


def load_problem(exc: BaseException) -> str:
    """What is wrong with a file that `torch.load(weights_only=True)` refused, in a few words:
    never torch's own weights_only message, which suggests loading it unsafely."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a checkpoint file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        return (
            "not a checkpoint of this trainer: it holds Python objects"
            + what
            + " that are not loaded, only tensors and plain containers are"
        )
    if isinstance(exc, pickle.UnpicklingError):
        return f"not a checkpoint (not a file written by torch.save: {one_line(exc, typed=True)})"
    return f"not a checkpoint, or a damaged one ({one_line(exc, typed=True)})"


def load_latest(ckpt_dir: Path | str, log=lambda msg: None) -> tuple[Path | str | None, dict | None]:
    """The newest checkpoint that loads; unreadable newer ones are reported (`log`) and
    skipped. (None, None) when there is none; CheckpointError when there are some and none
    loads (naming the newest one's problem)."""
    found = list_checkpoints(ckpt_dir)
    failures: list[CheckpointError] = []
    for path in reversed(found):
        try:
            state = load(path)
        except CheckpointError as e:  # a damaged file: fall back to the one before
            failures.append(e)
            continue
        for failure in failures:
            log(f"warning: {failure}; resuming from an earlier checkpoint")
        return path, state
    if found:
        more = f" (nor do the {len(found) - 1} before it)" if len(found) > 1 else ""
        raise CheckpointError(f"{failures[0]}{more}; pass --resume PATH, or choose another --name")
    return None, None
