"""Exact dedup of the pool's uids across every input, partitioned by hash (phase 2), and the
two files it works through: each input's key file (written by its phase-1 task) and each
dedup bucket's result (read back by the phase-3 tasks). See the stage docstring, "How it
scales".

A kept row is known by its position ``pos = input_index << POS_SHIFT | row`` (row: its number
among the input's kept rows), by h, the 64-bit hash of its uid, and by u, the 64-bit hash of
its URL. A row is a duplicate when its h occurs at a lower position; a duplicate whose u is
not the first row's is counted apart (a source's uid given to two different URLs: the
first kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io import atomic_path
from ...storage import load_npy, location

POS_SHIFT = 40  # pos = input index << 40 | row number in that input
FINE_BITS = 12  # key files group (pos, h) by the top 12 bits of h: 4096 fine buckets
FINE_BUCKETS = 1 << FINE_BITS


def keys_path(spill_path: Path) -> Path:
    """The key file of an input: next to its spill."""
    return spill_path.with_name(spill_path.name.replace(".parquet", ".keys.npy"))


def write_keys(hashes: list[np.ndarray], url_hashes: list[np.ndarray], base: int, path: Path) -> None:
    """The key file of one input: its (pos, h, u) triples grouped by the top FINE_BITS of h.

    One int64 array: ``offsets`` (FINE_BUCKETS + 1; fine bucket f holds entries
    ``offsets[f]:offsets[f + 1]``), then the n positions, the n uid hashes and the n URL
    hashes (as int64). Within a fine bucket the positions ascend (the sort is stable).
    """
    h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    u = np.concatenate(url_hashes) if url_hashes else np.empty(0, np.uint64)
    n = len(h)
    fine = (h >> np.uint64(64 - FINE_BITS)).astype(np.uint16)
    order = np.argsort(fine, kind="stable")
    head = FINE_BUCKETS + 1
    out = np.empty(head + 3 * n, np.int64)
    out[0] = 0
    np.cumsum(np.bincount(fine, minlength=FINE_BUCKETS), out=out[1:head])
    del fine
    np.add(order, base, out=out[head : head + n])
    out[head + n : head + 2 * n] = h[order].view(np.int64)
    out[head + 2 * n :] = u[order].view(np.int64)
    del order, h, u
    _save_npy(out, path)


def _save_npy(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def dedup_bucket(task: tuple) -> np.ndarray:
    """Phase 2 for one bucket (runs in a worker): the duplicate positions among its keys.

    Reads fine buckets [lo, hi) of every input's key file, finds every position whose hash
    occurs at a lower position, and writes one int64 array: the duplicate count of each
    input (len(key_files) entries), the count of those whose URL is not their first row's,
    then the duplicate positions in ascending order (so the ones of input i are a
    contiguous run). Returns the two per-input count vectors, concatenated.
    """
    lo, hi, key_files, out_path = task
    head = FINE_BUCKETS + 1
    hs, ps, us = [], [], []
    for kf in key_files:  # in input order
        arr = load_npy(kf)
        n = (arr.shape[0] - head) // 3
        a, z = int(arr[lo]), int(arr[hi])
        if z > a:
            ps.append(np.array(arr[head + a : head + z]))
            hs.append(np.array(arr[head + n + a : head + n + z]))
            us.append(np.array(arr[head + 2 * n + a : head + 2 * n + z]))
        del arr
    h = np.concatenate(hs) if hs else np.empty(0, np.int64)
    pos = np.concatenate(ps) if ps else np.empty(0, np.int64)
    u = np.concatenate(us) if us else np.empty(0, np.int64)
    del hs, ps, us
    # Equal hashes share a fine bucket, so each group of equal h lies in the concatenation
    # in input order and, within an input, in ascending position: after a stable sort by h
    # the first entry of every group is its lowest position, the others are duplicates.
    order = np.argsort(h, kind="stable")
    h, u = h[order], u[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = h[1:] != h[:-1]
    del h
    group = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))  # each entry's first
    repeat = np.flatnonzero(~first)
    other = repeat[u[repeat] != u[group[repeat]]]
    del u, group, first
    dup = pos[order[repeat]]
    n_in = len(key_files)
    other_counts = np.bincount(pos[order[other]] >> POS_SHIFT, minlength=n_in).astype(np.int64)
    del order, repeat, pos, other
    dup.sort()
    counts = np.bincount(dup >> POS_SHIFT, minlength=n_in).astype(np.int64)
    _save_npy(np.concatenate([counts, other_counts, dup]), location(out_path))
    return np.concatenate([counts, other_counts])


def read_dups(pieces: list, n_inputs: int) -> np.ndarray:
    """One input's duplicate positions, ascending: its runs in the bucket results."""
    arrays = []
    for path, start, count in pieces:
        arr = load_npy(path)
        arrays.append(np.array(arr[2 * n_inputs + start : 2 * n_inputs + start + count]))
        del arr
    dups = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    dups.sort()
    return dups
