"""Atomic checkpoints of plain state dicts, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything a resumed run needs to continue at the same step, LR and
stream position: model, optimizer and grad-scaler state, the step, the RNG states and
the data-stream state. Only tensors and plain Python containers go in, so loading never
unpickles arbitrary objects. Files are written under a temporary name and renamed, so a
kill mid-save leaves the previous checkpoint intact. A checkpoint folder may also be an
fsspec URL (`s3://bucket/runs/NAME/checkpoints`): object stores cannot rename, so the file
is written locally (under $TMPDIR) and uploaded under its final key in one PUT, which the
store makes visible only once complete; loading downloads it first.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import store

PATTERN = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def path_for(ckpt_dir: Path | str, step: int) -> Path | str:
    if store.is_url(ckpt_dir):
        return f"{str(ckpt_dir).rstrip('/')}/step-{step:08d}.pt"
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def save(ckpt_dir: Path | str, step: int, state: dict, keep: int = 2) -> Path | str:
    """Write step-NNNNNNNN.pt atomically; keep the newest `keep` checkpoints."""
    if store.is_url(ckpt_dir):
        return _save_remote(str(ckpt_dir), step, state, keep)
    ckpt_dir = store.local_path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".step-*.pt.tmp-*"):  # left by a save that was killed
        stale.unlink()
    path = path_for(ckpt_dir, step)
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
    final = path_for(url, step)
    fs, key = store.filesystem(final)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        local = os.path.join(tmp, "checkpoint.pt")
        torch.save(state, local)
        fs.put_file(local, key)  # one (multipart) upload: the key appears only when complete
    for old in list_checkpoints(url)[:-keep] if keep > 0 else []:
        fs.rm_file(store.filesystem(old)[1])
    return final


def list_checkpoints(ckpt_dir: Path | str) -> list:
    """step-*.pt in the folder, oldest first: Paths, or URL strings for a remote folder."""
    if store.is_url(ckpt_dir):
        url = str(ckpt_dir).rstrip("/")
        fs, root = store.filesystem(url)
        fs.invalidate_cache(root)  # another process (an earlier run) may have written since
        try:
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(root, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(f"{url}/{n}" for n in names if PATTERN.match(n))
    ckpt_dir = store.local_path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if PATTERN.match(p.name))


def latest(ckpt_dir: Path | str) -> Path | str | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load(path: str | Path) -> dict:
    if store.is_url(path):
        fs, key = store.filesystem(str(path))
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            local = os.path.join(tmp, "checkpoint.pt")
            fs.get_file(key, local)
            return torch.load(local, map_location="cpu", weights_only=True)
    return torch.load(store.local_path(path), map_location="cpu", weights_only=True)


def load_latest(ckpt_dir: Path | str, log=lambda msg: None) -> tuple[Path | str | None, dict | None]:
    """The newest checkpoint that loads; an unreadable one is reported and skipped."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return path, load(path)
        except Exception as e:  # noqa: BLE001 - a damaged file: fall back to the one before
            log(f"{path}: unreadable ({type(e).__name__}: {e}); trying the previous checkpoint")
    return None, None
