"""Out-of-core aggregation of the spilled counts with DuckDB.

Full English Wikipedia has hundreds of millions of distinct bigrams; summing them in a
Python dict would need far more memory than a workstation has. DuckDB's hash aggregation
spills to `temp_directory` under `memory_limit`, so the same code runs on the 6 MB sample
and on the 90 GB dump. Every candidate list is read back in a total order (ties broken by
the string itself), which makes the final query list independent of worker count.

The parts may lie in a remote work dir (object storage shared by a cluster's workers):
DuckDB reads them through fsspec (`storage.register_duckdb`). Its own database file and
spill folder are always on a local disk: beside the parts for a local work dir, in a
temporary folder of this machine for a remote one. The aggregation runs in the driver.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import duck, storage
from ..io import sql_file_list
from ..options import MEMORY_LIMIT
from ..storage import listing

BATCH = 65_536


def _parts(work_dir, name: str) -> str:
    return sql_file_list([storage.url(p) for p in listing(work_dir / name, "*.parquet")])


class Aggregates:
    def __init__(self, work_dir, memory_limit: str = MEMORY_LIMIT, threads: int = 1):
        self.work_dir = work_dir = storage.location(work_dir)
        self._local_dir: str | None = None
        if storage.is_remote(work_dir):
            self._local_dir = tempfile.mkdtemp(prefix="queries-aggregate-")
            local = Path(self._local_dir)
        else:
            local = work_dir
        db = local / "aggregate.duckdb"
        if db.exists():
            db.unlink()  # derived entirely from the parts; rebuilding is cheaper than trusting it
        tmp = local / "duckdb_tmp"
        tmp.mkdir(exist_ok=True)
        self.con = duck.connect(
            db,
            memory_limit=memory_limit,
            temp_directory=tmp,
            threads=max(1, int(threads)),
            preserve_insertion_order=False,
            enable_progress_bar=False,
        )
        self._registered: set = set()
        self._register(work_dir)
        self.total_tokens = 0

    def _register(self, folder) -> None:
        """Let DuckDB read a remote folder's parts (once per filesystem protocol)."""
        if storage.is_remote(folder) and folder.fs.protocol not in self._registered:
            storage.register_duckdb(self.con, folder)
            self._registered.add(folder.fs.protocol)

    def close(self) -> None:
        self.con.close()
        if self._local_dir is not None:
            shutil.rmtree(self._local_dir, ignore_errors=True)

    def build(self, min_bigram_count: int, min_doc_freq: int = 1) -> dict:
        """Sum the parts: unigrams (those in at least `min_doc_freq` articles, when the
        parts carry document frequencies); bigrams seen at least `min_bigram_count` times.
        N, the PMI's token total, is the sum over the unigram table so built."""
        stats = self.build_unigrams(min_doc_freq)
        return {**stats, **self.build_bigrams(min_bigram_count)}

    def build_unigrams(self, min_doc_freq: int = 1) -> dict:
        """The unigram and title tables (`build`'s first half)."""
        c = self.con
        uni_parts = _parts(self.work_dir, "uni")
        has_docs = "d" in {row[0] for row in c.execute(f"DESCRIBE SELECT * FROM read_parquet({uni_parts})").fetchall()}
        if has_docs:
            c.execute(
                f"CREATE TABLE uni AS SELECT w, sum(c)::BIGINT AS c FROM read_parquet({uni_parts}) "
                f"GROUP BY w HAVING sum(d) >= {int(min_doc_freq)}"
            )
        elif min_doc_freq > 1:
            raise ValueError("min_doc_freq needs counts with document frequencies (the metaclip recipe's)")
        else:
            c.execute(f"CREATE TABLE uni AS SELECT w, sum(c)::BIGINT AS c FROM read_parquet({uni_parts}) GROUP BY w")
        c.execute(
            f"CREATE TABLE titles AS SELECT title, chunk, pos FROM read_parquet({_parts(self.work_dir, 'titles')})"
        )
        distinct_uni, total = duck.one(c.execute("SELECT count(*), coalesce(sum(c), 0) FROM uni"))
        self.total_tokens = int(total)
        return {"tokens_in_unigram_table": int(total), "distinct_unigrams": int(distinct_uni)}

    def build_bigrams(self, min_bigram_count: int) -> dict:
        """The bigram table (`build`'s second half): bigrams seen at least `min_bigram_count` times."""
        c = self.con
        c.execute(
            f"CREATE TABLE bi AS SELECT b, sum(c)::BIGINT AS c FROM read_parquet({_parts(self.work_dir, 'bi')}) "
            f"GROUP BY b HAVING sum(c) >= {int(min_bigram_count)}"
        )
        kept_bi = duck.one(c.execute("SELECT count(*) FROM bi"))[0]
        (distinct_bi,) = duck.one(
            c.execute(f"SELECT count(DISTINCT b) FROM read_parquet({_parts(self.work_dir, 'bi')})")
        )
        return {"distinct_bigrams": int(distinct_bi), "bigrams_reaching_min_count": int(kept_bi)}

    def _stream(self, sql: str, params: list | None = None) -> Iterator[tuple]:
        """Rows in batches; its own cursor, because callers may abandon it half-read."""
        cur = self.con.cursor()
        try:
            for batch in cur.sql(sql, params=params or None).to_arrow_reader(BATCH):
                yield from zip(*(col.to_pylist() for col in batch.columns))
        finally:
            cur.close()

    def unigrams(self, min_count: int, case: str = "keep") -> Iterator[tuple[str, int]]:
        """(word, count) with count >= min_count, most frequent first. `case` "fold" sums a
        word's case variants (DuckDB's lower() as the key) and spells it as its most
        frequent surface form (ties: the smallest string)."""
        if case == "fold":
            return self._stream(
                """
                SELECT first(w ORDER BY c DESC, w) AS w, sum(c)::BIGINT AS c FROM uni
                GROUP BY lower(w) HAVING sum(c) >= ? ORDER BY c DESC, w
                """,
                [int(min_count)],
            )
        return self._stream("SELECT w, c FROM uni WHERE c >= ? ORDER BY c DESC, w", [int(min_count)])

    def bigrams(self, min_pmi: float | None) -> Iterator[tuple[str, int, float]]:
        """(bigram, count, pmi), pmi = log2(N c(xy) / (c(x) c(y))), highest first: the
        counted bigrams whose both words are in the unigram table, with pmi >= min_pmi
        (None: no floor). nltk's BigramAssocMeasures.pmi, N = the table's token total."""
        n = float(self.total_tokens)
        floor = "" if min_pmi is None else "WHERE pmi >= ?"
        return self._stream(
            f"""
            WITH scored AS (
                SELECT bi.b, bi.c,
                       log2(? * bi.c::DOUBLE / (x.c::DOUBLE * y.c::DOUBLE)) AS pmi
                FROM bi
                JOIN uni x ON x.w = split_part(bi.b, ' ', 1)
                JOIN uni y ON y.w = split_part(bi.b, ' ', 2)
            )
            SELECT b, c, pmi FROM scored {floor} ORDER BY pmi DESC, c DESC, b
            """,
            [n] if min_pmi is None else [n, float(min_pmi)],
        )

    def unigram_count_at(self, rank: int) -> int | None:
        """The count of the rank-th most frequent word (1-based, `unigrams`' order); None
        when there are fewer words."""
        row = self.con.execute("SELECT c FROM uni ORDER BY c DESC, w LIMIT 1 OFFSET ?", [int(rank) - 1]).fetchone()
        return None if row is None else int(row[0])

    def dump_title_count(self) -> int:
        """How many titles `dump_titles` gives."""
        return int(duck.one(self.con.execute("SELECT count(*) FROM titles WHERE NOT contains(title, ':')"))[0])

    def dump_titles(self) -> Iterator[tuple[str, None]]:
        """Article titles in dump order (used when no pageviews are given)."""
        return self._stream("SELECT title, NULL::BIGINT FROM titles WHERE NOT contains(title, ':') ORDER BY chunk, pos")

    def viewed_titles(self, pageview_dir, min_views: int, dump_articles_only: bool = True) -> Iterator[tuple[str, int]]:
        """Titles whose summed views reach min_views, most viewed first; titles with ':'
        are dropped. `dump_articles_only`: only titles of the dump's articles (clip);
        otherwise every viewed title, redirects and missing pages included (metaclip)."""
        pageview_dir = storage.location(pageview_dir)
        self._register(pageview_dir)
        join = (
            "JOIN (SELECT DISTINCT title FROM titles WHERE NOT contains(title, ':')) a USING (title)"
            if dump_articles_only
            else ""
        )
        return self._stream(
            f"""
            WITH views AS (
                SELECT title, sum(views)::BIGINT AS views
                FROM read_parquet({_parts(pageview_dir, "parts")}) GROUP BY title HAVING sum(views) >= ?
            )
            SELECT v.title, v.views FROM views v {join}
            WHERE NOT contains(v.title, ':')
            ORDER BY v.views DESC, v.title
            """,
            [int(min_views)],
        )

    def viewed_title_count(self, pageview_dir, min_views: int) -> int:
        """How many titles without ':' reach `min_views` (what `viewed_titles` would give with
        ``dump_articles_only=False``)."""
        pageview_dir = storage.location(pageview_dir)
        self._register(pageview_dir)
        sql = f"""
            SELECT count(*) FROM (
                SELECT title FROM read_parquet({_parts(pageview_dir, "parts")})
                WHERE NOT contains(title, ':') GROUP BY title HAVING sum(views) >= ?
            )
        """
        return int(duck.one(self.con.execute(sql, [int(min_views)]))[0])

    def occurrence_counts(self, queries: list[str]) -> list[int | None]:
        """Occurrences of each query as a token or as a counted bigram; None otherwise."""
        import pyarrow as pa

        table = pa.table({"i": pa.array(range(len(queries)), pa.int64()), "q": pa.array(queries, pa.string())})
        cur = self.con.cursor()
        cur.register("final_queries", table)
        rows = cur.execute(
            """
            SELECT f.i, coalesce(u.c, b.c) FROM final_queries f
            LEFT JOIN uni u ON u.w = f.q
            LEFT JOIN bi b ON b.b = f.q
            ORDER BY f.i
            """
        ).fetchall()
        cur.close()
        return [c for _, c in rows]
