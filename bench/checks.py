"""What every benchmark checks before it reports a figure.

A timing is only worth reporting when the timed code did the work: a contender that
downloads nothing, matches nothing or logs no step finishes fast, and a ratio against it
reads as a speed-up. And two contenders compare only when they produce the same thing.
So each bench calls `produced` on every contender's output count and `same` on the
outputs that must agree, and a failed check ends the bench at once, with one line on
stderr naming the bench and what went wrong, and exit status 1 (never a JSON object
that a reader could take for a result).
"""

from __future__ import annotations

import sys
from typing import NoReturn


def fail(bench: str, message: str) -> NoReturn:
    """End the bench: one line on stderr, exit status 1."""
    print(f"error: bench/{bench}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def produced(bench: str, what: str, count: float) -> None:
    """`count` things of `what` came out; none (or a negative or NaN count) fails the bench."""
    if not count > 0:
        fail(bench, f"{what}: produced nothing ({count!r}), so its timing measures no work")


def same(bench: str, what: str, ours, theirs, show: int = 3) -> None:
    """The contenders' outputs `ours` and `theirs` must be equal; sets show what one has
    and the other lacks (at most `show` of each)."""
    if ours == theirs:
        return
    detail = ""
    if isinstance(ours, (set, frozenset)) and isinstance(theirs, (set, frozenset)):
        only_ours, only_theirs = sorted(ours - theirs, key=str), sorted(theirs - ours, key=str)
        detail = (
            f": {len(only_ours)} only in the first (e.g. {only_ours[:show]}), "
            f"{len(only_theirs)} only in the second (e.g. {only_theirs[:show]})"
        )
    elif isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        detail = f": {ours!r} != {theirs!r}"
    fail(bench, f"{what} differ{detail}")
