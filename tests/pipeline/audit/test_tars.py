"""Reading one image out of a tar by key (pipeline/audit/tars.py): the header-only index
points at each member's bytes, a cut tar is an error, not short data, and shard names
cannot leave the shard folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.audit.tars import ShardImages, index_tar, read_member, thumbnail


def png(w: int, h: int, colour=(200, 30, 30, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_index_points_at_every_members_bytes(tmp_path):
    members = {
        "00000000.png": png(30, 20),
        "00000000.txt": b"a red box",
        "00000000.json": b'{"key": "00000000"}',
        "00000001.jpg": b"\xff\xd8" + bytes(range(256)) * 40,  # sizes across block boundaries
        "00000002.txt": b"",
    }
    write_tar(tmp_path / "00000.tar", members)
    idx = index_tar(tmp_path / "00000.tar")
    assert set(idx) == {"00000000", "00000001", "00000002"}
    for name, data in members.items():
        key, ext = name.split(".")
        assert read_member(tmp_path / "00000.tar", idx[key][ext]) == data
    images = ShardImages(tmp_path)
    assert images.image("00000", "00000000") == ("png", members["00000000.png"])
    assert images.image("00000", "00000001") == ("jpg", members["00000001.jpg"])
    assert images.image("00000", "00000002") is None  # a caption without an image
    assert images.find("00000", "99999999") is None


def test_cut_tar_is_an_error_and_shard_names_stay_in_the_folder(tmp_path):
    write_tar(tmp_path / "00000.tar", {"00000000.png": png(300, 300)})
    member = index_tar(tmp_path / "00000.tar")["00000000"]["png"]
    data = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(data[: member.offset + member.size // 2])
    with pytest.raises(OSError, match="cut short"):
        read_member(tmp_path / "00000.tar", member)
    images = ShardImages(tmp_path / "sub")
    for bad in ("../00000", "/etc/passwd", "00000/../../x", "", "0x1"):
        with pytest.raises(KeyError):
            images.image(bad, "00000000")


def test_thumbnail_is_small_deterministic_and_white_under_transparency():
    clear = png(400, 200, (0, 0, 0, 0))
    t = thumbnail(clear, 112)
    assert t == thumbnail(clear, 112)
    with Image.open(io.BytesIO(t)) as im:
        assert im.format == "JPEG" and im.size == (112, 56)
        r, g, b = im.convert("RGB").getpixel((56, 28))
        assert min(r, g, b) > 245  # transparent -> white, as every stage sees it (pipeline.imaging)
