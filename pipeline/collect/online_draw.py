"""The draw of a training pass over an online-balanced dataset, in one home for the
trainer (`train.balance`, per sample as it streams and per shard by index) and for
`pipeline subset --balance-t` (the subset a pass draws).

Pass e keeps a sample when any of its entries i draws it: u(seed, e, uid, i) < min(1, T / n_i),
each (sample, entry) pair its own splitmix64 draw (`balance.uniform_draws`, salted by the
seed and the pass), so a sample is kept with 1 - prod_i(1 - min(1, T / n_i)), the balance
step's rule; n_i is entry i's matches, or min(count, K t) for a download capped at K x t
(`balance.available_counts`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .balance import available_counts, flatten_ids, keep_probabilities, uid_to_uint64, uniform_draws
from .urls import uid_key


def uid_keys(uids: Sequence[str | None]) -> np.ndarray:
    """The draws' uint64 key of each uid (`urls.uid_key`, as the balance step keys them)."""
    return uid_to_uint64(pa.array([u or "" for u in uids], pa.string()))


def _salt(seed: int, pass_: int) -> int:
    """The draws' seed for pass `pass_`: neither the balance step's draws (seed alone) nor
    another pass's."""
    digest = hashlib.blake2b(f"online-balance/{seed}/{pass_}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class OnlineBalance:
    """What a stream needs to draw: T, the seed and each entry's min(1, T / n_i)."""

    t: float
    seed: int
    p: np.ndarray  # per entry id

    def drawn(self, keys: np.ndarray, query_ids: pa.Array, pass_: int) -> np.ndarray:
        """Whether pass `pass_` keeps each sample (uid keys, list<int> of entry ids). A sample
        with no entries, or one outside the table, is never kept."""
        flat, parent = flatten_ids(query_ids)
        n = len(keys)
        if not len(flat):
            return np.zeros(n, dtype=bool)
        inside = (flat >= 0) & (flat < len(self.p))
        u = uniform_draws(keys[parent], flat, _salt(self.seed, pass_))
        hit = inside & (u < self.p[np.where(inside, flat, 0)])
        return np.bincount(parent, weights=hit, minlength=n) > 0

    def keeps(self, uid: str, query_ids, pass_: int) -> bool:
        """`drawn` for one sample (its json's `query_ids`): the same draws bit for bit, in
        plain integer arithmetic (numpy's per-call overhead would cost ~10% of a decode)."""
        if not isinstance(query_ids, list):
            return False
        key, salt = uid_key(uid), _splitmix64(_salt(self.seed, pass_))
        for i in query_ids:
            if isinstance(i, int) and 0 <= i < len(self.p):
                u = (_splitmix64(key ^ _splitmix64((i & _MASK) ^ salt)) >> 11) / float(1 << 53)
                if u < self.p[i]:
                    return True
        return False


_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """`pipeline.collect.balance._splitmix64` for one Python int (uint64 wrap-around)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def online_keep_probabilities(table: pa.Table, t: float) -> np.ndarray:
    """min(1, T / n_i) per entry of an online `entry_counts.parquet` table (its `count`, `t`
    and the cap in its `balance` metadata)."""
    settings = json.loads((table.schema.metadata or {}).get(b"balance", b"{}") or b"{}")
    counts = table.column("count").to_numpy().astype(np.int64)
    available = available_counts(counts, table.column("t").to_numpy().astype(np.float64), settings.get("online_cap"))
    return keep_probabilities(available, float(t))
