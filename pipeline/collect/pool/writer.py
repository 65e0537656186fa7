"""Phase 3 of the pool, one task per input: its spill minus its duplicates, in input order,
into its own consecutive ``part-NNNNN.parquet`` files (the output format: the stage
docstring, "Output").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...io import atomic_path
from ...storage import location, parquet_file, publish, scratch_for
from .dedup import read_dups
from .readers import BATCH_ROWS

ROW_GROUP_ROWS = 32_768  # rows per row group in the output parts
CORE_COLUMNS = ("uid", "url", "text", "source")


def out_schema(keep_cols: tuple) -> pa.Schema:
    return pa.schema([pa.field(c, pa.string()) for c in (*CORE_COLUMNS, *keep_cols)])


class PartWriter:
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
        self._writer: pq.ParquetWriter | None = None
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
        # a part stays open across `add` calls, so not an `atomic_path` block: the same
        # scratch file and publish, by hand (`abort` deletes the scratch file)
        name = f"part-{self.first + len(self.parts):05d}.parquet"
        self._tmp = scratch_for(self.out_dir / name)
        self._writer = pq.ParquetWriter(str(self._tmp), self.schema, compression="zstd")
        self.parts.append(name)

    def _close_part(self) -> None:
        assert self._writer is not None and self._tmp is not None  # a part is open
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
        assert self._writer is not None  # `_open` opened one
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


def write_parts(task: dict) -> dict:
    """Phase 3 for one input (runs in a worker): its spill minus its duplicates, in input
    order, into its parts; then its marker (the list of its parts) in the work folder."""
    keep_cols = tuple(task["keep_cols"])
    schema = out_schema(keep_cols)
    dups = read_dups(task["pieces"], task["n_inputs"])
    writer = PartWriter(location(task["out_dir"]), schema, task["rows_per_part"], task["first_part"])
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
