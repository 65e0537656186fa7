"""Run folders on a local disk or on object storage (`--runs s3://bucket/runs`).

Object stores have neither append nor rename. So for a remote run folder, the files that
grow (metrics.jsonl) or are written by other code (evaluation results) live in a local
staging folder and are uploaded whole: each upload is one PUT, which S3 only makes
visible once it is complete, i.e. as atomic as the local os.replace. Checkpoints go the
same way (written locally, then uploaded under their final key; see checkpoint.py), after
the metrics, so a stored checkpoint's steps are always in the stored metrics.
TensorBoard stays local: its writer appends to event files.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(path: str | Path) -> bool:
    """A remote (fsspec) location: `s3://...`, `gs://...`; `file://` and plain paths are local."""
    m = _SCHEME.match(str(path))
    return m is not None and m.group(1).lower() != "file"


def local_path(path: str | Path) -> Path:
    s = str(path)
    return Path(s[len("file://") :] if s.lower().startswith("file://") else s)


def filesystem(url: str):
    """(fsspec filesystem, path without the scheme) for a remote URL; ValueError when no
    fsspec backend can open it (e.g. gs:// without gcsfs)."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except Exception as exc:  # ImportError of the backend, bad URL
        raise ValueError(f"{url}: cannot open ({type(exc).__name__}: {exc})") from None


def bucket_of(url: str) -> str:
    """`s3://bucket/a/b` -> `s3://bucket`."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def check_bucket(url: str, what: str) -> None:
    """ValueError `WHAT: no such bucket 'NAME'` when it does not exist: a one-line error up
    front instead of a traceback at the first write (or, for data, a run that reads nothing)."""
    fs, _ = filesystem(url)
    root = bucket_of(url)
    try:
        found = fs.exists(root)
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint down, ...
        raise ValueError(f"{what}: cannot reach {root} ({type(exc).__name__}: {exc})") from None
    if not found:
        raise ValueError(f"{what}: no such bucket '{root.split('://', 1)[1]}'")


class RunFolder:
    """RUNS/NAME: config.json, metrics.jsonl, eval/, checkpoints/ (local or remote).

    `local` is where files are written: the run folder itself, or for a remote one a
    temporary staging folder whose files `upload` copies to the store. `checkpoints` is
    the checkpoint folder for `train.checkpoint` (a Path, or a URL string).
    """

    def __init__(self, runs: str | Path, name: str):
        self.remote = is_url(runs)
        self._uploaded: dict[str, float] = {}
        self._staging: tempfile.TemporaryDirectory | None = None
        if self.remote:
            self.url = f"{str(runs).rstrip('/')}/{name}"
            check_bucket(self.url, f"--runs {runs}")
            self.fs, self._root = filesystem(self.url)
            self.checkpoints: str | Path = f"{self.url}/checkpoints"
            self.tensorboard = Path("runs") / name / "tensorboard"
        else:
            self._local = local_path(runs) / name
            self.url = str(self._local)
            self.checkpoints = self._local / "checkpoints"
            self.tensorboard = self._local / "tensorboard"

    @property
    def local(self) -> Path:
        if not self.remote:
            return self._local
        if self._staging is None:  # created on first use: only the rank that writes needs one
            self._staging = tempfile.TemporaryDirectory(prefix="train-run-")
        return Path(self._staging.name)

    def download(self, rel: str) -> bool:
        """Copy RUN/rel into the staging folder if it is stored; whether it was."""
        if not self.remote:
            return (self._local / rel).exists()
        dest = self.local / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(f"{self._root}/{rel}", str(dest))
        except FileNotFoundError:
            return False
        return True

    def upload(self, rel: str, min_interval: float = 0.0) -> None:
        """Store staging/rel as RUN/rel (one PUT); skipped if the last upload of `rel` is
        less than `min_interval` seconds old. No-op for a local run folder."""
        if not self.remote:
            return
        now = time.monotonic()
        if min_interval and now - self._uploaded.get(rel, -1e18) < min_interval:
            return
        self.fs.put_file(str(self.local / rel), f"{self._root}/{rel}")
        self._uploaded[rel] = now

    def write_text(self, rel: str, text: str) -> None:
        path = self.local / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.upload(rel)

    def close(self) -> None:
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None
