"""`python -m pipeline <verb>`: one thin CLI per stage; bad input -> one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from .distribute import PartFailed
from .errors import EXIT_INPUT_ERROR, InputError
from .audit import cli as audit_cli
from .collect import cli as collect_cli
from .queries import cli as queries_cli

VERBS = {
    "queries": queries_cli,
    "shards": collect_cli,
    "pool": collect_cli,
    "match": collect_cli,
    "balance": collect_cli,
    "download": collect_cli,
    "audit": audit_cli,
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
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except PartFailed as e:  # a resource fault that outlived its retries: nothing was reported done
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
