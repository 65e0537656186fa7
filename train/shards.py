"""Reading shards: URL patterns to shard lists, opening any URL, the tar reader, and the
checks that turn a tar's members into samples, every problem counted under one reason.

Shards are opened with webdataset's `gopen` for `pipe:` and http(s) (curl), with fsspec for
other URL schemes (s3://, gs://, ... when their fsspec backend is installed); webdataset
0.2.86's gopen itself has no fsspec support. A remote (fsspec) shard whose connection drops
is reopened at the byte it stopped at (`_ReopeningReader`); one that keeps failing counts
as `shard_read_error`, with a warning on stderr.

Why a hand-written tar reader rather than `webdataset.tarfile_to_samples`: webdataset
0.2.86 reports errors through `handler(exn)` per file member or per shard, so one bad
sample can be reported several times (or a truncated shard not at all: Python's
streaming `tarfile` ends iteration silently on a short or garbled header after the first
member). Here each sample lands in exactly one bucket (read, or skipped for one reason),
and a tar that does not end with its end-of-archive block counts as a shard error. The
member names, the image member and the uid follow `pipeline.shard_format`, as the audit,
the browser and `decontaminate` read them.

Bad input never raises here: every reader takes a `Counter` and counts what it skipped.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import struct
import sys
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import IO, cast

import braceexpand
from PIL import Image

from pipeline.errors import InputError, one_line
from pipeline.shard_format import INDEX_FORMAT, image_ext, index_url, read_meta, sample_uid, split_member
from pipeline.storage import check_bucket, filesystem, location, scheme

# Every sample read lands in exactly one of: used, held out (or, for the val set, not held
# out), or one of these skip reasons.
SAMPLE_REASONS = (
    "missing_image",
    "missing_text",
    "bad_text",
    "bad_json",
    "bad_image",
    "image_too_large",
    "partial_sample",
)
SHARD_REASONS = ("shard_unreadable", "shard_truncated", "shard_read_error")
# A remote shard whose read fails is reopened at the same byte this many times, after
# READ_BACKOFF_S, 2x, 4x ... seconds (on top of the fsspec backend's own retries: s3fs
# retries each ranged GET 5 times within ~2 s), then given up and counted.
READ_RETRIES = 3
READ_BACKOFF_S = 1.0

_GLOB_MAGIC = re.compile(r"[*?[]")


# --------------------------------------------------------------------------- URLs


def _expand_local(path: str) -> tuple[list[str], bool]:
    """(paths, whether anything existing matched) for one brace-expanded local path."""
    if _GLOB_MAGIC.search(path):
        found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        return [os.path.normpath(p) for p in found], bool(found)
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".tar"))
        return [os.path.normpath(p) for p in found], bool(found)
    # A literal path is kept even if missing (brace patterns with gaps, a shard that is
    # still being written): reading it is then a counted shard error, never a crash.
    return [os.path.normpath(path)], os.path.exists(path)


def expand_urls(patterns: Sequence[str] | str) -> list[str]:
    """Expand shard patterns into a sorted, de-duplicated list of shard URLs.

    Each pattern is brace-expanded (`shards/{00000..00004}.tar`), then each result:
    a local path or `file://` URL is globbed when it has `*?[` (a directory means its
    `*.tar`); `pipe:CMD` is kept verbatim; another URL (`s3://b/x.tar`, `https://...`)
    is kept as a URL, globbed through fsspec when it has glob characters. Literal paths are
    kept even when missing (a gap in a brace range is counted when read), but a pattern
    that matches nothing at all raises ValueError naming it. Literal remote URLs are not
    touched here (see `check_remote_shards`).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    urls: set[str] = set()
    for pattern in patterns:
        matched: list[str] = []
        any_found = False
        for item in braceexpand.braceexpand(pattern):
            kind = scheme(item)
            if kind == "pipe":
                matched.append(item)
                any_found = True
            elif kind in ("", "file"):
                paths, found = _expand_local(str(location(item)))
                prefix = "file://" if kind == "file" else ""
                matched += [prefix + p for p in paths]
                any_found |= found
            elif _GLOB_MAGIC.search(item.split("://", 1)[1]):
                try:
                    import fsspec

                    fs = fsspec.filesystem(kind)
                    found_paths = sorted(fs.glob(item))
                except Exception as exc:  # missing backend (s3fs, gcsfs), network, ...
                    raise InputError(f"{pattern}: cannot list {kind}:// URLs ({one_line(exc)})") from None
                matched += [p if scheme(p) else f"{kind}://{p}" for p in found_paths]
                any_found |= bool(found_paths)
                if not found_paths:
                    check_bucket(item, pattern)
            else:
                matched.append(item)  # a remote URL: existence is checked when read
                any_found = True
        if not matched or not any_found:
            raise InputError(f"{pattern}: matches no shard")
        urls.update(matched)
    return sorted(urls)


def check_remote_shards(patterns: Sequence[str] | str) -> None:
    """InputError naming the pattern when none of its literal fsspec URLs (`s3://b/{0..9}.tar`)
    exists, and the bucket when that is what is missing.

    `expand_urls` leaves such URLs alone (a missing one is counted when read), so a run
    that can read nothing would only fail once the stream gives up; the trainer calls this
    first. One listing per folder, not one request per shard; http(s) is not listed.
    """
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        by_folder: dict[str, set[str]] = defaultdict(set)
        for item in braceexpand.braceexpand(pattern):
            if scheme(item) not in ("", "file", "pipe", "http", "https") and not _GLOB_MAGIC.search(
                item.split("://", 1)[1]
            ):
                folder, name = item.rsplit("/", 1)
                by_folder[folder].add(name)
        if not by_folder:
            continue
        found = False
        for folder, names in by_folder.items():
            fs, path = filesystem(folder)
            try:
                listed = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
            except FileNotFoundError:
                continue
            except PermissionError:
                found = True  # may read but not list: existence is checked when read
                break
            except Exception as exc:  # noqa: BLE001 - endpoint down, bad credentials, ...
                raise InputError(f"{pattern}: cannot list {folder} ({one_line(exc, typed=True)})") from None
            if names & listed:
                found = True
                break
        if not found:
            check_bucket(next(iter(by_folder)), pattern)
            raise InputError(f"{pattern}: matches no shard")


def check_readable(urls: Sequence[str]) -> None:
    """Fail fast (InputError) on URL schemes nothing here can open."""
    for kind in sorted({scheme(u) for u in urls} - {"", "file", "pipe", "http", "https"}):
        try:
            import fsspec

            fsspec.get_filesystem_class(kind)
        except Exception as exc:
            example = next(u for u in urls if scheme(u) == kind)
            raise InputError(f"{example}: cannot read {kind}:// URLs ({one_line(exc)})") from None


def open_url(url: str):
    """A binary stream of the shard at `url`, whatever its scheme (see the module doc)."""
    kind = scheme(url)
    if kind in ("", "file"):
        return open(location(url), "rb")
    if kind in ("pipe", "http", "https"):
        # curl for http(s), a subprocess for pipe:. (`webdataset.gopen` the attribute is the
        # function, which shadows the module of the same name.)
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    return _ReopeningReader(url)


class ShardReadError(OSError):
    """A remote shard that kept failing to read (READ_RETRIES reopenings)."""


class _ReopeningReader:
    """A remote (fsspec) shard read front to back that survives dropped connections.

    A failed read closes the file, waits (READ_BACKOFF_S, doubling), reopens the URL and
    seeks back to the byte it had reached, READ_RETRIES times per shard; then it raises
    ShardReadError. So a drop costs either nothing or a counted, reported shard error:
    never the silent loss of the rest of a shard (which would look like a truncated tar) and
    never a hang.
    """

    def __init__(self, url: str):
        self.url = url
        self.pos = 0
        self.reopened = 0
        self._f = self._open()

    def _open(self):
        import fsspec

        return fsspec.open(self.url, "rb").open()

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self._f.read(n)
            except Exception as exc:  # noqa: BLE001 - whatever the backend raises once its own retries are spent
                self._reopen(exc)
                continue
            self.pos += len(data)
            return data

    def _reopen(self, exc: Exception) -> None:
        if self.reopened >= READ_RETRIES:
            raise ShardReadError(
                f"{self.url}: read failed at byte {self.pos} after {self.reopened} reopenings "
                f"({one_line(exc, typed=True)})"
            ) from exc
        time.sleep(READ_BACKOFF_S * 2**self.reopened)
        self.reopened += 1
        with contextlib.suppress(Exception):
            self._f.close()
        try:
            self._f = self._open()
            self._f.seek(self.pos)
        except Exception:  # noqa: BLE001 - still down: the next read fails on the closed file and retries
            pass

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()


_reported_read_errors: set[str] = set()


def _report_read_error(url: str, message: str) -> None:
    """One stderr line per shard and process: a lost connection is not a silent loss, and a
    shard drawn again and again (with replacement) does not flood the log."""
    if url not in _reported_read_errors:
        _reported_read_errors.add(url)
        print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the tar reader


class _TarInfo(tarfile.TarInfo):
    """Records whether the archive ended with its end-of-archive (all-zero) block.

    Python's streaming tarfile ends iteration silently on an empty, short or garbled
    header after the first member, which is how a truncated shard looks.
    """

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            tf._wit_clean_end = True
            raise


class _TarFile(tarfile.TarFile):
    """A TarFile whose attributes that `_Members` uses are typed."""

    members: list[tarfile.TarInfo]  # set by TarFile.__init__; typeshed leaves it out
    _wit_clean_end: bool  # whether the end-of-archive block was read (see `_TarInfo`)


_BLOCK = tarfile.BLOCKSIZE
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: for tarfile's "r|*"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class _Members:
    """A tar stream's members in order, `(name, regular, read)`; `read()` returns the
    member's data (not calling it skips the data). `clean_end` says, once the iteration is
    over, whether it ended at the end-of-archive block; a member cut inside its data raises.

    Headers are parsed here, as `tarfile` does (checksum, base-256 sizes, ustar prefixes,
    pax `path` and `size`, GNU long names), from a plain buffered read: `tarfile`'s stream
    mode costs about a fifth of a small sample's loader time (`bench/loader.py`) in its
    block buffer and header objects. A compressed tar goes to `tarfile` ("r|*")."""

    def __init__(self, stream):
        self.stream = stream
        self.clean_end = False

    def __iter__(self) -> Iterator[tuple[str, bool, Callable[[], bytes]]]:
        first = self._take(_BLOCK)
        if first.startswith(_COMPRESSED):
            yield from self._tarfile(first)
            return
        if len(first) < _BLOCK:
            raise tarfile.ReadError("empty file" if not first else "not a tar")
        block, offset = first, 0
        name: str | None = None  # from a pax or GNU long-name header, for the next member
        size: int | None = None  # from a pax header
        extended = False  # the header before was a pax or GNU one: the member must follow
        while True:
            header = _header(block) if len(block) == _BLOCK and block != tarfile.NUL * _BLOCK else None
            if header is None and extended:  # as tarfile: a member cut after its extended header
                raise tarfile.ReadError("no header after an extended header")
            if len(block) < _BLOCK:
                return  # cut at a header
            if block == tarfile.NUL * _BLOCK:
                self.clean_end = True
                return
            if header is None:  # garbled: at the start not a tar; later, as tarfile, an unclean end
                if offset == 0:
                    raise tarfile.ReadError("bad checksum")
                return
            member, length, kind = header
            length = length if size is None else size
            padded = -(-length // _BLOCK) * _BLOCK
            extended = kind in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME)
            if extended:
                data = self._read(padded)[:length]
                if kind == tarfile.GNUTYPE_LONGNAME:
                    name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                else:
                    name = _pax_path(data) or name
                    size = _pax_size(data)
            else:
                wanted = False

                def read(n=length, pad=padded) -> bytes:
                    nonlocal wanted
                    wanted = True
                    return self._read(pad)[:n]

                yield name or member, kind in _REGULAR, read
                if not wanted:
                    self._read(padded)
                name = size = None
            offset += _BLOCK + padded
            block = self._take(_BLOCK)

    def _read(self, n: int) -> bytes:
        data = self._take(n)
        if len(data) < n:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def _take(self, n: int) -> bytes:
        """`n` bytes, or fewer only at the end: a pipe or a socket may return less a read."""
        data = self.stream.read(n) if n else b""
        while 0 < len(data) < n:
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def _tarfile(self, first: bytes) -> Iterator[tuple[str, bool, Callable[[], bytes]]]:
        stream = cast("IO[bytes]", _Prepended(first, self.stream))
        tf = _TarFile.open(fileobj=stream, mode="r|*", tarinfo=_TarInfo)
        tf._wit_clean_end = False
        for member in tf:
            data = tf.extractfile(member) if member.isreg() else None
            yield member.name, member.isreg(), (data.read if data is not None else bytes)
            tf.members = []  # streaming: do not keep every header in memory
        self.clean_end = tf._wit_clean_end


class _Prepended:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out if len(out) == n else out + self.stream.read(n - len(out))


def _header(block: bytes) -> tuple[str, int, bytes] | None:
    """(name, size, type) of a 512-byte header as `tarfile.TarInfo.frombuf` reads them;
    None when its checksum is wrong."""
    try:
        want = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    if want != unsigned and want != 256 + sum(struct.unpack_from("148b8x356b", block)):  # some tars sum signed bytes
        return None
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    kind = block[156:157]
    field = block[124:136]
    if field[0] in (0x80, 0xFF):  # GNU base-256 (0xff: negative, never a valid size)
        if field[0] == 0xFF:
            return None
        size = int.from_bytes(field[1:], "big")
    else:
        try:
            size = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE  # as tarfile: old tars mark directories by the name
    if block[257:265] == tarfile.POSIX_MAGIC and kind not in tarfile.GNU_TYPES:
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if prefix:
            name = prefix + "/" + name
    return name, size, kind


class _SafeClose:
    """Closing a pipe (curl, `pipe:`) can raise on the child's exit status, also when the
    consumer stops early; a read error has already been counted by then."""

    def __init__(self, stream):
        self.stream = stream

    def close(self):
        try:
            self.stream.close()
        except Exception:
            pass


def iter_shard(url: str, counts: Counter) -> Iterator[dict]:
    """Yield raw samples {"__key__", "__url__", ext: bytes} of one shard; never raises.

    Counts `shard_unreadable` (cannot open / not a tar), `shard_truncated` (ends early or
    corrupt after some members; the sample being read then counts as `partial_sample`),
    `shard_read_error` (a remote shard whose reads kept failing; reported on stderr).
    """
    for _, raw in iter_shard_indexed(url, counts):
        yield raw


def iter_shard_indexed(
    url: str, counts: Counter, start: int = 0, wanted: frozenset | set = frozenset()
) -> Generator[tuple[int, dict], None, None]:
    """`(index, raw sample)` of one shard from raw sample `start` on, plus the earlier ones
    whose index is in `wanted`; never raises (see `iter_shard`).

    The others before `start` are passed over without reading their bytes. This is how a
    resumed stream finds its place again: a tar is read front to back, so going back to
    the middle of a shard costs reading its headers (and the `wanted` samples) up to there.
    Reopening a shard at `start > 0` does not count it as opened again (`shards`).
    """
    if start == 0:
        counts["shards"] += 1
    try:
        stream = open_url(url)
    except Exception:
        counts["shard_unreadable"] += 1
        return
    current: dict | None = None
    index = 0  # of the sample being assembled
    yielded = 0
    cut_at_header = False
    try:
        with contextlib.closing(_SafeClose(stream)):
            members = _Members(stream)
            for name, regular, read in members:
                if not regular:
                    continue
                split = split_member(name)
                if split is None:
                    continue
                key, ext = split
                if current is not None and key != current["__key__"]:
                    done, current = current, None
                    index += 1
                    if index - 1 >= start or index - 1 in wanted:
                        yield index - 1, done  # complete before reading on: a cut below loses only `key`
                        yielded += 1
                if current is None:
                    current = {"__key__": key, "__url__": url}
                if index >= start or index in wanted:
                    current[ext] = read()
            # No end-of-archive block: cut (or garbled) at a header. The members read so far
            # are whole; the sample in hand goes on to the usual member checks.
            cut_at_header = not members.clean_end
    except ShardReadError as exc:  # the connection kept dropping
        counts["shard_read_error"] += 1
        if current is not None:
            counts["partial_sample"] += 1
        _report_read_error(url, f"{exc}; skipping the rest of the shard ({yielded} samples read)")
        return
    except Exception:  # cannot open as tar, or cut inside a member's data
        if index or current is not None:
            counts["shard_truncated"] += 1
        else:
            counts["shard_unreadable"] += 1
        if current is not None:
            counts["partial_sample"] += 1
        return
    if cut_at_header:
        counts["shard_truncated" if (index or current is not None) else "shard_unreadable"] += 1
    if current is not None and (index >= start or index in wanted):
        yield index, current


# --------------------------------------------------------------------------- reading by index

# Unread bytes between two wanted samples that are read through rather than asked for
# apart: locally a seek is free; an object store's request costs about its time to first
# byte times its bandwidth in bytes (~50 ms x 100 MiB/s; Arrow's `CacheOptions.
# from_network_metrics` sizes its hole limit the same way), so a pass that keeps half the
# samples reads a shard in one request and one that keeps few skips most of it.
RANGE_GAP = {"local": 64 * 1024, "remote": 4 * 1024 * 1024}
# Bytes asked for at once. Remote: a request of 1 MiB is fetched by a thread while the
# samples of the one before are decoded, so the download hides behind the decode.
RANGE_BATCH = {"local": 16 * 1024 * 1024, "remote": 4 * 1024 * 1024}


class ShardIndex:
    """A shard's index (`pipeline.shard_format`): per sample, in tar order, its key, uid,
    query ids and byte range."""

    def __init__(self, table):
        self.keys: list[str] = table.column("key").to_pylist()
        self.uids: list[str | None] = table.column("uid").to_pylist()
        self.query_ids = table.column("query_ids").combine_chunks()
        self.offsets = table.column("offset").to_numpy()
        self.sizes = table.column("size").to_numpy()

    def __len__(self) -> int:
        return len(self.keys)


def read_index(url: str) -> ShardIndex | None:
    """The shard's index, or None when it has none, or one that is unreadable or stale (its
    `tar_size` is not the tar's: the tar was rewritten, e.g. by `decontaminate`)."""
    import pyarrow.parquet as pq

    where = index_url(url)
    try:
        if scheme(url) in ("", "file"):
            if not os.path.exists(location(where)):
                return None
            size = os.path.getsize(location(url))
            table = pq.read_table(location(where))
        elif scheme(url) in ("pipe", "http", "https"):
            return None
        else:  # two requests: the whole index (small) in one GET, and the tar's size
            fs, path = filesystem(where)
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                return None
            size = fs.size(filesystem(url)[1])
            table = pq.read_table(io.BytesIO(data))
        meta = table.schema.metadata or {}
        if meta.get(b"format") != INDEX_FORMAT.encode() or int(meta.get(b"tar_size", b"-1")) != size:
            return None
        return ShardIndex(table)
    except Exception:  # noqa: BLE001 - an index is an optimisation: without one the shard is streamed
        return None


def _ranges(index: ShardIndex, rows: Sequence[int], gap: int, limit: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, rows) byte ranges covering `rows` (sorted), neighbours merged across
    gaps of at most `gap` bytes into ranges of at most `limit` bytes (or one sample)."""
    out: list[tuple[int, int, list[int]]] = []
    for j in rows:
        start, end = int(index.offsets[j]), int(index.offsets[j] + index.sizes[j])
        if out and 0 <= start - out[-1][1] <= gap and end - out[-1][0] <= limit:
            out[-1] = (out[-1][0], end, out[-1][2] + [j])
        else:
            out.append((start, end, [j]))
    return out


def _fetch(url: str, ranges: list[tuple[int, int, list[int]]]) -> list[bytes]:
    if scheme(url) in ("", "file"):
        with open(location(url), "rb") as f:
            out = []
            for start, end, _ in ranges:
                f.seek(start)
                out.append(f.read(end - start))
            return out
    fs, path = filesystem(url)
    return fs.cat_ranges([path] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges])


def iter_shard_rows(
    url: str, index: ShardIndex, rows: Sequence[int], counts: Counter
) -> Generator[tuple[int, dict], None, None]:
    """`(row, raw sample)` of the given rows (sorted) of an indexed shard, reading only their
    byte ranges (locally by seeking; from an object store by ranged GETs of RANGE_BATCH
    bytes, the next one fetched while this one's samples are used); never raises. A failed
    read counts `shard_read_error` (reported on stderr) and ends the shard, a range that is
    not whole tar members `shard_truncated`."""
    counts["shards"] += 1
    where = "local" if scheme(url) in ("", "file") else "remote"
    batches: list[list[tuple[int, int, list[int]]]] = []
    for r in _ranges(index, rows, RANGE_GAP[where], RANGE_BATCH[where]):
        if batches and sum(e - s for s, e, _ in batches[-1]) + r[1] - r[0] <= RANGE_BATCH[where]:
            batches[-1].append(r)
        else:
            batches.append([r])
    pool = None
    if where == "remote" and len(batches) > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-ranges")
    try:
        ahead = pool.submit(_fetch, url, batches[0]) if pool is not None else None
        for k, batch in enumerate(batches):
            try:
                if ahead is not None:
                    chunks = ahead.result()
                    ahead = pool.submit(_fetch, url, batches[k + 1]) if pool and k + 1 < len(batches) else None
                else:
                    chunks = _fetch(url, batch)
            except Exception as exc:  # noqa: BLE001 - whatever the backend raises once its own retries are spent
                counts["shard_read_error"] += 1
                _report_read_error(
                    url, f"{url}: ranged read failed ({one_line(exc, typed=True)}); skipping the rest of the shard"
                )
                return
            for (start, end, wanted), chunk in zip(batch, chunks):
                if len(chunk) != end - start:
                    counts["shard_truncated"] += 1
                    return
                view = memoryview(chunk)
                for j in wanted:
                    at = int(index.offsets[j]) - start
                    raw = _sample_at(url, view[at : at + int(index.sizes[j])])
                    if raw is None:  # not whole tar members: the index does not fit the tar
                        counts["shard_truncated"] += 1
                        return
                    if raw.get("__key__") != index.keys[j]:
                        counts["partial_sample"] += 1
                        continue
                    yield j, raw
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _sample_at(url: str, data: memoryview) -> dict | None:
    """The raw sample (as `iter_shard` gives it) of one sample's byte range, its headers read
    in place (`tarfile`'s stream reader copies every member through a buffer); None when
    the range is not whole tar members. A long name comes in a pax (or GNU) extended
    header before its member; other extended fields (webdataset's float mtimes) are not
    needed."""
    raw: dict = {"__url__": url}
    pos, name = 0, None
    while pos + tarfile.BLOCKSIZE <= len(data):
        block = bytes(data[pos : pos + tarfile.BLOCKSIZE])
        if block == tarfile.NUL * tarfile.BLOCKSIZE:  # an end-of-archive block
            break
        try:
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            return None
        begin = pos + tarfile.BLOCKSIZE
        if begin + info.size > len(data):
            return None
        payload = data[begin : begin + info.size]
        pos = begin + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            name = _pax_path(bytes(payload)) or name
            continue
        if info.type == tarfile.GNUTYPE_LONGNAME:
            name = bytes(payload).rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        member, name = name or info.name, None
        split = split_member(member) if info.isreg() else None
        if split is not None:
            if raw.setdefault("__key__", split[0]) != split[0]:
                return None
            raw[split[1]] = bytes(payload)
    return raw if "__key__" in raw else None


def _pax_path(records: bytes) -> str | None:
    """The `path` of a pax extended header's records ("LENGTH KEY=VALUE\n" each)."""
    value = _pax_field(records, b"path")
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _pax_size(records: bytes) -> int | None:
    value = _pax_field(records, b"size")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _pax_field(records: bytes, field: bytes) -> bytes | None:
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        if space < 0:
            return None
        try:
            length = int(records[pos:space])
        except ValueError:
            return None
        if length <= 0:
            return None
        key, _, value = records[space + 1 : pos + length - 1].partition(b"=")
        if key == field:
            return value
        pos += length
    return None


# --------------------------------------------------------------------------- samples


def check_sample(raw: dict, counts: Counter) -> dict | None:
    """Members present and json decodable -> {"uid", "txt", "image": bytes, "__url__",
    "query_ids": the json's, or None}."""
    ext = image_ext(raw)
    if ext is None:
        counts["missing_image"] += 1
        return None
    if "txt" not in raw:
        counts["missing_text"] += 1
        return None
    meta: dict = {}
    if "json" in raw:
        try:
            meta = read_meta(raw["json"])
        except ValueError:
            counts["bad_json"] += 1
            return None
    return {
        "uid": sample_uid(meta, raw["__key__"], raw["__url__"]),
        "txt": raw["txt"],
        "image": raw[ext],
        "__url__": raw["__url__"],
        "query_ids": meta.get("query_ids"),
    }


def decode_text(sample: dict, counts: Counter) -> str | None:
    try:
        text = sample["txt"].decode("utf-8").strip()
    except Exception:
        counts["bad_text"] += 1
        return None
    if not text:
        counts["missing_text"] += 1
        return None
    return text


def decode_image(
    data: bytes, counts: Counter, max_pixels: int | None, reduce_for: int | None = None
) -> Image.Image | None:
    """The decoded image, or None counted as `bad_image` or `image_too_large`.

    The size is checked from the header, before anything is decoded: a PNG of a few hundred
    kB can declare 12000 x 12000 pixels, 432 MB once decoded (Pillow only warns between
    its 89.5M and 179M pixel thresholds). `max_pixels` replaces Pillow's own thresholds
    here (None: no limit). With `reduce_for` (the crop's output size), a JPEG much larger
    than that is decoded at 1/2, 1/4 or 1/8 of its size (`train.transforms.draft_size`);
    its size before that is in `img.info["source_size"]`, for the crop to be drawn on.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # no warning and no error of Pillow's: the check below decides
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        counts["bad_image"] += 1
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        w, h = img.size
        if max_pixels and w * h > max_pixels:
            counts["image_too_large"] += 1
            return None
        if reduce_for and img.format == "JPEG":
            from .transforms import draft_size

            want = draft_size((w, h), reduce_for)
            if want is not None:
                img.draft(None, want)
        img.load()  # force the decode: truncated or garbage bytes fail here, not later
        if min(img.size) < 1:
            raise ValueError("empty image")
        img.info["source_size"] = (w, h)
        return img
    except Exception:
        counts["bad_image"] += 1
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        w, h = img.size
        if max_pixels and w * h > max_pixels:
            counts["image_too_large"] += 1
            return None
        img.load()  # force the decode: truncated or garbage bytes fail here, not later
        if min(img.size) < 1:
            raise ValueError("empty image")
        return img
    except Exception:
        counts["bad_image"] += 1
        return None
