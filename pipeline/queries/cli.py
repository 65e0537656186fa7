"""CLI for `python -m pipeline queries`."""

from __future__ import annotations

import argparse
import json

from ..options import add_engine_args, memory_limit, positive_float
from ..workers import default_workers

EPILOG = """\
sources, in order (a query already taken by an earlier source is skipped):
  1. wordnet  head word of every WordNet synset (underscores -> spaces, (a)/(p)/(ip) dropped)
  2. unigram  words of namespace-0 article text (markup removed) seen >= --min-count times
  3. bigram   adjacent word pairs with count >= --min-bigram-count and
              PMI = log2(N c(xy) / (c(x) c(y))) >= --min-pmi  (N = total tokens)
  4. title    article titles with summed pageviews >= --min-views (an hour counts only
              with >= --min-hourly-views views); without --pageviews, the dump's titles
  The list is capped at --size.

tokens:
  A token is a maximal run of Unicode letters/digits, optionally joined by single internal
  hyphens or apostrophes (state-of-the-art, don't, O'Brien); a possessive 's is not part
  of it (Einstein's -> Einstein). Case is kept: 'Gas' and 'gas' are different queries.
  Two tokens form a bigram only when separated by spaces/tabs alone: punctuation and
  line breaks end a phrase.

dumps:
  Plain, .bz2 or .gz pages-articles XML, local or any fsspec URL, globs allowed. For a
  multistream .bz2 whose -index.txt.bz2 lies beside it, every worker decompresses its
  own byte ranges, so decompression runs in parallel too.

outputs (in --out):
  queries.parquet  query, source, count, pmi, views; row order = query id
  queries.txt      one query per line, same order
  build.json       inputs, parameters, per-source counts, dump statistics, timings
  Counting is spilled to --work-dir in chunks; a killed run resumes where it stopped.
  --out and --work-dir may be fsspec URLs (s3://bucket/q), so that on a Ray cluster the
  workers on every node share the spilled chunks; the final aggregation runs on this
  machine, on its local disk.
"""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="build CLIP's query list from Wikipedia, pageviews and WordNet",
        description="Build CLIP's query list (up to 500,000 queries) from a Wikipedia dump, "
                    "Wikipedia pageviews and WordNet, as described in the CLIP paper (sec. 2.2).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i = p.add_argument_group("inputs (path, glob or fsspec URL)")
    i.add_argument("--wiki-dump", action="append", required=True, metavar="PATH",
                   help="MediaWiki pages-articles XML dump (.xml, .bz2, .gz); repeatable")
    i.add_argument("--wordnet", required=True, metavar="DIR",
                   help="WordNet 3.0 database folder (Debian /usr/share/wordnet or nltk_data corpora/wordnet)")
    i.add_argument("--pageviews", action="append", default=[], metavar="PATH",
                   help="Wikimedia pageview files: hourly pageviews-*.gz or daily/monthly "
                        "pageview_complete; only en / en.wikipedia lines are used; repeatable")
    i.add_argument("--out", default="query_lists",
                   help="output folder, local or fsspec URL (default: %(default)s)")

    t = p.add_argument_group("thresholds and caps")
    t.add_argument("--min-count", type=int, default=100, help="unigram minimum count (default: %(default)s)")
    t.add_argument("--max-unigrams", type=int, default=251_465, help="default: %(default)s")
    t.add_argument("--min-bigram-count", type=int, default=5,
                   help="bigram minimum count before PMI is considered (default: %(default)s)")
    t.add_argument("--min-pmi", type=float, default=30.0, help="bigram minimum PMI, log base 2 (default: %(default)s)")
    t.add_argument("--max-bigrams", type=int, default=100_646, help="default: %(default)s")
    t.add_argument("--min-views", type=int, default=70, help="title minimum summed views (default: %(default)s)")
    t.add_argument("--min-hourly-views", type=int, default=50,
                   help="an hour's views count only at or above this (default: %(default)s)")
    t.add_argument("--max-titles", type=int, default=61_235, help="default: %(default)s")
    t.add_argument("--size", type=int, default=500_000, help="cap on the whole list (default: %(default)s)")

    r = p.add_argument_group("resources")
    r.add_argument("--memory-limit", type=memory_limit, default="2GB",
                   help="DuckDB memory limit for aggregation; it spills to disk beyond it (default: %(default)s)")
    r.add_argument("--chunk-mb", type=positive_float, default=8.0,
                   help="MB of article text per counting chunk; bounds each worker's memory (default: %(default)s)")
    r.add_argument("--work-dir", default=None,
                   help="where spilled counts go, local or fsspec URL; on a cluster, a store every "
                        "node reaches (default: OUT/.work, removed after success)")
    r.add_argument("--keep-work", action="store_true", help="keep OUT/.work after success")
    r.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr")
    add_engine_args(p, default_workers())
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .build import QueryParams, build_queries

    params = QueryParams(**{k: v for k, v in vars(args).items() if k in QueryParams.__dataclass_fields__})
    build = build_queries(params)
    if not args.quiet:
        print(json.dumps({"total": build["total"], "sources": {k: v["added"] for k, v in build["sources"].items()}}))
    return 0
