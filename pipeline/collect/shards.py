"""Run the collection steps in order: pool -> match -> count/balance -> download.

Each step writes into `OUT/curation/` (or the shards into `OUT/`). Whether a step's outputs
can be reused is decided here, and only here: each step records a key (a digest of its
inputs' fingerprints, the settings of its config that change its outputs, and the key of
the step before it), and a changed key clears that step's old outputs before it runs, so a
rerun with a different cap, recipe or query list can never mix old and new parts. Within
a step, the parts that have their done marker (`_stats/part-N.json`, `NNNNN_stats.json`)
are not redone: that is how a killed step resumes. A run holds OUT (`outlock`) while it
writes, so a second run on the same OUT stops at once instead of clearing this one's work.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .. import layout
from ..errors import InputError
from ..io import atomic_path, expand_inputs, file_fingerprint, write_json
from ..outlock import hold
from ..progress import bar_factory
from ..storage import check_writable, location, rmtree
from .config import ShardParams


def progress_log(p: ShardParams) -> Callable[[str], None]:
    return (lambda msg: None) if p.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


# Config fields that change no output, left out of the step keys: a rerun that changes only
# them keeps the step's outputs. The pool's memory limit and bucket count split the dedup
# into tasks without changing its result. The download's speed (processes, threads) and
# limits on one download (timeout, retries, deadline, body cap, host policy, opt-out
# directives) decide which URLs fail, not how a shard is made: a finished shard is kept and
# a rerun fetches the unfinished ones with the new limits.
NOT_IN_KEY = {
    "pool": ("memory_limit", "buckets"),
    "download": (
        "processes",
        "threads",
        "timeout",
        "retries",
        "download_deadline",
        "max_bytes",
        "allow_private_hosts",
        "allowed_addresses",
        "disallowed_header_directives",
    ),
}


def _settings(step: str, config) -> dict:
    """The fields of a step's config that its key holds."""
    return {k: v for k, v in asdict(config).items() if k not in NOT_IN_KEY.get(step, ())}


def _key(upstream: str, settings: dict) -> str:
    blob = json.dumps({"upstream": upstream, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _claim(paths: list[Path], key_file: Path, key: str, log) -> None:
    """Clear a step's outputs if they were made from something else; then record the key.

    The key says what the outputs are made from; `<key>.done` (written by `_finish` after
    the step succeeds) says they are complete, which is what the next step checks.
    """
    if key_file.exists() and key_file.read_text().strip() != key:
        log(f"{key_file.stem}: inputs or settings changed, discarding its previous outputs")
        for p in paths:
            if p.is_dir():
                rmtree(p)
            elif p.exists():
                p.unlink()
    done = key_file.with_suffix(".done")
    if done.exists() and _done_keys(done)[0] != key:
        done.unlink()
    with atomic_path(key_file) as tmp:
        tmp.write_text(key + "\n")


def _finish(key_file: Path, key: str, upstream: str) -> str:
    """Mark the step done: its key, then the key of the step its outputs were made from."""
    with atomic_path(key_file.with_suffix(".done")) as tmp:
        tmp.write_text(f"{key}\n{upstream}\n")
    return key


def _done_keys(done: Path) -> tuple[str, str]:
    """(key, upstream key) of a finished step's `.done` file."""
    key, _, upstream = done.read_text().partition("\n")
    return key.strip(), upstream.strip()


def run_pool(p: ShardParams) -> str:
    from .pool import build_pool

    if not p.inputs:
        raise InputError("no --pool given: name at least one pool file (table or WAT)")
    inputs = expand_inputs(list(p.inputs), "pool")
    cur = layout.curation(p.out)
    key = _key("", {"inputs": [file_fingerprint(u) for u in inputs], **_settings("pool", p.pool)})  # the first step
    _claim([cur / layout.POOL, layout.step_stats(cur, "pool")], layout.key_file(cur, "pool"), key, progress_log(p))
    stats = build_pool(inputs, str(cur / layout.POOL), p.pool, p.distributor(), bar_factory(p.quiet, "pool", "file"))
    licenses = {path: info for pattern, info in sorted(p.licenses.items()) for path in expand_inputs(pattern, "pool")}
    write_json(layout.step_stats(cur, "pool"), {**stats, "licenses": licenses} if licenses else stats)
    if stats.get("empty_inputs"):
        progress_log(p)(
            f"pool: {stats['empty_inputs']:,} of {stats.get('files', len(inputs)):,} inputs have no rows "
            f"(see {layout.step_stats_name('pool')})"
        )
    progress_log(p)(f"pool: {stats.get('kept', 0):,} pairs kept of {stats.get('rows_in', 0):,} rows")
    return _finish(layout.key_file(cur, "pool"), key, "")


def _queries_fingerprint(path: str) -> dict:
    if not location(path).exists():
        raise InputError(f"{path}: query list not found; run `make queries` or pass --queries")
    return file_fingerprint(path)


def _queries_build(path: str) -> dict | None:
    """The recipe and rules the query list was built with (its build.json), if it has one."""
    build = location(path).parent / layout.BUILD
    try:
        info = json.loads(build.read_text())
    except (OSError, ValueError):
        return None
    return {"recipe": info.get("recipe", "clip"), "parameters": info.get("parameters", {})}


def run_match(p: ShardParams, upstream: str) -> str:
    from .match import match_pool

    cur = layout.curation(p.out)
    built = _queries_build(p.queries)
    if built is not None and built["recipe"] != p.match.recipe:
        progress_log(p)(
            f"note: the query list was built with --recipe {built['recipe']}, matching with --recipe {p.match.recipe}"
        )
    key = _key(
        upstream,
        {"queries": _queries_fingerprint(p.queries), "queries_built_with": built, **_settings("match", p.match)},
    )
    _claim([cur / layout.MATCHES, layout.step_stats(cur, "match")], layout.key_file(cur, "match"), key, progress_log(p))
    pool_glob = glob.escape(str(cur / layout.POOL)) + "/" + layout.PART_GLOB  # the folder's own name stays literal
    stats = match_pool(
        pool_glob, p.queries, str(cur / layout.MATCHES), p.match, p.distributor(), bar_factory(p.quiet, "match", "text")
    )
    write_json(layout.step_stats(cur, "match"), {**stats, "recipe": p.match.recipe, "queries_built_with": built})
    progress_log(p)(f"match: {stats.get('matched', 0):,} of {stats.get('rows', 0):,} texts contain a query")
    return _finish(layout.key_file(cur, "match"), key, upstream)


def run_balance(p: ShardParams, upstream: str) -> str:
    from .balance import balance

    cur = layout.curation(p.out)
    key = _key(upstream, {"queries": _queries_fingerprint(p.queries), **_settings("balance", p.balance)})
    _claim(
        [
            cur / layout.SELECTED,
            cur / layout.ENTRY_COUNTS,
            layout.step_stats(cur, "balance"),
            location(p.out) / layout.ENTRY_COUNTS,  # online balancing's table beside the shards
        ],
        layout.key_file(cur, "balance"),
        key,
        progress_log(p),
    )
    stats = balance(cur, p.queries, p.balance, p.distributor(), bar_factory(p.quiet, "balance", "part"))
    if p.balance.mode == "online":
        progress_log(p)(
            f"balance online: keeping {stats['kept']:,} of {stats['matched']:,} matched texts for download "
            f"(at t = {p.balance.per_query:,}, {stats['expected_kept']:,.0f} would be kept per pass); "
            f"per-query counts in {layout.ENTRY_COUNTS} beside the shards"
        )
    else:
        progress_log(p)(
            f"balance: kept {stats['kept']:,} of {stats['matched']:,} matched texts "
            f"({stats['queries_over_cap']:,} queries over the cap of {p.balance.per_query:,})"
        )
    return _finish(layout.key_file(cur, "balance"), key, upstream)


def run_download(p: ShardParams, upstream: str) -> str:
    from .card import CARD, SIZES
    from .download import download

    out = location(p.out)
    cur = layout.curation(out)
    key = _key(upstream, _settings("download", p.download))
    shard_files = [f for pat in ("[0-9]*.tar", "[0-9]*.parquet", layout.SHARD_STATS_GLOB) for f in out.glob(pat)]
    _claim(
        [*shard_files, out / "_tmp", out / SIZES, out / CARD, layout.step_stats(cur, "download")],
        layout.key_file(cur, "download"),
        key,
        progress_log(p),
    )
    stats = download(cur, out, p.download, p.distributor(), quiet=p.quiet)
    progress_log(p)(f"download: {stats['successes']:,} of {stats['count']:,} images in {stats['shards']} shards")
    return _finish(layout.key_file(cur, "download"), key, upstream)


def _stored_key(p: ShardParams, step: str) -> str:
    """The key of a step that finished; its outputs are what the next step reads. They
    must be made from the current outputs of every step before it: a step rerun on its
    own with other settings leaves the later steps' outputs made from its old ones."""
    done = layout.key_file(layout.curation(p.out), step).with_suffix(".done")
    if not done.exists():
        raise InputError(f"{done.parent}: the '{step}' step has not finished; run it first (or `shards`)")
    key, upstream = _done_keys(done)
    i = layout.STEPS.index(step)
    if i and upstream != _stored_key(p, layout.STEPS[i - 1]):
        before = layout.STEPS[i - 1]
        raise InputError(
            f"{done.parent}: the '{step}' step's outputs were made from an earlier '{before}' step's; "
            f"run '{step}' again (or `shards`)"
        )
    return key


def run_step(step: str, p: ShardParams) -> dict:
    """One step on its own, chained to the key the previous step left behind; OUT is held
    (`outlock`) for the step, so no other run can clear or mix its parts meanwhile."""
    check_writable(location(p.out), "--out")
    with hold(p.out, step, progress_log(p)):
        if step == "pool":
            run_pool(p)
        elif step == "match":
            run_match(p, _stored_key(p, "pool"))
        elif step == "balance":
            run_balance(p, _stored_key(p, "match"))
        elif step == "download":
            run_download(p, _stored_key(p, "balance"))
    return {"step": step, "params": asdict(p)}


def run_all(p: ShardParams) -> None:
    """All four steps, OUT held (`outlock`) from the first to the last."""
    check_writable(location(p.out), "--out")
    with hold(p.out, "shards", progress_log(p)):
        key = run_pool(p)
        key = run_match(p, key)
        key = run_balance(p, key)
        run_download(p, key)
