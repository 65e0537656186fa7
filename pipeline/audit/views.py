"""DuckDB views over the pipeline's files, and the steps' own accounting (`*_stats.json`).

A view exists only when its files do; otherwise `Inputs.missing[name]` says why, so the
report can mark a section unavailable instead of failing. Views re-read the parquet files
on every query (nothing is loaded up front), so a pool of hundreds of millions of rows
costs disk reads, not memory: DuckDB streams and, under `memory_limit`, spills.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .. import duck, layout
from ..errors import InputError, one_line
from ..io import sql_str
from ..options import MEMORY_LIMIT
from .location import Location, check_readable, locate

_CUR = f"SHARDS/{layout.CURATION}"
# name -> (what it is, where it comes from, columns). Printed by `--help`.
VIEWS: dict[str, tuple[str, str, str]] = {
    "queries": (
        "the query list, one row per query",
        f"QUERIES/{layout.QUERIES}",
        "query_id (row number = the id matches use), query, source (wordnet|unigram|bigram|title), count, pmi, views",
    ),
    "pool": (
        "candidate (image URL, text) pairs after normalising and de-duplicating",
        f"{_CUR}/{layout.POOL}/{layout.PART_GLOB}",
        "uid, url, text, source, kept columns (e.g. category, path)",
    ),
    "matches": (
        "pool texts that contain at least one query",
        f"{_CUR}/{layout.MATCHES}/{layout.PART_GLOB}",
        "uid, query_ids (list of query_id)",
    ),
    "entry_counts": (
        "matching texts per query over the whole pool (before balancing), zeros included",
        f"{_CUR}/{layout.ENTRY_COUNTS}",
        "query_id, count",
    ),
    "selected": (
        "texts kept by balancing (what the download step fetches)",
        f"{_CUR}/{layout.SELECTED}/{layout.PART_GLOB}",
        "uid, url, text, query_ids, queries (list of query strings), keep_prob, kept columns",
    ),
    "samples": (
        "one row per attempted download, success or failure (img2dataset's shard parquet files)",
        "SHARDS/NNNNN.parquet",
        "shard (NNNNN), key (image KEY.jpg in NNNNN.tar), status (success|failed_to_download|"
        "failed_to_resize), error_message, uid, url, caption, query_ids, queries, keep_prob, width, "
        "height (stored), original_width, original_height, sha256, exif, kept columns",
    ),
}

REQUIRED = {
    "queries": ("query", "source"),
    "pool": ("uid", "url", "text"),
    "matches": ("uid", "query_ids"),
    "entry_counts": ("query_id", "count"),
    "selected": ("uid", "query_ids"),
    "samples": ("key", "status"),
}


def views_help(width: int = 92) -> str:
    lines = ["views (for --sql; QUERIES = --queries, SHARDS = --shards):"]
    pad = " " * 17
    for name, (what, where, cols) in VIEWS.items():
        lines.append(f"  {name:<15}{what}")
        lines.append(f"{pad}from {where}")
        lines += textwrap.wrap(f"columns: {cols}", width, initial_indent=pad, subsequent_indent=pad + "  ")
    return "\n".join(lines)


@dataclass
class Inputs:
    """Where the files are, which views exist, and the steps' stats; owns the connection."""

    queries_file: Location  # a local Path, or a UPath for an fsspec URL (s3://...)
    shards: Location
    con: duckdb.DuckDBPyConnection
    available: dict[str, str] = field(default_factory=dict)  # view -> its file pattern
    missing: dict[str, str] = field(default_factory=dict)  # view -> why it is unavailable
    stats: dict[str, dict] = field(default_factory=dict)  # pool/match/balance/download/settings/build
    warnings: list[str] = field(default_factory=list)
    _tmp: str | None = None

    @property
    def curation(self) -> Location:
        return layout.curation(self.shards)

    def has(self, *names: str) -> bool:
        return all(n in self.available for n in names)

    def why_not(self, *names: str) -> str:
        return "; ".join(f"{n}: {self.missing[n]}" for n in names if n in self.missing) or "unavailable"

    def one(self, sql: str, params: list | None = None) -> tuple:
        return duck.one(self.con.execute(sql, params or []))

    def value(self, sql: str, params: list | None = None):
        return self.one(sql, params)[0]

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def columns(self, view: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE {view}").fetchall()]

    def close(self) -> None:
        self.con.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Inputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_queries(path: str | Path | Location) -> Location:
    """`--queries` may name the folder (query_lists) or the parquet file itself."""
    p = locate(path)
    return p / layout.QUERIES if p.is_dir() or p.suffix != ".parquet" else p


def _read_json(path: Location, warnings: list[str]) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.append(f"{path}: not readable JSON ({one_line(e)}); ignored")
        return None
    return data if isinstance(data, dict) else None


def open_inputs(
    queries: str | Path | Location,
    shards: str | Path | Location,
    memory_limit: str = MEMORY_LIMIT,
    threads: int | None = None,
) -> Inputs:
    """Connect DuckDB (memory-limited, spilling to a private temp folder) and create the views.

    QUERIES and SHARDS may be local paths or fsspec URLs; remote ones are checked first (a
    missing bucket or bad credentials is one InputError naming the URL). A path that does
    not exist is an InputError too: a mistyped --shards would otherwise give a report of
    nothing but unavailable sections, and exit 0. An existing folder lacking some outputs
    gets the report, with those sections marked unavailable."""
    queries_loc, shards_loc = locate(queries, "--queries"), locate(shards, "--shards")
    for loc, what in ((queries_loc, "--queries"), (shards_loc, "--shards")):
        check_readable(loc, what)
        if not loc.exists():
            raise InputError(f"{what} {loc}: no such file or folder")
    queries_file = resolve_queries(queries_loc)
    tmp = tempfile.mkdtemp(prefix="audit-duckdb-")
    try:
        # Remote files are read through fsspec; DuckDB must never fetch an extension (e.g. httpfs).
        # Every figure re-reads the same files: keep their footers (tens of thousands of shards).
        con = duck.connect(
            memory_limit=memory_limit,
            temp_directory=tmp,
            threads=threads,
            offline=True,
            remote=(queries_loc, shards_loc),
            preserve_insertion_order=False,
            parquet_metadata_cache=True,
        )
    except duck.MemoryLimitError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"--memory-limit {memory_limit!r}: {one_line(e)}") from None
    inp = Inputs(queries_file=queries_file, shards=shards_loc, con=con, _tmp=tmp)
    cur = inp.curation
    sources = {
        "queries": (inp.queries_file, None),
        "pool": (cur / layout.POOL, layout.PART_GLOB),
        "matches": (cur / layout.MATCHES, layout.PART_GLOB),
        "entry_counts": (cur / layout.ENTRY_COUNTS, None),
        "selected": (cur / layout.SELECTED, layout.PART_GLOB),
        "samples": (inp.shards, "[0-9]*.parquet"),
    }
    for name, (where, pattern) in sources.items():
        if pattern is None:
            if not where.is_file():
                inp.missing[name] = f"{where} not found"
                continue
            target = where
        else:
            if not where.is_dir():
                inp.missing[name] = f"{where} not found"
                continue
            if not any(where.glob(pattern)):
                inp.missing[name] = f"no {pattern} files in {where}"
                continue
            target = where / pattern
        src = f"read_parquet({sql_str(target)}, union_by_name = true"
        if name == "queries":
            sql = (
                f"SELECT file_row_number::BIGINT AS query_id, * EXCLUDE (file_row_number) "
                f"FROM {src}, file_row_number = true)"
            )
        elif name == "samples":
            sql = (
                f"SELECT regexp_extract(filename, '([^/\\\\]+)\\.parquet$', 1) AS shard, * EXCLUDE (filename) "
                f"FROM {src}, filename = true)"
            )
        else:
            sql = f"SELECT * FROM {src})"
        try:
            con.execute(f"CREATE VIEW {name} AS {sql}")
            cols = inp.columns(name)
        except duckdb.Error as e:
            inp.missing[name] = f"{target}: {one_line(e)}"
            con.execute(f"DROP VIEW IF EXISTS {name}")
            inp.warnings.append(f"{name} unavailable: {inp.missing[name]}")
            continue
        lacking = [c for c in REQUIRED[name] if c not in cols]
        if lacking:
            inp.missing[name] = f"{target}: missing columns {lacking} (has {cols})"
            con.execute(f"DROP VIEW {name}")
            inp.warnings.append(f"{name} unavailable: {inp.missing[name]}")
            continue
        inp.available[name] = str(target)

    for step in layout.STEPS:
        data = _read_json(layout.step_stats(cur, step), inp.warnings)
        if data is not None:
            inp.stats[step] = data
    build = _read_json(inp.queries_file.parent / layout.BUILD, inp.warnings)
    if build is not None:
        inp.stats["build"] = build
    return inp
