"""Progress bars for long stages: on stderr, and only when it is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol


class Bar(Protocol):
    """A progress bar as the stages drive it: a tqdm bar, or a stand-in with these methods."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


class PostfixBar(Bar, Protocol):
    """A `Bar` that also shows running stats after it (tqdm's ``set_postfix(name=value, ...)``)."""

    def set_postfix(self, **kwargs: Any) -> object: ...


def bar_factory(quiet: bool, desc: str, unit: str, data_size: bool = False) -> Callable[[int], PostfixBar] | None:
    """`make(total)` -> a tqdm bar, or None when quiet. `data_size`: the unit is bytes (KiB, MiB...)."""
    if quiet:
        return None
    from tqdm import tqdm

    def make(total: int):
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=True,
            unit_divisor=1024 if data_size else 1000,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.05,
            disable=None,
        )

    return make
