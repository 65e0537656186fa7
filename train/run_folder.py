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

import tempfile
import time
from pathlib import Path

from pipeline.storage import check_bucket, filesystem, is_url, location


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
            self._local = location(runs) / name
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

    def hold(self, held) -> None:
        """Hold the run folder for the whole run (`held`, an ExitStack, lets go): a flock on
        RUNS/NAME/.lock (`pipeline.outlock`), dropped by the kernel however the process ends,
        so a second run of the same name, or a resumed run beside ranks of an earlier one,
        stops at once with an InputError.

        Only global rank 0 writes into the run folder, so only it takes the lock: on a shared
        filesystem every node sees the same folder (flock holds across NFS clients), and a
        lock per node would shut the other nodes out. A remote (s3://) run folder is not
        locked: object storage has no locks (outlock says so on stderr).
        """
        import sys

        from pipeline.errors import InputError, one_line
        from pipeline.outlock import hold

        target = self.url if self.remote else self.local
        try:
            held.enter_context(hold(target, "train", log=lambda m: print(m, file=sys.stderr)))
        except InputError:
            raise
        except OSError as e:
            raise InputError(f"{target}: cannot lock the run folder ({one_line(e, typed=True)})") from None

    def close(self) -> None:
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None
