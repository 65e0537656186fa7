"""Count matches per query and class-balance the pool (CLIP: at most ~20,000 pairs a query).

Per query q with `count_q` matching texts, p_q = min(1, t / count_q). A text matched by
queries Q is kept when any of its draws keeps it, u(uid, q, seed) < p_q, so its keep
probability is 1 - prod(1 - p_q) (MetaCLIP's rule). Each draw is a splitmix64 hash of
(uid, query id, seed) mapped to [0, 1): the selection depends on nothing but the data and
the seed, not on order, worker count or machine, and a rerun reproduces it bit for bit.

Pool part N and match part N hold the same rows in the same order, so a part is balanced
on its own: no global join, memory bounded by one part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import layout
from ..distribute import Engine, run_parts
from ..errors import InputError
from ..io import atomic_path, sum_stats, write_json
from ..layout import part_stats
from ..storage import location, read_table
from .config import BalanceConfig
from .match import queries_digest, read_queries, read_query_langs
from .tail_share import per_language_thresholds, thresholds_per_entry
from .urls import uid_key

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniform_draws(uids: np.ndarray, query_ids: np.ndarray, seed: int) -> np.ndarray:
    """u in [0, 1) per (uid, query id, seed); uids are the 16-hex-digit pool uids as uint64."""
    salt = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        key = _splitmix64(uids ^ _splitmix64(query_ids.astype(np.uint64) ^ salt))
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def uid_to_uint64(uids) -> np.ndarray:
    """Pool uids as uint64 (`urls.uid_key`): ours (16 hex digits) parsed from the Arrow
    buffer, no Python string per row; a source's own (`--uid-col`) one by one."""
    arr = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    width = None
    if not arr.null_count:
        lengths = pc.utf8_length(arr)
        shortest, longest = pc.min_max(lengths).values()
        if shortest.as_py() == longest.as_py() in (16, 32):
            width = longest.as_py()
    if width is None:
        return np.array([uid_key(u or "") for u in arr.to_pylist()], dtype=np.uint64)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    digits = arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    try:
        words = np.frombuffer(bytes.fromhex(digits.decode("ascii")), dtype=">u8").astype(np.uint64)
    except (UnicodeDecodeError, ValueError):  # not all hex: one by one
        return np.array([uid_key(u) for u in arr.to_pylist()], dtype=np.uint64)
    return words if width == 16 else words[0::2] ^ words[1::2]  # 32 digits: the halves' xor, as uid_key


def count_entries(match_parts: list[Path], n_queries: int, out_path: Path) -> np.ndarray:
    """`entry_counts.parquet` (query_id, count) for every query id, zeros included.

    Each match part brings its own (query_id, count) sums (`matches/_counts/`), so this is
    a sum of small per-part vectors: the billion-row matches are never read again here.
    """
    counts = np.zeros(n_queries, dtype=np.int64)
    for part in match_parts:
        path = layout.part_counts(part.parent, part.stem)
        if not path.exists():
            raise InputError(f"{path}: per-part counts missing; rerun the match step")
        table = read_table(path)
        ids = table.column("query_id").to_numpy().astype(np.int64)
        if ids.size and (ids.max() >= n_queries or ids.min() < 0):
            raise InputError(
                f"{part}: query id {int(ids.max())} is outside the query list (0..{n_queries - 1}); "
                "the matches were made with another list"
            )
        np.add.at(counts, ids, table.column("count").to_numpy())
    with atomic_path(out_path) as tmp:
        pq.write_table(
            pa.table({"query_id": pa.array(np.arange(n_queries, dtype=np.int32)), "count": pa.array(counts)}),
            tmp,
            compression="zstd",
        )
    return counts


def keep_probabilities(counts: np.ndarray, per_query) -> np.ndarray:
    """min(1, t / count) per query; `per_query` is one t or each query's own."""
    return np.minimum(1.0, per_query / np.maximum(counts, 1)).astype(np.float64)


_STATE: dict = {}


def _init_worker(queries: list[str], p: np.ndarray, seed: int, draw_p: np.ndarray | None = None) -> None:
    """Hand the query strings and keep probabilities over once per process, not once per part.
    `p`: each query's keep probability at t (recorded per row as `keep_prob`); `draw_p`: the
    one the draws use (None: `p`; online balancing keeps more, or everything)."""
    _STATE.update(
        queries=pa.array(queries, pa.string()),
        p=p,
        seed=seed,
        draw_p=p if draw_p is None else draw_p,
        online=draw_p is not None,
    )


def _query_names(ids, queries: pa.Array) -> pa.Array:
    """The query strings of every row's ids, as list<string>, built in Arrow (a part holds
    millions of (row, query) pairs: Python lists of them cost ~2 KB a row)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(ids) == 0:
        return pa.array([], pa.list_(pa.string()))
    offsets = ids.offsets
    rebased = pc.subtract(offsets, offsets[0])
    return pa.ListArray.from_arrays(rebased, queries.take(pc.list_flatten(ids)))


def flatten_ids(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(query id, row index) of every (row, matched query) pair of a list<int> array."""
    flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
    return flat, pc.list_parent_indices(lists).to_numpy()


def text_keep_probability(parent: np.ndarray, p_pairs: np.ndarray, n: int) -> np.ndarray:
    """1 - prod(1 - p) per row, summed in log space; p == 1 gives exactly 1."""
    with np.errstate(divide="ignore"):
        log_miss = np.bincount(parent, weights=np.log1p(-p_pairs), minlength=n)
    return -np.expm1(log_miss)


def balance_part(pool_part: str, match_part: str, out_path: str) -> dict:
    """Keep or drop each matched row of one part; write the kept rows with their draws, then
    the part's stats (`_stats/NAME.json`, its done marker)."""
    p, seed, queries, draw_p = _STATE["p"], _STATE["seed"], _STATE["queries"], _STATE["draw_p"]
    matches = read_table(match_part)
    n = len(matches)
    if n == 0:
        kept = matches.append_column("keep_prob", pa.array([], pa.float64()))
        keep_mask = np.zeros(0, dtype=bool)
        keep_prob = np.zeros(0)
    else:
        flat, parent = flatten_ids(matches.column("query_ids").combine_chunks())
        uids = uid_to_uint64(matches.column("uid"))
        u = uniform_draws(uids[parent], flat, seed)
        p_pairs = p[flat]
        keep_mask = np.bincount(parent, weights=(u < draw_p[flat]), minlength=n) > 0
        keep_prob = text_keep_probability(parent, p_pairs, n)
        kept = matches.append_column("keep_prob", pa.array(keep_prob)).filter(pa.array(keep_mask))

    pool = read_table(pool_part)
    lookup = pc.index_in(kept.column("uid"), value_set=pool.column("uid"))
    if kept.num_rows and pc.any(pc.is_null(lookup)).as_py():
        raise InputError(f"{match_part}: uids missing from {pool_part}; rerun the match step")
    rows = pool.take(lookup)
    ids = kept.column("query_ids")
    extra = [c for c in pool.column_names if c not in ("uid", "url", "text")]
    table = pa.table(
        {
            "uid": kept.column("uid"),
            "url": rows.column("url"),
            "text": rows.column("text"),
            "query_ids": ids,
            "queries": _query_names(ids, queries),
            "keep_prob": kept.column("keep_prob"),
            **({"lang": kept.column("lang")} if "lang" in kept.column_names else {}),
            **{c: rows.column(c) for c in extra},
        }
    )
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    stats: dict[str, Any] = {
        "matched": n,
        "kept": int(keep_mask.sum()),
        "dropped_by_balance": int(n - keep_mask.sum()),
        # online, what a pass at t keeps of the downloaded candidates (offline: of every match)
        "expected_kept": float(keep_prob[keep_mask].sum() if _STATE["online"] else keep_prob.sum()),
    }
    if "lang" in matches.column_names:  # worldwide: what each text language kept
        text_langs = matches.column("lang").to_pylist()
        by_lang: dict[str, list[int]] = {}
        for lang, keep in zip(text_langs, keep_mask.tolist()):
            entry = by_lang.setdefault(lang, [0, 0])
            entry[0] += 1
            entry[1] += int(keep)
        stats["by_lang"] = dict(sorted(by_lang.items()))
    out = location(out_path)
    with atomic_path(part_stats(out.parent, out.stem)) as tmp:
        tmp.write_text(json.dumps(stats, sort_keys=True))
    return stats


def _sum_by_lang(paths) -> dict[str, dict]:
    """Matched and kept rows per text language, summed over the parts' stats."""
    out: dict[str, dict] = {}
    for path in paths:
        for lang, (matched, kept) in _read_json(location(path)).get("by_lang", {}).items():
            info = out.setdefault(lang, {"matched": 0, "kept": 0})
            info["matched"] += matched
            info["kept"] += kept
    return dict(sorted(out.items()))


def _read_json(path) -> dict:
    """A JSON object file, or {} when there is none (or it holds something else)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _balance_args(args: tuple) -> dict:
    return balance_part(*args)


def balance(curation: Path, queries_path: str, config: BalanceConfig, engine: Engine, progress=None) -> dict:
    """Count (entry_counts.parquet) then balance every part into curation/selected/ with
    the config's cap per query and seed.

    A part whose stats exist is skipped, so a killed run resumes; the parts in selected/
    must have been made from these matches, queries and config: the balance step
    (`shards.run_balance`) clears the folder when its key changes. A query list other than
    the one the matches were made with (`match_stats.json`'s `queries_sha256`) is refused."""
    per_query, seed = config.per_query, config.seed
    curation = location(curation)
    match_dir, pool_dir, out_dir = curation / layout.MATCHES, curation / layout.POOL, curation / layout.SELECTED
    parts = sorted(match_dir.glob(layout.PART_GLOB))
    if not parts:
        raise InputError(f"{match_dir}: no match parts; run the match step first")
    queries = read_queries(queries_path)
    matched_with = _read_json(layout.step_stats(curation, "match")).get("queries_sha256")
    if matched_with is not None and matched_with != queries_digest(queries):
        raise InputError(
            f"{queries_path}: not the query list the matches were made with; "
            "rerun the match step with it, or pass the same --queries"
        )
    counts = count_entries(parts, len(queries), curation / layout.ENTRY_COUNTS)
    langs = read_query_langs(queries_path)
    per_lang: dict[str, dict] | None = None
    t: int | np.ndarray = per_query
    if langs is not None:
        # worldwide: per_query is the reference language's t; each other language gets the
        # t with the same tail share of its own matches (tail_share.py)
        lang_array = np.array(langs, dtype=object)
        per_lang = per_language_thresholds(counts, lang_array, per_query, config.reference_lang)
        t = thresholds_per_entry(lang_array, per_lang)
    p = keep_probabilities(available_counts(counts, t, config.online_cap if config.mode == "online" else None), t)
    draw_p = online_draw_probabilities(counts, t, config)
    out_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    for part in parts:
        out = out_dir / part.name
        if not (part_stats(out_dir, part.stem).exists() and out.exists()):
            todo.append((str(pool_dir / part.name), str(part), str(out)))
    bar = progress(len(parts)) if progress else None
    if bar is not None:
        bar.update(len(parts) - len(todo))
    run_parts(
        _balance_args,
        todo,
        engine,
        setup=_init_worker,
        setup_args=(queries, p, seed, draw_p),
        describe=lambda t: t[1],
        on_done=lambda task, stats: bar.update(1) if bar is not None else None,
    )
    if bar is not None:
        bar.close()

    totals = sum_stats(part_stats(out_dir, part.stem) for part in parts)
    if per_lang is not None:
        by_lang = _sum_by_lang(part_stats(out_dir, part.stem) for part in parts)
        for lang, info in per_lang.items():
            info.update(by_lang.get(lang, {"matched": 0, "kept": 0}))
        for lang in sorted(set(by_lang) - set(per_lang)):  # texts of languages without entries
            per_lang[lang] = {"t": None, **by_lang[lang]}
        totals["reference_lang"] = config.reference_lang
        totals["languages"] = per_lang
    over = counts > per_query
    totals.update(
        {
            "per_query": per_query,
            "seed": seed,
            "queries_with_matches": int((counts > 0).sum()),
            "queries_over_cap": int(over.sum()),
            "match_share_of_queries_over_cap": round(float(counts[over].sum() / max(1, counts.sum())), 6),
            "expected_kept": round(totals["expected_kept"], 1),
        }
    )
    if config.mode == "online":
        totals.update({"mode": "online", "online_cap": config.online_cap})
        write_entry_counts(curation.parent / layout.ENTRY_COUNTS, counts, queries, langs, per_query, t, config)
    write_json(layout.step_stats(curation, "balance"), totals)
    return totals


def available_counts(counts: np.ndarray, t, online_cap: float | None) -> np.ndarray:
    """The pairs per query a dataset stands for when a pass draws from it: every match, or,
    downloaded online with a cap of K x t, min(count, K t). A pass keeps a text with
    1 - prod(1 - min(1, t_q / available_q)), so a capped head still gives about t pairs a
    pass (for t up to K x its download t) instead of t x K t / count. The trainer
    (`train.balance`) and the balance step's `keep_prob` both use this."""
    if online_cap is None:
        return counts
    return np.minimum(counts.astype(np.float64), online_cap * np.asarray(t, dtype=np.float64))


def online_draw_probabilities(counts: np.ndarray, t, config: BalanceConfig) -> np.ndarray | None:
    """What the draws keep: None offline (the keep probabilities at t); online, every
    matched pair (1), or at most `online_cap` x t pairs per query in expectation
    (min(1, cap t / count)), which bounds the download of extreme heads."""
    config.check()
    if config.mode == "offline":
        return None
    if config.online_cap is None:
        return np.ones(len(counts), dtype=np.float64)
    return keep_probabilities(counts, config.online_cap * np.asarray(t, dtype=np.float64))


def write_entry_counts(path, counts, queries, langs, per_query: int, t, config: BalanceConfig) -> None:
    """Beside the shards of an online-balanced dataset: every query's matches over the whole
    matched set (not only what downloaded), its t (worldwide: its language's), and the
    settings, which is what a trainer needs to balance each pass."""
    columns = {
        "query_id": pa.array(np.arange(len(counts), dtype=np.int32)),
        "query": pa.array(queries, pa.string()),
        "count": pa.array(counts, pa.int64()),
        "t": pa.array(np.broadcast_to(np.asarray(t, dtype=np.float64), counts.shape).astype(np.int64)),
    }
    if langs is not None:
        columns["lang"] = pa.array(langs, pa.string())
    meta = {
        "balance": json.dumps(
            {"mode": "online", "per_query": per_query, "online_cap": config.online_cap, "seed": config.seed},
            sort_keys=True,
        )
    }
    table = pa.table(columns).replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
