"""The pool's distributed dedup: bucket tasks, per-input part tasks, resumption.

Every phase of the pool runs as independent part tasks (see pipeline/collect/pool/stage.py, "How
it scales"); these tests check that the result is exactly a simple sequential reference
(first occurrence in input order wins), is byte-identical for any number of buckets and
workers, and that a rerun after an interruption reuses finished work and still produces the
same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.collect.pool import DROP_KEYS, FINE_BUCKETS
from pipeline.collect.pool import stage as pool_mod
from pipeline.collect.urls import make_uid
from pipeline.errors import InputError
from tests.support.collect import build_pool

N_INPUTS = 7


def _write(path: Path, rows: list[tuple]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(
            pa.table({"url": [r[0] for r in rows], "caption": [r[1] for r in rows], "id": [r[2] for r in rows]}), path
        )
    else:
        path.write_text("".join(json.dumps({"url": u, "caption": t, "id": i}) + "\n" for u, t, i in rows))
    return path


def _inputs(tmp_path: Path, seed: int = 7) -> list[Path]:
    """Inputs with repeats within and across files, one input made only of pairs input 0
    already has, one with no valid row; url/text are already normal, so the reference needs
    no normalisation."""
    rng = random.Random(seed)
    files, first_rows = [], []
    for k in range(N_INPUTS):
        rows = []
        for j in range(rng.randint(150, 400)):
            v = rng.randint(0, 600)  # ~2000 draws over 601 pairs: lots of repeats
            rows.append((f"https://img{v % 7}.example/{v}.jpg", f"caption {v % 211}", f"{k}-{j}"))
        if k == 0:
            first_rows = rows
        if k == 3:  # only pairs that input 0 already has
            rows = [(u, t, f"3-{j}") for j, (u, t, _) in enumerate(first_rows[:40])]
        if k == 5:  # nothing valid
            rows = [("javascript:void(0)", "x", "5-0"), ("https://img.example/1.jpg", "", "5-1")]
        files.append(_write(tmp_path / f"in{k}.{'parquet' if k % 2 else 'jsonl'}", rows))
    return files


def _reference(files: list[Path]) -> list[tuple]:
    """(url, text, id, source) of every kept row: first occurrence of (url, text) in input order."""
    seen: set = set()
    kept = []
    for f in files:
        if f.suffix == ".parquet":
            rows = pq.read_table(f).to_pylist()
        else:
            rows = [json.loads(line) for line in f.read_text().splitlines()]
        for r in rows:
            u, t = r["url"], r["caption"]
            if not t or not u.startswith("https://img") or (u, t) in seen:
                continue
            seen.add((u, t))
            kept.append((u, t, r["id"], str(f)))
    return kept


def _build(files, out: Path, **kw) -> dict:
    kw.setdefault("keep_cols", ["id"])
    kw.setdefault("rows_per_part", 50)
    return build_pool([str(f) for f in files], str(out), **kw)


def _rows(out: Path, parts: list[str]) -> list[dict]:
    rows: list[dict] = []
    for p in parts:
        rows += pq.read_table(out / p).to_pylist()
    return rows


def _bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_matches_reference_for_any_buckets_and_workers(tmp_path):
    files = _inputs(tmp_path)
    ref = _reference(files)
    assert 400 < len(ref) < 600  # the data has plenty of duplicates

    base = _build(files, tmp_path / "base", buckets=1, workers=1)
    rows = _rows(tmp_path / "base", base["parts"])
    assert [(r["url"], r["text"], r["id"], r["source"]) for r in rows] == ref
    assert [r["uid"] for r in rows] == [make_uid(u, t) for u, t, _, _ in ref]
    assert base["kept"] == len(ref)
    total = sum(
        len(pq.read_table(f).to_pylist()) if f.suffix == ".parquet" else len(f.read_text().splitlines()) for f in files
    )
    assert base["rows_in"] == total
    assert base["dropped_duplicate"] == total - len(ref) - base["dropped_scheme"] - base["dropped_empty_text"]
    assert base["rows_in"] == base["kept"] + sum(base[k] for k in DROP_KEYS)
    want = _bytes(tmp_path / "base")
    assert sorted(want) == base["parts"] and len(want) > N_INPUTS

    # auto: 1 bucket here; 100KB of memory: ~1500 keys a bucket, so 2 buckets on 2 workers
    for name, kw in [
        ("b3", {"buckets": 3}),
        ("b64", {"buckets": 64}),
        ("b700", {"buckets": 700}),
        ("auto", {}),
        ("auto-small-memory-w2", {"memory_limit": "100KB", "workers": 2}),
    ]:
        stats = _build(files, tmp_path / name, **kw)
        assert _bytes(tmp_path / name) == want, name
        for k in [*DROP_KEYS, "rows_in", "kept", "parts", "inputs"]:
            assert stats[k] == base[k], (name, k)


def test_parts_are_numbered_per_input(tmp_path):
    rows = [(f"https://e.example/{i}.jpg", f"caption {i}", str(i)) for i in range(20)]
    a = _write(tmp_path / "a.jsonl", rows[:5])  # 5 kept -> parts 0 (3 rows), 1 (2)
    b = _write(tmp_path / "b.parquet", rows[:5])  # only repeats -> no part
    c = _write(tmp_path / "c.jsonl", rows[5:8] + rows[:2])  # 3 kept -> part 2
    d = _write(tmp_path / "d.parquet", rows[8:15] + rows[3:4])  # 7 kept -> parts 3, 4, 5 (3, 3, 1)
    out = tmp_path / "pool"
    stats = _build([a, b, c, d], out, rows_per_part=3, buckets=4)
    assert stats["parts"] == [f"part-{n:05d}.parquet" for n in range(6)]
    assert sorted(p.name for p in out.glob("part-*")) == stats["parts"]
    got = [[(r["id"], Path(r["source"]).name) for r in pq.read_table(out / p).to_pylist()] for p in stats["parts"]]
    assert got == [
        [("0", "a.jsonl"), ("1", "a.jsonl"), ("2", "a.jsonl")],
        [("3", "a.jsonl"), ("4", "a.jsonl")],
        [("5", "c.jsonl"), ("6", "c.jsonl"), ("7", "c.jsonl")],
        [("8", "d.parquet"), ("9", "d.parquet"), ("10", "d.parquet")],
        [("11", "d.parquet"), ("12", "d.parquet"), ("13", "d.parquet")],
        [("14", "d.parquet")],
    ]
    assert stats["kept"] == 15 and stats["dropped_duplicate"] == 8
    assert [i["kept_before_dedup"] for i in stats["inputs"]] == [5, 5, 5, 8]

    # one part holds at most ROW_GROUP_ROWS rows per row group, whatever rows_per_part is
    stats = _build([a, b, c, d], tmp_path / "big", rows_per_part=1000)
    assert stats["parts"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(tmp_path / "big" / p).num_rows for p in stats["parts"]] == [5, 3, 7]


def test_bad_bucket_count(tmp_path):
    f = _write(tmp_path / "a.jsonl", [("https://e.example/1.jpg", "one", "1")])
    for bad in (0, FINE_BUCKETS + 1):
        with pytest.raises(InputError, match="dedup buckets"):
            build_pool([str(f)], str(tmp_path / "out"), buckets=bad)


def test_auto_bucket_count():
    assert pool_mod._auto_buckets(0, 2 << 30) == 1
    assert pool_mod._auto_buckets(10, 2 << 30) == 1
    assert pool_mod._auto_buckets(1_600_000_000, 2 << 30) == 400  # BUCKET_ROWS keys each
    assert pool_mod._auto_buckets(1_600_000_000, 64 << 20) == 1526  # 1 Mi keys fit in 64 MiB
    assert pool_mod._auto_buckets(1_600_000_000, 16 << 20) == FINE_BUCKETS  # capped
    ranges = pool_mod._bucket_ranges(7)
    assert ranges[0][0] == 0 and ranges[-1][1] == FINE_BUCKETS
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


class _Killed(BaseException):
    """Stands for the process dying: no retry catches it."""


def _interrupt_phase3(monkeypatch, files, out, kill_at: int, **kw) -> None:
    """A run killed in phase 3 right after input `kill_at` renamed its first part."""
    real_close = pool_mod.PartWriter._close_part
    real_write = pool_mod.write_parts

    def close_then_die(self):
        real_close(self)
        raise _Killed

    def write_parts(task):
        if task["marker"].endswith(f"-{kill_at:05d}.json"):
            monkeypatch.setattr(pool_mod.PartWriter, "_close_part", close_then_die)
        return real_write(task)

    monkeypatch.setattr(pool_mod, "write_parts", write_parts)
    with pytest.raises(_Killed):
        _build(files, out, **kw)
    monkeypatch.setattr(pool_mod.PartWriter, "_close_part", real_close)
    monkeypatch.setattr(pool_mod, "write_parts", real_write)
    assert not (out / "_stats.json").exists()


def _record(monkeypatch) -> dict:
    """Run the real phase functions, noting which inputs and buckets they were run for."""
    seen: dict = {"spill": [], "bucket": [], "parts": []}
    real_spill, real_bucket, real_write = pool_mod.spill_input, pool_mod.dedup_bucket, pool_mod.write_parts

    def spill(index, *rest):
        seen["spill"].append(index)
        return real_spill(index, *rest)

    def bucket(task):
        seen["bucket"].append(Path(task[3]).name)
        return real_bucket(task)

    def write(task):
        seen["parts"].append(Path(task["source"]).name)
        return real_write(task)

    monkeypatch.setattr(pool_mod, "spill_input", spill)
    monkeypatch.setattr(pool_mod, "dedup_bucket", bucket)
    monkeypatch.setattr(pool_mod, "write_parts", write)
    return seen


def _owners(out: Path, parts: list[str]) -> dict:
    """part name -> file name of the input its rows come from (a part has exactly one)."""
    owners = {}
    for p in parts:
        sources = set(pq.read_table(out / p, columns=["source"]).column(0).to_pylist())
        assert len(sources) == 1, (p, sources)
        owners[p] = Path(sources.pop()).name
    return owners


def test_interrupted_run_resumes_and_reuses_finished_work(tmp_path, monkeypatch):
    files = _inputs(tmp_path)
    clean = _build(files, tmp_path / "clean", buckets=5, rows_per_part=20)
    want = _bytes(tmp_path / "clean")
    owners = _owners(tmp_path / "clean", clean["parts"])
    assert sum(1 for o in owners.values() if o == "in4.jsonl") >= 2
    out = tmp_path / "pool"

    _interrupt_phase3(monkeypatch, files, out, kill_at=4, buckets=5, rows_per_part=20)
    work = out / "_work"
    dup_files = sorted(work.glob("dup-*.npy"))
    assert len(dup_files) == 5
    # inputs 0-2 finished (3 keeps nothing: no task, no marker); 4 was killed midway
    assert len(list(work.glob("parts-*.json"))) == 3
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    assert [owners[n] for n in written].count("in4.jsonl") == 1
    assert (
        written
        == [n for n in clean["parts"] if owners[n] in ("in0.jsonl", "in1.parquet", "in2.jsonl", "in4.jsonl")][
            : len(written)
        ]
    )
    mtimes = {n: (out / n).stat().st_mtime_ns for n in written}

    # also lost: one bucket result and the last part of input 1; a temp file is left over
    dup_files[2].unlink()
    lost = [n for n in written if owners[n] == "in1.parquet"][-1]
    (out / lost).unlink()
    (out / ".part-00077.parquet.tmp-999-deadbeef").write_bytes(b"half")
    seen = _record(monkeypatch)
    stats = _build(files, out, buckets=5, rows_per_part=20)
    assert seen["spill"] == []  # every spill reused
    assert seen["bucket"] == [dup_files[2].name]  # only the lost bucket redone
    assert seen["parts"] == ["in1.parquet", "in4.jsonl", "in6.jsonl"]  # in3, in5 keep nothing
    assert _bytes(out) == want
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean["parts"], "_stats.json"])
    for n, t in mtimes.items():  # parts of finished inputs were not rewritten
        if owners[n] in ("in0.jsonl", "in2.jsonl"):
            assert (out / n).stat().st_mtime_ns == t, n
    for k in [*DROP_KEYS, "rows_in", "kept", "parts", "inputs"]:
        assert stats[k] == clean[k], k


def test_other_runs_leftovers_are_not_reused(tmp_path, monkeypatch):
    """Run A killed, run B killed in the same folder, A again: exactly A's result. B keeps no
    extra column, so its parts have A's names and row counts but other bytes."""
    files = _inputs(tmp_path)
    _build(files, tmp_path / "clean_a", rows_per_part=20)
    _build(files, tmp_path / "clean_b", rows_per_part=20, keep_cols=[])
    want_a, want_b = _bytes(tmp_path / "clean_a"), _bytes(tmp_path / "clean_b")
    assert sorted(want_a) == sorted(want_b) and all(want_a[n] != want_b[n] for n in want_a)
    out = tmp_path / "pool"
    _interrupt_phase3(monkeypatch, files, out, kill_at=4, rows_per_part=20)
    _interrupt_phase3(monkeypatch, files, out, kill_at=2, rows_per_part=20, keep_cols=[], buckets=3)
    _build(files, out, rows_per_part=20, workers=2)
    assert _bytes(out) == want_a
    _interrupt_phase3(monkeypatch, files, out, kill_at=1, rows_per_part=20, keep_cols=[])
    _build(files, out, rows_per_part=20, keep_cols=[], buckets=2)
    assert _bytes(out) == want_b
    # fewer, larger parts in the same folder: no part of an earlier run is left behind
    _interrupt_phase3(monkeypatch, files, out, kill_at=2, rows_per_part=20)
    c = _build(files, out, rows_per_part=1000)
    assert sorted(p.name for p in out.glob("part-*")) == c["parts"] and len(c["parts"]) == N_INPUTS - 2


def test_complete_pool_with_a_lost_part_is_rebuilt(tmp_path):
    files = _inputs(tmp_path)
    out = tmp_path / "pool"
    stats = _build(files, out, buckets=2)
    want = _bytes(out)
    (out / stats["parts"][3]).unlink()
    again = _build(files, out, buckets=9)
    assert _bytes(out) == want
    for k in [*DROP_KEYS, "rows_in", "kept", "parts", "inputs"]:
        assert again[k] == stats[k], k
