"""argparse types shared by the CLIs: bad values are refused before any work starts."""

from __future__ import annotations

import argparse
import math
import re

_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*$", re.I)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def memory_limit(text: str) -> str:
    """A DuckDB memory limit such as 2GB, 512MB or 1.5GiB (it is pasted into SQL: keep it strict)."""
    if not _MEMORY.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 2GB, 512MB or 1.5GiB")
    return text.strip().replace(" ", "")
