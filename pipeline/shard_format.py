"""The shard format, as every reader of the shards understands it.

A shard is a webdataset tar (written by the download step through img2dataset): regular
members named `KEY.EXT`, the members of one sample adjacent, `KEY.jpg` (or another image
extension), `KEY.txt` (the caption) and `KEY.json` (img2dataset's fields plus the curation
columns, among them `uid`). Shards from elsewhere (img2dataset's own layout from LAION,
DataComp or CC3M, or plain `jpg`/`webp`/`png` + `txt`) read the same way: a sample whose
json names no uid, or that has no json, goes by `sample_uid`'s `SHARD/KEY`. The trainer streams the tars, the overlap analysis hashes their
images, the audit and the browser index them, `decontaminate` copies them without some
samples: all of them split member names, pick the image and read the uid here, so a key,
an image and a uid mean the same to each.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Container, Iterator
from typing import IO

INDEX_SUFFIX = ".idx"  # NNNNN.tar -> NNNNN.tar.idx (not *.parquet: globs of the shards' parquets must not see it)
INDEX_FORMAT = "wit-tar-index/1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # img2dataset's encode formats; the first present is the image
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension in lower case) of a member name: `dir/0001.jpg` -> (`dir/0001`, `jpg`),
    `0001.seg.png` -> (`0001`, `seg.png`), as webdataset groups them. None for a name without
    an extension and for webdataset's own `__*` members."""
    m = _KEY_EXT.match(name)
    if m is None or name.rsplit("/", 1)[-1].startswith("__"):
        return None
    return m.group(1), m.group(2).lower()


def image_ext(exts: Container[str]) -> str | None:
    """The extension among `exts` that holds the sample's image (the first of IMAGE_EXTS present)."""
    return next((e for e in IMAGE_EXTS if e in exts), None)


def read_meta(meta: bytes | str) -> dict:
    """A sample's json member as a dict ({} for JSON that is not an object); ValueError when
    the member is not JSON (undecodable bytes and nesting too deep to parse included)."""
    try:
        value = json.loads(meta)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value if isinstance(value, dict) else {}


def meta_uid(value: dict) -> str | None:
    """The `uid` a sample's json names, None when it names none."""
    uid = value.get("uid")
    return str(uid) if uid not in (None, "") else None


def shard_name(url: str) -> str:
    """A shard's file name without `.tar`, whatever folder, bucket or server holds it:
    `s3://b/shards/00012.tar` -> `00012`."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".tar")


def sample_uid(meta: dict, key: str, shard_url: str) -> str:
    """The uid a sample goes by: its json's `uid`; for a sample without one (img2dataset's
    json names none, plain jpg+txt shards have no json) `SHARD/KEY`, e.g. `00012/000120034`:
    unique within a folder of shards even where keys repeat from shard to shard (as in
    shards written by other tools), and the same wherever the folder is copied or synced."""
    return meta_uid(meta) or f"{shard_name(shard_url)}/{key}"


def index_url(tar_url: str) -> str:
    """Where a shard's index is: beside it, `NNNNN.tar.idx`."""
    return tar_url + INDEX_SUFFIX


def key_name(key: str) -> str:
    """The key without the folders a tar may put it in: the name the parquet files use."""
    return key.rsplit("/", 1)[-1]


def stream_members(fileobj: IO[bytes], seekable: bool = False) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """A tar's members in order, with the `TarFile` to extract each from; headers are not
    kept, so a shard of any size takes constant memory. Read front to back from a stream (a
    pipe, an object store), or with `seekable` by seeking over each member's data (one
    header read per member)."""
    with tarfile.open(fileobj=fileobj, mode="r:" if seekable else "r|") as tf:
        for member in tf:
            yield tf, member
            tf.members = []  # type: ignore[attr-defined]  # real but not in typeshed; drops the kept headers


def index_table(fileobj: IO[bytes], tar_size: int):
    """The index (see the module doc) of a tar read from `fileobj`, from its headers (for
    shards the download step did not write, which has the offsets as it writes). Seeks
    over member data: one header read per member."""
    import pyarrow as pa

    rows: dict[str, list] = {"key": [], "uid": [], "query_ids": [], "offset": [], "size": []}
    for tf, member in stream_members(fileobj, seekable=True):
        split = split_member(member.name) if member.isreg() else None
        if split is None:
            continue
        key, ext = split
        end = member.offset_data + -(-member.size // 512) * 512
        if not rows["key"] or rows["key"][-1] != key:
            rows["key"].append(key)
            rows["uid"].append(None)
            rows["query_ids"].append(None)
            rows["offset"].append(member.offset)
            rows["size"].append(0)
        rows["size"][-1] = end - rows["offset"][-1]
        if ext == "json":
            data = tf.extractfile(member)
            meta = read_meta(data.read()) if data is not None else {}
            rows["uid"][-1] = meta_uid(meta)
            ids = meta.get("query_ids")
            rows["query_ids"][-1] = ids if isinstance(ids, list) else None
    return pa.table(
        {
            "key": pa.array(rows["key"], pa.string()),
            "uid": pa.array(rows["uid"], pa.string()),
            "query_ids": pa.array(rows["query_ids"], pa.list_(pa.int32())),
            "offset": pa.array(rows["offset"], pa.int64()),
            "size": pa.array(rows["size"], pa.int64()),
        }
    ).replace_schema_metadata({"format": INDEX_FORMAT, "tar_size": str(tar_size)})


def write_index(tar_path, out=None) -> str:
    """Write the index of a local tar (`index_table`) to local path `out`, by default
    `NNNNN.tar.idx` beside it; its path."""
    import os

    import pyarrow.parquet as pq

    with open(tar_path, "rb") as f:
        table = index_table(f, os.path.getsize(tar_path))
    out = str(out) if out is not None else index_url(str(tar_path))
    pq.write_table(table, out, compression="zstd")
    return out
