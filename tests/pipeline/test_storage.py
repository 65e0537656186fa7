"""pipeline/storage.py: one storage layer for the pipeline and the trainer, on a local disk
and on a real S3 API server on loopback (moto)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import duck, storage
from pipeline.errors import InputError
from tests.support.s3server import moto_s3

BUCKET = "storage-test"


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        server.make_bucket(BUCKET)
        yield server


def test_schemes_and_what_counts_as_remote(tmp_path):
    assert storage.scheme("s3://b/x.tar") == "s3" and storage.scheme("HTTPS://h/x") == "https"
    assert storage.scheme("pipe:cat x.tar") == "pipe" and storage.scheme("shards/x.tar") == ""
    assert storage.scheme(tmp_path / "x") == "" and storage.scheme("file:///x") == "file"
    assert [storage.is_url(u) for u in ("s3://b/k", "gs://b/k", "https://h/x", "file:///x", "x/y", "pipe:cat")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    # local paths and file:// URLs are pathlib Paths; URLs are UPaths that pathlib code can use
    assert storage.location(f"file://{tmp_path}") == tmp_path and type(storage.location(str(tmp_path))) is type(
        tmp_path
    )
    assert not storage.is_remote(storage.location(str(tmp_path)))
    remote = storage.location(f"s3://{BUCKET}/a")
    assert storage.is_remote(remote) and storage.url(remote / "b.json") == f"s3://{BUCKET}/a/b.json"


def test_unknown_protocols_are_one_line_input_errors():
    with pytest.raises(InputError, match=r"^--out nosuch://b/x: "):
        storage.location("nosuch://b/x", "--out")
    with pytest.raises(InputError, match=r"^nosuch://b/x: cannot open \("):
        storage.filesystem("nosuch://b/x")


def test_local_folders(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name, size in (("b.tar", 3), ("a.tar", 5), ("c.txt", 7)):
        (tmp_path / "d" / name).write_bytes(b"x" * size)
    folder = storage.location(str(tmp_path / "d"))
    assert [p.name for p in storage.listing(folder, "*.tar")] == ["a.tar", "b.tar"]
    assert storage.total_size(folder, "*.tar") == 8
    storage.check_readable(folder, "--in")  # local: nothing to reach, never an error
    storage.check_writable(folder, "--out")
    storage.rmtree(folder)
    assert not folder.exists()
    storage.rmtree(folder)  # missing is fine


def test_publish_replaces_whole_files_and_leaves_no_scratch(tmp_path):
    target = tmp_path / "out" / "x.parquet"
    scratch = storage.scratch_for(target)
    assert scratch.parent == target.parent and scratch.name.startswith(".x.parquet.tmp-")  # same disk: atomic rename
    scratch.write_text("new")
    storage.publish(scratch, target)
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["x.parquet"]


def test_s3_round_trip_through_every_helper(s3, tmp_path):
    root = storage.location(f"s3://{BUCKET}/round")
    storage.check_readable(root, "--in")  # a missing folder in an existing bucket is no error
    storage.check_writable(root, "--out")
    storage.check_bucket(f"s3://{BUCKET}/round/x.tar", "--train-data")

    table = pa.table({"k": ["a", "b", "c"], "v": [1, 2, 3]})
    local = tmp_path / "t.parquet"
    pq.write_table(table, local)
    for name in ("t1.parquet", "t2.parquet"):
        scratch = storage.scratch_for(root / name)
        assert not str(scratch).startswith("s3://")  # written locally, uploaded whole
        scratch.write_bytes(local.read_bytes())
        storage.publish(scratch, root / name)
        assert not scratch.exists()
    assert [p.name for p in storage.listing(root, "*.parquet")] == ["t1.parquet", "t2.parquet"]
    assert storage.total_size(root, "*.parquet") == 2 * local.stat().st_size
    assert storage.read_table(root / "t1.parquet").equals(table)
    with storage.parquet_file(storage.url(root / "t2.parquet")) as pf:
        assert pf.metadata.num_rows == 3
    fs, path = storage.arrow_filesystem(root / "t1.parquet")
    assert fs is not None and pq.read_table(path, filesystem=fs).equals(table)

    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(5))
    (root / "a.npy").write_bytes(npy.read_bytes())
    assert storage.load_npy(storage.url(root / "a.npy")).tolist() == [0, 1, 2, 3, 4]
    assert isinstance(storage.load_npy(npy), np.memmap)  # local: memory-mapped

    con = duck.connect(remote=[root])
    n = con.execute(f"SELECT count(*) FROM read_parquet('{storage.url(root / '*.parquet')}')").fetchone()[0]
    assert n == 6

    storage.rmtree(root)
    assert not root.exists()


def test_missing_buckets_are_one_line_errors(s3):
    missing = "no-such-bucket-x"
    with pytest.raises(InputError, match=rf"^--train-data: no such bucket '{missing}'$"):
        storage.check_bucket(f"s3://{missing}/shards/x.tar", "--train-data")
    with pytest.raises(InputError, match=rf"^--in s3://{missing}/d: bucket '{missing}' does not exist$"):
        storage.check_readable(storage.location(f"s3://{missing}/d"), "--in")
    with pytest.raises(InputError, match=rf"^--out s3://{missing}/d: cannot write there \("):
        storage.check_writable(storage.location(f"s3://{missing}/d"), "--out")


def test_unreachable_endpoint_is_a_one_line_error(monkeypatch):
    """Not "no such bucket": s3fs's exists() answers False when it cannot connect at all."""
    from tests.support.s3server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # one made for the test server would answer
    try:
        with pytest.raises(InputError, match=r"^--runs: cannot reach s3://b \("):
            storage.check_bucket("s3://b/runs/x", "--runs")
    finally:  # fsspec keeps the instance it made for the dead endpoint: later tests must not get it
        s3fs.S3FileSystem.clear_instance_cache()
