"""Training processes die with their launcher.

torchrun starts each rank in a session of its own (`start_new_session=True`), so killing
the launcher's process group, or the launcher itself with SIGKILL, would leave the ranks
running: training on, writing checkpoints and metrics into the run folder, then hanging
in teardown, while a resumed run could start beside them. `die_with_parent()` asks Linux
to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG): a rank's parent is
torchrun's agent (it runs in torchrun's own process and starts the ranks from its main
thread, which lives as long as the agent), a DataLoader worker's parent is its rank. A
thread watching the parent pid backs it up where prctl is not available (not Linux), and
covers a parent that died before the call.

Checkpoints are written atomically, so a rank killed mid-save leaves the previous one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 1.0
_armed_in: int | None = None  # the pid that armed it: a forked child must arm its own


def under_torchrun() -> bool:
    """Started by a torchrun agent (torch.distributed.run sets this for its workers)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def die_with_parent(expected_parent: int | None = None) -> None:
    """SIGKILL this process as soon as its parent process exits.

    `expected_parent`: the parent's pid when known; if the parent has already changed
    (the launcher died before this call), the process exits at once.
    """
    global _armed_in
    if _armed_in == os.getpid():
        return
    _armed_in = os.getpid()
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the thread alone
            pass
    if expected_parent is not None and parent != expected_parent:
        _exit_orphaned(expected_parent)
    threading.Thread(target=_watch, args=(parent,), name="die-with-parent", daemon=True).start()


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            _exit_orphaned(parent)


def _exit_orphaned(parent: int) -> None:
    print(f"error: process {os.getpid()} exits: its launcher (pid {parent}) is gone", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
