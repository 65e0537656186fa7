"""`python -m pipeline <verb>`: one thin CLI per stage.

Every failure a user can act on ends as one `error: ...` line: bad input exit 2, a
resource fault exit 1 (see `errors`). Storage faults (disk full, quota, read-only, I/O
error) are mapped here, in one place, wherever they were raised: in this process, in a
worker process or on a Ray node (`errors.storage_fault` looks through the wrappers).
"""

from __future__ import annotations

import argparse
import re
import sys

from . import decontaminate, subset
from .audit import cli as audit_cli
from .browse import cli as browse_cli
from .collect import cli as collect_cli
from .distribute import PartFailed
from .errors import EXIT_INPUT_ERROR, EXIT_RESOURCE_ERROR, InputError, storage_fault
from .queries import cli as queries_cli

VERBS = {
    "queries": queries_cli,
    "shards": collect_cli,
    "pool": collect_cli,
    "match": collect_cli,
    "balance": collect_cli,
    "download": collect_cli,
    "audit": audit_cli,
    "browse": browse_cli,
    "decontaminate": decontaminate,
    "subset": subset,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Build a WIT-style image-text dataset the way CLIP's was made.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module in VERBS.items():
        module.add_parser(sub, name)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as e:
        fault = storage_fault(e)  # e.g. the audit's "cannot write ..." around a full disk: a resource fault
        if fault is not None:
            print(f"error: {_storage_message(fault, e, args)}", file=sys.stderr)
            return EXIT_RESOURCE_ERROR
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except PartFailed as e:  # a resource fault that outlived its retries: nothing was reported done
        fault = storage_fault(e)
        print(f"error: {_storage_message(fault, e, args) if fault else e}", file=sys.stderr)
        return EXIT_RESOURCE_ERROR
    except Exception as e:  # noqa: BLE001 - only storage faults are mapped; anything else is a bug: traceback
        fault = storage_fault(e)
        if fault is None:
            raise
        print(f"error: {_storage_message(fault, e, args)}", file=sys.stderr)
        return EXIT_RESOURCE_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


def _storage_message(fault: tuple[str | None, str], exc: BaseException, args: argparse.Namespace) -> str:
    """`PATH: PROBLEM`, plus the part it happened in; a fault that names no file (pyarrow's,
    for one) names the folders the verb writes to instead."""
    path, problem = fault
    m = re.match(r"part (.+?) failed \d+ time", str(exc)) if isinstance(exc, PartFailed) else None
    part = f" (part {m.group(1)})" if m else ""
    if path:
        return f"{path}: {problem}{part}"
    places = [
        f"{opt} {getattr(args, attr)}"
        for opt, attr in (("--out", "out"), ("--work-dir", "work_dir"))
        if getattr(args, attr, None)
    ]
    return f"{problem} while writing" + (f" to {' or '.join(places)}" if places else "") + part
