"""The browser's tables: built once at start-up from the audit's views, so a page is a
range lookup instead of a scan of the shards' parquet files.

`Index.build` reads the `samples` view (every shard's parquet file) once into a staging
table and derives these tables from it, in a DuckDB database file in a private temporary
folder (attached as `ix`; DuckDB caches it under `--memory-limit` and spills the sorts to
the audit's temp folder, so the index does not have to fit in memory):

  query_samples    (query_id, shard, key, caption) of every image, one row per query it
                   matched, sorted by query_id: a query's page of images is a range read
                   (DuckDB skips the row groups whose query_id min/max exclude it). A caption
                   is stored once per query of its text.
  query_outcomes   (query_id, status, reason, n): download attempts per query and outcome
  query_counts     (query_id, attempts, images, kept): per query; `kept` (texts kept by
                   balancing) from one pass over the `selected` view
  captions         (shard, key, caption) of every image, sorted by (shard, key)
  failures         (reason, status, shard, key, url, caption) of every failed download,
                   sorted by reason; failure_reasons (reason, n, statuses)
  queries          a copy of the query list; entry_counts (query_id, count) a copy of
                   curation/entry_counts.parquet (or counted from the matches)

`queries` and `entry_counts` shadow the views of the same name for the browser's cursors
(`search_path`), so `pipeline.audit.lookup.query_info` (source, Wikipedia statistics,
matches before balancing, keep probability) reads the copies.

What still scans: the query search (`/?q=`) reads the in-memory copy of the query list
(prefix and substring, case-insensitive); the caption filter (`/search?text=`) reads
`captions` in (shard, key) order and stops once it has a page (a word that is rare or
absent reads the whole table); the sample page reads its own shard's parquet file (one
file, never the others).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ..audit.lookup import query_info
from ..audit.views import Inputs
from ..errors import InputError
from ..io import sql_str

PER_PAGE = 48  # images per page of a query or a caption search
FAILURES_PER_PAGE = 50
SEARCH_LIMIT = 50  # queries listed by a query search
TOP_QUERIES = 30
REASONS_SHOWN = 1000  # on the failures page; the start page shows 10
IX = "ix"  # the attached index database
SEARCH_PATH = f"{IX}.main,memory.main"  # the index's tables first, then the audit's views


class Index:
    """The tables above, queried through one cursor per call (DuckDB connections are not
    thread-safe; the server answers from several threads)."""

    def __init__(self, inp: Inputs, folder: str):
        self.inp = inp
        self.folder = folder  # holds the index database; removed by close()
        self.totals: dict = {}
        self.shards: frozenset[str] = frozenset()
        self.has_query_ids = False
        self.has_kept = False
        self.has_entry_counts = False
        self.seconds = 0.0
        self._lock = threading.Lock()

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, inp: Inputs) -> Index:
        """Read the views once and write the tables; InputError when there is nothing to browse."""
        if not inp.has("samples"):
            raise InputError(
                f"--shards {inp.shards}: nothing to browse ({inp.why_not('samples')}); "
                "run `python -m pipeline shards` first"
            )
        if not inp.has("queries"):
            raise InputError(f"--queries {inp.queries_file}: {inp.why_not('queries')}")
        folder = tempfile.mkdtemp(prefix="browse-index-")
        index = cls(inp, folder)
        try:
            index._build()
        except BaseException:
            index.close()
            raise
        return index

    def _build(self) -> None:
        start = time.perf_counter()
        con, inp = self.inp.con, self.inp
        # The tables are written in ORDER BY order (their zone maps are what make lookups ranges).
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"ATTACH {sql_str(Path(self.folder) / 'index.duckdb')} AS {IX}")
        cols = set(inp.columns("samples"))
        self.has_query_ids = "query_ids" in cols

        def col(name: str, sql_type: str) -> str:
            return name if name in cols else f"NULL::{sql_type}"

        # A failure's reason is img2dataset's error message, grouped as the audit's download
        # figures group it; a failure without one is listed under its status.
        message = "nullif(error_message, '')" if "error_message" in cols else "NULL"
        con.execute(f"""CREATE TABLE {IX}._samples AS
            SELECT shard, key, status,
                   CASE WHEN status = 'success' THEN NULL ELSE coalesce({message}, status, 'unknown') END AS reason,
                   {col("caption", "VARCHAR")} AS caption, {col("url", "VARCHAR")} AS url,
                   {col("query_ids", "INTEGER[]")} AS query_ids
            FROM samples""")
        con.execute(f"""CREATE TABLE {IX}.captions AS
            SELECT shard, key, caption FROM {IX}._samples WHERE status = 'success' ORDER BY shard, key""")
        con.execute(f"""CREATE TABLE {IX}.query_samples AS
            SELECT * FROM (SELECT unnest(query_ids)::BIGINT AS query_id, shard, key, caption
                           FROM {IX}._samples WHERE status = 'success')
            ORDER BY query_id, shard, key""")
        con.execute(f"""CREATE TABLE {IX}.query_outcomes AS
            SELECT query_id, status, reason, count(*)::BIGINT AS n
            FROM (SELECT unnest(query_ids)::BIGINT AS query_id, status, reason FROM {IX}._samples)
            GROUP BY ALL ORDER BY query_id, n DESC, status, reason""")
        self.has_kept = inp.has("selected") and "query_ids" in inp.columns("selected")
        kept = (
            "SELECT query_id, count(*)::BIGINT AS kept FROM "
            "(SELECT unnest(query_ids)::BIGINT AS query_id FROM selected) GROUP BY ALL"
            if self.has_kept
            else "SELECT NULL::BIGINT AS query_id, NULL::BIGINT AS kept WHERE false"
        )
        con.execute(f"""CREATE TABLE {IX}.query_counts AS
            SELECT query_id, coalesce(o.attempts, 0)::BIGINT AS attempts, coalesce(o.images, 0)::BIGINT AS images,
                   k.kept
            FROM (SELECT query_id, sum(n) AS attempts, coalesce(sum(n) FILTER (WHERE status = 'success'), 0) AS images
                  FROM {IX}.query_outcomes GROUP BY ALL) o
            FULL JOIN ({kept}) k USING (query_id)
            ORDER BY query_id""")
        con.execute(f"""CREATE TABLE {IX}.failures AS
            SELECT reason, status, shard, key, url, caption FROM {IX}._samples
            WHERE status <> 'success' ORDER BY reason, shard, key""")
        con.execute(f"""CREATE TABLE {IX}.failure_reasons AS
            SELECT reason, count(*)::BIGINT AS n, list(DISTINCT status ORDER BY status) AS statuses
            FROM {IX}.failures GROUP BY reason ORDER BY n DESC, reason""")
        con.execute(f"CREATE TABLE {IX}.queries AS SELECT * FROM memory.main.queries ORDER BY query_id")
        if inp.has("entry_counts"):
            con.execute(
                f"CREATE TABLE {IX}.entry_counts AS SELECT query_id, count FROM memory.main.entry_counts "
                "ORDER BY query_id"
            )
            self.has_entry_counts = True
        elif inp.has("matches"):
            con.execute(f"""CREATE TABLE {IX}.entry_counts AS
                SELECT query_id, count(*)::BIGINT AS count
                FROM (SELECT unnest(query_ids)::BIGINT AS query_id FROM memory.main.matches)
                GROUP BY ALL ORDER BY query_id""")
            self.has_entry_counts = True
        r = con.execute(f"""SELECT count(*), count(*) FILTER (WHERE status = 'success'),
                                   count(DISTINCT shard) FROM {IX}._samples""").fetchone()
        assert r is not None
        self.shards = frozenset(s for (s,) in con.execute(f"SELECT DISTINCT shard FROM {IX}._samples").fetchall())
        con.execute(f"DROP TABLE {IX}._samples")
        self.totals = {
            "queries": int(inp.value(f"SELECT count(*) FROM {IX}.queries")),
            "queries_with_images": int(inp.value(f"SELECT count(*) FROM {IX}.query_counts WHERE images > 0")),
            "kept_after_balancing": int(inp.value("SELECT count(*) FROM memory.main.selected"))
            if inp.has("selected")
            else None,
            "attempts": int(r[0]),
            "images": int(r[1]),
            "failures": int(r[0]) - int(r[1]),
            "shards": int(r[2]),
            "failure_reasons": int(inp.value(f"SELECT count(*) FROM {IX}.failure_reasons")),
        }
        self.seconds = time.perf_counter() - start

    def close(self) -> None:
        try:
            self.inp.con.execute(f"DETACH DATABASE IF EXISTS {IX}")
        except duckdb.Error:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- reading ----------------------------------------------------------------------------
    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            cur = self.inp.con.cursor()
        try:
            cur.execute(f"SET search_path = {sql_str(SEARCH_PATH)}")
            yield cur
        finally:
            cur.close()

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        with self.cursor() as cur:
            res = cur.execute(sql, params or [])
            names = [d[0] for d in res.description]
            return [dict(zip(names, r)) for r in res.fetchall()]

    def search_queries(self, text: str, limit: int = SEARCH_LIMIT) -> list[dict]:
        """Queries containing `text` (case-insensitive): the exact one first, then those that
        start with it, then the rest; each group by images in the shards, most first."""
        needle = text.strip().lower()
        if not needle:
            return []
        return self._rows(
            f"""SELECT q.query_id, q.query, q.source, coalesce(c.images, 0) AS images,
                       coalesce(c.attempts, 0) AS attempts, c.kept
                FROM (SELECT query_id, query, source, lower(query) AS lq FROM {IX}.queries
                      WHERE contains(lower(query), ?)) q
                LEFT JOIN {IX}.query_counts c USING (query_id)
                ORDER BY q.lq <> ?, NOT starts_with(q.lq, ?), images DESC, q.query, q.query_id
                LIMIT {int(limit)}""",
            [needle, needle, needle],
        )

    def top_queries(self, limit: int = TOP_QUERIES) -> list[dict]:
        return self._rows(
            f"""SELECT c.query_id, q.query, q.source, c.images, c.attempts, c.kept
                FROM (SELECT * FROM {IX}.query_counts WHERE images > 0
                      ORDER BY images DESC, query_id LIMIT {int(limit)}) c
                JOIN {IX}.queries q USING (query_id)
                ORDER BY c.images DESC, c.query_id"""
        )

    def query(self, word: str) -> dict | None:
        """`query_info`'s story of one query (case-sensitive, like matching) plus what the
        index counted for it; None for a query not in the list."""
        available = {"queries": self.inp.available["queries"]}
        if self.has_entry_counts:
            available["entry_counts"] = "index"
        with self.cursor() as cur:
            # query_info on the index's copies only: every figure it would scan the views for
            # (selected, samples) comes from the index below.
            view = dataclasses.replace(self.inp, con=cur, available=available, warnings=[], _tmp=None)
            try:
                info = query_info(view, word)
            except InputError:
                return None
            qid = info["query_id"]
            c = cur.execute(f"SELECT attempts, images, kept FROM {IX}.query_counts WHERE query_id = ?", [qid])
            counts = c.fetchone() or (0, 0, None)
            outcomes = cur.execute(
                f"SELECT status, reason, n FROM {IX}.query_outcomes WHERE query_id = ? ORDER BY n DESC, status, reason",
                [qid],
            ).fetchall()
        info["download_attempts"], info["images_in_shards"] = int(counts[0]), int(counts[1])
        if self.has_kept:
            info["kept_after_balancing"] = int(counts[2] or 0)
        info["outcomes"] = [{"status": s, "reason": r, "count": int(n)} for s, r, n in outcomes]
        return info

    def query_images(self, query_id: int, page: int, per_page: int = PER_PAGE) -> list[dict]:
        return self._rows(
            f"""SELECT shard, key, caption FROM {IX}.query_samples WHERE query_id = ?
                ORDER BY shard, key LIMIT {int(per_page)} OFFSET {int((page - 1) * per_page)}""",
            [query_id],
        )

    def caption_search(self, text: str, page: int, per_page: int = PER_PAGE) -> tuple[list[dict], bool]:
        """A page of images whose caption contains `text` (case-insensitive), in (shard, key)
        order, and whether there is another page. Scans `captions` until the page is full."""
        rows = self._rows(
            f"""SELECT shard, key, caption FROM {IX}.captions WHERE contains(lower(caption), ?)
                ORDER BY shard, key LIMIT {int(per_page) + 1} OFFSET {int((page - 1) * per_page)}""",
            [text.lower()],
        )
        return rows[:per_page], len(rows) > per_page

    def failure_reasons(self, limit: int = REASONS_SHOWN) -> list[dict]:
        """The most frequent reasons first (a message that names its URL makes one reason per sample)."""
        return self._rows(
            f"SELECT reason, n, statuses FROM {IX}.failure_reasons ORDER BY n DESC, reason LIMIT {int(limit)}"
        )

    def failure_count(self, reason: str) -> int:
        rows = self._rows(f"SELECT n FROM {IX}.failure_reasons WHERE reason = ?", [reason])
        return int(rows[0]["n"]) if rows else 0

    def failures(self, reason: str, page: int, per_page: int = FAILURES_PER_PAGE) -> list[dict]:
        return self._rows(
            f"""SELECT status, shard, key, url, caption FROM {IX}.failures WHERE reason = ?
                ORDER BY shard, key LIMIT {int(per_page)} OFFSET {int((page - 1) * per_page)}""",
            [reason],
        )

    def sample(self, shard: str, key: str) -> dict | None:
        """The parquet row of one sample, read from its own shard's file only."""
        if shard not in self.shards:
            return None
        path = self.inp.shards / f"{shard}.parquet"
        rows = self._rows(f"SELECT * FROM read_parquet({sql_str(path)}) WHERE key = ? LIMIT 1", [key])
        return rows[0] if rows else None

    def query_names(self, query_ids: list[int]) -> dict[int, str]:
        if not query_ids:
            return {}
        rows = self._rows(
            f"SELECT query_id, query FROM {IX}.queries WHERE query_id IN (SELECT unnest(?::BIGINT[]))",
            [list(query_ids)],
        )
        return {int(r["query_id"]): r["query"] for r in rows}
