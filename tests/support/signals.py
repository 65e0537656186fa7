"""Signals for the command-line processes the tests start."""

from __future__ import annotations

import signal


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT (Ctrl-C): SIGINT back at its
    default, as a terminal gives it. A suite started in the background (nohup, `&` in a
    script, some CI runners) hands its children SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
