"""Balance while training: each pass draws a fresh balanced subset of online shards.

Shards built with `pipeline shards --balance online` hold every matched pair, each
sample's matched entry ids (`query_ids`, in its json, its parquet row and the shard's
index) and, beside them, `entry_counts.parquet`: every entry's matches over the whole
matched set. With `--balance-t T`, pass e keeps a sample with probability
1 - prod_i(1 - min(1, T / n_i)) over its entries i (MetaCLIP's rule, as the balance step
applies it; n_i is entry i's matches, or min(count, K t) for a download capped at K x t:
`pipeline.collect.balance.available_counts`). As in the balance step, each (sample, entry)
pair has its own draw, u(seed, e, uid, i) < min(1, T / n_i), and the sample is kept when
any of its entries draws it: a splitmix64 hash (`uniform_draws`), so every rank and worker
agrees on a sample, a rerun draws the same subsets, another seed other ones, and the
decision costs nothing before the image is read (with a shard index, before it is read at all).

A pass: the stream draws shards with replacement (`train.stream`); pass e of a stream is
its draws [e S / W, (e + 1) S / W) for S shards and W streams (ranks x workers), so over
all streams a pass reads as many shards as there are, about the whole dataset once, and
keeps its balanced subset of it. MetaCLIP's loaders (data_metaclip*.py) draw per epoch
too, but keep no record of what a pass drew and resume per worker at shard level; here
`pass_record` computes a pass's per-entry expected and drawn counts from the shards'
parquet files alone (streamed shard by shard: memory is one shard plus the entry
vectors), and the stream resumes step-exactly as without balancing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.collect.balance import available_counts, flatten_ids, keep_probabilities, text_keep_probability
from pipeline.collect.online_draw import OnlineBalance, uid_keys
from pipeline.errors import InputError, one_line
from pipeline.layout import ENTRY_COUNTS
from pipeline.storage import parquet_file, read_table

REBUILD = "build them with `python -m pipeline shards --balance online`"


@dataclass(frozen=True)
class EntryTable:
    """`entry_counts.parquet` beside the shards, checked against them."""

    path: str
    queries: list[str]
    counts: np.ndarray  # matches per entry over the whole matched set
    available: np.ndarray  # what a pass draws from (counts, or min(count, K t) when capped)
    in_shards: np.ndarray  # samples per entry in the shards
    settings: dict  # the shards' balance settings (per_query, online_cap, seed)


def shard_parquet(url: str) -> str:
    return url[: -len(".tar")] + ".parquet" if url.endswith(".tar") else url + ".parquet"


def _folder(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def load_entry_table(urls: Sequence[str]) -> EntryTable:
    """The per-entry counts beside the shards, checked: InputError (one line) when there is
    none (offline-balanced or foreign shards), when it is not an online table, when shards
    of several folders have different ones, or when the shards' entry ids disagree with it
    (an id outside it, a name that is not its, more samples of an entry than it counts)."""
    folders = sorted({_folder(u) for u in urls})
    if any(u.startswith("pipe:") for u in urls):
        raise InputError(f"--balance-t: cannot find {ENTRY_COUNTS} beside pipe: shards; give the shards' paths or URLs")
    tables = {}
    for folder in folders:
        path = f"{folder}/{ENTRY_COUNTS}"
        try:
            tables[path] = read_table(path)
        except FileNotFoundError:
            raise InputError(
                f"{path}: not found: --balance-t needs shards that carry per-entry counts, and these do not "
                f"(offline-balanced shards, or shards from elsewhere); {REBUILD}"
            ) from None
        except (OSError, ValueError, pa.ArrowException) as e:
            raise InputError(f"{path}: cannot read ({one_line(e)})") from None
    path, table = next(iter(tables.items()))
    for other, t in tables.items():
        if not t.equals(table):
            raise InputError(f"{other}: differs from {path}: shards of different datasets cannot be balanced together")
    meta = table.schema.metadata or {}
    try:
        settings = json.loads(meta.get(b"balance", b"{}"))
    except ValueError:
        settings = {}
    if settings.get("mode") != "online" or not {"query_id", "count", "t"} <= set(table.column_names):
        raise InputError(f"{path}: not the per-entry counts of an online-balanced dataset; {REBUILD}")
    ids = table.column("query_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise InputError(f"{path}: query_id is not 0..{len(ids) - 1} in order")
    counts = table.column("count").to_numpy().astype(np.int64)
    queries = table.column("query").to_pylist() if "query" in table.column_names else [""] * len(ids)
    cap = settings.get("online_cap")
    available = available_counts(counts, table.column("t").to_numpy().astype(np.float64), cap)
    in_shards = np.zeros(len(counts), dtype=np.int64)
    names = pa.array(queries, pa.string())
    for url in urls:
        where = shard_parquet(url)
        rows = _success_rows(where, ["query_ids", "queries"])
        flat, parent = flatten_ids(rows.column("query_ids").combine_chunks())
        bad = (flat < 0) | (flat >= len(counts))
        if bad.any():
            row = int(parent[np.argmax(bad)])
            raise InputError(
                f"{where}: row {row}: entry id {int(flat[np.argmax(bad)])} is not in {path} "
                f"(0..{len(counts) - 1}); the counts are not these shards'"
            )
        if "queries" in rows.column_names and len(flat):
            said = pc.list_flatten(rows.column("queries").combine_chunks())
            differ = pc.not_equal(said, names.take(pa.array(flat))).to_numpy(zero_copy_only=False)
            if differ.any():
                k = int(np.argmax(differ))
                raise InputError(
                    f"{where}: row {int(parent[k])}: entry {int(flat[k])} is {said[k].as_py()!r} there but "
                    f"{queries[int(flat[k])]!r} in {path}; the counts are not these shards'"
                )
        np.add.at(in_shards, flat, 1)
    over = in_shards > counts
    if over.any():
        i = int(np.argmax(over))
        raise InputError(
            f"{path}: entry {i} ({queries[i]!r}) counts {int(counts[i])} matches but the shards hold "
            f"{int(in_shards[i])} samples of it; the counts are not these shards'"
        )
    return EntryTable(path, queries, counts, available, in_shards, settings)


def _success_rows(where: str, columns: list[str]) -> pa.Table:
    """A shard parquet's rows of samples in the tar (status success), with `columns`: one
    open of the file for its schema and the columns (on an object store, one footer read)."""
    try:
        with parquet_file(where) as pf:
            names = pf.schema_arrow.names
            if "query_ids" not in names:
                raise InputError(f"{where}: no query_ids column: these shards carry no entry ids; {REBUILD}")
            table = pf.read(columns=[c for c in columns if c in names] + (["status"] if "status" in names else []))
    except FileNotFoundError:
        raise InputError(f"{where}: not found; --balance-t needs each shard's parquet file ({REBUILD})") from None
    except (OSError, ValueError, pa.ArrowException) as e:
        raise InputError(f"{where}: cannot read ({one_line(e)})") from None
    if "status" in table.column_names:
        table = table.filter(pc.equal(table.column("status"), "success"))
    return table


def make_balance(table: EntryTable, t: float, seed: int) -> OnlineBalance:
    if not t > 0:
        raise InputError(f"--balance-t must be > 0, got {t:g}")
    return OnlineBalance(float(t), int(seed), keep_probabilities(table.available, float(t)))


def pass_of(draw: int, streams: int, shards: int) -> int:
    """The pass a stream's shard draw `draw` is in (see module doc)."""
    return draw * streams // max(1, shards)


def _shard_samples(urls: Sequence[str]) -> Iterator[tuple[np.ndarray, pa.Array, list[str | None]]]:
    for url in urls:
        rows = _success_rows(shard_parquet(url), ["uid", "query_ids"])
        uids = rows.column("uid").to_pylist() if "uid" in rows.column_names else [None] * rows.num_rows
        yield uid_keys(uids), rows.column("query_ids").combine_chunks(), uids


def pass_record(
    table: EntryTable, balance: OnlineBalance, urls: Sequence[str], pass_: int, held_out: Callable[[str], bool]
) -> tuple[pa.Table, dict]:
    """Pass `pass_`'s per-entry record and totals, over the shards' samples that training
    can draw (`held_out` ones excluded): `expected` is the sum of their keep probabilities,
    `drawn` how many the pass keeps. Entries with no sample in the shards are left out."""
    n = len(table.counts)
    expected = np.zeros(n)
    drawn = np.zeros(n, dtype=np.int64)
    samples = np.zeros(n, dtype=np.int64)
    total = {"samples": 0, "expected": 0.0, "drawn": 0}
    for keys, ids, uids in _shard_samples(sorted(urls)):
        train = np.array([not (u and held_out(u)) for u in uids], dtype=bool)
        keys, ids = keys[train], ids.filter(pa.array(train))
        flat, parent = flatten_ids(ids)
        inside = (flat >= 0) & (flat < n)
        p = text_keep_probability(parent, balance.p[np.where(inside, flat, 0)] * inside, len(keys))
        kept = balance.drawn(keys, ids, pass_)
        np.add.at(expected, flat[inside], p[parent[inside]])
        np.add.at(drawn, flat[inside], kept[parent[inside]])
        np.add.at(samples, flat[inside], 1)
        total["samples"] += len(keys)
        total["expected"] += float(p.sum())
        total["drawn"] += int(kept.sum())
    present = np.flatnonzero(samples)
    record = pa.table(
        {
            "query_id": pa.array(present.astype(np.int32)),
            "query": pa.array([table.queries[i] for i in present], pa.string()),
            "count": pa.array(table.counts[present]),
            "samples": pa.array(samples[present]),
            "keep_p": pa.array(balance.p[present]),
            "expected": pa.array(expected[present]),
            "drawn": pa.array(drawn[present]),
        }
    ).replace_schema_metadata({"pass": str(pass_), "t": repr(balance.t), "seed": str(balance.seed)})
    total = {"pass": pass_, "t": balance.t, **total, "expected": round(total["expected"], 3)}
    return record, total


class PassRecorder:
    """Rank 0's record of the passes: RUN/balance/pass-NNNN.parquet (`pass_record`, totals
    in its metadata) for each pass the stream reaches, written by a background thread so
    the steps do not wait for a scan of the shards' metadata; `latest` is the newest
    pass's totals, which metrics.jsonl rows carry. A resumed run keeps the records it has."""

    def __init__(
        self, run, table: EntryTable, balance: OnlineBalance, urls: Sequence[str], held_out: Callable[[str], bool]
    ):
        from concurrent.futures import ThreadPoolExecutor

        self.run, self.table, self.balance, self.urls, self.held_out = run, table, balance, list(urls), held_out
        self.reached_pass = -1
        self.latest: dict | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="balance-record")

    def reached(self, pass_: int) -> None:
        while self.reached_pass < pass_:
            self.reached_pass += 1
            self._pool.submit(self._record, self.reached_pass)

    def close(self) -> None:
        """Wait for the records still being written."""
        self._pool.shutdown(wait=True)

    def _record(self, pass_: int) -> None:
        import sys

        from pipeline.io import atomic_path

        rel = f"balance/pass-{pass_:04d}.parquet"
        try:
            path = self.run.local / rel
            if self.run.download(rel):
                meta = pq.read_schema(path).metadata or {}
                if (
                    float(meta.get(b"t", b"nan")) == self.balance.t
                    and int(meta.get(b"seed", b"-1")) == self.balance.seed
                ):
                    self.latest = json.loads(meta.get(b"totals", b"{}"))
                    return
            record, totals = pass_record(self.table, self.balance, self.urls, pass_, self.held_out)
            record = record.replace_schema_metadata({**record.schema.metadata, b"totals": json.dumps(totals).encode()})
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                pq.write_table(record, tmp, compression="zstd")
            self.run.upload(rel)
            self.latest = totals
        except Exception as e:  # noqa: BLE001 - a record lost is a warning, not the end of the run
            print(f"warning: {rel}: not written ({one_line(e, typed=True)})", file=sys.stderr, flush=True)
