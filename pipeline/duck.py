"""One place that opens and configures a DuckDB connection (`connect`).

The stages use DuckDB to read parquet files out of core: the query build aggregates its
spilled counts (`queries/aggregate.py`), the audit builds views over the outputs
(`audit/views.py`) and the dataset card counts images per source (`collect/card.py`).
Each asks for the settings it needs; a setting left at None keeps DuckDB's default.

Remote files (s3://, gs://, ...) are read through their fsspec filesystems
(`storage.register_duckdb`), never through DuckDB's httpfs extension; ``offline=True``
also stops DuckDB from installing or loading any extension it would fetch at run time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb

from .io import sql_str
from .storage import register_duckdb


class MemoryLimitError(duckdb.Error):
    """DuckDB could not read the `memory_limit` given to `connect` (the message is DuckDB's)."""


def _literal(value: bool | int | str | Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return sql_str(value)


def connect(
    database: str | Path = ":memory:",
    *,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    threads: int | None = None,
    offline: bool = False,
    remote: Iterable = (),
    **settings: bool | int | str,
) -> duckdb.DuckDBPyConnection:
    """A connection to `database` (in memory by default) with these settings applied.

    `memory_limit` (e.g. ``"2GB"``) is set first, so a value DuckDB cannot read is the
    first error; `temp_directory` is where DuckDB spills under it; `threads` (None or 0:
    DuckDB's default, one per core). `offline` turns off extension autoinstall and
    autoload. `remote`: locations (`storage.location`) whose fsspec filesystems DuckDB may
    read through (local ones are skipped). Any other keyword is one more ``SET name =
    value`` (e.g. ``preserve_insertion_order=False``), applied in the order given.

    If a setting fails, the connection is closed and DuckDB's error raised; for a bad
    `memory_limit` that is a `MemoryLimitError` (a ``duckdb.Error`` with DuckDB's message),
    which callers word for their own option."""
    con = duckdb.connect(str(database))
    try:
        if memory_limit is not None:
            try:
                con.execute(f"SET memory_limit = {sql_str(memory_limit)}")
            except duckdb.Error as e:
                raise MemoryLimitError(str(e)) from e
        if temp_directory is not None:
            con.execute(f"SET temp_directory = {sql_str(temp_directory)}")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        if offline:
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
        for name, value in settings.items():
            con.execute(f"SET {name} = {_literal(value)}")
        register_duckdb(con, *remote)
    except BaseException:
        con.close()
        raise
    return con


def one(result: duckdb.DuckDBPyConnection) -> tuple:
    """The row of an executed query that always returns exactly one (an aggregate without
    GROUP BY, such as ``count(*)``, or ``current_setting``): `fetchone` without the None."""
    row = result.fetchone()
    assert row is not None, "a query that always returns one row returned none"
    return row
