"""One writer per output folder: `hold(folder, verb)` around everything a verb writes there.

Two runs writing the same folder corrupt each other (one clears the other's parts, the
sample's port file is overwritten), so every writing verb takes an exclusive lock on its
output folder first, and a second writer stops at once with one line, exit code 2:

    error: shards is in use by pid 4711 (shards since 2026-11-30T14:37:02+00:00)

Local folders: a kernel `flock` on FOLDER/.lock, through `filelock` (in the pinned stack
already, for torch, ray and huggingface_hub) rather than a hand-rolled fcntl call: it
retries when the lock file is unlinked between its open and its flock, never truncates
the holder's file when it loses, and lends us the locked descriptor to write the holder's
record (pid, host, verb, start time) that the refusal quotes. The kernel drops the lock
when the holding process dies, however it dies (and any child it forked, which shares the
lock and may still be writing), so a SIGKILLed run never blocks the rerun; its record stays in the file until the next holder overwrites it. On NFS, Linux
maps flock to NFS byte-range locks, which hold across machines; a filesystem without
flock (some FUSE mounts) gets a warning and no lock.

Object storage (s3://, gs://, ...) has no locks, and an emulation (a marker object with a
heartbeat and an expiry) would still let two writers that start together both win without
conditional writes, and would block a rerun after a crash until it expires. So remote
outputs are not locked: one writer per prefix is the user's responsibility, and `hold`
says so through `log` (a verb's progress messages) when given one.

Reentrant within a process: a verb that holds FOLDER may call code that takes it again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from . import storage
from .errors import InputError, OutputInUse

LOCK_NAME = ".lock"
_HELD: dict[str, int] = {}  # real path of a folder this process holds -> nesting depth


@contextlib.contextmanager
def hold(folder, verb: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold FOLDER (created if missing) exclusively while the block runs.

    Raises `OutputInUse` (an `InputError`: one line, exit 2) naming the holder when another
    process holds it. A remote folder is not locked (see the module docstring); `log`, if
    given, is told so.
    """
    where = storage.location(folder)
    if storage.is_remote(where):
        if log is not None:
            log(
                f"note: {storage.url(where)} is on object storage, which has no locks: make sure no other "
                "run writes there at the same time"
            )
        yield
        return
    path = Path(where)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{folder}: not a folder") from None
    except PermissionError as e:
        raise InputError(f"{folder}: cannot write there ({e.strerror})") from None
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return

    lock_file = path / LOCK_NAME
    record = (
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "verb": verb,
                "since": datetime.now().astimezone().isoformat(timespec="seconds"),
            }
        )
        + "\n"
    )

    def write_record(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)

    # preserve_lock_file: the file is never unlinked, so every process locks the same inode;
    # it also refuses filelock's fallback to an existence lock, which a SIGKILL would leave stale.
    lock: BaseFileLock | None  # None: the filesystem has no locks
    lock = FileLock(str(lock_file), timeout=0, preserve_lock_file=True, on_acquired=write_record)
    try:
        lock.acquire()
    except Timeout:
        raise OutputInUse(f"{folder} is in use by {_describe(lock_file)}") from None
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        lock = None
    if lock is None:
        print(
            f"warning: {folder}: this filesystem has no file locks; make sure no other run writes "
            "there at the same time",
            file=sys.stderr,
            flush=True,
        )
        yield
        return
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.truncate(lock_file, 0)  # still held: no contender can read a record of a finished run
        lock.release()
        if created:
            with contextlib.suppress(OSError):  # a run that wrote nothing leaves no folder behind
                if [p.name for p in path.iterdir()] == [LOCK_NAME]:
                    lock_file.unlink()
                    path.rmdir()


def holder(folder) -> dict | None:
    """The record of the process that holds (or last held) a local FOLDER, if any."""
    try:
        text = (Path(storage.location(folder)) / LOCK_NAME).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(lock_file: Path) -> str:
    """'pid N (VERB since TIME)'; the holder writes its record right after taking the lock, so
    an empty file is read again for a moment before giving up on details."""
    deadline = time.monotonic() + 2.0
    while True:
        info = holder(lock_file.parent)
        if info is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if info is None:
        return "another process"
    host = info.get("host")
    on = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {info.get('pid')}{on} ({info.get('verb')} since {info.get('since')})"
