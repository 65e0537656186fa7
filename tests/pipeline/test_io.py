"""pipeline/io.py: input expansion, fingerprints, atomic output, stable JSON, SQL literals."""

from __future__ import annotations

import json
import os

import pytest

from pipeline import duck
from pipeline.errors import InputError
from pipeline.io import (
    atomic_path,
    expand_inputs,
    file_fingerprint,
    file_size,
    sql_file_list,
    sql_str,
    sum_stats,
    write_json,
)


def test_expand_inputs_sorts_dedups_and_names_what_matches_nothing(tmp_path):
    for name in ("b.csv", "a.csv", "c.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d.csv").mkdir()  # a folder is not an input file
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    assert expand_inputs(str(tmp_path / "*.csv")) == [a, b]
    assert expand_inputs([b, str(tmp_path / "*.csv")]) == [b, a]  # each pattern sorted, first seen kept
    with pytest.raises(InputError, match=r"none-\*\.csv: no pool file matches this path"):
        expand_inputs([a, str(tmp_path / "none-*.csv")], "pool")


def test_fingerprint_changes_with_the_file(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"1234")
    first = file_fingerprint(str(p))
    assert first["path"] == str(p) and first["size"] == 4 == file_size(str(p))
    assert file_fingerprint(str(p)) == first
    p.write_bytes(b"12345")
    os.utime(p, (1, 1))
    assert file_fingerprint(str(p)) != first


def test_atomic_path_publishes_only_what_completed(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("done")
        assert not target.exists(), "nothing at the final name before the block ends"
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "done", "a failed block leaves the previous file"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"], "and no temporary file"


def test_write_json_is_stable_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"z": 1, "a": {"y": [1, 2], "b": None}})
    write_json(b, {"a": {"b": None, "y": [1, 2]}, "z": 1})
    assert a.read_bytes() == b.read_bytes() and a.read_text().endswith("}\n")
    assert json.loads(a.read_text()) == {"a": {"b": None, "y": [1, 2]}, "z": 1}


def test_sql_literals_keep_quotes_and_glob_characters_literal(tmp_path):
    odd = tmp_path / "it's [1]*.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2]}), odd)
    pq.write_table(pa.table({"x": [3]}), tmp_path / "it's 1.parquet")  # what the glob would also match
    assert sql_str("a'b") == "'a''b'"
    con = duck.connect()
    assert con.execute(f"SELECT sum(x) FROM read_parquet({sql_file_list([odd])})").fetchone()[0] == 3


def test_sum_stats_adds_numbers_only(tmp_path):
    (tmp_path / "1.json").write_text(json.dumps({"rows": 2, "kept": 1.5, "params": {"x": 1}, "done": True}))
    (tmp_path / "2.json").write_text(json.dumps({"rows": 3, "note": "x"}))
    assert sum_stats(sorted(tmp_path.glob("*.json"))) == {"rows": 5, "kept": 1.5}
