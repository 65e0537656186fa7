"""Streaming reader for MediaWiki `pages-articles` XML dumps.

A dump is read as a sequence of *chunks* of pages so counting can run on several
processes. Chunk boundaries depend only on the input, never on the worker count, which is
what makes the final counts (and outputs) identical for any `--workers`.

Two layouts:
- a plain dump (`.xml`, `.xml.bz2`, `.xml.gz`, any fsspec URL): one process decompresses
  and parses it, handing chunks of article texts to the workers;
- Wikipedia's *multistream* bz2 with its `-index.txt.bz2` beside it: the index gives the
  byte offset of every 100-page bz2 stream, so each worker seeks, decompresses and parses
  its own byte range; decompression then scales with the workers too.

Undecodable UTF-8 bytes are replaced (U+FFFD) and counted rather than fatal: one bad byte
in 90 GB should not cost a day's run. Truncated compression or XML cut mid-page is fatal
(`InputError` naming the file and position), because the counts would silently be short.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from xml.parsers import expat

import fsspec

from ..errors import InputError

READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Page:
    title: str
    ns: int
    page_id: int
    redirect: bool
    text: str

    @property
    def is_article(self) -> bool:
        return self.ns == 0 and not self.redirect


@dataclass
class ReadStats:
    pages: int = 0
    invalid_utf8_bytes: int = 0
    bytes_xml: int = 0


class _PageParser:
    """Expat handlers that collect only what counting needs: title, ns, id, redirect, text."""

    _KEEP = {"title", "ns", "id", "text"}

    def __init__(self) -> None:
        self.parser = expat.ParserCreate()
        self.parser.buffer_text = True
        self.parser.buffer_size = 1 << 16
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._data
        self.pages: list[Page] = []
        self._depth = 0
        self._page_depth = -1
        self._field: str | None = None
        self._buf: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._title = ""
        self._ns = 0
        self._id = -1
        self._redirect = False
        self._text = ""

    def _start(self, name: str, attrs: dict) -> None:
        self._depth += 1
        if name == "page":
            self._page_depth = self._depth
            self._reset()
        elif self._page_depth > 0:
            if name == "redirect":
                self._redirect = True
            elif name in self._KEEP:
                # The page's own <id> sits directly under <page>; revision/contributor ids don't.
                if name != "id" or self._depth == self._page_depth + 1:
                    self._field = name
                    self._buf = []

    def _end(self, name: str) -> None:
        if self._field == name:
            value = "".join(self._buf)
            if name == "title":
                self._title = value
            elif name == "ns":
                self._ns = int(value) if value.strip().lstrip("-").isdigit() else 0
            elif name == "id":
                self._id = int(value) if value.strip().isdigit() else -1
            elif name == "text":
                self._text = value
            self._field = None
        if name == "page" and self._depth == self._page_depth:
            self.pages.append(Page(self._title, self._ns, self._id, self._redirect, self._text))
            self._page_depth = -1
        self._depth -= 1

    def _data(self, data: str) -> None:
        if self._field is not None:
            self._buf.append(data)


_COUNTING_ERRORS = "pipeline-count-replace"
_invalid_bytes = [0]


def _count_replace(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):  # registered for decoding only
        raise err
    _invalid_bytes[0] += err.end - err.start
    return ("\ufffd", err.end)


codecs.register_error(_COUNTING_ERRORS, _count_replace)


def _utf8_decoder():
    return codecs.getincrementaldecoder("utf-8")(errors=_COUNTING_ERRORS)


def _xml_error(url: str, err: expat.ExpatError, where: str = "") -> InputError:
    reason = expat.errors.messages.get(err.code, str(err))
    if err.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS] or "no element found" in str(err):
        reason = "XML ends before the document is complete (dump cut mid-page?)"
    return InputError(f"{url}{where}: line {err.lineno}, column {err.offset}: {reason}")


def _open_decompressed(url: str):
    """(raw file, decompressed stream); raw.tell() reports compressed progress."""
    raw = fsspec.open(url, "rb").open()
    name = url.lower()
    if name.endswith(".bz2"):
        return raw, bz2.BZ2File(raw)
    if name.endswith(".gz"):
        return raw, gzip.GzipFile(fileobj=raw)
    return raw, raw


def iter_pages(
    url: str,
    stats: ReadStats | None = None,
    progress: Callable[[int], object] | None = None,
) -> Iterator[Page]:
    """Every page of one dump file, in order. `progress(n)` gets compressed bytes consumed."""
    stats = stats if stats is not None else ReadStats()
    raw, stream = _open_decompressed(url)
    parser = _PageParser()
    decoder = _utf8_decoder()
    last_pos = 0
    try:
        while True:
            try:
                block = stream.read(READ_BYTES)
            except (EOFError, OSError, zlib.error) as e:
                raise InputError(
                    f"{url}: compressed data is truncated or corrupt at byte {raw.tell():,} "
                    f"(after {stats.pages:,} pages): {e}"
                ) from None
            if not block and stats.bytes_xml == 0:
                raise InputError(f"{url}: the dump is empty (no XML after decompression)")
            before = _invalid_bytes[0]
            text = decoder.decode(block, final=not block)
            stats.invalid_utf8_bytes += _invalid_bytes[0] - before
            stats.bytes_xml += len(block)
            try:
                parser.parser.Parse(text, not block)
            except expat.ExpatError as e:
                raise _xml_error(url, e) from None
            if parser.pages:
                stats.pages += len(parser.pages)
                yield from parser.pages
                parser.pages = []
            if progress is not None:
                pos = raw.tell()
                progress(pos - last_pos)
                last_pos = pos
            if not block:
                break
    finally:
        stream.close()
        raw.close()


# --- multistream -------------------------------------------------------------------------

_SPLIT_MULTISTREAM = re.compile(r"^(.*-multistream)(\d+)\.xml(-p\d+p\d+)\.bz2$")


def multistream_index_url(url: str) -> str | None:
    """The index that Wikipedia publishes beside a multistream dump, if it exists."""
    base, _, name = url.rpartition("/")
    prefix = base + "/" if base else ""
    candidates = []
    if name.endswith(".xml.bz2") and "multistream" in name:
        candidates.append(prefix + name[: -len(".xml.bz2")] + "-index.txt.bz2")
    m = _SPLIT_MULTISTREAM.match(name)
    if m:
        candidates.append(f"{prefix}{m.group(1)}-index{m.group(2)}.txt{m.group(3)}.bz2")
    for cand in candidates:
        fs, path = fsspec.core.url_to_fs(cand)
        if fs.exists(path):
            return cand
    return None


def read_stream_offsets(index_url: str) -> list[int]:
    """Distinct stream offsets, ascending, from `offset:page_id:title` index lines."""
    offsets: list[int] = []
    last = -1
    with fsspec.open(index_url, "rt", compression="infer", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            head = line.split(":", 1)[0]
            if not head.isdigit():
                if not line.strip():
                    continue
                raise InputError(f"{index_url}:{lineno}: expected 'offset:page_id:title', got {line[:60]!r}")
            off = int(head)
            if off != last:
                if off < last:
                    raise InputError(f"{index_url}:{lineno}: offsets go backwards ({off} < {last})")
                offsets.append(off)
                last = off
    if not offsets:
        raise InputError(f"{index_url}: index is empty")
    return offsets


@dataclass(frozen=True)
class ByteRange:
    url: str
    start: int
    end: int | None  # None = to end of file


def stream_ranges(url: str, offsets: list[int], target_bytes: int) -> list[ByteRange]:
    """Group consecutive bz2 streams into ranges of about `target_bytes` compressed bytes."""
    ranges: list[ByteRange] = []
    start = offsets[0]
    for off in offsets[1:]:
        if off - start >= target_bytes:
            ranges.append(ByteRange(url, start, off))
            start = off
    ranges.append(ByteRange(url, start, None))
    return ranges


def read_range_pages(rng: ByteRange, stats: ReadStats | None = None) -> list[Page]:
    """Decompress and parse the pages in one byte range of a multistream dump."""
    stats = stats if stats is not None else ReadStats()
    where = f" (bytes {rng.start:,}-{'end' if rng.end is None else f'{rng.end:,}'})"
    with fsspec.open(rng.url, "rb") as f:
        f.seek(rng.start)
        data = f.read() if rng.end is None else f.read(rng.end - rng.start)
    try:
        xml = _decompress_streams(data)
    except (EOFError, OSError, ValueError) as e:
        raise InputError(f"{rng.url}{where}: compressed data is truncated or corrupt: {e}") from None
    before = _invalid_bytes[0]
    text = xml.decode("utf-8", errors=_COUNTING_ERRORS)
    stats.invalid_utf8_bytes += _invalid_bytes[0] - before
    stats.bytes_xml += len(xml)
    if rng.end is None:
        text = text.replace("</mediawiki>", "")
    parser = _PageParser()
    try:
        parser.parser.Parse("<pages>" + text + "</pages>", True)
    except expat.ExpatError as e:
        raise _xml_error(rng.url, e, where) from None
    stats.pages += len(parser.pages)
    return parser.pages


def _decompress_streams(data: bytes) -> bytes:
    """bz2.decompress that insists on complete streams (it raises on a cut final stream)."""
    out = []
    while data:
        d = bz2.BZ2Decompressor()
        out.append(d.decompress(data))
        if not d.eof:
            raise EOFError("a bz2 stream ends before its end-of-stream marker")
        data = d.unused_data
    return b"".join(out)


@dataclass
class DumpPlan:
    """How one dump file will be read: whole (plain) or as byte ranges (multistream)."""

    url: str
    size: int
    index_url: str | None = None
    ranges: list[ByteRange] = field(default_factory=list)
