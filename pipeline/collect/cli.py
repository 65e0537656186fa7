"""CLIs for `python -m pipeline shards|pool|match|balance|download`.

Every option's default is read from the field of the same name in `config.py` (the step
configs and `ShardParams`), so `--help`, the CLI and library callers share one default.
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..options import add_engine_args, engine_from_args, memory_limit, non_negative_int, positive_float, positive_int
from .config import (
    POOL_FORMATS,
    BalanceConfig,
    DownloadConfig,
    MatchConfig,
    PoolConfig,
    ShardParams,
    default,
    from_options,
)

STEPS_EPILOG = """\
steps (each skips work already done; a changed input or setting redoes that step and
the ones after it):
  pool      read candidate (image URL, text) pairs from tables (parquet, csv, tsv, jsonl,
            optionally .gz/.zst) or Common Crawl WAT files; normalise, hash a uid, drop
            duplicates, refuse private/loopback hosts      -> OUT/curation/pool/
  match     find the queries each text contains (Aho-Corasick; word boundaries, or
            MetaCLIP's space-delimited substrings with --recipe metaclip)
                                                           -> OUT/curation/matches/
  balance   count matches per query (entry_counts.parquet), keep each text with
            probability 1 - prod(1 - min(1, t / count_q))  -> OUT/curation/selected/
  download  img2dataset into webdataset shards             -> OUT/NNNNN.tar/.parquet/_stats.json
Every step writes OUT/curation/<step>_stats.json, accounting for every input row.
"""


def _bounded(low: int, high: int, why: str):
    """An argparse type for an integer in [low, high]; `why` says where the upper bound comes
    from. Checked here, a bad value fails before any work, not late (a negative seed after
    three retries of every balance part, a port in a traceback from bind())."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:,} and {high:,} ({why})")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


seed_type = _bounded(0, 2**64 - 1, "the draws hash it as an unsigned 64-bit number")
port_type = _bounded(1, 65535, "a TCP port")
image_size_type = _bounded(1, 65535, "JPEG's largest side")
timeout_type = _bounded(1, 86_400, "seconds; a day at most")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=default(ShardParams, "out"), help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    add_engine_args(p, default(ShardParams, "engine").workers)


def _private_hosts_arg(g) -> None:
    """The host policy's switch: the pool step drops URLs of such hosts and the download step
    refuses to connect to them, so the verbs of both steps take it."""
    g.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="accept private, loopback and link-local hosts in the pool and when connecting (the local sample needs it)",
    )


def _pool_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("pool")
    g.add_argument(
        "--pool",
        action="append",
        dest="inputs",
        default=[],
        required=required,
        metavar="PATH",
        help="candidate pairs: parquet/csv/tsv/jsonl table or *.warc.wat.gz; path, glob or fsspec URL; repeatable",
    )
    g.add_argument(
        "--pool-format",
        choices=sorted(POOL_FORMATS),
        default=None,
        help="a known layout, setting the url/text/uid columns and the extra columns carried along: "
        "datacomp (CommonPool metadata: url, text, its 32-hex-digit uid, sizes, sha256, CLIP scores), "
        "laion (URL, TEXT, WIDTH, HEIGHT, similarity), img2dataset (its output parquet: url, caption, "
        "key, sha256); options given explicitly win",
    )
    g.add_argument(
        "--url-col", default=None, help=f"URL column of table inputs (default: {default(PoolConfig, 'url_col')})"
    )
    g.add_argument(
        "--text-col", default=None, help=f"text column of table inputs (default: {default(PoolConfig, 'text_col')})"
    )
    g.add_argument(
        "--uid-col",
        default=None,
        help="the source's own uid column, kept as the sample uid end to end (pool, matches, shards, "
        "audit, subset files) and deduplicated on; rows with a blank one are dropped (dropped_bad_uid) "
        "(default: none: uid = a hash of url and text)",
    )
    g.add_argument(
        "--keep-col",
        action="append",
        dest="keep_cols",
        default=[],
        metavar="COL",
        help="extra table column to carry along (repeatable)",
    )
    _private_hosts_arg(g)
    g.add_argument(
        "--memory-limit",
        type=memory_limit,
        default=default(PoolConfig, "memory_limit"),
        help="DuckDB memory limit of the deduplication (default: %(default)s)",
    )
    g.add_argument(
        "--rows-per-part",
        type=positive_int,
        default=default(PoolConfig, "rows_per_part"),
        help="rows per pool part (default: %(default)s)",
    )


def _match_args(p: argparse.ArgumentParser, recipe: bool = True) -> None:
    g = p.add_argument_group("match")
    g.add_argument(
        "--queries",
        default=default(ShardParams, "queries"),
        help="query list from `pipeline queries` (default: %(default)s)",
    )
    g.add_argument("--ignore-case", action="store_true", help="match case-insensitively (default: case-sensitive)")
    if recipe:
        g.add_argument(
            "--recipe",
            choices=("clip", "metaclip", "worldwide"),
            default=default(MatchConfig, "recipe"),
            help="matching rule: clip = whole words or phrases at word boundaries; metaclip = "
            "MetaCLIP v1's: ' ' + query + ' ' occurs in the text padded with spaces, with "
            ", . ; : ? ! ` surrounded by spaces and tab/newline/CR as spaces; case-sensitive, "
            "so not with --ignore-case; worldwide = MetaCLIP 2's: each text's language "
            "identified (py3langid), matched against its own language's queries only, a "
            "query padded with a space only beside a character of a spaced script; needs a "
            "list from `queries --recipe worldwide` (default: %(default)s)",
        )


def _balance_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("balance")
    g.add_argument(
        "--per-query",
        type=positive_int,
        default=default(BalanceConfig, "per_query"),
        help="t: expected pairs kept per query at most (default: %(default)s, CLIP's); "
        "worldwide: the reference language's t, the others' follow by equal tail share",
    )
    g.add_argument(
        "--balance",
        dest="mode",
        choices=("offline", "online"),
        default=default(BalanceConfig, "mode"),
        help="offline: keep pairs by the rule above and download only those (CLIP's, MetaCLIP's); "
        "online: download every matched pair, for balancing while training, with each query's "
        "counts over the whole matched set in OUT/entry_counts.parquet and each text's keep "
        "probability at t as keep_prob (default: %(default)s)",
    )
    g.add_argument(
        "--online-cap",
        type=positive_float,
        default=None,
        metavar="K",
        help="online: download at most about K x t pairs per query (min(1, K t / count) each), "
        "bounding the heads' download (default: every matched pair)",
    )
    g.add_argument(
        "--balance-reference",
        dest="reference_lang",
        default=default(BalanceConfig, "reference_lang"),
        metavar="LANG",
        help="worldwide: the language whose t is --per-query (default: %(default)s)",
    )
    g.add_argument(
        "--seed",
        type=seed_type,
        default=default(BalanceConfig, "seed"),
        help="seed of the keep/drop draws (default: %(default)s)",
    )


def _download_args(p: argparse.ArgumentParser, private_hosts: bool = False) -> None:
    """The download step's options; `private_hosts` adds the host policy's switch (for the
    `download` verb: `shards` has it among the pool options already)."""
    g = p.add_argument_group("download (img2dataset)")
    if private_hosts:
        _private_hosts_arg(g)
    g.add_argument(
        "--image-size",
        type=image_size_type,
        default=default(DownloadConfig, "image_size"),
        help="shorter side after resizing, aspect kept, never upscaled (default: %(default)s)",
    )
    g.add_argument(
        "--processes",
        type=positive_int,
        default=default(DownloadConfig, "processes"),
        help="download processes (default: %(default)s)",
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=default(DownloadConfig, "threads"),
        help="download threads per process (default: %(default)s)",
    )
    g.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=default(DownloadConfig, "samples_per_shard"),
        help="default: %(default)s",
    )
    g.add_argument(
        "--timeout",
        type=timeout_type,
        default=default(DownloadConfig, "timeout"),
        help="seconds per socket read (default: %(default)s)",
    )
    g.add_argument(
        "--download-deadline",
        type=positive_float,
        default=default(DownloadConfig, "download_deadline"),
        metavar="SECONDS",
        help="seconds one download may take in all: connecting, headers, body and redirects; "
        "--timeout bounds each read (default: %(default)s)",
    )
    g.add_argument(
        "--max-bytes",
        type=positive_int,
        default=default(DownloadConfig, "max_bytes"),
        help="largest image body accepted; a larger Content-Length is refused before reading (default: %(default)s)",
    )
    g.add_argument(
        "--retries",
        type=non_negative_int,
        default=default(DownloadConfig, "retries"),
        help="download attempts after the first, per image (default: %(default)s)",
    )
    g.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=default(DownloadConfig, "max_image_pixels"),
        help="refuse larger images (decompression bombs) (default: %(default)s)",
    )


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    if name == "shards":
        p = sub.add_parser(
            name,
            help="all collection steps: pool, match, balance, download",
            description="Collect (image, text) pairs whose text contains a query, "
            "class-balance them and download the images into webdataset shards.",
            epilog=STEPS_EPILOG,
            formatter_class=fmt,
        )
        _common(p)
        _pool_args(p, required=False)
        p.add_argument(
            "--sample-openclipart",
            metavar="CACHE",
            help="use the embedded openclipart sample in CACHE (from `make sample-data`) as the "
            "pool, served from a loopback HTTP server while the steps run",
        )
        p.add_argument(
            "--sample-port",
            type=port_type,
            default=None,
            help="port for the sample's server (default: the last finished run's, else 8642, else "
            "any free port); URLs, and so uids and the selection, depend on it",
        )
        _match_args(p)
        _balance_args(p)
        _download_args(p)
    else:
        helps = {
            "pool": "read and normalise candidate pools",
            "match": "find the queries in each text",
            "balance": "count matches per query and class-balance",
            "download": "download images into shards",
        }
        p = sub.add_parser(
            name, help=helps[name], description=helps[name].capitalize() + ".", epilog=STEPS_EPILOG, formatter_class=fmt
        )
        _common(p)
        if name == "pool":
            _pool_args(p, required=True)
        elif name == "match":
            _match_args(p)
        elif name == "balance":
            _match_args(p, recipe=False)  # balance reads the matches; only --queries matters
            _balance_args(p)
        else:
            _download_args(p, private_hosts=True)
    p.set_defaults(run=run, step=name)


def _with_pool_format(options: dict) -> dict:
    """The options with `--pool-format`'s columns where none was given explicitly (its
    extra columns first, then the --keep-col ones); unset column options dropped, so the
    config's defaults apply."""
    options = dict(options)
    preset = POOL_FORMATS.get(options.get("pool_format") or "", {})
    for name in ("url_col", "text_col", "uid_col", "uid_hex_digits"):
        if options.get(name) is None:
            options.pop(name, None)
            if name in preset:
                options[name] = preset[name]
    if "keep_cols" in preset:
        given = list(options.get("keep_cols") or [])
        options["keep_cols"] = list(preset["keep_cols"]) + [c for c in given if c not in preset["keep_cols"]]
    return options


def params_from_args(args: argparse.Namespace) -> ShardParams:
    """The run's `ShardParams`: each config's fields from the options of the same name (a
    verb without a step's options gets that step's defaults)."""
    options = _with_pool_format(vars(args))
    return ShardParams(
        out=args.out,
        queries=options.get("queries", default(ShardParams, "queries")),
        inputs=tuple(options.get("inputs", ())),
        pool=from_options(PoolConfig, options),
        match=from_options(MatchConfig, options),
        balance=from_options(BalanceConfig, options),
        download=from_options(DownloadConfig, options),
        engine=engine_from_args(args),
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    from .shards import run_all, run_step

    params = params_from_args(args)
    if params.match.recipe == "metaclip" and params.match.ignore_case:  # before `shards` spends time on the pool
        raise InputError("--ignore-case cannot be used with --recipe metaclip: MetaCLIP matches case-sensitively")
    params.balance.check()
    if args.step == "shards":
        if getattr(args, "sample_openclipart", None):
            from ..sample.stage import run_sample

            run_sample(params, args.sample_openclipart, port=args.sample_port)
        else:
            run_all(params)
    else:
        run_step(args.step, params)
    return 0
