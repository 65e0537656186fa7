"""`python -m pipeline decontaminate`: the shards without the samples that train.overlap
matched (exactly those keys gone, members otherwise byte for byte, the parquet rows too,
readable by webdataset, byte-identical on rerun), its one-line errors, and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.train.test_overlap import ENV, _jpeg, write_shard


@pytest.fixture()
def shard_folder(tmp_path):
    """shards/00000.tar (6 samples) + .parquet (and a failed download's row), 00001.tar (4) +
    .parquet, 00000_stats.json; and the matches naming 3 of their keys, a missing key and a
    missing shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.overlap import write_pairs

    src = tmp_path / "shards"
    src.mkdir()
    rgb = Image.new("RGB", (8, 8), (10, 200, 30))
    for s, n in ((0, 6), (1, 4)):
        keys = [f"{s:04d}{i:04d}" for i in range(n)]
        write_shard(src / f"{s:05d}.tar", [(k, "jpg", _jpeg(rgb)) for k in keys])
        pq.write_table(
            pa.table(
                {
                    "key": keys + ([f"{s:04d}9999"] if s == 0 else []),
                    "status": ["success"] * n + (["failed_to_download"] if s == 0 else []),
                }
            ),
            src / f"{s:05d}.parquet",
        )
    (src / "00000_stats.json").write_text("{}")
    pair = {"eval_index": 0, "label": 0, "uid": None, "kind": "phash", "phash_distance": 0, "cosine": None}
    pairs = [
        {**pair, "dataset": "digits", "shard": f"{src}/00000.tar", "key": "00000001"},
        {**pair, "dataset": "openclipart", "shard": f"{src}/00000.tar", "key": "00000001"},
        {**pair, "dataset": "digits", "shard": f"{src}/00000.tar", "key": "00000004"},
        {**pair, "dataset": "digits", "shard": "s3://elsewhere/00001.tar", "key": "00010003", "kind": "embedding"},
        {**pair, "dataset": "digits", "shard": f"{src}/00001.tar", "key": "00017777"},
        {**pair, "dataset": "digits", "shard": f"{src}/00042.tar", "key": "00420000"},
    ]
    matches = tmp_path / "overlap_pairs.parquet"
    write_pairs(pairs, matches)
    return src, matches


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        return tf.getnames()


def test_decontaminate_removes_exactly_the_matched_keys(shard_folder, tmp_path):
    import pyarrow.parquet as pq
    import webdataset as wds

    src, matches = shard_folder
    out = tmp_path / "clean"
    res = run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    removed = {"00000001", "00000004", "00010003"}
    for name in ("00000.tar", "00001.tar"):
        want = [m for m in _members(src / name) if m.split(".")[0] not in removed]
        assert _members(out / name) == want
        with tarfile.open(src / name) as a, tarfile.open(out / name) as b:
            assert [(m.name, m.mtime, m.mode, m.size) for m in b] == [
                (m.name, m.mtime, m.mode, m.size) for m in a if m.name.split(".")[0] not in removed
            ]
    assert pq.read_table(out / "00000.parquet")["key"].to_pylist() == [
        "00000000",
        "00000002",
        "00000003",
        "00000005",
        "00009999",
    ]
    assert sorted(_contents(out)) == ["00000.parquet", "00000.tar", "00001.parquet", "00001.tar", "decontaminate.json"]
    stats = json.loads((out / "decontaminate.json").read_text())
    assert stats["complete"] and (stats["n_shards"], stats["samples_in"], stats["samples_out"]) == (2, 10, 7)
    assert stats["removed"] == 3 and stats["removed_by_dataset"] == {"digits": 3, "openclipart": 1}
    assert stats["matched_not_found"] == 1 and stats["matched_shards_absent"] == ["00042.tar"]
    assert stats["left_out"] == ["00000_stats.json"]
    keys = [s["__key__"] for s in wds.WebDataset(str(out / "00000.tar"), shardshuffle=False)]
    assert keys == ["00000000", "00000002", "00000003", "00000005"]

    before = _contents(out)
    (out / "00001.tar").unlink()  # as if interrupted before its rename
    again = run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert _contents(out) == before, "a rerun writes the same bytes, and skips what is done"
    fresh = tmp_path / "fresh"
    assert (
        run_cli(
            "decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(fresh), "--quiet"
        ).returncode
        == 0
    )
    assert all((fresh / n).read_bytes() == b for n, b in before.items() if n != "decontaminate.json")


def test_decontaminate_bad_input_is_one_line(shard_folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, matches = shard_folder
    out = str(tmp_path / "o")
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(tmp_path / "none.parquet"), "--out", out),
        "not found",
    )
    lacking = tmp_path / "lacking.parquet"
    pq.write_table(pa.table({"shard": ["00000.tar"], "key": ["00000001"]}), lacking)
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(lacking), "--out", out), "no column dataset"
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(src) + "/"),
        "the same folder as --shards",
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(tmp_path), "--matches", str(matches), "--out", out), "no *.tar"
    )
    assert (
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", out, "--quiet").returncode
        == 0
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", out, "--kinds", "embedding"),
        "other inputs",
    )


def test_decontaminate_does_not_import_torch():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", "decontaminate", "--help"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "--matches" in res.stdout, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.decontaminate" in imported and not {"torch", "train", "open_clip"} & imported


def test_an_online_dataset_stays_trainable_with_balance_t(tmp_path):
    """Decontaminated `--balance online` shards keep what `--balance-t` reads: the entry
    counts (copied) and each shard's index (written anew for the filtered tar: the byte
    ranges moved). Before, both were left out and the trainer refused the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.shard_format import index_table
    from tests.support.online import write_online_dataset
    from train.balance import load_entry_table
    from train.shards import read_index

    src = write_online_dataset(tmp_path / "online", per_shard=40)
    names = sorted(p.name for p in src.glob("*.tar"))
    removed = {"000000003", "000000041", "000000042"}
    matches = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table(
            {"shard": [f"x/{names[0]}", f"x/{names[1]}", f"x/{names[1]}"], "key": sorted(removed), "dataset": ["d"] * 3}
        ),
        matches,
    )
    out = tmp_path / "clean"
    res = run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (out / "entry_counts.parquet").read_bytes() == (src / "entry_counts.parquet").read_bytes()
    for name in names:
        index = read_index(str(out / name))
        assert index is not None, f"{name}: no index, or a stale one"
        with open(out / name, "rb") as f:
            want = index_table(f, (out / name).stat().st_size)
        assert pq.read_table(out / (name + ".idx")).equals(want)
        assert not removed & set(index.keys) and len(index) == len(_members(out / name)) // 3
    table = load_entry_table([str(out / n) for n in names])  # what `python -m train --balance-t` checks first
    assert table is not None
    assert "entry_counts.parquet" not in json.loads((out / "decontaminate.json").read_text())["left_out"]
