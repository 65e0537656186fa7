"""CLI for `python -m pipeline browse`."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..options import MEMORY_LIMIT, memory_limit

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost")

EPILOG = """\
pages:
  /                   dataset totals, find a query (prefix or part of it, e.g. /?q=fro), the top
                      queries by images, the most frequent failure reasons
  /query/QUERY        one query (URL-quoted, case-sensitive like matching): source, Wikipedia count,
                      PMI or views, texts matched before balancing, keep probability, texts kept,
                      download attempts and outcomes by reason, its images 48 a page (?page=N)
  /search?text=T      images whose caption contains T (case-insensitive), 48 a page
  /sample/SHARD/KEY   one sample: image, caption, every field of its parquet row and KEY.json
  /image/SHARD/KEY    the image bytes, read from SHARD.tar with one byte-range read
  /failures           failed downloads by reason (img2dataset's error message); /failures/REASON
                      lists its samples

start-up: the shards' parquet files are read once into DuckDB tables in a temporary folder
(under --memory-limit, spilling beyond it): per-query image lists sorted by query, per-query
counts and outcomes, captions, failures. A query page is then a range lookup, not a scan of
the shards; the caption search reads the caption table until it has a page.

The server listens on 127.0.0.1 only (never on another interface) and answers only requests
addressed to 127.0.0.1 or localhost. To look from another machine, forward the port, e.g.
  ssh -L 8765:127.0.0.1:8765 HOST

--queries and --shards also take fsspec URLs (s3://bucket/prefix, ...), as `audit` does:
images are read from the tars where they lie.

examples:
  python -m pipeline browse                          # http://127.0.0.1:8765/
  python -m pipeline browse --port 0                 # a free port, printed on start
  python -m pipeline browse --shards s3://bucket/run1/shards --queries s3://bucket/run1/query_lists
"""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="browse the dataset in a local web app: queries, their images, captions, failures",
        description="Serve a small web app on 127.0.0.1 over the query list and the shards: find a query, "
        "see its numbers from Wikipedia to the shards and page through its images, search captions, "
        "open any sample, list failed downloads by reason. Stop it with Ctrl-C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--queries",
        default="query_lists",
        help="query list folder (with queries.parquet) or the queries.parquet file; a local path or an "
        "fsspec URL (default: %(default)s)",
    )
    p.add_argument(
        "--shards",
        default="shards",
        help="output folder of `pipeline shards` (NNNNN.tar, NNNNN.parquet, curation/); a local path or "
        "an fsspec URL (default: %(default)s)",
    )
    p.add_argument(
        "--port",
        default=str(DEFAULT_PORT),
        help="TCP port on 127.0.0.1; 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on: 127.0.0.1 (or localhost) only; any other is refused, since the "
        "browser has no authentication (default: %(default)s)",
    )
    p.add_argument(
        "--memory-limit",
        default=MEMORY_LIMIT,
        help="DuckDB memory limit for the index; it spills to a temporary folder beyond it (default: %(default)s)",
    )
    p.set_defaults(run=run)


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise InputError(f"--port {text!r}: not a port number (0 to 65535; 0 picks a free port)") from None
    if not 0 <= port <= 65535:
        raise InputError(f"--port {text}: not between 0 and 65535 (0 picks a free port)")
    return port


def check_host(text: str) -> None:
    if text.strip().lower() not in LOOPBACK:
        raise InputError(
            f"--host {text}: the browser listens on 127.0.0.1 only (it has no authentication); "
            "forward the port to reach it from elsewhere (ssh -L 8765:127.0.0.1:8765 HOST)"
        )


def run(args: argparse.Namespace) -> int:
    check_host(args.host)
    port = parse_port(args.port)
    try:
        limit = memory_limit(args.memory_limit)
    except argparse.ArgumentTypeError as e:
        raise InputError(f"--memory-limit {e}") from None

    from .server import serve

    return serve(args.queries, args.shards, port, limit)
