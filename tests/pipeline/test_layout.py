"""pipeline/layout.py: the output layout's names, and the promise they keep: the curation
folders open as datasets, as they are, in pandas, pyarrow and DuckDB.

pandas and pyarrow read a folder as one dataset by trying every file in it as parquet,
except names starting with `_` or `.`; per-part stats beside the parts (`part-NNNNN.json`)
would make them fail with ArrowInvalid, so they live in `_stats/`. Checked on the real
sample run of `test_audit` (`pipeline shards` on openclipart).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.pipeline.audit.test_audit import build_sample


def test_every_name_of_the_layout(tmp_path):
    """The paths the steps, the audit, the browser and the dataset card agree on."""
    from pipeline import layout

    out = tmp_path / "shards"
    cur = layout.curation(str(out))
    assert cur == out / "curation"
    assert layout.key_file(cur, "match") == cur / "keys" / "match"
    assert layout.step_stats(cur, "balance") == cur / "balance_stats.json"
    assert layout.step_stats_name("pool") == "pool_stats.json"
    assert layout.folder_stats(cur / layout.POOL) == cur / "pool" / "_stats.json"
    assert layout.part_stats(cur / layout.MATCHES, "part-00003") == cur / "matches" / "_stats" / "part-00003.json"
    assert layout.part_counts(cur / layout.MATCHES, "part-00003") == cur / "matches" / "_counts" / "part-00003.parquet"
    assert layout.STEPS == ("pool", "match", "balance", "download")
    # shard stats match NNNNN_stats.json, never a step's STEP_stats.json in the same folder
    assert (out / "00012_stats.json").match(layout.SHARD_STATS_GLOB)
    assert not (out / "pool_stats.json").match(layout.SHARD_STATS_GLOB)
    # inside a dataset folder, what is not a part starts with "_", which its readers skip
    assert layout.STATS.startswith("_") and layout.COUNTS.startswith("_") and layout.PART_GLOB.startswith("part-")
    remote = layout.curation("s3://bucket/shards")
    assert str(remote) == "s3://bucket/shards/curation"


FOLDERS = ("pool", "matches", "selected")
COLUMNS = {
    "pool": {"uid", "url", "text", "source"},
    "matches": {"uid", "query_ids"},
    "selected": {"uid", "url", "text", "query_ids", "queries", "keep_prob"},
}


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> dict:
    return build_sample(tmp_path_factory)


def expected_rows(cur: Path) -> dict[str, int]:
    """Rows per folder from the steps' own accounting (not from the files read here)."""
    stats = {s: json.loads((cur / f"{s}_stats.json").read_text()) for s in ("pool", "match", "balance")}
    return {"pool": stats["pool"]["kept"], "matches": stats["match"]["matched"], "selected": stats["balance"]["kept"]}


def assert_reads_as_dataset(folder: Path, rows: int, columns: set[str]) -> None:
    parts = sorted(str(p) for p in folder.glob("part-*.parquet"))
    assert parts
    frame = pd.read_parquet(folder)
    assert len(frame) == rows and columns <= set(frame.columns), (folder, len(frame), list(frame.columns))
    # pyarrow's own discovery, without and with hive partitioning (pandas uses the latter):
    # `_counts/` and `_stats/` are skipped, not read as parts nor as a partition column.
    for partitioning in (None, "hive"):
        dataset = ds.dataset(folder, format="parquet", partitioning=partitioning)
        assert sorted(dataset.files) == parts, (folder, dataset.files)
        assert dataset.count_rows() == rows
        assert set(dataset.schema.names) == set(pq.read_schema(parts[0]).names)
    assert pq.read_table(folder).num_rows == rows
    glob = str(folder / "*.parquet").replace("'", "''")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(rows,)]


@pytest.mark.slow
def test_every_curation_folder_reads_as_a_dataset(sample):
    cur = sample["shards"] / "curation"
    rows = expected_rows(cur)
    assert rows["pool"] > rows["matches"] > rows["selected"] > 0
    for name in FOLDERS:
        folder = cur / name
        strays = [p.name for p in folder.iterdir() if not p.name.startswith(("_", ".")) and p.suffix != ".parquet"]
        assert strays == [], f"{folder}: readers would try these as parquet"
        assert_reads_as_dataset(folder, rows[name], COLUMNS[name])
    matches = cur / "matches"
    assert sorted(p.name for p in (matches / "_stats").iterdir()) == sorted(
        p.stem + ".json" for p in matches.glob("part-*.parquet")
    )
    assert any((matches / "_counts").glob("part-*.parquet")), "the per-part counts the balance step sums"
