"""CLI for `python -m pipeline audit`."""

from __future__ import annotations

import argparse
import json
import sys

from ..options import MEMORY_LIMIT
from .views import views_help

EPILOG = """\
modes:
  (default)      write OUT/report.html (self-contained: inline CSS and SVG charts, no scripts,
                 opens offline in any browser), OUT/summary.json (every figure of the report,
                 nested by section; unavailable sections carry their reason) and OUT/report.md
                 (a short summary for terminals and pull requests)
  --query WORD   one query: source, Wikipedia statistics, texts matched before balancing,
                 keep probability, texts kept, images in the shards, a few captions with their
                 image paths (SHARDS/NNNNN.tar:KEY.jpg). Case-sensitive, like matching.
  --sql SQL      run SQL (DuckDB dialect) against the views below and print the result

{views}

  A view whose files are missing is not created; the report marks the sections that need it
  unavailable and says why. Step accounting comes from SHARDS/curation/<step>_stats.json.
  A --queries or --shards path that does not exist is an error (exit code 2).

examples:
  python -m pipeline audit                                   # shards/audit/report.html
  python -m pipeline audit --query dog
  python -m pipeline audit --sql "SELECT source, count(*) FROM queries GROUP BY ALL"
  python -m pipeline audit --format csv --sql "SELECT q.query, e.count FROM entry_counts e
      JOIN queries q USING (query_id) ORDER BY e.count DESC LIMIT 20"
  python -m pipeline audit --sql "SELECT status, count(*) FROM samples GROUP BY ALL"

object storage: --queries, --shards and --out also take fsspec URLs (s3://bucket/prefix, file://...,
any protocol whose fsspec backend is installed; s3fs is), so a dataset is audited where it lies.
DuckDB reads the parquet files through fsspec (s3: credentials and endpoint from the usual AWS_*
variables or ~/.aws), with no extension to download; the report files are uploaded to OUT.
A missing bucket or bad credentials is a one-line error naming the URL.
  python -m pipeline audit --queries s3://bucket/run1/query_lists --shards s3://bucket/run1/shards
  python -m pipeline audit --shards s3://bucket/run1/shards --out ./audit-run1   # report here

scale: everything is aggregated by DuckDB over the parquet files under --memory-limit
(spilling to a temporary folder), so a pool of hundreds of millions of rows is never
loaded into memory.
"""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="report on the query list, curation and shards (HTML, JSON, markdown; SQL)",
        description="Audit what the pipeline made: query list, pool and matching, balancing, downloads, "
        "captions. Writes a self-contained HTML report, summary.json and report.md, or answers "
        "--query/--sql interactively.",
        epilog=EPILOG.format(views=views_help()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--queries",
        default="query_lists",
        help="query list folder (with queries.parquet and build.json) or the queries.parquet file; "
        "a local path or an fsspec URL (default: %(default)s)",
    )
    p.add_argument(
        "--shards",
        default="shards",
        help="output folder of `pipeline shards` (NNNNN.parquet, curation/); a local path or an "
        "fsspec URL (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="report folder, a local path or an fsspec URL (default: SHARDS/audit, on the same store "
        "as the shards: s3://B/P/audit for --shards s3://B/P)",
    )
    m = p.add_mutually_exclusive_group()
    m.add_argument("--query", metavar="WORD", help="show one query's statistics and sample captions")
    m.add_argument("--sql", metavar="SQL", help="run SQL against the views and print the result")
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format of --query/--sql (default: %(default)s); the report mode prints the "
        "headline as JSON unless --quiet",
    )
    p.add_argument(
        "--memory-limit",
        default=MEMORY_LIMIT,
        help="DuckDB memory limit; it spills to a temporary folder beyond it (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="report mode: print nothing but errors")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.query is not None or args.sql is not None:
        from .lookup import format_query, query_info, run_sql
        from .views import open_inputs

        with open_inputs(args.queries, args.shards, memory_limit=args.memory_limit) as inp:
            text = (
                run_sql(inp, args.sql, args.format)
                if args.sql is not None
                else format_query(query_info(inp, args.query), args.format)
            )
        sys.stdout.write(text)
        return 0

    from .location import output_location
    from .report import build_audit

    out = output_location(args.shards, args.out)
    summary = build_audit(args.queries, args.shards, out, memory_limit=args.memory_limit, quiet=args.quiet)
    if not args.quiet:
        print(json.dumps({"report": str(out / "report.html"), **summary["headline"]}))
    return 0
