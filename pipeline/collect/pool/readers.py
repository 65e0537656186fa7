"""Pool inputs, read as batches: table files (parquet; csv, tsv, jsonl, optionally compressed)
and Common Crawl WAT files.

The formats and the column rules are those of the stage docstring (`stage.py`: "Inputs",
"Columns"). `read_source` yields ``(urls, texts, extras)`` of at most BATCH_ROWS rows: url and
text values are str, bytes where not valid UTF-8, or None; `extras` holds one list per kept
column, already strings. A reader counts in `st` the rows it cannot read (rule 1,
``dropped_malformed``; a JSONL line that is not UTF-8, ``dropped_bad_encoding``) and the kept
values it repairs (``keep_cols_bad_encoding``); the row rules (`filters.py`) judge the rest.
"""

from __future__ import annotations

import json
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from ...errors import InputError, printable
from ..wat import iter_wat_pairs

BATCH_ROWS = 65_536  # rows per spill row group and per input batch
CSV_BLOCK_BYTES = 16 << 20  # a CSV row must fit in one block
MAX_LISTED_COLUMNS = 40

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
class PoolParams:
    """What reading and filtering one input depend on (a phase-1 task gets it as a dict)."""

    url_col: str
    text_col: str
    keep_cols: tuple
    allow_private_hosts: bool
    max_text_chars: int
    uid_col: str | None = None  # read after the keep_cols (the last extra), see `filters.spill_input`
    uid_hex_digits: int = 0


def _missing_columns_error(path: str, what: str, missing: list[str], have: list[str]) -> InputError:
    listed = ", ".join(printable(str(h), 80) for h in have[:MAX_LISTED_COLUMNS]) or "(none)"
    if len(have) > MAX_LISTED_COLUMNS:
        listed += f", ... ({len(have)} in all)"
    miss = ", ".join(repr(m) for m in missing)
    return InputError(f"{path}: {what} has no column {miss}; its columns are: {listed}")


def _needed_columns(p: PoolParams) -> list[str]:
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


def _read_parquet(path: str, p: PoolParams, st: dict) -> Iterator[tuple]:
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


def _read_csv(path: str, compression: str | None, delimiter: str, p: PoolParams, st: dict) -> Iterator[tuple]:
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
                return  # no header and no rows: an empty input (see the stage docstring)
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


def _read_jsonl(path: str, compression: str | None, p: PoolParams, st: dict) -> Iterator[tuple]:
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


def _read_wat(path: str, p: PoolParams, st: dict) -> Iterator[tuple]:
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


def read_source(path: str, p: PoolParams, st: dict) -> Iterator[tuple]:
    """The batches of one input, in file order (see the module docstring)."""
    fmt, compression = input_format(path)
    if fmt == "parquet":
        return _read_parquet(path, p, st)
    if fmt in ("csv", "tsv"):
        return _read_csv(path, compression, "," if fmt == "csv" else "\t", p, st)
    if fmt == "jsonl":
        return _read_jsonl(path, compression, p, st)
    return _read_wat(path, p, st)


# what a reader raises on a file it cannot read (a phase-1 task names the file and the format)
READ_ERRORS = (
    pa.ArrowException,
    OSError,
    EOFError,
    UnicodeDecodeError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
)
