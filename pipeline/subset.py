"""`python -m pipeline subset`: the curation's selected uids as a subset file for DataComp's tools.

    python -m pipeline subset --curation shards --out subset.npy
    python -m pipeline subset --curation shards-online --balance-t 20000 --out subset.npy

DataComp's currency is a subset file (`resharder.py --subset-file`, the baselines'
output): a numpy array of dtype `u8,u8`, one element per kept sample's 128-bit uid (its
32 hex digits: f0 the high 64 bits, int(uid[:16], 16), f1 the low 64 bits), in native
byte order, saved with `np.save`, and sorted, because the resharder looks each sample up
with `np.searchsorted` (an unsorted file silently drops samples). The structured array's
order is (f0, f1), which for lowercase hex is the uids' string order.

Out of core: DuckDB checks and sorts the uids (spilling to a temporary folder beyond
`--memory-limit`) and hands them over in batches, which go straight into a memory-mapped
.npy whose header is written first from the count: memory is a batch, whatever the
pool's size. `--format txt` (a uid a line) and `parquet` (one `uid` column) take any
uids in the same order; `npy` needs DataComp's 32-hex-digit uids (a pool read with its
own uid column), and anything else is a one-line error naming the file and row.

Beside the output, `FILE.json`: the count, the file's sha256, the format, the source
folder, how many uids were listed twice (DataComp's resharder writes a sample once per
listing) and, for an online-balanced dataset (`shards --balance online`), the T, seed and
pass drawn: such a dataset selected every matched pair, so `--balance-t T` writes the
subset a training pass at T draws (`collect.online_draw`, the trainer's rule), which is
what DataComp's tools then reshard; without it, every selected uid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .duck import connect
from .errors import InputError
from .io import atomic_path, sql_str
from .storage import listing, location, read_table

FORMATS = ("npy", "txt", "parquet")
SUBSET_DTYPE = np.dtype("u8,u8")  # DataComp's: [('f0', '<u8'), ('f1', '<u8')] on a little-endian machine
BATCH_ROWS = 1 << 20


def hex_to_u16(uids: pa.Array) -> np.ndarray:
    """32-hex-digit uids (an Arrow string array, lower or upper case) as DataComp's `u8,u8`
    elements: parsed from the Arrow buffer as big-endian 64-bit halves, no Python int per row."""
    arr = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    out = np.empty(len(arr), dtype=SUBSET_DTYPE)
    if len(arr):
        digits = "".join(arr.to_pylist()) if arr.offset or arr.null_count else None
        if digits is None:
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[: len(arr) + 1]
            digits = arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]].decode("ascii")
        halves = np.frombuffer(bytes.fromhex(digits), dtype=">u8").reshape(-1, 2)
        out["f0"], out["f1"] = halves[:, 0], halves[:, 1]
    return out


def u16_to_hex(subset: np.ndarray) -> list[str]:
    """The inverse of `hex_to_u16`: lowercase 32-digit uids."""
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(subset["f0"], subset["f1"])]


def _curation_dir(curation) -> Path:
    """The curation folder (given, or the shard folder's curation/) whose selected/ has
    parts; InputError when it has none."""
    cur = location(curation)
    if (cur / layout.CURATION).is_dir() or not (cur / layout.SELECTED).exists():
        cur = cur / layout.CURATION  # the shard folder given: its curation/
    if not listing(cur / layout.SELECTED, layout.PART_GLOB):
        raise InputError(
            f"{cur / layout.SELECTED}: no selected parts; run `pipeline shards` (or its balance step) first"
        )
    return cur


def _drawn_parts(cur: Path, t: float, seed: int, pass_: int, tmp: Path) -> str:
    """For an online-balanced curation `cur`: what a pass at T draws of its selected rows,
    written as parquet parts (uid only) under `tmp`; their glob."""
    from .collect.online_draw import OnlineBalance, online_keep_probabilities, uid_keys

    table_path = cur.parent / layout.ENTRY_COUNTS
    if not table_path.exists():
        raise InputError(
            f"{table_path}: not found: --balance-t applies to a dataset built with `shards --balance online`"
        )
    balance = OnlineBalance(float(t), int(seed), online_keep_probabilities(read_table(table_path), float(t)))
    for i, part in enumerate(listing(cur / layout.SELECTED, layout.PART_GLOB)):
        rows = read_table(part, columns=["uid", "query_ids"])
        kept = balance.drawn(uid_keys(rows.column("uid").to_pylist()), rows.column("query_ids").combine_chunks(), pass_)
        pq.write_table(rows.select(["uid"]).filter(pa.array(kept)), tmp / f"part-{i:05d}.parquet")
    return str(tmp / "part-*.parquet")


def write_subset(
    curation,
    out,
    fmt: str = "npy",
    *,
    balance_t: float | None = None,
    seed: int = 0,
    pass_: int = 0,
    memory_limit: str = "2GB",
) -> dict:
    """Write the subset file and its sidecar json; the sidecar's contents."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if balance_t is not None and not balance_t > 0:
        raise InputError(f"--balance-t must be > 0, got {balance_t:g}")
    with tempfile.TemporaryDirectory(prefix="subset-") as scratch:
        tmp = Path(scratch)
        cur = _curation_dir(curation)
        source = str(cur / layout.SELECTED / layout.PART_GLOB)
        if balance_t is not None:
            (tmp / "drawn").mkdir()
            source = _drawn_parts(cur, balance_t, seed, pass_, tmp / "drawn")
        con = connect(
            memory_limit=memory_limit, temp_directory=tmp / "duckdb", offline=True, remote=[location(curation)]
        )
        src = f"read_parquet({sql_str(source)}, filename = true, file_row_number = true)"
        if fmt == "npy":
            bad = con.sql(
                f"SELECT filename, file_row_number, uid FROM {src} "
                "WHERE uid IS NULL OR NOT regexp_full_match(uid, '[0-9a-fA-F]{32}') LIMIT 1"
            ).fetchall()
            for filename, row, uid in bad:
                raise InputError(
                    f"{filename}: row {row}: uid {uid!r} is not 32 hex digits: DataComp's subset files hold "
                    "its pool's 128-bit uids (read the pool with its own uid column); --format txt or parquet "
                    "take any uid"
                )
        ((count, distinct),) = con.sql(f"SELECT count(*), count(DISTINCT lower(uid)) FROM {src}").fetchall()
        if not count:
            raise InputError(
                f"{curation}: no selected rows{' drawn at this T' if balance_t else ''}: nothing to subset"
            )
        reader = con.sql(f"SELECT lower(uid) AS uid FROM {src} ORDER BY 1").to_arrow_reader(BATCH_ROWS)
        with atomic_path(out) as path:
            _write(reader, path, fmt, count)
            digest = _sha256(path)
        con.close()
    meta = {
        "count": int(count),
        "listed_twice": int(count - distinct),
        "format": fmt,
        "dtype": "u8,u8 (f0 = high 64 bits, f1 = low 64 bits of the uid), sorted" if fmt == "npy" else None,
        "sha256": digest,
        "source": str(curation),
    }
    if balance_t is not None:
        meta.update(balance_t=balance_t, seed=seed, pass_=pass_)
    with atomic_path(f"{out}.json") as path:
        path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _write(reader, path: Path, fmt: str, count: int) -> None:
    if fmt == "npy":
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=SUBSET_DTYPE, shape=(count,))
        at = 0
        for batch in reader:
            arr[at : at + batch.num_rows] = hex_to_u16(batch.column(0))
            at += batch.num_rows
        arr.flush()
        del arr
    elif fmt == "txt":
        with open(path, "w", encoding="utf-8") as f:
            for batch in reader:
                f.write("".join(u + "\n" for u in batch.column(0).to_pylist()))
    else:
        with pq.ParquetWriter(path, pa.schema([("uid", pa.string())]), compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="the selected uids as a DataComp subset file (.npy of u8,u8), or a uid list",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--curation", required=True, help="the shard folder (`shards --out`) or its curation/ folder")
    p.add_argument("--out", required=True, help="the subset file (FILE.json is written beside it)")
    p.add_argument("--format", choices=FORMATS, default="npy", help="npy (DataComp's), txt or parquet (default: npy)")
    p.add_argument(
        "--balance-t",
        type=float,
        default=None,
        help="online-balanced datasets: the subset a training pass at T draws (default: every selected uid)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --balance-t: the draws' seed, as train's --seed")
    p.add_argument("--pass", dest="pass_", type=int, default=0, help="with --balance-t: which pass (default: 0)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB's memory for the sort; beyond it, it spills")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    meta = write_subset(
        args.curation,
        args.out,
        args.format,
        balance_t=args.balance_t,
        seed=args.seed,
        pass_=args.pass_,
        memory_limit=args.memory_limit,
    )
    if not args.quiet:
        print(json.dumps(meta), file=sys.stdout)
    return 0
