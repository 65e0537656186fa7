"""Phase 1 of the pool, one task per input: the per-row rules and the spill of the kept rows.

`spill_input` reads one input (`readers.py`; rule 1 of the stage docstring's "Per row" is
theirs), applies rules 2-6 and computes each kept row's uid (rule 7's dedup runs across
inputs, in `dedup.py`), then writes the input's spill (kept rows in input order, with their
position and uid hash), its key file and its stats (last: their presence marks the input as
done).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import InputError, one_line
from ...io import atomic_path
from ...storage import location
from ..urls import check_url, make_uid, normalise_text, uid_key
from ..wat import WAT_STAT_KEYS
from .dedup import POS_SHIFT, keys_path, write_keys
from .readers import BATCH_ROWS, CSV_BLOCK_BYTES, READ_ERRORS, PoolParams, input_format, read_source

DROP_KEYS = (
    "dropped_malformed",
    "dropped_bad_encoding",
    "dropped_null_url",
    "dropped_empty_text",
    "dropped_scheme",
    "dropped_long_url",
    "dropped_bad_url",
    "dropped_private_host",
    "dropped_bad_uid",
    "dropped_duplicate",
)
STAT_KEYS = ("rows_in", "kept", *DROP_KEYS, "text_truncated", "keep_cols_bad_encoding", *WAT_STAT_KEYS)


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
        self.url_hash: list[int] = []  # of the rows in `cols`
        self.url_hashes: list[np.ndarray] = []

    def flush(self) -> None:
        if self.cols[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self.cols, self.schema)]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.hashes.append(arrays[1].to_numpy())
            self.url_hashes.append(np.array(self.url_hash, dtype=np.uint64))
            self.cols = [[] for _ in self.schema]
            self.url_hash = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _source_uid(value, digits: int) -> str | None:
    """A source's uid as the sample uid (hex in lower case), or None when it is none: blank,
    or not `digits` hex digits where the format says so (DataComp's 32)."""
    if value is None:
        return None
    uid = str(value).strip()
    if not uid:
        return None
    if digits:
        if len(uid) != digits or _HEX.fullmatch(uid) is None:
            return None
        uid = uid.lower()
    return uid


_HEX = re.compile(r"[0-9a-fA-F]+")


def _filter_batch(urls: list, texts: list, extras: list[list], st: dict, p: PoolParams, spill: _Spill) -> None:
    """The per-row rules (the stage docstring, steps 2-6); kept rows go to `spill`. With a
    source uid column, its values are the last of `extras`."""
    n = len(urls)
    source_uids = extras[-1] if p.uid_col is not None else None
    if source_uids is not None:
        extras = extras[:-1]
    st["rows_in"] += n
    maxc = p.max_text_chars
    allow = p.allow_private_hosts
    cols = spill.cols
    c_pos, c_h, c_uid, c_url, c_text = cols[:5]
    c_extra = cols[5:]
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
            uid = make_uid(u, t)
        except UnicodeEncodeError:  # lone surrogates (JSON escapes)
            st["dropped_bad_encoding"] += 1
            continue
        if source_uids is not None:
            url_hash = int(make_uid(u, ""), 16)
            source = _source_uid(source_uids[i], p.uid_hex_digits)
            if source is None:
                st["dropped_bad_uid"] += 1
                continue
            uid = source
        else:
            url_hash = 0  # our uid hashes the URL already: a repeated uid has the same URL
        c_pos.append(spill.base | spill.n)
        spill.n += 1
        spill.url_hash.append(url_hash)
        c_h.append(uid_key(uid))  # the uid as a 64-bit number: its hash for the dedup
        c_uid.append(uid)
        c_url.append(u)
        c_text.append(t)
        for j, col in enumerate(c_extra):
            col.append(extras[j][i])
        if len(c_pos) >= BATCH_ROWS:
            spill.flush()
            cols = spill.cols
            c_pos, c_h, c_uid, c_url, c_text = cols[:5]
            c_extra = cols[5:]


def spill_input(index: int, path: str, spill_path: str, stats_path: str, params: dict) -> dict:
    """Phase 1 for one input (runs in a worker): normalise + filter, spill, write its key file
    and its stats (last: their presence marks the input as done)."""
    p = PoolParams(**{**params, "keep_cols": tuple(params["keep_cols"])})
    # the source's uid column is read as one more extra column, the last (`_filter_batch`)
    read_p = p if p.uid_col is None else dataclasses.replace(p, keep_cols=p.keep_cols + (p.uid_col,))
    st = dict.fromkeys(STAT_KEYS, 0)
    spill_path_p = location(spill_path)
    with atomic_path(spill_path_p) as tmp:
        spill = _Spill(tmp, index, p.keep_cols)
        try:
            try:
                for urls, texts, extras in read_source(path, read_p, st):
                    _filter_batch(urls, texts, extras, st, p, spill)
            except InputError:
                raise
            except READ_ERRORS as e:
                why = one_line(e)
                if "straddl" in why:
                    why = f"a CSV row is longer than {CSV_BLOCK_BYTES >> 20} MiB, or a quoted field is never closed ({why})"
                raise InputError(f"{path}: cannot be read as {input_format(path)[0]}: {why}") from None
            spill.close()
        except BaseException:
            spill.writer.close()  # the unfinished file is then deleted by atomic_path
            raise
    write_keys(spill.hashes, spill.url_hashes, spill.base, keys_path(spill_path_p))
    st["kept"] = spill.n  # before the cross-input dedup
    with atomic_path(stats_path) as tmp:
        tmp.write_text(json.dumps({"path": path, "stats": st}, sort_keys=True))
    return st
