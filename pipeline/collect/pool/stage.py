"""Step 1 of collection: the candidate pool of (image URL, text) pairs.

Inputs (any mix, in the order given after glob expansion):

* tables: ``.parquet``; ``.csv``, ``.tsv``, ``.jsonl`` (also ``.ndjson``), optionally
  compressed by extension (``.gz``, ``.zst``/``.zstd``, ``.bz2``, ``.xz``), with the URL in
  `url_col` and the text in `text_col`. CSV and TSV follow the same rules (header row,
  ``"`` quoting with doubled quotes, newlines allowed inside quoted fields; TSV only
  changes the delimiter), as pandas and img2dataset write and read them.
* Common Crawl WAT files (``*.wat``, ``*.wat.gz``): every ``<img src alt title>`` of every
  page (see `wat.py`); extra columns available there: ``page_url``, ``alt``, ``title``.

Output in `out_dir`: ``part-NNNNN.parquet`` (columns ``uid``, ``url``, ``text``, ``source``
and the `keep_cols`, all strings; at most `rows_per_part` rows each, rows in input order; a
part holds rows of one input only: input i fills ceil(kept_i / rows_per_part) parts, none
if it keeps nothing, numbered on from the previous input's; one empty part when nothing at
all is kept) and ``_stats.json`` (written last: its presence means the pool is complete).

Per row, in this order (the first failing test names the counter):

1. unreadable row: a CSV row with the wrong number of fields, a JSONL line that is not a
   JSON object, a url/text JSON value that is not a string -> ``dropped_malformed``;
2. url or text not valid UTF-8 (CSV/TSV/JSONL/parquet bytes, lone surrogates from JSON
   escapes) -> ``dropped_bad_encoding``. The row is dropped rather than repaired: a URL with
   U+FFFD in it fetches the wrong thing, and a caption with holes matches queries badly.
   Kept extra columns are repaired instead (U+FFFD), counted in ``keep_cols_bad_encoding``;
3. url null or blank -> ``dropped_null_url`` (surrounding whitespace is stripped);
4. text null or empty after `normalise_text` -> ``dropped_empty_text``;
5. `check_url` -> ``dropped_scheme`` / ``dropped_long_url`` (over 4,096 characters) /
   ``dropped_bad_url`` (control or bidi formatting characters included) /
   ``dropped_private_host``;
6. text longer than `max_text_chars` (default 4096 code points, far beyond CLIP's 77
   tokens but enough for any real caption) is cut there (then right-stripped) and counted
   in ``text_truncated``; the row is kept;
7. ``uid`` = `make_uid(url, text)` of the final pair, or, with `uid_col` (`--uid-col`,
   `--pool-format datacomp`), the source's own uid (DataComp's: 32 hex digits, lower-cased;
   blank or malformed -> ``dropped_bad_uid``); a uid seen earlier in the input order (any
   input) -> ``dropped_duplicate``, and of those, the ones whose URL is not the first
   row's are also counted in ``duplicate_uid_other_url`` (a source's uid reused).

``rows_in == kept + sum(dropped_*)`` always holds (blank JSONL lines are not rows).

Empty inputs: an input with no rows (an empty file of any format, a header-only CSV, a
WAT file without image links) is counted in ``empty_inputs`` (its entry in ``inputs``
shows ``rows_in: 0``) when other inputs have rows; when no input has any row, that is an
InputError naming the file, whatever the format (a pool of nothing is a wrong path or a
failed export, not a dataset).

Error messages quote input bytes (a bad CSV row, a WAT file's first line) escaped
(`errors.printable`): a file's control and bidi characters never reach the terminal raw.

Columns: a table without `url_col`, `text_col` or one of `keep_cols` (parquet schema, CSV
header, first JSONL record) is an InputError naming the file and the columns it has; a later
JSONL record without a key has null there. Parquet url/text columns must be strings (or
binary). Kept columns are written as strings: numbers and booleans as text (``640``,
``true``), lists and structs as JSON. WAT inputs offer ``page_url``, ``alt`` and ``title``;
other kept columns are null for their rows.

How it scales: nothing in this step runs in one process over all rows. Three phases of
independent part tasks run on the `engine` (local processes or Ray tasks, with retries);
the driver between them only sums small per-input and per-bucket counts:

1. one task per input streams it in batches (parquet row groups, 16 MiB CSV blocks, JSONL
   lines, WAT records), normalises and filters it, and spills the kept rows to
   ``_work/in-NNNNN-*.parquet`` with a global position ``pos = input_index << 40 | row``.
   It also writes the input's key file: its (pos, h) pairs, h the 64-bit uid hash, grouped
   by the top 12 bits of h into 4096 fine buckets (the input's hashes are held meanwhile:
   8 bytes a kept row, about 40 while the key file is written).
2. one task per dedup bucket (a contiguous range of fine buckets, so equal uids always meet
   in one task) reads that range from every key file, finds every position whose h occurs
   at a lower position (a stable sort by h), and writes those positions sorted, after the
   count of each input's. Memory: about 64 bytes a key of one bucket. The number of buckets
   (`buckets`, else enough for `memory_limit` and at most BUCKET_ROWS keys each, so large
   pools give many tasks) does not change the result.
3. from the counts the driver gives every input its kept rows and its first part number;
   one task per input then writes its spill minus its duplicate positions (its runs in the
   bucket results) into its parts, and a marker listing them.

One input is read by one task: split huge inputs into several files to use more cores.
Nothing depends on timing, the engine, `workers` or the number of buckets, so parts are
byte-identical for any of them. Tasks exchange files in ``out_dir`` (with Ray it must be on
storage every node sees). Every file is written under a temporary name and renamed.
A rerun resumes: finished spills and key files, bucket results and the parts of inputs
whose marker is there are reused (parts of another run are deleted first); a rerun with the
same inputs (path, size, mtime) and parameters after a complete run returns the stored
stats without work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ... import duck, layout
from ...distribute import Engine, run_parts
from ...duck import MemoryLimitError, connect
from ...errors import InputError, one_line
from ...io import atomic_path, expand_inputs, file_fingerprint
from ...progress import Bar
from ...storage import load_npy, location, rmtree
from ..config import PoolConfig
from .dedup import FINE_BITS, FINE_BUCKETS, dedup_bucket, keys_path
from .filters import DROP_KEYS, STAT_KEYS, spill_input
from .readers import PoolParams, input_format
from .writer import CORE_COLUMNS, PartWriter, out_schema, write_parts

FORMAT_VERSION = 3  # 2: parts never span inputs; 3: key files with URL hashes, source uids
BUCKET_ROWS = 4_000_000  # target rows per dedup bucket task (~64 bytes a row while it runs)
DEDUP_BYTES_PER_ROW = 64


# --------------------------------------------------------------------------- memory and buckets


_UNITS = {
    "B": 1,
    "BYTE": 1,
    "BYTES": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
    "PIB": 1 << 50,
}


def _memory_bytes(memory_limit: str) -> int:
    """`memory_limit` in bytes, read the way DuckDB (used by the later steps) reads it."""
    try:
        con = connect(memory_limit=memory_limit)
    except MemoryLimitError as e:
        raise InputError(f"memory limit {memory_limit!r}: {one_line(e)}") from None
    try:
        shown = str(duck.one(con.execute("SELECT current_setting('memory_limit')"))[0])
    finally:
        con.close()
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", shown)
    scale = _UNITS.get(m.group(2).upper() or "B") if m else None
    if m is None or scale is None:  # a format this code does not know: DuckDB's default
        return 2 << 30
    return int(float(m.group(1)) * scale)


def _bucket_ranges(buckets: int) -> list[tuple[int, int]]:
    """Fine-bucket range [lo, hi) of each dedup bucket (contiguous, sizes differ by at most 1)."""
    return [(b * FINE_BUCKETS // buckets, (b + 1) * FINE_BUCKETS // buckets) for b in range(buckets)]


def _auto_buckets(keys: int, memory_bytes: int) -> int:
    per_bucket = max(1, min(BUCKET_ROWS, memory_bytes // DEDUP_BYTES_PER_ROW))
    return min(FINE_BUCKETS, max(1, -(-keys // per_bucket)))


# --------------------------------------------------------------------------- driver


def _short_hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=6).hexdigest()


def _clean_tmp(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            if p.is_file():
                p.unlink()


def _engine_for(engine: Engine, n_tasks: int) -> Engine:
    """`engine`, but a single local task runs in this process (no process pool to start)."""
    if engine.name == "local" and engine.workers > 1 and n_tasks <= 1:
        return dataclasses.replace(engine, workers=1)
    return engine


def _spill_task(task: tuple) -> dict:
    return spill_input(*task)  # looked up here at call time: tests replace it to interrupt a run


def _run_spills(tasks: list[tuple], engine: Engine, done: Callable[[dict], None]) -> None:
    """Phase 1 for the inputs not spilled yet; `done(stats)` after each (in completion order)."""
    run_parts(
        _spill_task, tasks, _engine_for(engine, len(tasks)), on_done=lambda task, st: done(st), describe=lambda t: t[1]
    )


_KEY_FILES: list[str] = []  # per worker process: every input's key file, in input order


def _set_key_files(key_files: list[str]) -> None:
    _KEY_FILES[:] = key_files


def _bucket_task(task: tuple) -> np.ndarray:
    lo, hi, out_path = task
    return dedup_bucket((lo, hi, _KEY_FILES, out_path))


def _stored_counts(path: Path, n_inputs: int) -> np.ndarray | None:
    """The per-input counts (duplicates, then those with another URL) of a finished bucket
    result, or None."""
    if not path.is_file():
        return None
    try:
        arr = load_npy(path)
        counts = np.array(arr[: 2 * n_inputs]) if arr.ndim == 1 and arr.shape[0] >= 2 * n_inputs else None
        del arr
    except (OSError, ValueError):
        return None
    return counts


def _read_marker(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _stats_complete(stats_path: Path, run: dict, out_dir: Path) -> dict | None:
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return None
    if stats.get("run") != run:
        return None
    if not all((out_dir / name).is_file() for name in stats.get("parts", [])):
        return None
    return stats


def build_pool(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str,
    config: PoolConfig,
    engine: Engine,
    progress: Callable[[int], Bar] | None = None,
) -> dict:
    """Build the candidate pool in `out_dir` (see the module docstring); return the stats.

    `progress`, when given, is called once with the number of input files and returns a
    progress bar (tqdm-like: ``update(n)``, ``close()``, optionally ``set_postfix``) that
    advances by one per input read; it is not called when the pool is already complete.
    `engine` runs the part tasks of every phase. `config.memory_limit` bounds each dedup
    bucket task (about 64 bytes a key while it runs): the keys are split into enough
    buckets for that, at most BUCKET_ROWS keys each (so that there are tasks for every
    core); `config.buckets` (1 to FINE_BUCKETS) overrides the number. The output does not
    depend on the engine, its workers or the buckets.
    """
    t0 = time.time()
    _check(config)
    memory_bytes = _memory_bytes(config.memory_limit)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError("no pool input given")
    files = expand_inputs([str(i) for i in inputs], what="pool")
    for f in files:
        input_format(f)  # unknown formats fail before any work
    params = asdict(
        PoolParams(
            config.url_col,
            config.text_col,
            config.keep_cols,
            config.allow_private_hosts,
            config.max_text_chars,
            config.uid_col,
            config.uid_hex_digits,
        )
    )
    params["keep_cols"] = list(config.keep_cols)
    fingerprints = [file_fingerprint(f) for f in files]
    run = {"version": FORMAT_VERSION, "params": params, "rows_per_part": config.rows_per_part, "inputs": fingerprints}

    out = location(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats_path = layout.folder_stats(out)
    done = _stats_complete(stats_path, run, out)
    if done is not None:
        return done
    if stats_path.exists():
        stats_path.unlink()  # from another run: the folder is incomplete until rewritten
    work = out / "_work"
    work.mkdir(exist_ok=True)
    _clean_tmp(out)
    _clean_tmp(work)
    spills = _spill_inputs(files, run, work, engine, progress)
    return _dedup_and_write(_Run(files, spills, run, out, work, config, engine), memory_bytes, t0)


def _spill_inputs(
    files: list[str], run: dict, work: Path, engine: Engine, progress: Callable[[int], Bar] | None
) -> list[tuple[Path, Path]]:
    """Phase 1: normalise, filter and spill every input not spilled yet by this run's
    settings (an interrupted run's spills are reused). Returns each input's (spill, stats)."""
    spills: list[tuple[Path, Path]] = []
    tasks = []
    for i, (path, fp) in enumerate(zip(files, run["inputs"])):
        key = _short_hash(
            {"version": FORMAT_VERSION, "index": i, "input": fp, "params": run["params"], "fine_bits": FINE_BITS}
        )
        sp, stp = work / f"in-{i:05d}-{key}.parquet", work / f"in-{i:05d}-{key}.json"
        spills.append((sp, stp))
        if not (sp.is_file() and keys_path(sp).is_file() and stp.is_file()):
            tasks.append((i, path, str(sp), str(stp), run["params"]))
    bar = progress(len(files)) if progress else None
    rows_seen = 0

    def input_done(st: dict) -> None:
        nonlocal rows_seen
        rows_seen += st["rows_in"]
        if bar is not None:
            bar.update(1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(rows=f"{rows_seen:,}", refresh=False)

    try:
        if bar is not None and len(tasks) < len(files):
            bar.update(len(files) - len(tasks))  # finished by an earlier, interrupted run
        _run_spills(tasks, engine, input_done)
    finally:
        if bar is not None:
            bar.close()
    return spills


def _check(config: PoolConfig) -> None:
    """Settings that cannot work are input errors, before any work."""
    keep_cols = config.keep_cols
    for c in keep_cols:
        if c in CORE_COLUMNS:
            raise InputError(f"keep column {c!r} clashes with an output column ({', '.join(CORE_COLUMNS)})")
    if len(set(keep_cols)) != len(keep_cols):
        raise InputError(f"keep columns repeat a name: {', '.join(keep_cols)}")
    if config.uid_col is not None and config.uid_col in keep_cols:
        raise InputError(f"--uid-col {config.uid_col}: it is the sample uid already; not also a --keep-col")
    if config.uid_col is not None and not config.uid_col.strip():
        raise InputError("--uid-col must name a column")
    if int(config.rows_per_part) < 1:
        raise InputError(f"rows per part must be at least 1 (got {config.rows_per_part})")
    if int(config.max_text_chars) < 1:
        raise InputError(f"max text chars must be at least 1 (got {config.max_text_chars})")
    if config.buckets is not None and not 1 <= int(config.buckets) <= FINE_BUCKETS:
        raise InputError(f"dedup buckets must be 1 to {FINE_BUCKETS} (got {config.buckets})")


@dataclasses.dataclass(frozen=True)
class _Run:
    """What phases 2 and 3 share: the inputs, their spills (phase 1's output), the run's
    fingerprint, the folders, the settings and the engine."""

    files: list[str]
    spills: list[tuple[Path, Path]]  # per input: (spill parquet, its stats json)
    run: dict
    out: Path
    work: Path
    config: PoolConfig
    engine: Engine


@dataclasses.dataclass
class _Spilled:
    """Phase 1's counts, summed over the inputs."""

    totals: dict
    per_input: list[dict]
    kept_before: list[int]  # per input: rows kept before the dedup
    empty: int  # inputs without a single row


def _dedup_and_write(r: _Run, memory_bytes: int, t0: float) -> dict:
    """Phases 2 and 3 and the stats file, once every input is spilled. The driver only sums
    per-input and per-bucket counts; every pass over rows is a part task on the engine."""
    spilled = _sum_spills(r)
    buckets = r.config.buckets or _auto_buckets(sum(spilled.kept_before), memory_bytes)
    counts, other_url, dup_paths = _find_duplicates(r, buckets)
    dup_per_input = counts.sum(axis=0)
    kept = [kb - int(d) for kb, d in zip(spilled.kept_before, dup_per_input)]
    parts = _write_all_parts(r, counts, dup_paths, kept)
    spilled.totals["duplicate_uid_other_url"] = int(other_url.sum())
    return _write_stats(r, spilled, int(dup_per_input.sum()), kept, parts, t0)


def _why_empty(fingerprint: dict, fmt: str, st: dict) -> str:
    """What an input without rows holds instead, for the error naming it."""
    if not fingerprint.get("size"):
        return "empty file"
    if fmt == "wat":
        return f"no image links in its {st.get('wat_records', 0):,} metadata records"
    return "no rows"


def _sum_spills(r: _Run) -> _Spilled:
    """Phase 1's per-input stats, summed; a pool where no input has a row is an input error."""
    totals = dict.fromkeys(STAT_KEYS, 0)
    per_input, kept_before = [], []
    empty = []  # (path, why) of the inputs without a single row
    for (_, stp), path, fp in zip(r.spills, r.files, r.run["inputs"]):
        st = json.loads(stp.read_text())["stats"]
        for k, v in st.items():
            totals[k] = totals.get(k, 0) + v
        kept_before.append(st["kept"])
        fmt = input_format(path)[0]
        per_input.append({"path": path, "format": fmt, "rows_in": st["rows_in"], "kept_before_dedup": st["kept"]})
        if st["rows_in"] == 0:
            empty.append((path, _why_empty(fp, fmt, st)))
    if empty and len(empty) == len(r.files):
        path, why = empty[0]
        others = f" (nor in the other {len(r.files) - 1} pool inputs)" if len(r.files) > 1 else ""
        raise InputError(f"{path}: {why}, nothing to pool{others}")
    return _Spilled(totals, per_input, kept_before, len(empty))


def _find_duplicates(r: _Run, buckets: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Phase 2: one task per bucket of the uid hashes finds the repeated positions (bucket
    results of this run are reused). Returns the count of duplicates per (bucket, input),
    of those with another URL than their uid's first row, and the bucket result files."""
    n_inputs = len(r.files)
    dkey = _short_hash({"run": r.run, "buckets": buckets, "fine_bits": FINE_BITS})
    dup_paths = [r.work / f"dup-{dkey}-{b:05d}.npy" for b in range(buckets)]
    current = set(dup_paths)
    for old in r.work.glob("dup-*.npy"):
        if old not in current:
            old.unlink()
    counts = np.zeros((buckets, 2 * n_inputs), np.int64)
    todo, tasks = [], []
    for b, ((lo, hi), dp) in enumerate(zip(_bucket_ranges(buckets), dup_paths)):
        stored = _stored_counts(dp, n_inputs)
        if stored is None:
            todo.append(b)
            tasks.append((lo, hi, str(dp)))
        else:
            counts[b] = stored
    key_files = [str(keys_path(sp)) for sp, _ in r.spills]
    results = run_parts(
        _bucket_task,
        tasks,
        _engine_for(r.engine, len(tasks)),
        setup=_set_key_files,
        setup_args=(key_files,),
        describe=lambda t: f"dedup bucket {location(t[2]).name}",
    )
    for b, c in zip(todo, results):
        counts[b] = c
    return counts[:, :n_inputs], counts[:, n_inputs:], dup_paths


def _plan_parts(kept: list[int], rows_per_part: int) -> tuple[list[int], list[list[str]]]:
    """Each input's first part number and its part names: ceil(kept / rows_per_part) parts,
    numbered on from the previous input's."""
    firsts: list[int] = []
    expected: list[list[str]] = []
    first = 0
    for k in kept:
        n_parts = -(-k // rows_per_part)
        firsts.append(first)
        expected.append([f"part-{first + j:05d}.parquet" for j in range(n_parts)])
        first += n_parts
    return firsts, expected


def _finished_inputs(r: _Run, markers: list[Path], expected: list[list[str]], kept: list[int], removed) -> set[int]:
    """The inputs whose parts an earlier, interrupted run of this same run wrote in full
    (their marker agrees and every part is there); stale markers and parts not claimed by
    one of them are deleted."""
    current = set(markers)
    for old in r.work.glob("parts-*.json"):  # another run's: its part files are not ours
        if old not in current:
            old.unlink()
    finished = set()
    for i, m in enumerate(markers):
        rec = _read_marker(m) if m.is_file() else None
        if (
            rec is not None
            and rec.get("parts") == expected[i]
            and rec.get("kept") == kept[i]
            and rec.get("removed") == int(removed[i])
            and all((r.out / name).is_file() for name in expected[i])
        ):
            finished.add(i)
        elif m.exists():
            m.unlink()
    claimed = {name for i in finished for name in expected[i]}
    for old in r.out.glob(layout.PART_GLOB):
        if old.name not in claimed:
            old.unlink()
    return finished


def _write_all_parts(r: _Run, counts: np.ndarray, dup_paths: list[Path], kept: list[int]) -> list[str]:
    """Phase 3: one task per input writes its kept rows into its own, consecutive parts
    (inputs finished by an interrupted run are kept). Returns every part's name."""
    n_inputs = len(r.files)
    dup_per_input = counts.sum(axis=0)
    starts = np.cumsum(counts, axis=1) - counts  # where input i's run begins in bucket b's result
    firsts, expected = _plan_parts(kept, r.config.rows_per_part)
    rkey = _short_hash(r.run)
    markers = [r.work / f"parts-{rkey}-{i:05d}.json" for i in range(n_inputs)]
    finished = _finished_inputs(r, markers, expected, kept, dup_per_input)
    write_tasks = []
    for i, ((sp, _), path) in enumerate(zip(r.spills, r.files)):
        if i in finished or not expected[i]:
            continue  # done, or nothing kept (no part to write)
        pieces = [(str(dup_paths[b]), int(starts[b, i]), int(counts[b, i])) for b in np.flatnonzero(counts[:, i])]
        write_tasks.append(
            {
                "spill": str(sp),
                "source": path,
                "pieces": pieces,
                "n_inputs": n_inputs,
                "first_part": firsts[i],
                "parts": expected[i],
                "kept": kept[i],
                "out_dir": str(r.out),
                "keep_cols": list(r.config.keep_cols),
                "rows_per_part": r.config.rows_per_part,
                "marker": str(markers[i]),
            }
        )
    run_parts(write_parts, write_tasks, _engine_for(r.engine, len(write_tasks)), describe=lambda t: t["source"])
    parts = [name for names in expected for name in names]
    if not parts:  # nothing kept at all: one empty part keeps `read_parquet(part-*)` working
        writer = PartWriter(r.out, out_schema(r.config.keep_cols), r.config.rows_per_part)
        writer.write_empty()
        parts = writer.parts
    return parts


def _write_stats(r: _Run, spilled: _Spilled, duplicates: int, kept: list[int], parts: list[str], t0: float) -> dict:
    """`_stats.json`, written last (the pool is complete), after checking that every input
    row is accounted for; the work folder goes."""
    totals = spilled.totals
    totals["dropped_duplicate"] = duplicates
    totals["kept"] -= duplicates
    dropped = sum(totals[k] for k in DROP_KEYS)
    if totals["rows_in"] != totals["kept"] + dropped or totals["kept"] != sum(kept):
        raise RuntimeError(
            f"pool accounting broken: rows_in {totals['rows_in']} != kept {totals['kept']} + dropped {dropped}"
        )
    stats = {
        **totals,
        "files": len(r.files),
        "empty_inputs": spilled.empty,
        "parts": parts,
        "columns": list(out_schema(r.config.keep_cols).names),
        "inputs": spilled.per_input,
        "seconds": round(time.time() - t0, 3),
        "run": r.run,
    }
    with atomic_path(layout.folder_stats(r.out)) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    rmtree(r.work)
    return stats
