"""pipeline/shard_format.py: the one reading of the shards' member names, images and uids."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from pipeline.audit.tars import ShardImages, index_tar
from pipeline.shard_format import (
    IMAGE_EXTS,
    image_ext,
    key_name,
    meta_uid,
    read_meta,
    sample_uid,
    shard_name,
    split_member,
    stream_members,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("000012.jpg", ("000012", "jpg")),
        ("000012.JPG", ("000012", "jpg")),  # extensions compare in lower case
        ("dir/sub/000012.txt", ("dir/sub/000012", "txt")),  # the key keeps the folders, as webdataset's
        ("000012.seg.png", ("000012", "seg.png")),  # everything after the first dot of the name
        ("a.b/000012.json", ("a.b/000012", "json")),  # dots in folders are not the extension's
        ("000012", None),  # no extension: not a sample member
        ("__index__.json", None),  # webdataset's own members
        ("dir/__key__.txt", None),
    ],
)
def test_split_member_follows_webdataset(name, expected):
    assert split_member(name) == expected


def test_image_is_the_first_image_extension_present():
    assert IMAGE_EXTS[0] == "jpg"
    assert image_ext({"txt", "json"}) is None
    assert image_ext({"png", "txt"}) == "png"
    assert image_ext({"webp", "jpeg", "txt"}) == "jpeg"  # IMAGE_EXTS order, not the tar's
    assert image_ext({"jpg": b"", "png": b""}) == "jpg"  # a sample dict works too


def read_uid(meta):
    return meta_uid(read_meta(meta))


def test_read_uid():
    assert read_uid(b'{"uid": "ab12", "url": "x"}') == "ab12"
    assert read_uid('{"uid": 7}') == "7"  # numbers become strings, as the parquet columns
    assert read_uid(b'{"uid": 0}') == "0"
    assert read_uid(b'{"uid": ""}') is None and read_uid(b'{"uid": null}') is None
    assert read_uid(b'{"url": "x"}') is None and read_uid(b"[1, 2]") is None  # no uid / not an object
    for bad in (b"{not json", b"\xff\xfe", b"[" * 100_000):  # garbage, undecodable, too deep to parse
        with pytest.raises(ValueError):
            read_uid(bad)
    assert key_name("dir/sub/000012") == "000012" and key_name("000012") == "000012"


def test_a_sample_without_a_uid_goes_by_shard_and_key():
    """Shards we did not write: img2dataset's json names no uid, jpg+txt shards have no
    json; the uid is SHARD/KEY wherever the shard lies, so keys repeated across shards differ."""
    for url in ("shards/00012.tar", "/abs/shards/00012.tar", "s3://bucket/x/00012.tar", "http://h:1/s/00012.tar?x=1"):
        assert shard_name(url) == "00012"
        assert sample_uid({}, "000120034", url) == "00012/000120034"
    assert sample_uid({"key": "000120034", "url": "u"}, "000120034", "a/00012.tar") == "00012/000120034"
    assert sample_uid({}, "x", "a/00001.tar") != sample_uid({}, "x", "a/00002.tar")
    assert sample_uid({}, "dir/x", "a/00001.tar") == "00001/dir/x"  # the whole key: folders may repeat names
    assert sample_uid({"uid": "ab12"}, "x", "a/00001.tar") == "ab12"  # a json's uid wins
    assert sample_uid({"uid": ""}, "x", "a/00001.tar") == "00001/x"


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ReadOnlyStream(io.RawIOBase):
    """A stream that refuses to seek (a pipe, an HTTP body)."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._buf.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_stream_members_reads_a_pipe_in_order_in_constant_memory():
    n = 3000
    data = _tar([(f"{i:06d}.txt", b"x" * 10) for i in range(n)])
    tracemalloc.start()
    names = []
    peak_at_100 = 0
    for k, (tf, member) in enumerate(stream_members(ReadOnlyStream(data))):
        names.append(member.name)
        assert tf.extractfile(member).read() == b"x" * 10
        if k == 100:
            peak_at_100 = tracemalloc.get_traced_memory()[0]
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert names == [f"{i:06d}.txt" for i in range(n)]
    # headers are dropped as they are read: 2,900 more members cost (nearly) nothing kept
    assert current - peak_at_100 < 200_000, current - peak_at_100


def test_the_audit_index_reads_keys_and_images_as_the_trainer_does(tmp_path):
    members = [
        ("a/000001.jpg", b"J1"),
        ("a/000001.txt", b"one"),
        ("a/000001.json", b'{"uid": "u1"}'),
        ("000002.PNG", b"P2"),
        ("000002.webp", b"W2"),
        ("000003.txt", b"no image"),
        ("__index__.json", b"{}"),
    ]
    (tmp_path / "00000.tar").write_bytes(_tar(members))
    index = index_tar(Path(tmp_path / "00000.tar"))
    assert sorted(index) == ["000001", "000002", "000003"]  # keys without folders, as the parquet files name them
    assert sorted(index["000002"]) == ["png", "webp"]
    images = ShardImages(tmp_path)
    assert images.image("00000", "000001") == ("jpg", b"J1")
    assert images.image("00000", "000002") == ("png", b"P2")  # IMAGE_EXTS order: png before webp
    assert images.image("00000", "000003") is None
