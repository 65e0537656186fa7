"""Images read straight from the shards' tars by key, without extracting anything to disk.

A tar has no index, so `index_tar` reads its headers only (`tarfile` in random-access mode
seeks over each member's data: one 512-byte header read per member, locally or through an
fsspec file on object storage) and records where each member's bytes lie. `read_member`
then fetches one member with a single byte-range read. `ShardImages` keeps the indexes of
the shards it has touched (a bounded LRU), so the audit's contact sheets and the dataset
browser read an image in one seek whatever the shard's size. Why not webdataset's `wids`
index: it wants a JSON index file written beside the shards, and the shards are read-only
here (one writer per folder: the download step's).
"""

from __future__ import annotations

import base64
import io
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

from PIL import Image

from ..imaging import to_rgb
from ..shard_format import image_ext, key_name, split_member, stream_members
from .location import Location

THUMB_PIXEL_LIMIT = 64_000_000  # a shard image is resized by the download step; refuse a bomb anyway


@dataclass(frozen=True)
class Member:
    offset: int  # of the member's data in the tar
    size: int


def index_tar(tar: Location) -> dict[str, dict[str, Member]]:
    """key -> extension -> where its bytes are, for every regular member (`KEY.EXT`)."""
    out: dict[str, dict[str, Member]] = {}
    with tar.open("rb") as f:
        for _, m in stream_members(f, seekable=True):  # random access: seeks over each member's data
            split = split_member(m.name) if m.isreg() else None
            if split is not None:
                key, ext = split
                out.setdefault(key_name(key), {})[ext] = Member(m.offset_data, m.size)
    return out


def read_member(tar: Location, member: Member) -> bytes:
    """One member's bytes, by a single seek and read; OSError if the tar is shorter than its header said."""
    with tar.open("rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise OSError(f"{tar}: member at {member.offset} cut short ({len(data)} of {member.size} bytes)")
    return data


class ShardImages:
    """Images of one shard folder by (shard, key); member indexes cached for `max_shards` tars."""

    def __init__(self, shards: Location, max_shards: int = 64):
        self.shards = shards
        self.max_shards = max_shards
        self._indexes: OrderedDict[str, dict[str, dict[str, Member]]] = OrderedDict()
        self._lock = Lock()  # the browser serves from several threads

    def tar(self, shard: str) -> Location:
        if not shard.isdigit():  # shard names are NNNNN: nothing else may reach the filesystem
            raise KeyError(shard)
        return self.shards / f"{shard}.tar"

    def index(self, shard: str) -> dict[str, dict[str, Member]]:
        with self._lock:
            if shard in self._indexes:
                self._indexes.move_to_end(shard)
                return self._indexes[shard]
        idx = index_tar(self.tar(shard))
        with self._lock:
            self._indexes[shard] = idx
            while len(self._indexes) > self.max_shards:
                self._indexes.popitem(last=False)
        return idx

    def find(self, shard: str, key: str) -> tuple[str, Member] | None:
        """(extension, member) of the sample's image, None when the tar holds no image for it."""
        members = self.index(shard).get(key, {})
        ext = image_ext(members)
        return (ext, members[ext]) if ext is not None else None

    def image(self, shard: str, key: str) -> tuple[str, bytes] | None:
        found = self.find(shard, key)
        if found is None:
            return None
        ext, member = found
        return ext, read_member(self.tar(shard), member)


def thumbnail(data: bytes, size: int = 112, quality: int = 70) -> bytes:
    """A JPEG at most `size` px on its long side, transparency composited onto white.
    Deterministic: the same bytes give the same thumbnail."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > THUMB_PIXEL_LIMIT:
            raise ValueError(f"{im.width}x{im.height} image is over the thumbnail pixel limit")
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        rgb = to_rgb(im)
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
