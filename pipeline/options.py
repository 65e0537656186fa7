"""argparse types shared by the CLIs: bad values are refused before any work starts."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import fields

from .distribute import Engine

MEMORY_LIMIT = "2GB"  # DuckDB's memory limit where no --memory-limit is given
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*$", re.I)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text} must be at least {low}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


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


def add_engine_args(p: argparse.ArgumentParser, workers_default: int) -> None:
    """--engine, --ray-address, --max-part-retries and --workers: where a stage's parts run
    (the defaults are `Engine`'s, but for `workers_default`)."""
    defaults = {f.name: f.default for f in fields(Engine)}
    g = p.add_argument_group("engine (where the parts of a step run)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default=defaults["name"],
        help="local: a process pool on this machine; ray: tasks on a Ray cluster (outputs are "
        "identical) (default: %(default)s)",
    )
    g.add_argument(
        "--ray-address",
        default=defaults["ray_address"],
        metavar="HOST:PORT",
        help="Ray cluster to join with --engine ray (default: $RAY_ADDRESS if set, else start "
        "a Ray on this machine with --workers CPUs)",
    )
    g.add_argument(
        "--workers",
        type=positive_int,
        default=workers_default,
        help="parallel processes for --engine local (and a local Ray's CPUs); never changes the "
        "result (default: all cores, %(default)s)",
    )
    g.add_argument(
        "--max-part-retries",
        type=non_negative_int,
        default=defaults["max_part_retries"],
        help="run a failed part again this many times before the step fails (default: %(default)s)",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    return Engine(
        name=args.engine, workers=args.workers, ray_address=args.ray_address, max_part_retries=args.max_part_retries
    )
