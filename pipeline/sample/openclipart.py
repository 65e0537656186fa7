"""The embedded image sample: Debian's openclipart packages turned into a candidate pool.

`openclipart-png` holds the images (usr/share/openclipart/png/<category>/.../NAME.png) and
`openclipart-svg` the same drawings as SVG at the same relative path (NAME.svg). The SVG's
RDF metadata (``<metadata><rdf:RDF><cc:Work>``) carries the text:

- ``dc:title`` and ``dc:description`` (the ones directly under the work; the ``dc:title``
  of the ``cc:Agent`` publisher, creator and rights holder is a person's name, not text
  about the image, and is ignored);
- ``dc:subject`` keywords (``rdf:Bag/rdf:li``; a plain text subject is split on commas).

Caption: ``"Title. Description. keyword, keyword, keyword"`` - sentences for the title and
the description (a final ``.`` added unless one of ``.!?`` ends them), then the keywords
joined by ``", "``. No fixed word (no "keywords:") is added, since the query matcher looks
for words in the caption and a word present in every caption would match every row. The
punctuation between parts also keeps the word tokenizer from forming bigrams across them.
The category (top folder) is a separate column and is never put in the caption (uploaders'
own keywords sometimes name it; those stay, being the uploader's text).

Cleaning, value by value: HTML entities decoded (the package double-escapes some, e.g.
``&amp;eacute;``), HTML tags and comments removed (a few descriptions hold a pasted Creative
Commons HTML block), underscores turned into spaces (``united_nations_member``; the
tokenizer treats ``_`` as a separator anyway), whitespace collapsed. Dropped as junk: empty
values, Perl hash stringifications (``HASH(0x85a0ae8)``, ``hash(0x8589f20)`` and the bare
keyword ``hash`` that the same bug left on ~1,800 drawings), placeholders (``none``,
``null``, ``n/a``, ``unknown``, ``untitled``, ...), values that are only a URL. E-mail addresses are removed wherever they are
(``jean.victor.balin@gmail.com`` is the "description" of 119 drawings). Repeated values
are dropped (case-insensitively): a description equal to the title, a keyword equal to the
title, the description or an earlier keyword.

Safety: the SVG is read with expat, streaming, and parsing stops at the end of the first
``<metadata>`` element. As in defusedxml's defaults, a DOCTYPE is allowed (44% of these
files have one, naming the external SVG DTD, which expat never fetches) but any entity
declaration and any external entity reference is refused: the file is skipped and counted
(6 real files declare Adobe namespace entities). Malformed XML is skipped and counted.

Which PNGs: regular files only, in sorted path order. The package also has ~1,200 symbolic
links that file one drawing under a second category (``science/astronomy/X.png ->
../../geography/astronomy/X.png``); they are not extra images: each is counted
(`png_links`) and its category recorded in the target's `also_in`. A PNG without an SVG at
the same relative path is skipped and counted, as is an SVG that fails to parse. A PNG
whose metadata yields no text is counted (`empty_caption`) and left out of the pool.

Held-out categories (zero-shot evaluation): `held_out_categories` ranks the categories by
sha256(seed, category) and takes the first round(fraction * n), so the choice depends on
the seed and the set of names only, never on order. `write_sample_pool(held_out=...)` leaves
out every image filed under a held-out category, by its folder *or* by a link (`also_in`),
so an evaluation set built from the held-out folders, links included, never shares an image
with the pool.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import statistics
import sys
import xml.parsers.expat as expat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from ..errors import EXIT_INPUT_ERROR, InputError
from ..io import atomic_path

PNG_SUBDIR = "openclipart-png/usr/share/openclipart/png"
SVG_SUBDIR = "openclipart-svg/usr/share/openclipart/svg"
POOL_COLUMNS = ("url", "caption", "category", "path")
# For the shards' dataset card (`card.py`): the packages' copyright file is the Creative
# Commons Public Domain Dedication; openclipart.org releases its drawings as CC0 1.0.
LICENSE = {
    "license": "cc0-1.0",
    "name": "Openclipart drawings (Debian's openclipart-png and openclipart-svg)",
    "note": "dedicated to the public domain by their authors (the packages' copyright file: Creative "
    "Commons Public Domain Dedication; openclipart.org: CC0 1.0), captions from the same files' "
    "metadata",
}

DC = "http://purl.org/dc/elements/1.1/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_CHUNK = 1 << 16

_PLACEHOLDERS = frozenset(
    {
        "",
        "-",
        "--",
        "?",
        "none",
        "null",
        "nil",
        "n/a",
        "na",
        "unknown",
        "untitled",
        "untitled document",
        "no title",
        "notitle",
        "title",
        "description",
        "hash",
    }
)
_HASH = re.compile(r"\bhash\(0x[0-9a-f]+\)", re.IGNORECASE)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_HTML_TAG = re.compile(r"</?[A-Za-z!][^<>]*>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_EMAIL = re.compile(r"(?:e-?mail:?\s*|contact:?\s*)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+(?:\.(?=\s*$))?", re.IGNORECASE)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


class SvgError(ValueError):
    """An SVG that is malformed or refused (entity declarations); the message says which."""


@dataclass
class SvgMetadata:
    titles: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)


@dataclass
class SampleStats:
    """What `sample_rows` saw. Filled in as the rows are consumed."""

    pngs: int = 0  # regular PNG files (the images)
    png_links: int = 0  # symbolic links to a PNG (an image filed under a second category)
    missing_svg: int = 0  # PNGs skipped: no SVG at the same relative path
    svg_errors: int = 0  # PNGs skipped: their SVG is malformed or refused
    svg_error_reasons: Counter = field(default_factory=Counter)
    svg_error_examples: list[str] = field(default_factory=list)  # "path: reason", first 10
    rows: int = 0  # rows yielded (pngs - missing_svg - svg_errors)
    captioned: int = 0  # rows with a non-empty caption
    categories: Counter = field(default_factory=Counter)  # rows per category
    captioned_by_category: Counter = field(default_factory=Counter)
    caption_chars: list[int] = field(default_factory=list)  # per captioned row

    def to_dict(self) -> dict:
        return {
            "pngs": self.pngs,
            "png_links": self.png_links,
            "missing_svg": self.missing_svg,
            "svg_errors": self.svg_errors,
            "svg_error_reasons": dict(sorted(self.svg_error_reasons.items())),
            "svg_error_examples": self.svg_error_examples,
            "rows": self.rows,
            "captioned": self.captioned,
            "empty_caption": self.rows - self.captioned,
            "captioned_share": round(self.captioned / self.pngs, 4) if self.pngs else 0.0,
            "caption_chars": _summary(self.caption_chars),
            "categories": dict(sorted(self.categories.items())),
            "captioned_by_category": dict(sorted(self.captioned_by_category.items())),
        }


def _summary(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 1),
        "max": max(values),
    }


# ---------------------------------------------------------------------------------------
# SVG metadata


def parse_svg_metadata(source: str | Path | bytes | BinaryIO) -> SvgMetadata:
    """Title(s), description(s) and keywords of an SVG's first ``<metadata>`` element.

    Streams with expat and stops at ``</metadata>``. Raises `SvgError` for malformed XML,
    an entity declaration (internal or external, general or parameter) or an external
    entity reference. Values are raw (whitespace and junk kept); see `clean_value`.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return parse_svg_metadata(f)

    meta = SvgMetadata()
    stack: list[str] = []  # expanded names, "uri local" or "local"
    text: list[list[str]] = []  # char-data collectors for the open title/description/li
    state = {"metadata": 0, "subject": 0, "done": False}

    class _Done(Exception):
        pass

    def refuse(*_args):
        raise SvgError("entity declaration refused")

    def refuse_external(*_args):
        raise SvgError("external entity reference refused")

    def local(name: str) -> str:
        return name.rsplit(" ", 1)[-1]

    def start(name, _attrs):
        parent = stack[-1] if stack else ""
        stack.append(name)
        if not state["metadata"]:
            if local(name) == "metadata":
                state["metadata"] = len(stack)
            return
        if name in (DC + " title", DC + " description") and local(parent) != "Agent":
            text.append([])
        elif name == DC + " subject":
            state["subject"] = len(stack)
            text.append([])
        elif name == RDF + " li" and state["subject"]:
            text.append([])

    def end(name):
        depth = len(stack)
        stack.pop()
        if not state["metadata"]:
            return
        parent = stack[-1] if stack else ""
        if depth == state["metadata"]:
            state["done"] = True
            raise _Done
        if name in (DC + " title", DC + " description") and local(parent) != "Agent":
            value = "".join(text.pop())
            (meta.titles if name.endswith("title") else meta.descriptions).append(value)
        elif name == DC + " subject":
            direct = "".join(text.pop())
            if direct.strip():  # a plain-text subject, no rdf:Bag
                meta.keywords.extend(direct.split(","))
            state["subject"] = 0
        elif name == RDF + " li" and state["subject"]:
            meta.keywords.append("".join(text.pop()))

    def chars(data):
        if text:
            text[-1].append(data)

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.buffer_text = True
    try:
        if isinstance(source, bytes):
            parser.Parse(source, True)
        else:
            while chunk := source.read(_CHUNK):
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except _Done:
        pass
    except expat.ExpatError as e:
        raise SvgError(f"malformed XML: {expat.ErrorString(e.code)} (line {e.lineno})") from None
    return meta


def clean_value(value: str) -> str:
    """One metadata value made readable, or "" if it is junk (see the module docstring)."""
    value = html.unescape(value)
    if "<" in value:
        value = _HTML_TAG.sub(" ", _HTML_COMMENT.sub(" ", value))
        value = _SPACE_BEFORE_PUNCT.sub(r"\1", value)
    value = _EMAIL.sub(" ", _HASH.sub(" ", value)).replace("_", " ")
    value = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(value.split())).strip(" ,;:")
    if value.casefold() in _PLACEHOLDERS or _URL.fullmatch(value):
        return ""
    return value


def _sentence(value: str) -> str:
    return value if value[-1] in ".!?" else value + "."


def make_caption(meta: SvgMetadata) -> str:
    """``"Title. Description. keyword, keyword"`` from cleaned, de-duplicated values."""
    seen: set[str] = set()
    sentences: list[str] = []
    keywords: list[str] = []
    for values, out in ((meta.titles, sentences), (meta.descriptions, sentences)):
        for raw in values:
            value = clean_value(raw)
            key = value.casefold().rstrip(".!?")
            if value and key not in seen:
                seen.add(key)
                out.append(_sentence(value))
    for raw in meta.keywords:
        for part in raw.split(","):
            value = clean_value(part)
            key = value.casefold().rstrip(".!?")
            if value and key not in seen:
                seen.add(key)
                keywords.append(value)
    return " ".join(sentences + ([", ".join(keywords)] if keywords else []))


# ---------------------------------------------------------------------------------------
# Rows and pool


def roots_from_cache(cache: str | Path) -> tuple[Path, Path]:
    """(png_root, svg_root) under a sample cache holding openclipart-png/ and -svg/."""
    cache = Path(cache)
    return cache / PNG_SUBDIR, cache / SVG_SUBDIR


def _category(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else ""


def _walk_pngs(png_root: Path) -> tuple[list[str], dict[str, set[str]], int]:
    """Sorted relative paths of regular PNGs, the link categories of each, link count."""
    files: list[str] = []
    links: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(png_root):
        dirnames.sort()
        for name in filenames:
            if not name.lower().endswith(".png"):
                continue
            full = Path(dirpath, name)
            rel = full.relative_to(png_root).as_posix()
            if full.is_symlink():
                links.append((rel, full))
            elif full.is_file():
                files.append(rel)
    files.sort()
    also_in: dict[str, set[str]] = {}
    real_root = png_root.resolve()
    for rel, full in links:
        target = full.resolve()
        if target.is_file() and target.is_relative_to(real_root):
            also_in.setdefault(target.relative_to(real_root).as_posix(), set()).add(_category(rel))
    return files, also_in, len(links)


def sample_rows(png_root: str | Path, svg_root: str | Path, stats: SampleStats | None = None) -> Iterator[dict]:
    """One row per regular PNG with a readable SVG, in sorted path order.

    Keys: `path` (relative to png_root, posix), `category` (top folder), `text` (caption,
    possibly ""), `also_in` (sorted other categories that link to this image). Skipped
    PNGs and everything else are counted in `stats`.
    """
    png_root, svg_root = Path(png_root), Path(svg_root)
    for root, what in ((png_root, "PNG"), (svg_root, "SVG")):
        if not root.is_dir():
            raise InputError(
                f"{root}: openclipart {what} folder not found "
                "(fetch it with `python -m pipeline.sample.fetch openclipart`)"
            )
    stats = stats if stats is not None else SampleStats()
    files, also_in, stats.png_links = _walk_pngs(png_root)
    for rel in files:
        stats.pngs += 1
        svg = svg_root / (rel[:-4] + ".svg")
        if not svg.is_file():
            stats.missing_svg += 1
            continue
        try:
            meta = parse_svg_metadata(svg)
        except (SvgError, OSError) as e:
            reason = str(e).split(" (line")[0] if isinstance(e, SvgError) else f"unreadable: {e.strerror}"
            stats.svg_errors += 1
            stats.svg_error_reasons[reason] += 1
            if len(stats.svg_error_examples) < 10:
                stats.svg_error_examples.append(f"{rel[:-4]}.svg: {e}")
            continue
        category = _category(rel)
        text = make_caption(meta)
        stats.rows += 1
        stats.categories[category] += 1
        if text:
            stats.captioned += 1
            stats.captioned_by_category[category] += 1
            stats.caption_chars.append(len(text))
        yield {"path": rel, "category": category, "text": text, "also_in": sorted(also_in.get(rel, set()) - {category})}


def held_out_categories(categories: Iterable[str], fraction: float, seed: int = 0) -> list[str]:
    """round(fraction * n) of the distinct categories, chosen by hashing (seed, name).

    Deterministic and independent of input order; returned sorted by name.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    names = sorted(set(categories))
    ranked = sorted(names, key=lambda c: hashlib.sha256(f"{seed}\0{c}".encode()).hexdigest())
    return sorted(ranked[: round(fraction * len(names))])


def pool_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + quote(path, safe="/")


def is_held_out_image(path: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic per-image hold-out (for zero-shot evaluation on unseen images)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}\0{path}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def write_sample_pool(
    png_root: str | Path,
    svg_root: str | Path,
    base_url: str,
    out_path: str | Path,
    held_out: Iterable[str] = (),
    held_out_images: float = 0.0,
    seed: int = 0,
) -> dict:
    """Write the pool parquet (`url`, `caption`, `category`, `path`) and return its stats.

    Rows without a caption are left out (counted as `empty_caption`), as are images filed
    under a `held_out` category by folder or link (counted as `held_out_rows`). The file
    is written under a temporary name and renamed when complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    held = sorted(set(held_out))
    stats = SampleStats()
    columns: dict[str, list] = {name: [] for name in POOL_COLUMNS}
    held_rows = 0
    for row in sample_rows(png_root, svg_root, stats):
        if not row["text"]:
            continue
        if (
            row["category"] in held
            or any(c in held for c in row["also_in"])
            or is_held_out_image(row["path"], held_out_images, seed)
        ):
            held_rows += 1
            continue
        columns["url"].append(pool_url(base_url, row["path"]))
        columns["caption"].append(row["text"])
        columns["category"].append(row["category"])
        columns["path"].append(row["path"])
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    result = stats.to_dict()
    result.update(
        {
            "held_out_categories": held,
            "held_out_image_fraction": held_out_images,
            "held_out_rows": held_rows,
            "pool_rows": table.num_rows,
            "out": str(out_path),
            "base_url": base_url,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.sample.openclipart",
        description="Write the openclipart sample pool (parquet) and print its stats (JSON).",
    )
    ap.add_argument(
        "--cache",
        default=".cache/sample",
        help="sample cache holding openclipart-png/ and openclipart-svg/ (default: %(default)s)",
    )
    ap.add_argument(
        "--base-url", required=True, help="URL under which the PNG folder is served, e.g. http://127.0.0.1:8000"
    )
    ap.add_argument("--out", required=True, help="output parquet file")
    ap.add_argument(
        "--hold-out-fraction",
        type=float,
        default=0.0,
        help="share of categories left out of the pool for zero-shot evaluation (default: %(default)s)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out choice (default: %(default)s)")
    ap.add_argument("--stats", help="also write the stats JSON to this file")
    args = ap.parse_args(argv)
    png_root, svg_root = roots_from_cache(args.cache)
    try:
        held: list[str] = []
        if args.hold_out_fraction:
            if not png_root.is_dir():
                raise InputError(f"{png_root}: openclipart PNG folder not found")
            cats = [p.name for p in png_root.iterdir() if p.is_dir()]
            held = held_out_categories(cats, args.hold_out_fraction, args.seed)
        stats = write_sample_pool(png_root, svg_root, args.base_url, args.out, held_out=held)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    text = json.dumps(stats, indent=2)
    if args.stats:
        with atomic_path(args.stats) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
