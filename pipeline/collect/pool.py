"""Step 1 of collection: the candidate pool of (image URL, text) pairs.

Inputs (any mix, in the order given after glob expansion):

* tables: ``.parquet``; ``.csv``, ``.tsv``, ``.jsonl`` (also ``.ndjson``), optionally
  compressed by extension (``.gz``, ``.zst``/``.zstd``, ``.bz2``, ``.xz``), with the URL in
  `url_col` and the text in `text_col`. CSV and TSV follow the same rules (header row,
  ``"`` quoting with doubled quotes, newlines allowed inside quoted fields; TSV only
  changes the delimiter), as pandas and img2dataset write and read them.
* Common Crawl WAT files (``*.wat``, ``*.wat.gz``): every ``<img src alt title>`` of every
  page (see `wat.py`); extra columns available there: ``page_url``, ``alt``, ``title``.

Output in `out_dir`: ``part-NNNNN.parquet`` (columns ``uid``, ``url``, ``text``, ``source``
and the `keep_cols`, all strings; at most `rows_per_part` rows each, rows in input order;
one empty part when nothing is kept) and ``_stats.json`` (written last: its presence means
the pool is complete).

Per row, in this order (the first failing test names the counter):

1. unreadable row: a CSV row with the wrong number of fields, a JSONL line that is not a
   JSON object, a url/text JSON value that is not a string -> ``dropped_malformed``;
2. url or text not valid UTF-8 (CSV/TSV/JSONL/parquet bytes, lone surrogates from JSON
   escapes) -> ``dropped_bad_encoding``. The row is dropped rather than repaired: a URL with
   U+FFFD in it fetches the wrong thing, and a caption with holes matches queries badly.
   Kept extra columns are repaired instead (U+FFFD), counted in ``keep_cols_bad_encoding``;
3. url null or blank -> ``dropped_null_url`` (surrounding whitespace is stripped);
4. text null or empty after `normalise_text` -> ``dropped_empty_text``;
5. `check_url` -> ``dropped_scheme`` / ``dropped_bad_url`` / ``dropped_private_host``;
6. text longer than `max_text_chars` (default 4096 code points, far beyond CLIP's 77
   tokens but enough for any real caption) is cut there (then right-stripped) and counted
   in ``text_truncated``; the row is kept;
7. ``uid`` = `make_uid(url, text)` of the final pair; a uid seen earlier in the input order
   (any input) -> ``dropped_duplicate``.

``rows_in == kept + sum(dropped_*)`` always holds (blank JSONL lines are not rows).

Columns: a table without `url_col`, `text_col` or one of `keep_cols` (parquet schema, CSV
header, first JSONL record) is an InputError naming the file and the columns it has; a later
JSONL record without a key has null there. Parquet url/text columns must be strings (or
binary). Kept columns are written as strings: numbers and booleans as text (``640``,
``true``), lists and structs as JSON. WAT inputs offer ``page_url``, ``alt`` and ``title``;
other kept columns are null for their rows.

How it scales: each input is streamed in batches (parquet row groups, 16 MiB CSV blocks,
JSONL lines, WAT records) by one worker process, normalised and spilled to
``_work/in-NNNNN-*.parquet`` with a global position ``pos = input_index << 40 | row``.
DuckDB then finds, out of core under `memory_limit`, the positions of every repeated uid
except its first, and the parts are written by streaming the spills in order and skipping
those positions (one input is read by one worker: split huge inputs into several files
to use more cores). Nothing depends on timing or the number of workers, so parts are
byte-identical for any `workers`. Every file is written under a temporary name and renamed;
finished spills are reused by a rerun, and a rerun with the same inputs (path, size,
mtime) and parameters after a complete run returns the stored stats without work.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from ..errors import InputError
from ..io import expand_inputs, file_fingerprint
from .urls import check_url, normalise_text
from .wat import WAT_STAT_KEYS, iter_wat_pairs

FORMAT_VERSION = 1
POS_SHIFT = 40  # pos = input index << 40 | row number in that input
BATCH_ROWS = 65_536  # rows per spill row group and per input batch
ROW_GROUP_ROWS = 32_768  # rows per row group in the output parts
CSV_BLOCK_BYTES = 16 << 20  # a CSV row must fit in one block
MAX_LISTED_COLUMNS = 40

CORE_COLUMNS = ("uid", "url", "text", "source")
DROP_KEYS = (
    "dropped_malformed",
    "dropped_bad_encoding",
    "dropped_null_url",
    "dropped_empty_text",
    "dropped_scheme",
    "dropped_bad_url",
    "dropped_private_host",
    "dropped_duplicate",
)
STAT_KEYS = ("rows_in", "kept", *DROP_KEYS, "text_truncated", "keep_cols_bad_encoding", *WAT_STAT_KEYS)

_COMPRESSIONS = {"gz": "gzip", "gzip": "gzip", "zst": "zstd", "zstd": "zstd", "bz2": "bz2", "xz": "xz"}
_TABLE_FORMATS = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "tsv": "tsv",
                  "jsonl": "jsonl", "ndjson": "jsonl"}


# --------------------------------------------------------------------------- formats


def input_format(path: str) -> tuple[str, str | None]:
    """(format, compression) from the file name: ``csv|tsv|jsonl|parquet|wat``, codec or None."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    parts = name.split(".")
    compression = None
    if len(parts) > 2 and parts[-1] in _COMPRESSIONS:
        compression = _COMPRESSIONS[parts.pop()]
    ext = parts[-1] if len(parts) > 1 else ""
    if ext == "wat":
        if compression not in (None, "gzip"):
            raise InputError(f"{path}: WAT files must be plain or gzipped (.wat or .wat.gz)")
        return "wat", None  # warcio reads gzip member by member itself
    fmt = _TABLE_FORMATS.get(ext)
    if fmt is None:
        raise InputError(
            f"{path}: unknown pool format (expected .parquet, .csv, .tsv, .jsonl, optionally "
            ".gz/.zst/.bz2/.xz, or a Common Crawl .warc.wat.gz)"
        )
    if fmt == "parquet" and compression:
        raise InputError(f"{path}: compressed parquet files are not supported (parquet compresses itself)")
    return fmt, compression


@dataclass(frozen=True)
class _Params:
    url_col: str
    text_col: str
    keep_cols: tuple
    allow_private_hosts: bool
    max_text_chars: int


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def _missing_columns_error(path: str, what: str, missing: list[str], have: list[str]) -> InputError:
    listed = ", ".join(have[:MAX_LISTED_COLUMNS]) or "(none)"
    if len(have) > MAX_LISTED_COLUMNS:
        listed += f", ... ({len(have)} in all)"
    miss = ", ".join(repr(m) for m in missing)
    return InputError(f"{path}: {what} has no column {miss}; its columns are: {listed}")


def _needed_columns(p: _Params) -> list[str]:
    cols = [p.url_col, p.text_col]
    for c in p.keep_cols:
        if c not in cols:
            cols.append(c)
    return cols


def _decode_extra(values: list, st: dict) -> list:
    out = []
    for v in values:
        if v.__class__ is bytes:
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                v = v.decode("utf-8", "replace")
                st["keep_cols_bad_encoding"] += 1
        out.append(v)
    return out


def _is_stringish(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)
            or getattr(pa.types, "is_binary_view", lambda _: False)(t))


def _arrow_values(arr: pa.Array) -> list:
    """Python values of a string/binary column: str where valid UTF-8, else bytes."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return arr.to_pylist()
        except UnicodeDecodeError:  # invalid UTF-8 stored in a string column
            return arr.view(pa.large_binary() if pa.types.is_large_string(t) else pa.binary()).to_pylist()
    return arr.to_pylist()


def _arrow_extra(arr: pa.Array, st: dict) -> list:
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if _is_stringish(t):
        return _decode_extra(_arrow_values(arr), st)
    if pa.types.is_nested(t):
        return [None if v is None else json.dumps(v, ensure_ascii=False, default=str, sort_keys=True)
                for v in arr.to_pylist()]
    try:
        return arr.cast(pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [None if v is None else str(v) for v in arr.to_pylist()]


def _read_parquet(path: str, p: _Params, st: dict) -> Iterator[tuple]:
    with fsspec.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        missing = [c for c in _needed_columns(p) if c not in names]
        if missing:
            raise _missing_columns_error(path, "parquet file", missing, names)
        for c in (p.url_col, p.text_col):
            t = pf.schema_arrow.field(c).type
            t = t.value_type if pa.types.is_dictionary(t) else t
            if not _is_stringish(t):
                raise InputError(f"{path}: column {c!r} has type {t}; expected a string column")
        cols = _needed_columns(p)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols, use_threads=False):
            urls = _arrow_values(batch.column(p.url_col))
            texts = _arrow_values(batch.column(p.text_col))
            extras = [_arrow_extra(batch.column(c), st) for c in p.keep_cols]
            yield urls, texts, extras


def _read_csv(path: str, compression: str | None, delimiter: str, p: _Params, st: dict) -> Iterator[tuple]:
    read_opts = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
    bad = [0]

    def skip_invalid(row) -> str:
        bad[0] += 1
        return "skip"

    parse_opts = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                    invalid_row_handler=skip_invalid)
    with fsspec.open(path, "rb", compression=compression) as f:
        try:
            names = pacsv.open_csv(f, read_options=read_opts, parse_options=parse_opts).schema.names
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                raise InputError(f"{path}: empty file, no header row with column names") from None
            raise
    missing = [c for c in _needed_columns(p) if c not in names]
    if missing:
        raise _missing_columns_error(path, "header", missing, names)
    cols = _needed_columns(p)
    convert = pacsv.ConvertOptions(include_columns=cols, column_types={c: pa.binary() for c in cols})
    bad[0] = 0
    with fsspec.open(path, "rb", compression=compression) as f:
        reader = pacsv.open_csv(f, read_options=read_opts, parse_options=parse_opts, convert_options=convert)
        for batch in reader:
            if bad[0]:
                st["rows_in"] += bad[0]
                st["dropped_malformed"] += bad[0]
                bad[0] = 0
            yield (batch.column(p.url_col).to_pylist(), batch.column(p.text_col).to_pylist(),
                   [_decode_extra(batch.column(c).to_pylist(), st) for c in p.keep_cols])
        if bad[0]:
            st["rows_in"] += bad[0]
            st["dropped_malformed"] += bad[0]


def _iter_lines(f, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a binary stream (works for every decompressor fsspec hands back)."""
    rest = b""
    while True:
        block = f.read(chunk)
        if not block:
            break
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _json_extra(v, st: dict):
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogate from a \ud8xx escape
            st["keep_cols_bad_encoding"] += 1
            return v.encode("utf-8", "replace").decode("utf-8")
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _read_jsonl(path: str, compression: str | None, p: _Params, st: dict) -> Iterator[tuple]:
    urls: list = []
    texts: list = []
    extras: list[list] = [[] for _ in p.keep_cols]
    checked = False
    ucol, tcol = p.url_col, p.text_col
    with fsspec.open(path, "rb", compression=compression) as f:
        for n, line in enumerate(_iter_lines(f)):
            if n == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue  # blank lines are not rows
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError:
                st["rows_in"] += 1
                st["dropped_bad_encoding"] += 1
                continue
            try:
                obj = json.loads(s)
            except (ValueError, RecursionError):
                obj = None
            if not isinstance(obj, dict):
                st["rows_in"] += 1
                st["dropped_malformed"] += 1
                continue
            if not checked:
                missing = [c for c in _needed_columns(p) if c not in obj]
                if missing:
                    raise _missing_columns_error(path, f"first record (line {n + 1})", missing, list(obj))
                checked = True
            u = obj.get(ucol)
            t = obj.get(tcol)
            if not (u is None or isinstance(u, str)) or not (t is None or isinstance(t, str)):
                st["rows_in"] += 1
                st["dropped_malformed"] += 1
                continue
            urls.append(u)
            texts.append(t)
            for j, c in enumerate(p.keep_cols):
                extras[j].append(_json_extra(obj.get(c), st))
            if len(urls) >= BATCH_ROWS:
                yield urls, texts, extras
                urls, texts, extras = [], [], [[] for _ in p.keep_cols]
    if urls:
        yield urls, texts, extras


def _read_wat(path: str, p: _Params, st: dict) -> Iterator[tuple]:
    urls: list = []
    texts: list = []
    extras: list[list] = [[] for _ in p.keep_cols]
    for url, text, extra in iter_wat_pairs(path, st):
        urls.append(url)
        texts.append(text)
        for j, c in enumerate(p.keep_cols):
            v = extra.get(c)
            extras[j].append(None if v is None else str(v))
        if len(urls) >= BATCH_ROWS:
            yield urls, texts, extras
            urls, texts, extras = [], [], [[] for _ in p.keep_cols]
    if urls:
        yield urls, texts, extras


def _read_source(path: str, p: _Params, st: dict) -> Iterator[tuple]:
    fmt, compression = input_format(path)
    if fmt == "parquet":
        return _read_parquet(path, p, st)
    if fmt in ("csv", "tsv"):
        return _read_csv(path, compression, "," if fmt == "csv" else "\t", p, st)
    if fmt == "jsonl":
        return _read_jsonl(path, compression, p, st)
    return _read_wat(path, p, st)


# --------------------------------------------------------------------------- phase 1: spill


def _spill_schema(keep_cols: tuple) -> pa.Schema:
    fields = [pa.field("pos", pa.int64()), pa.field("h", pa.uint64()), pa.field("uid", pa.string()),
              pa.field("url", pa.string()), pa.field("text", pa.string())]
    fields += [pa.field(f"x{j}", pa.string()) for j in range(len(keep_cols))]
    return pa.schema(fields)


class _Spill:
    """Kept rows of one input, written to a parquet file in BATCH_ROWS row groups."""

    def __init__(self, path: Path, index: int, keep_cols: tuple):
        self.schema = _spill_schema(keep_cols)
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="lz4")
        self.base = index << POS_SHIFT
        self.n = 0
        self.cols: list[list] = [[] for _ in self.schema]

    def flush(self) -> None:
        if self.cols[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self.cols, self.schema)]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.cols = [[] for _ in self.schema]

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _filter_batch(urls: list, texts: list, extras: list[list], st: dict, p: _Params, spill: _Spill) -> None:
    """The per-row rules (module docstring, steps 2-6); kept rows go to `spill`."""
    n = len(urls)
    st["rows_in"] += n
    maxc = p.max_text_chars
    allow = p.allow_private_hosts
    cols = spill.cols
    c_pos, c_h, c_uid, c_url, c_text = cols[:5]
    c_extra = cols[5:]
    blake2b = hashlib.blake2b
    for i in range(n):
        u = urls[i]
        t = texts[i]
        try:
            if u.__class__ is bytes:
                u = u.decode("utf-8")
            if t.__class__ is bytes:
                t = t.decode("utf-8")
        except UnicodeDecodeError:
            st["dropped_bad_encoding"] += 1
            continue
        if u is None:
            st["dropped_null_url"] += 1
            continue
        u = u.strip()
        if not u:
            st["dropped_null_url"] += 1
            continue
        t = normalise_text(t)
        if not t:
            st["dropped_empty_text"] += 1
            continue
        reason = check_url(u, allow)
        if reason is not None:
            st["dropped_" + reason] += 1
            continue
        if len(t) > maxc:
            t = t[:maxc].rstrip()
            st["text_truncated"] += 1
        try:
            digest = blake2b((u + "\x00" + t).encode("utf-8"), digest_size=8).digest()
        except UnicodeEncodeError:  # lone surrogates (JSON escapes)
            st["dropped_bad_encoding"] += 1
            continue
        c_pos.append(spill.base | spill.n)
        spill.n += 1
        c_h.append(int.from_bytes(digest, "big"))
        c_uid.append(digest.hex())
        c_url.append(u)
        c_text.append(t)
        for j, col in enumerate(c_extra):
            col.append(extras[j][i])
        if len(c_pos) >= BATCH_ROWS:
            spill.flush()
            cols = spill.cols
            c_pos, c_h, c_uid, c_url, c_text = cols[:5]
            c_extra = cols[5:]


_READ_ERRORS = (pa.ArrowException, OSError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError,
                zstandard.ZstdError)


def _spill_input(index: int, path: str, spill_path: str, stats_path: str, params: dict) -> dict:
    """Phase 1 for one input (runs in a worker): normalise + filter, spill, write its stats."""
    p = _Params(**{**params, "keep_cols": tuple(params["keep_cols"])})
    st = dict.fromkeys(STAT_KEYS, 0)
    spill_path_p = Path(spill_path)
    tmp = spill_path_p.with_name(f".{spill_path_p.name}.tmp-{os.getpid()}")
    spill = _Spill(tmp, index, p.keep_cols)
    try:
        try:
            for urls, texts, extras in _read_source(path, p, st):
                _filter_batch(urls, texts, extras, st, p, spill)
        except InputError:
            raise
        except _READ_ERRORS as e:
            why = _first_line(e)
            if "straddl" in why:
                why = (f"a CSV row is longer than {CSV_BLOCK_BYTES >> 20} MiB, or a quoted field is never "
                       f"closed ({why})")
            raise InputError(f"{path}: cannot be read as {input_format(path)[0]}: {why}") from None
        spill.close()
        os.replace(tmp, spill_path_p)
    finally:
        if tmp.exists():
            spill.writer.close()
            tmp.unlink()
    st["kept"] = spill.n  # before the cross-input dedup
    sp = Path(stats_path)
    stmp = sp.with_name(f".{sp.name}.tmp-{os.getpid()}")
    stmp.write_text(json.dumps({"path": path, "stats": st}, sort_keys=True))
    os.replace(stmp, sp)
    return st


# --------------------------------------------------------------------------- phase 2: dedup


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _find_duplicates(spills: list[Path], out: Path, work: Path, memory_limit: str, threads: int) -> None:
    """Write the sorted positions of every row whose uid appeared at a lower position."""
    tmp_dir = work / "duckdb_tmp"
    tmp_dir.mkdir(exist_ok=True)
    con = duckdb.connect()
    try:
        try:
            con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
        except duckdb.Error as e:
            raise InputError(f"memory limit {memory_limit!r}: {_first_line(e)}") from None
        con.execute(f"SET temp_directory = {_sql_str(str(tmp_dir))}")
        con.execute(f"SET threads = {max(1, int(threads))}")
        con.execute("SET enable_progress_bar = false")
        files = "[" + ", ".join(_sql_str(str(s)) for s in spills) + "]"
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        con.execute(
            f"""COPY (
                WITH s AS (SELECT pos, h FROM read_parquet({files})),
                     g AS (SELECT h, min(pos) AS first FROM s GROUP BY h HAVING count(*) > 1)
                SELECT s.pos FROM s JOIN g ON s.h = g.h WHERE s.pos <> g.first ORDER BY s.pos
            ) TO {_sql_str(str(tmp))} (FORMAT parquet)"""
        )
        os.replace(tmp, out)
    finally:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)


class _DupCursor:
    """Streams the sorted duplicate positions; `upto(hi)` returns those <= hi not yet taken."""

    def __init__(self, path: Path):
        self._f = pq.ParquetFile(str(path))
        self.total = self._f.metadata.num_rows
        self._it = self._f.iter_batches(batch_size=BATCH_ROWS, columns=["pos"])
        self._buf: list[int] = []
        self._done = False

    def upto(self, hi: int) -> set:
        taken = set()
        while True:
            while self._buf and self._buf[-1] <= hi:  # _buf is kept in descending order
                taken.add(self._buf.pop())
            if self._buf or self._done:
                return taken
            try:
                batch = next(self._it)
            except StopIteration:
                self._done = True
                return taken
            self._buf = batch.column(0).to_pylist()[::-1]

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------- phase 3: parts


def _out_schema(keep_cols: tuple) -> pa.Schema:
    return pa.schema([pa.field(c, pa.string()) for c in (*CORE_COLUMNS, *keep_cols)])


class _PartWriter:
    """Writes rows into part-NNNNN.parquet files of at most `rows_per_part` rows."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_part: int):
        self.out_dir = out_dir
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.parts: list[str] = []
        self._buf: list[pa.Table] = []
        self._buf_rows = 0
        self._writer = None
        self._tmp: Path | None = None
        self._rows_in_part = 0

    def _chunk(self) -> int:
        return min(ROW_GROUP_ROWS, self.rows_per_part - self._rows_in_part)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buf.append(table)
        self._buf_rows += table.num_rows
        while self._buf_rows >= self._chunk():
            self._emit(self._chunk())

    def _open(self) -> None:
        name = f"part-{len(self.parts):05d}.parquet"
        self._tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        self._writer = pq.ParquetWriter(str(self._tmp), self.schema, compression="zstd")
        self.parts.append(name)

    def _close_part(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.out_dir / self.parts[-1])
        self._writer = None
        self._tmp = None
        self._rows_in_part = 0

    def _emit(self, n: int) -> None:
        table = pa.concat_tables(self._buf) if len(self._buf) > 1 else self._buf[0]
        head = table.slice(0, n).combine_chunks()
        rest = table.slice(n)
        if self._writer is None:
            self._open()
        self._writer.write_table(head, row_group_size=n)
        self._rows_in_part += n
        if self._rows_in_part >= self.rows_per_part:
            self._close_part()
        self._buf = [rest] if rest.num_rows else []
        self._buf_rows = rest.num_rows

    def close(self) -> None:
        if self._buf_rows:
            self._emit(self._buf_rows)
        if self._writer is not None:
            self._close_part()
        if not self.parts:  # nothing kept: one empty part keeps `read_parquet(part-*)` working
            self._open()
            self._close_part()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                if self._tmp is not None and self._tmp.exists():
                    self._tmp.unlink()


def _write_parts(spills: list[tuple[Path, str]], dups: Path, out_dir: Path, keep_cols: tuple,
                 rows_per_part: int) -> tuple[list[str], int]:
    schema = _out_schema(keep_cols)
    writer = _PartWriter(out_dir, schema, rows_per_part)
    cursor = _DupCursor(dups)
    removed = 0
    spill_cols = ["pos", "uid", "url", "text", *[f"x{j}" for j in range(len(keep_cols))]]
    try:
        for spill, source in spills:
            f = pq.ParquetFile(str(spill))
            for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=spill_cols):
                if batch.num_rows == 0:
                    continue
                pos = batch.column(0)
                dup = cursor.upto(pos[-1].as_py())
                if dup:
                    mask = pa.array([p not in dup for p in pos.to_pylist()], type=pa.bool_())
                    batch = batch.filter(mask)
                    removed += len(dup)
                n = batch.num_rows
                if n == 0:
                    continue
                arrays = [batch.column(k) for k in range(1, batch.num_columns)]
                arrays.insert(3, pa.array([source] * n, type=pa.string()))
                writer.add(pa.Table.from_arrays(arrays, schema=schema))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if removed != cursor.total:
        raise RuntimeError(f"pool: {cursor.total} duplicate positions found but {removed} removed")
    return writer.parts, removed


# --------------------------------------------------------------------------- driver


def _short_hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=6).hexdigest()


def _clean_tmp(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            if p.is_file():
                p.unlink()


def _run_spills(tasks: list[tuple], workers: int, done: Callable[[dict], None]) -> None:
    """Phase 1 for the inputs not spilled yet; `done(stats)` after each (in completion order)."""
    if not tasks:
        return
    if workers <= 1 or len(tasks) == 1:
        for t in tasks:
            done(_spill_input(*t))
        return
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn")) as ex:
        pending: dict = {}
        it = iter(tasks)

        def drain() -> None:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                pending.pop(fut)
                done(fut.result())  # re-raises a worker's InputError

        try:
            for t in it:
                while len(pending) >= 2 * workers:
                    drain()
                pending[ex.submit(_spill_input, *t)] = t
            while pending:
                drain()
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise


def _stats_complete(stats_path: Path, run: dict, out_dir: Path) -> dict | None:
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return None
    if stats.get("run") != run:
        return None
    if not all((out_dir / name).is_file() for name in stats.get("parts", [])):
        return None
    return stats


def build_pool(
    inputs: list[str],
    out_dir: str,
    url_col: str = "url",
    text_col: str = "caption",
    keep_cols=(),
    allow_private_hosts: bool = False,
    workers: int = 1,
    rows_per_part: int = 1_000_000,
    memory_limit: str = "2GB",
    progress: Callable[[int], object] | None = None,
    max_text_chars: int = 4096,
) -> dict:
    """Build the candidate pool in `out_dir` (see the module docstring); return the stats.

    `progress`, when given, is called once with the number of input files and returns a
    progress bar (tqdm-like: ``update(n)``, ``close()``, optionally ``set_postfix``) that
    advances by one per input read; it is not called when the pool is already complete.
    `memory_limit` bounds DuckDB's dedup (it spills to ``out_dir/_work`` beyond it).
    """
    t0 = time.time()
    keep_cols = tuple(keep_cols or ())
    for c in keep_cols:
        if c in CORE_COLUMNS:
            raise InputError(f"keep column {c!r} clashes with an output column ({', '.join(CORE_COLUMNS)})")
    if len(set(keep_cols)) != len(keep_cols):
        raise InputError(f"keep columns repeat a name: {', '.join(keep_cols)}")
    if int(rows_per_part) < 1:
        raise InputError(f"rows per part must be at least 1 (got {rows_per_part})")
    if int(max_text_chars) < 1:
        raise InputError(f"max text chars must be at least 1 (got {max_text_chars})")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError("no pool input given")
    files = expand_inputs([str(i) for i in inputs], what="pool")
    for f in files:
        input_format(f)  # unknown formats fail before any work
    params = asdict(_Params(url_col, text_col, keep_cols, bool(allow_private_hosts), int(max_text_chars)))
    params["keep_cols"] = list(keep_cols)
    fingerprints = [file_fingerprint(f) for f in files]
    run = {"version": FORMAT_VERSION, "params": params, "rows_per_part": int(rows_per_part),
           "inputs": fingerprints}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats_path = out / "_stats.json"
    done = _stats_complete(stats_path, run, out)
    if done is not None:
        return done
    if stats_path.exists():
        stats_path.unlink()  # from another run: the folder is incomplete until rewritten
    work = out / "_work"
    work.mkdir(exist_ok=True)
    _clean_tmp(out)
    _clean_tmp(work)

    # phase 1: normalise, filter and spill every input (reusing finished spills)
    spills: list[tuple[Path, Path]] = []
    tasks = []
    for i, (path, fp) in enumerate(zip(files, fingerprints)):
        key = _short_hash({"version": FORMAT_VERSION, "index": i, "input": fp, "params": params})
        sp, stp = work / f"in-{i:05d}-{key}.parquet", work / f"in-{i:05d}-{key}.json"
        spills.append((sp, stp))
        if not (sp.is_file() and stp.is_file()):
            tasks.append((i, path, str(sp), str(stp), params))
    bar = progress(len(files)) if progress else None
    rows_seen = 0

    def input_done(st: dict) -> None:
        nonlocal rows_seen
        rows_seen += st["rows_in"]
        if bar is not None:
            bar.update(1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(rows=f"{rows_seen:,}", refresh=False)

    try:
        if bar is not None and len(tasks) < len(files):
            bar.update(len(files) - len(tasks))  # finished by an earlier, interrupted run
        _run_spills(tasks, int(workers), input_done)
        stats = _finish(files, spills, run, out, work, keep_cols, int(rows_per_part), memory_limit,
                        int(workers), t0)
    finally:
        if bar is not None:
            bar.close()
    return stats


def _finish(files: list[str], spills: list[tuple[Path, Path]], run: dict, out: Path, work: Path,
            keep_cols: tuple, rows_per_part: int, memory_limit: str, workers: int, t0: float) -> dict:
    """Phases 2 and 3 and the stats file, once every input is spilled."""
    stats_path = out / "_stats.json"

    totals = dict.fromkeys(STAT_KEYS, 0)
    per_input = []
    for (sp, stp), path in zip(spills, files):
        st = json.loads(stp.read_text())["stats"]
        for k, v in st.items():
            totals[k] = totals.get(k, 0) + v
        per_input.append({"path": path, "format": input_format(path)[0], "rows_in": st["rows_in"],
                          "kept_before_dedup": st["kept"]})

    # phase 2: positions of repeated uids, out of core
    dups = work / f"dups-{_short_hash(run)}.parquet"
    if not dups.is_file():
        _find_duplicates([sp for sp, _ in spills], dups, work, memory_limit, workers)

    # phase 3: stream the spills in input order into the parts
    for old in out.glob("part-*.parquet"):
        old.unlink()
    parts, removed = _write_parts([(sp, path) for (sp, _), path in zip(spills, files)], dups, out,
                                  keep_cols, rows_per_part)
    totals["dropped_duplicate"] = removed
    totals["kept"] -= removed
    dropped = sum(totals[k] for k in DROP_KEYS)
    if totals["rows_in"] != totals["kept"] + dropped:  # every row must be accounted for
        raise RuntimeError(f"pool accounting broken: rows_in {totals['rows_in']} != kept "
                           f"{totals['kept']} + dropped {dropped}")

    stats = {**totals, "files": len(files), "parts": parts, "columns": list(_out_schema(keep_cols).names),
             "inputs": per_input, "seconds": round(time.time() - t0, 3), "run": run}
    tmp = stats_path.with_name(f".{stats_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, stats_path)
    shutil.rmtree(work, ignore_errors=True)
    return stats
