"""`python -m pipeline decontaminate`: the shards without the samples that overlap an evaluation set.

    python -m train.overlap --checkpoint runs/NAME        # writes runs/NAME/eval/overlap_pairs.parquet
    python -m pipeline decontaminate --shards shards --matches runs/NAME/eval/overlap_pairs.parquet \\
        --out shards-clean
    torchrun ... -m train --train-data 'shards-clean/[0-9]*.tar'

The CLIP paper measured overlap instead of removing it (section 5); this is the other
option it discusses, for a retrain on data that holds none of the detected duplicates.

Each SHARDS/NAME.tar is copied to OUT/NAME.tar without the members of the samples whose key
the matches (``train.overlap``'s pairs: columns ``shard``, ``key``, ``dataset``, and
``kind`` for --kinds) list for a shard of that file name, and SHARDS/NAME.parquet to
OUT/NAME.parquet without those keys' rows (rows of failed downloads, which have no
members, stay). Members are copied with their original headers (names, mtimes, owners,
modes) in their original order, so a rerun writes byte-identical files.

Resumable: each file is written under a temporary name and renamed, the parquet before the
tar, and a rerun skips the shards whose tar is in OUT (their counts are read again from
SHARDS). OUT/decontaminate.json records the inputs' digest first ("complete": false) and the
counts at the end: shards, samples in and out, removed in all and per evaluation set (a
sample matched by two sets counts once in ``removed`` and once under each set), matched keys
not found in their shard and matched shards not among SHARDS. A rerun with other matches
or shards into the same OUT is refused. One writer per OUT (`outlock`). SHARDS and OUT may
be fsspec URLs.

A shard's index (NAME.tar.idx, the byte ranges `--balance-t` reads by) is written anew for
the filtered tar, from its headers, when SHARDS has one; ``entry_counts.parquet`` (a
``--balance online`` dataset's matches per query, which the trainer's ``--balance-t`` needs)
is copied as it is: its counts are over the whole matched set, not the shards. Left out of
OUT (listed in ``left_out``): NAME_stats.json (img2dataset's download counts, which no
longer describe the filtered shard), curation/, audit/ and any other file of SHARDS; the
trainer reads only the tars, and the audit of SHARDS still describes how they were made.
Bad input (the matches file missing, unreadable or lacking a column, no shard in SHARDS,
OUT equal to SHARDS, matches that name none of the shards) is one line, exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from collections import Counter
from collections.abc import Callable

from .errors import InputError
from .layout import ENTRY_COUNTS
from .shard_format import INDEX_SUFFIX, split_member, stream_members, write_index

STATS_NAME = "decontaminate.json"
REQUIRED_COLUMNS = ("shard", "key", "dataset")


def read_matches(
    path, datasets: list[str] | None = None, kinds: list[str] | None = None
) -> dict[str, dict[str, set[str]]]:
    """{shard file name: {key: the evaluation sets it matched}} from a pairs parquet,
    restricted to `datasets` and `kinds` when given."""
    import pyarrow as pa

    from .storage import location, parquet_file

    loc = location(path, "--matches")
    if not loc.exists():
        raise InputError(f"--matches {path}: not found")
    try:
        with parquet_file(loc) as pf:
            names = pf.schema_arrow.names
            missing = [c for c in REQUIRED_COLUMNS + (("kind",) if kinds else ()) if c not in names]
            if missing:
                raise InputError(
                    f"--matches {path}: no column {', '.join(missing)} (expected train.overlap's overlap_pairs.parquet)"
                )
            rows = pf.read(columns=[c for c in REQUIRED_COLUMNS + ("kind",) if c in names]).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"--matches {path}: not a readable parquet file ({e})") from None
    out: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        if (datasets and r["dataset"] not in datasets) or (kinds and r["kind"] not in kinds):
            continue
        name = str(r["shard"]).rstrip("/").rsplit("/", 1)[-1]
        out.setdefault(name, {}).setdefault(str(r["key"]), set()).add(str(r["dataset"]))
    return out


def inputs_digest(shard_names: list[str], matches: dict[str, dict[str, set[str]]]) -> str:
    """What the output depends on: the shard names and, per shard, the keys to remove."""
    h = hashlib.sha256()
    for name in sorted(shard_names):
        h.update(json.dumps([name, sorted(matches.get(name, {}))]).encode() + b"\n")
    return h.hexdigest()


def filter_tar(src, dst, remove: set[str] | dict) -> dict:
    """Copy tar `src` (a binary file object) to `dst` (a path, or None: count only) without
    the members of the samples in `remove`; returns {"samples_in", "samples_out", "removed",
    "found": the keys of `remove` present}. Members keep their headers and order."""
    keys_in: set[str] = set()
    found: set[str] = set()
    out = tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) if dst is not None else None
    try:
        for tf, member in stream_members(src):
            split = split_member(member.name) if member.isreg() else None
            key = split[0] if split is not None else None
            if key is not None:
                keys_in.add(key)
                if key in remove:
                    found.add(key)
                    continue
            if out is not None:
                out.addfile(member, tf.extractfile(member) if member.isreg() else None)
    finally:
        if out is not None:
            out.close()
    return {"samples_in": len(keys_in), "samples_out": len(keys_in) - len(found), "removed": len(found), "found": found}


def filter_parquet(src, dst, remove: set[str] | dict) -> dict:
    """Write parquet `src` to `dst` (None: count only) without the rows whose ``key`` is in
    `remove`; {"rows_in", "rows_out"}."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .storage import read_table

    table = read_table(src)
    if "key" not in table.column_names:
        raise InputError(f"{src}: no key column")
    kept = table.filter(pc.invert(pc.is_in(table["key"], value_set=pa.array(sorted(remove), pa.string()))))
    if dst is not None:
        pq.write_table(kept, dst)
    return {"rows_in": table.num_rows, "rows_out": kept.num_rows}


def _shard(src_dir, out_dir, tar, matches: dict, log) -> dict:
    """Filter one shard (tar and parquet) unless OUT has its tar; its counts either way."""
    from .io import atomic_path

    name = tar.name
    remove = matches.get(name, {})
    parquet = src_dir / (name[: -len(".tar")] + ".parquet")
    done = (out_dir / name).exists()
    stats: dict = {}
    if parquet.exists():
        if done:
            stats.update(filter_parquet(parquet, None, remove))
        else:
            with atomic_path(out_dir / parquet.name) as tmp:
                stats.update(filter_parquet(parquet, tmp, remove))
    try:
        with tar.open("rb") as f:
            if done:
                stats.update(filter_tar(f, None, remove))
            else:
                with atomic_path(out_dir / name) as tmp:
                    stats.update(filter_tar(f, tmp, remove))
                    if (src_dir / (name + INDEX_SUFFIX)).exists():  # before the tar: the tar says done
                        with atomic_path(out_dir / (name + INDEX_SUFFIX)) as index:
                            write_index(tmp, index)
    except tarfile.TarError as e:
        raise InputError(f"{tar}: not a readable tar ({e})") from None
    found = stats.pop("found")
    stats["removed_by_dataset"] = dict(sorted(Counter(d for k in found for d in remove[k]).items()))
    stats["matched_not_found"] = len(remove) - len(found)
    return stats


def _copy(src, dst) -> None:
    from .io import atomic_path

    with atomic_path(dst) as tmp:
        tmp.write_bytes(src.read_bytes())


def decontaminate(
    shards,
    matches_path,
    out,
    datasets: list[str] | None = None,
    kinds: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict:
    """Write OUT (see the module docstring); returns what OUT/decontaminate.json holds."""
    from .io import write_json
    from .outlock import hold
    from .progress import bar_factory
    from .storage import check_readable, listing, location, url

    src_dir, out_dir = location(shards, "--shards"), location(out, "--out")
    check_readable(src_dir, "--shards")
    if _same_folder(src_dir, out_dir):
        raise InputError(f"--out {out}: the same folder as --shards; choose another")
    tars = [t for t in listing(src_dir, "*.tar") if t.is_file()] if src_dir.exists() else []
    if not tars:
        raise InputError(f"--shards {shards}: no *.tar in it")
    matches = read_matches(matches_path, datasets, kinds)
    names = [t.name for t in tars]
    absent = sorted(set(matches) - set(names))
    if matches and len(absent) == len(matches):
        raise InputError(
            f"--matches {matches_path}: names none of the shards in {shards} "
            f"(it names {', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})"
        )
    digest = inputs_digest(names, matches)
    header = {
        "shards": url(src_dir),
        "out": url(out_dir),
        "inputs_digest": digest,
        "datasets": sorted(datasets) if datasets else None,
        "kinds": sorted(kinds) if kinds else None,
    }
    with hold(out_dir, "decontaminate", log):
        _check_same_inputs(out_dir / STATS_NAME, digest)
        write_json(out_dir / STATS_NAME, {**header, "complete": False})
        make_bar = bar_factory(not progress, "decontaminate", "shard")
        bar = make_bar(len(tars)) if make_bar else None
        per_shard, done = {}, sum((out_dir / name).exists() for name in names)
        for tar in tars:
            per_shard[tar.name] = _shard(src_dir, out_dir, tar, matches, log)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        carried = {n + INDEX_SUFFIX for n in names} | {n[: -len(".tar")] + ".parquet" for n in names}
        if (src_dir / ENTRY_COUNTS).exists():
            _copy(src_dir / ENTRY_COUNTS, out_dir / ENTRY_COUNTS)
            carried.add(ENTRY_COUNTS)
        result = {
            **header,
            "complete": True,
            **_totals(per_shard),
            "matched_shards_absent": absent,
            "left_out": sorted(p.name for p in src_dir.iterdir() if p.name not in names and p.name not in carried),
            "per_shard": per_shard,
        }
        write_json(out_dir / STATS_NAME, result)
    if log:
        log(
            f"decontaminate: {result['samples_in']} samples in {len(tars)} shards ({done} done before), "
            f"{result['removed']} removed "
            f"({', '.join(f'{k} {v}' for k, v in result['removed_by_dataset'].items()) or 'none'}), "
            f"{result['samples_out']} kept -> {url(out_dir)}"
        )
        if result["matched_not_found"] or absent:
            log(
                f"note: {result['matched_not_found']} matched keys not in their shard, {len(absent)} matched shards "
                f"not in {url(src_dir)}"
            )
    return result


def _same_folder(a, b) -> bool:
    import os

    from .storage import is_remote, url

    if is_remote(a) or is_remote(b):
        return url(a).rstrip("/") == url(b).rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _totals(per_shard: dict) -> dict:
    by_dataset: Counter = Counter()
    for s in per_shard.values():
        by_dataset.update(s["removed_by_dataset"])
    return {
        "n_shards": len(per_shard),
        **{
            k: sum(s[k] for s in per_shard.values())
            for k in ("samples_in", "samples_out", "removed", "matched_not_found")
        },
        "removed_by_dataset": dict(sorted(by_dataset.items())),
    }


def _check_same_inputs(stats_path, digest: str) -> None:
    if not stats_path.exists():
        return
    try:
        before = json.loads(stats_path.read_text()).get("inputs_digest")
    except (OSError, ValueError, AttributeError):
        before = None
    if before != digest:
        raise InputError(
            f"{stats_path}: this folder holds the shards of other inputs (other shards or matches); "
            "choose another --out or delete it"
        )


# ---------------------------------------------------------------------------------------
# CLI


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="rewrite shards without the samples that overlap evaluation sets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--shards", required=True, help="folder of NNNNN.tar (+ .parquet); a local path or an fsspec URL")
    p.add_argument(
        "--matches",
        required=True,
        help="train.overlap's pairs: RUN/eval/overlap_pairs.parquet (columns shard, key, dataset, kind)",
    )
    p.add_argument("--out", required=True, help="output folder (not --shards); file names as in --shards")
    p.add_argument("--datasets", nargs="+", default=None, help="remove only the matches of these sets (default: all)")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=("exact", "phash", "embedding"),
        default=None,
        help="remove only the matches of these kinds (default: all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    result = decontaminate(args.shards, args.matches, args.out, args.datasets, args.kinds, log, not args.quiet)
    if not args.quiet:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in ("out", "n_shards", "samples_in", "samples_out", "removed", "removed_by_dataset")
                }
            )
        )
    return 0
