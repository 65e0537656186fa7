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
and the `keep_cols`, all strings; at most `rows_per_part` rows each, rows in input order; a
part holds rows of one input only: input i fills ceil(kept_i / rows_per_part) parts, none
if it keeps nothing, numbered on from the previous input's; one empty part when nothing at
all is kept) and ``_stats.json`` (written last: its presence means the pool is complete).

Per row, in this order (the first failing test names the counter):

1. unreadable row: a CSV row with the wrong number of fields, a JSONL line that is not a
   JSON object, a url/text JSON value that is not a string -> ``dropped_malformed``;
2. url or text not valid UTF-8 (CSV/TSV/JSONL/parquet bytes, lone surrogates from JSON
   escapes) -> ``dropped_bad_encoding``. The row is dropped rather than repaired: a URL with
   U+FFFD in it fetches the wrong thing, and a caption with holes matches queries badly.
   Kept extra columns are repaired instead (U+FFFD), counted in ``keep_cols_bad_encoding``;
3. url null or blank -> ``dropped_null_url`` (surrounding whitespace is stripped);
4. text null or empty after `normalise_text` -> ``dropped_empty_text``;
5. `check_url` -> ``dropped_scheme`` / ``dropped_long_url`` (over 4,096 characters) /
   ``dropped_bad_url`` (control or bidi formatting characters included) /
   ``dropped_private_host``;
6. text longer than `max_text_chars` (default 4096 code points, far beyond CLIP's 77
   tokens but enough for any real caption) is cut there (then right-stripped) and counted
   in ``text_truncated``; the row is kept;
7. ``uid`` = `make_uid(url, text)` of the final pair; a uid seen earlier in the input order
   (any input) -> ``dropped_duplicate``.

``rows_in == kept + sum(dropped_*)`` always holds (blank JSONL lines are not rows).

Empty inputs: an input with no rows (an empty file of any format, a header-only CSV, a
WAT file without image links) is counted in ``empty_inputs`` (its entry in ``inputs``
shows ``rows_in: 0``) when other inputs have rows; when no input has any row, that is an
InputError naming the file, whatever the format (a pool of nothing is a wrong path or a
failed export, not a dataset).

Error messages quote input bytes (a bad CSV row, a WAT file's first line) escaped
(`urls.printable`): a file's control and bidi characters never reach the terminal raw.

Columns: a table without `url_col`, `text_col` or one of `keep_cols` (parquet schema, CSV
header, first JSONL record) is an InputError naming the file and the columns it has; a later
JSONL record without a key has null there. Parquet url/text columns must be strings (or
binary). Kept columns are written as strings: numbers and booleans as text (``640``,
``true``), lists and structs as JSON. WAT inputs offer ``page_url``, ``alt`` and ``title``;
other kept columns are null for their rows.

How it scales: nothing in this step runs in one process over all rows. Three phases of
independent part tasks run on the `engine` (local processes or Ray tasks, with retries);
the driver between them only sums small per-input and per-bucket counts:

1. one task per input streams it in batches (parquet row groups, 16 MiB CSV blocks, JSONL
   lines, WAT records), normalises and filters it, and spills the kept rows to
   ``_work/in-NNNNN-*.parquet`` with a global position ``pos = input_index << 40 | row``.
   It also writes the input's key file: its (pos, h) pairs, h the 64-bit uid hash, grouped
   by the top 12 bits of h into 4096 fine buckets (the input's hashes are held meanwhile:
   8 bytes a kept row, about 40 while the key file is written).
2. one task per dedup bucket (a contiguous range of fine buckets, so equal uids always meet
   in one task) reads that range from every key file, finds every position whose h occurs
   at a lower position (a stable sort by h), and writes those positions sorted, after the
   count of each input's. Memory: about 64 bytes a key of one bucket. The number of buckets
   (`buckets`, else enough for `memory_limit` and at most BUCKET_ROWS keys each, so large
   pools give many tasks) does not change the result.
3. from the counts the driver gives every input its kept rows and its first part number;
   one task per input then writes its spill minus its duplicate positions (its runs in the
   bucket results) into its parts, and a marker listing them.

One input is read by one task: split huge inputs into several files to use more cores.
Nothing depends on timing, the engine, `workers` or the number of buckets, so parts are
byte-identical for any of them. Tasks exchange files in ``out_dir`` (with Ray it must be on
storage every node sees). Every file is written under a temporary name and renamed.
A rerun resumes: finished spills and key files, bucket results and the parts of inputs
whose marker is there are reused (parts of another run are deleted first); a rerun with the
same inputs (path, size, mtime) and parameters after a complete run returns the stored
stats without work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import os
import re
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from ..errors import InputError
from ..distribute import Engine, run_parts
from ..io import atomic_path, expand_inputs, file_fingerprint
from ..storage import load_npy, location, parquet_file, publish, rmtree, scratch_for
from .urls import check_url, normalise_text, printable
from .wat import WAT_STAT_KEYS, iter_wat_pairs

FORMAT_VERSION = 2  # 2: parts never span inputs
POS_SHIFT = 40  # pos = input index << 40 | row number in that input
BATCH_ROWS = 65_536  # rows per spill row group and per input batch
ROW_GROUP_ROWS = 32_768  # rows per row group in the output parts
CSV_BLOCK_BYTES = 16 << 20  # a CSV row must fit in one block
MAX_LISTED_COLUMNS = 40
FINE_BITS = 12  # key files group (pos, h) by the top 12 bits of h: 4096 fine buckets
FINE_BUCKETS = 1 << FINE_BITS
BUCKET_ROWS = 4_000_000  # target rows per dedup bucket task (~64 bytes a row while it runs)
DEDUP_BYTES_PER_ROW = 64

CORE_COLUMNS = ("uid", "url", "text", "source")
DROP_KEYS = (
    "dropped_malformed",
    "dropped_bad_encoding",
    "dropped_null_url",
    "dropped_empty_text",
    "dropped_scheme",
    "dropped_long_url",
    "dropped_bad_url",
    "dropped_private_host",
    "dropped_duplicate",
)
STAT_KEYS = ("rows_in", "kept", *DROP_KEYS, "text_truncated", "keep_cols_bad_encoding", *WAT_STAT_KEYS)

_COMPRESSIONS = {"gz": "gzip", "gzip": "gzip", "zst": "zstd", "zstd": "zstd", "bz2": "bz2", "xz": "xz"}
_TABLE_FORMATS = {
    "parquet": "parquet",
    "pq": "parquet",
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
}


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
    """The first line of an error message, cut short and escaped: readers quote input bytes."""
    s = str(e).strip()
    return printable(s.splitlines()[0], 300) if s else type(e).__name__


def _missing_columns_error(path: str, what: str, missing: list[str], have: list[str]) -> InputError:
    listed = ", ".join(printable(str(h), 80) for h in have[:MAX_LISTED_COLUMNS]) or "(none)"
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
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
        or getattr(pa.types, "is_binary_view", lambda _: False)(t)
    )


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
        return [
            None if v is None else json.dumps(v, ensure_ascii=False, default=str, sort_keys=True)
            for v in arr.to_pylist()
        ]
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

    parse_opts = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip_invalid)
    with fsspec.open(path, "rb", compression=compression) as f:
        try:
            names = pacsv.open_csv(f, read_options=read_opts, parse_options=parse_opts).schema.names
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return  # no header and no rows: an empty input (see the module docstring)
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
            yield (
                batch.column(p.url_col).to_pylist(),
                batch.column(p.text_col).to_pylist(),
                [_decode_extra(batch.column(c).to_pylist(), st) for c in p.keep_cols],
            )
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
    fields = [
        pa.field("pos", pa.int64()),
        pa.field("h", pa.uint64()),
        pa.field("uid", pa.string()),
        pa.field("url", pa.string()),
        pa.field("text", pa.string()),
    ]
    fields += [pa.field(f"x{j}", pa.string()) for j in range(len(keep_cols))]
    return pa.schema(fields)


class _Spill:
    """Kept rows of one input, written to a parquet file in BATCH_ROWS row groups; the uid
    hashes are also collected (8 bytes a row) for the input's key file."""

    def __init__(self, path: Path, index: int, keep_cols: tuple):
        self.schema = _spill_schema(keep_cols)
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="lz4")
        self.base = index << POS_SHIFT
        self.n = 0
        self.cols: list[list] = [[] for _ in self.schema]
        self.hashes: list[np.ndarray] = []

    def flush(self) -> None:
        if self.cols[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self.cols, self.schema)]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.hashes.append(arrays[1].to_numpy())
            self.cols = [[] for _ in self.schema]

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _keys_path(spill_path: Path) -> Path:
    return spill_path.with_name(spill_path.name.replace(".parquet", ".keys.npy"))


def _write_keys(hashes: list[np.ndarray], base: int, path: Path) -> None:
    """The key file of one input: its (pos, h) pairs grouped by the top FINE_BITS of h.

    One int64 array: ``offsets`` (FINE_BUCKETS + 1; fine bucket f holds entries
    ``offsets[f]:offsets[f + 1]``), then the n positions, then the n hashes (as int64).
    Within a fine bucket the positions ascend (the sort is stable).
    """
    h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    n = len(h)
    fine = (h >> np.uint64(64 - FINE_BITS)).astype(np.uint16)
    order = np.argsort(fine, kind="stable")
    head = FINE_BUCKETS + 1
    out = np.empty(head + 2 * n, np.int64)
    out[0] = 0
    np.cumsum(np.bincount(fine, minlength=FINE_BUCKETS), out=out[1:head])
    del fine
    np.add(order, base, out=out[head : head + n])
    out[head + n :] = h[order].view(np.int64)
    del order, h
    _save_npy(out, path)


def _save_npy(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


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


_READ_ERRORS = (
    pa.ArrowException,
    OSError,
    EOFError,
    UnicodeDecodeError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
)


def _spill_input(index: int, path: str, spill_path: str, stats_path: str, params: dict) -> dict:
    """Phase 1 for one input (runs in a worker): normalise + filter, spill, write its key file
    and its stats (last: their presence marks the input as done)."""
    p = _Params(**{**params, "keep_cols": tuple(params["keep_cols"])})
    st = dict.fromkeys(STAT_KEYS, 0)
    spill_path_p = location(spill_path)
    tmp = scratch_for(spill_path_p)
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
                why = f"a CSV row is longer than {CSV_BLOCK_BYTES >> 20} MiB, or a quoted field is never closed ({why})"
            raise InputError(f"{path}: cannot be read as {input_format(path)[0]}: {why}") from None
        spill.close()
        publish(tmp, spill_path_p)
    finally:
        if tmp.exists():
            spill.writer.close()
            tmp.unlink()
    _write_keys(spill.hashes, spill.base, _keys_path(spill_path_p))
    st["kept"] = spill.n  # before the cross-input dedup
    with atomic_path(stats_path) as tmp:
        tmp.write_text(json.dumps({"path": path, "stats": st}, sort_keys=True))
    return st


# --------------------------------------------------------------------------- phase 2: dedup


_UNITS = {
    "B": 1,
    "BYTE": 1,
    "BYTES": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
    "PIB": 1 << 50,
}


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _memory_bytes(memory_limit: str) -> int:
    """`memory_limit` in bytes, read the way DuckDB (used by the later steps) reads it."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = {_sql_str(str(memory_limit))}")
        shown = str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
    except duckdb.Error as e:
        raise InputError(f"memory limit {memory_limit!r}: {_first_line(e)}") from None
    finally:
        con.close()
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", shown)
    scale = _UNITS.get(m.group(2).upper() or "B") if m else None
    if scale is None:  # a format this code does not know: DuckDB's default
        return 2 << 30
    return int(float(m.group(1)) * scale)


def _bucket_ranges(buckets: int) -> list[tuple[int, int]]:
    """Fine-bucket range [lo, hi) of each dedup bucket (contiguous, sizes differ by at most 1)."""
    return [(b * FINE_BUCKETS // buckets, (b + 1) * FINE_BUCKETS // buckets) for b in range(buckets)]


def _dedup_bucket(task: tuple) -> np.ndarray:
    """Phase 2 for one bucket (runs in a worker): the duplicate positions among its keys.

    Reads fine buckets [lo, hi) of every input's key file, finds every position whose hash
    occurs at a lower position, and writes one int64 array: the duplicate count of each
    input (len(key_files) entries), then the duplicate positions in ascending order (so the
    ones of input i are a contiguous run). Returns the per-input counts.
    """
    lo, hi, key_files, out_path = task
    head = FINE_BUCKETS + 1
    hs, ps = [], []
    for kf in key_files:  # in input order
        arr = load_npy(kf)
        n = (arr.shape[0] - head) // 2
        a, z = int(arr[lo]), int(arr[hi])
        if z > a:
            ps.append(np.array(arr[head + a : head + z]))
            hs.append(np.array(arr[head + n + a : head + n + z]))
        del arr
    h = np.concatenate(hs) if hs else np.empty(0, np.int64)
    pos = np.concatenate(ps) if ps else np.empty(0, np.int64)
    del hs, ps
    # Equal hashes share a fine bucket, so each group of equal h lies in the concatenation
    # in input order and, within an input, in ascending position: after a stable sort by h
    # the first entry of every group is its lowest position, the others are duplicates.
    order = np.argsort(h, kind="stable")
    h = h[order]
    repeat = np.flatnonzero(h[1:] == h[:-1]) + 1
    del h
    dup = pos[order[repeat]]
    del order, repeat, pos
    dup.sort()
    counts = np.bincount(dup >> POS_SHIFT, minlength=len(key_files)).astype(np.int64)
    _save_npy(np.concatenate([counts, dup]), location(out_path))
    return counts


# --------------------------------------------------------------------------- phase 3: parts


def _out_schema(keep_cols: tuple) -> pa.Schema:
    return pa.schema([pa.field(c, pa.string()) for c in (*CORE_COLUMNS, *keep_cols)])


class _PartWriter:
    """Writes rows into part-NNNNN.parquet files of at most `rows_per_part` rows, numbered
    from `first`."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_part: int, first: int = 0):
        self.out_dir = out_dir
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.first = first
        self.parts: list[str] = []
        self.rows = 0
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
        self.rows += table.num_rows
        while self._buf_rows >= self._chunk():
            self._emit(self._chunk())

    def _open(self) -> None:
        name = f"part-{self.first + len(self.parts):05d}.parquet"
        self._tmp = scratch_for(self.out_dir / name)
        self._writer = pq.ParquetWriter(str(self._tmp), self.schema, compression="zstd")
        self.parts.append(name)

    def _close_part(self) -> None:
        self._writer.close()
        publish(self._tmp, self.out_dir / self.parts[-1])
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

    def write_empty(self) -> None:
        """One part with no rows (the whole pool kept nothing: `read_parquet(part-*)` still works)."""
        self._open()
        self._close_part()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                if self._tmp is not None and self._tmp.exists():
                    self._tmp.unlink()


def _read_dups(pieces: list, n_inputs: int) -> np.ndarray:
    """One input's duplicate positions, ascending: its runs in the bucket results."""
    arrays = []
    for path, start, count in pieces:
        arr = load_npy(path)
        arrays.append(np.array(arr[n_inputs + start : n_inputs + start + count]))
        del arr
    dups = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    dups.sort()
    return dups


def _write_parts(task: dict) -> dict:
    """Phase 3 for one input (runs in a worker): its spill minus its duplicates, in input
    order, into its parts; then its marker (the list of its parts) in the work folder."""
    keep_cols = tuple(task["keep_cols"])
    schema = _out_schema(keep_cols)
    dups = _read_dups(task["pieces"], task["n_inputs"])
    writer = _PartWriter(location(task["out_dir"]), schema, task["rows_per_part"], task["first_part"])
    source = task["source"]
    removed = 0
    spill_cols = ["pos", "uid", "url", "text", *[f"x{j}" for j in range(len(keep_cols))]]
    try:
        with parquet_file(task["spill"]) as f:
            for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=spill_cols):
                if len(dups) and batch.num_rows:
                    pos = batch.column(0).to_numpy()
                    at = np.minimum(np.searchsorted(dups, pos), len(dups) - 1)
                    is_dup = dups[at] == pos
                    k = int(is_dup.sum())
                    if k:
                        batch = batch.filter(pa.array(~is_dup))
                        removed += k
                n = batch.num_rows
                if n == 0:
                    continue
                arrays = [batch.column(c) for c in range(1, batch.num_columns)]
                arrays.insert(3, pa.array([source] * n, type=pa.string()))
                writer.add(pa.Table.from_arrays(arrays, schema=schema))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if removed != len(dups) or writer.rows != task["kept"] or writer.parts != task["parts"]:
        raise RuntimeError(
            f"pool: {source}: wrote {writer.rows} rows in {len(writer.parts)} parts, removed "
            f"{removed} of {len(dups)} duplicates; expected {task['kept']} rows in "
            f"{len(task['parts'])} parts"
        )
    result = {"parts": writer.parts, "kept": writer.rows, "removed": removed}
    with atomic_path(task["marker"]) as tmp:
        tmp.write_text(json.dumps(result, sort_keys=True))
    return result


# --------------------------------------------------------------------------- driver


def _short_hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=6).hexdigest()


def _clean_tmp(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            if p.is_file():
                p.unlink()


def _engine_for(engine: Engine, n_tasks: int) -> Engine:
    """`engine`, but a single local task runs in this process (no process pool to start)."""
    if engine.name == "local" and engine.workers > 1 and n_tasks <= 1:
        return dataclasses.replace(engine, workers=1)
    return engine


def _spill_task(task: tuple) -> dict:
    return _spill_input(*task)


def _run_spills(tasks: list[tuple], engine: Engine, done: Callable[[dict], None]) -> None:
    """Phase 1 for the inputs not spilled yet; `done(stats)` after each (in completion order)."""
    run_parts(
        _spill_task, tasks, _engine_for(engine, len(tasks)), on_done=lambda task, st: done(st), describe=lambda t: t[1]
    )


_KEY_FILES: list[str] = []  # per worker process: every input's key file, in input order


def _set_key_files(key_files: list[str]) -> None:
    _KEY_FILES[:] = key_files


def _bucket_task(task: tuple) -> np.ndarray:
    lo, hi, out_path = task
    return _dedup_bucket((lo, hi, _KEY_FILES, out_path))


def _stored_counts(path: Path, n_inputs: int) -> np.ndarray | None:
    """The per-input counts of a finished bucket result, or None."""
    if not path.is_file():
        return None
    try:
        arr = load_npy(path)
        counts = np.array(arr[:n_inputs]) if arr.ndim == 1 and arr.shape[0] >= n_inputs else None
        del arr
    except (OSError, ValueError):
        return None
    return counts


def _read_marker(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


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
    engine: Engine | None = None,
    buckets: int | None = None,
) -> dict:
    """Build the candidate pool in `out_dir` (see the module docstring); return the stats.

    `progress`, when given, is called once with the number of input files and returns a
    progress bar (tqdm-like: ``update(n)``, ``close()``, optionally ``set_postfix``) that
    advances by one per input read; it is not called when the pool is already complete.
    `engine` runs the part tasks of every phase (default: `workers` local processes).
    `memory_limit` bounds each dedup bucket task (about 64 bytes a key while it runs): the
    keys are split into enough buckets for that, at most BUCKET_ROWS keys each (so that
    there are tasks for every core); `buckets` (1 to FINE_BUCKETS) overrides the number.
    The output does not depend on `workers`, `engine` or `buckets`.
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
    if buckets is not None and not 1 <= int(buckets) <= FINE_BUCKETS:
        raise InputError(f"dedup buckets must be 1 to {FINE_BUCKETS} (got {buckets})")
    memory_bytes = _memory_bytes(memory_limit)
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
    run = {"version": FORMAT_VERSION, "params": params, "rows_per_part": int(rows_per_part), "inputs": fingerprints}

    out = location(out_dir)
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
    engine = engine or Engine(workers=int(workers))

    # phase 1: normalise, filter and spill every input (reusing finished spills)
    spills: list[tuple[Path, Path]] = []
    tasks = []
    for i, (path, fp) in enumerate(zip(files, fingerprints)):
        key = _short_hash(
            {"version": FORMAT_VERSION, "index": i, "input": fp, "params": params, "fine_bits": FINE_BITS}
        )
        sp, stp = work / f"in-{i:05d}-{key}.parquet", work / f"in-{i:05d}-{key}.json"
        spills.append((sp, stp))
        if not (sp.is_file() and _keys_path(sp).is_file() and stp.is_file()):
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
        _run_spills(tasks, engine, input_done)
        stats = _finish(
            files,
            spills,
            run,
            out,
            work,
            keep_cols,
            int(rows_per_part),
            memory_bytes,
            None if buckets is None else int(buckets),
            engine,
            t0,
        )
    finally:
        if bar is not None:
            bar.close()
    return stats


def _why_empty(fingerprint: dict, fmt: str, st: dict) -> str:
    """What an input without rows holds instead, for the error naming it."""
    if not fingerprint.get("size"):
        return "empty file"
    if fmt == "wat":
        return f"no image links in its {st.get('wat_records', 0):,} metadata records"
    return "no rows"


def _auto_buckets(keys: int, memory_bytes: int) -> int:
    per_bucket = max(1, min(BUCKET_ROWS, memory_bytes // DEDUP_BYTES_PER_ROW))
    return min(FINE_BUCKETS, max(1, -(-keys // per_bucket)))


def _finish(
    files: list[str],
    spills: list[tuple[Path, Path]],
    run: dict,
    out: Path,
    work: Path,
    keep_cols: tuple,
    rows_per_part: int,
    memory_bytes: int,
    buckets: int | None,
    engine: Engine,
    t0: float,
) -> dict:
    """Phases 2 and 3 and the stats file, once every input is spilled. The driver only sums
    per-input and per-bucket counts; every pass over rows is a part task on `engine`."""
    stats_path = out / "_stats.json"
    n_inputs = len(files)

    totals = dict.fromkeys(STAT_KEYS, 0)
    per_input = []
    kept_before = []
    empty = []  # (path, why) of the inputs without a single row
    for (sp, stp), path, fp in zip(spills, files, run["inputs"]):
        st = json.loads(stp.read_text())["stats"]
        for k, v in st.items():
            totals[k] = totals.get(k, 0) + v
        kept_before.append(st["kept"])
        fmt = input_format(path)[0]
        per_input.append({"path": path, "format": fmt, "rows_in": st["rows_in"], "kept_before_dedup": st["kept"]})
        if st["rows_in"] == 0:
            empty.append((path, _why_empty(fp, fmt, st)))
    if empty and len(empty) == n_inputs:
        path, why = empty[0]
        others = f" (nor in the other {n_inputs - 1} pool inputs)" if n_inputs > 1 else ""
        raise InputError(f"{path}: {why}, nothing to pool{others}")

    # phase 2: one task per bucket of the uid hashes finds the repeated ones
    if buckets is None:
        buckets = _auto_buckets(sum(kept_before), memory_bytes)
    dkey = _short_hash({"run": run, "buckets": buckets, "fine_bits": FINE_BITS})
    dup_paths = [work / f"dup-{dkey}-{b:05d}.npy" for b in range(buckets)]
    current = set(dup_paths)
    for old in work.glob("dup-*.npy"):
        if old not in current:
            old.unlink()
    counts = np.zeros((buckets, n_inputs), np.int64)
    todo, tasks = [], []
    for b, ((lo, hi), dp) in enumerate(zip(_bucket_ranges(buckets), dup_paths)):
        stored = _stored_counts(dp, n_inputs)
        if stored is None:
            todo.append(b)
            tasks.append((lo, hi, str(dp)))
        else:
            counts[b] = stored
    key_files = [str(_keys_path(sp)) for sp, _ in spills]
    results = run_parts(
        _bucket_task,
        tasks,
        _engine_for(engine, len(tasks)),
        setup=_set_key_files,
        setup_args=(key_files,),
        describe=lambda t: f"dedup bucket {location(t[2]).name}",
    )
    for b, c in zip(todo, results):
        counts[b] = c

    # phase 3: one task per input writes its kept rows into its own, consecutive parts
    dup_per_input = counts.sum(axis=0)
    kept = [kb - int(d) for kb, d in zip(kept_before, dup_per_input)]
    starts = np.cumsum(counts, axis=1) - counts  # where input i's run begins in bucket b's result
    expected: list[list[str]] = []  # input i writes parts firsts[i], firsts[i] + 1, ...
    firsts: list[int] = []
    first = 0
    for k in kept:
        n_parts = -(-k // rows_per_part)
        firsts.append(first)
        expected.append([f"part-{first + j:05d}.parquet" for j in range(n_parts)])
        first += n_parts
    rkey = _short_hash(run)
    markers = [work / f"parts-{rkey}-{i:05d}.json" for i in range(n_inputs)]
    current = set(markers)
    for old in work.glob("parts-*.json"):  # another run's: its part files are not ours
        if old not in current:
            old.unlink()
    finished = set()
    for i, m in enumerate(markers):
        rec = _read_marker(m) if m.is_file() else None
        if (
            rec is not None
            and rec.get("parts") == expected[i]
            and rec.get("kept") == kept[i]
            and rec.get("removed") == int(dup_per_input[i])
            and all((out / name).is_file() for name in expected[i])
        ):
            finished.add(i)
        elif m.exists():
            m.unlink()
    claimed = {name for i in finished for name in expected[i]}
    for old in out.glob("part-*.parquet"):
        if old.name not in claimed:
            old.unlink()
    tasks = []
    for i, ((sp, _), path) in enumerate(zip(spills, files)):
        if i in finished or not expected[i]:
            continue  # done, or nothing kept (no part to write)
        pieces = [(str(dup_paths[b]), int(starts[b, i]), int(counts[b, i])) for b in np.flatnonzero(counts[:, i])]
        tasks.append(
            {
                "spill": str(sp),
                "source": path,
                "pieces": pieces,
                "n_inputs": n_inputs,
                "first_part": firsts[i],
                "parts": expected[i],
                "kept": kept[i],
                "out_dir": str(out),
                "keep_cols": list(keep_cols),
                "rows_per_part": rows_per_part,
                "marker": str(markers[i]),
            }
        )
    run_parts(_write_parts, tasks, _engine_for(engine, len(tasks)), describe=lambda t: t["source"])
    parts = [name for names in expected for name in names]
    if not parts:  # nothing kept at all: one empty part keeps `read_parquet(part-*)` working
        writer = _PartWriter(out, _out_schema(keep_cols), rows_per_part)
        writer.write_empty()
        parts = writer.parts

    totals["dropped_duplicate"] = int(dup_per_input.sum())
    totals["kept"] -= totals["dropped_duplicate"]
    dropped = sum(totals[k] for k in DROP_KEYS)
    if totals["rows_in"] != totals["kept"] + dropped or totals["kept"] != sum(kept):
        raise RuntimeError(
            f"pool accounting broken: rows_in {totals['rows_in']} != kept {totals['kept']} + dropped {dropped}"
        )

    stats = {
        **totals,
        "files": len(files),
        "empty_inputs": len(empty),
        "parts": parts,
        "columns": list(_out_schema(keep_cols).names),
        "inputs": per_input,
        "seconds": round(time.time() - t0, 3),
        "run": run,
    }
    with atomic_path(stats_path) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    rmtree(work)
    return stats
