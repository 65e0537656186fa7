"""Which Wikipedia a dump is: from its file name, its ``<siteinfo>``, or the user.

Wikimedia names dumps ``<dbname>-<date>-pages-articles...`` (``dewiki-20240501-...``,
``zh_yuewiki-...``), and a dump's header repeats it: ``<dbname>dewiki</dbname>``. The
worldwide recipe counts each dump as its language, so a language is never guessed: a given
``LL=PATH`` or the file name must agree with the header, and a dump that names no language
anywhere is refused (never taken for English).
"""

from __future__ import annotations

import posixpath
import re

import fsspec

from ..errors import InputError
from ..io import expand_inputs
from ..lang.codes import wiki_code
from .dump import _open_decompressed

HEADER_BYTES = 1 << 16  # the <siteinfo> block ends within the first few KB of every dump
_FILE_NAME = re.compile(r"([a-z][a-z0-9_]*)wiki-")
_DBNAME = re.compile(rb"<dbname>\s*([a-z][a-z0-9_]*)wiki\s*</dbname>")
_NAMESPACE = re.compile(rb'<namespace\b[^>]*\bkey="(-2|6|14)"[^>]*>([^<]*)</namespace>')
_DUMP = re.compile(r".*wiki-.*\.xml(\.bz2|\.gz)?$")


def name_language(url: str) -> str | None:
    """The wiki code in a Wikimedia dump file name, if it has one."""
    m = _FILE_NAME.match(posixpath.basename(url))
    return m.group(1) if m else None


def _siteinfo(url: str) -> bytes:
    try:
        raw, stream = _open_decompressed(url)
        with raw:
            head = stream.read(HEADER_BYTES)
    except (OSError, EOFError) as e:
        raise InputError(f"{url}: cannot read the dump's header: {e}") from None
    return head.split(b"</siteinfo>", 1)[0]


def site_language(url: str) -> str | None:
    """The wiki code of the dump's ``<dbname>``, if its header has one."""
    m = _DBNAME.search(_siteinfo(url))
    return m.group(1).decode() if m else None


def local_namespaces(url: str) -> tuple[str, ...]:
    """The wiki's own names of its Media (-2), File (6) and Category (14) namespaces, from
    ``<namespaces>`` in its header (``Datei``, ``Kategorie``...): links to them do not show
    in the article, so the cleaner hides them (`markup.clean_wikitext`)."""
    names = {m.group(2).decode("utf-8", "replace").strip() for m in _NAMESPACE.finditer(_siteinfo(url))}
    return tuple(sorted(n for n in names if n))


def _files(path: str) -> list[str]:
    """A folder's dumps (``*wiki-*.xml[.bz2|.gz]``, not their indexes), or a path/glob."""
    fs, _, paths = fsspec.get_fs_token_paths(path)
    if len(paths) == 1 and fs.isdir(paths[0]):
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        names = sorted(p for p in fs.ls(paths[0], detail=False) if _DUMP.match(posixpath.basename(p)))
        if not names:
            raise InputError(f"{path}: no Wikipedia dump (*wiki-*.xml.bz2) in this folder")
        return [p if protocol == "file" else f"{protocol}://{p}" for p in names]
    return expand_inputs(path, "wiki dump")


def dump_languages(specs: list[str]) -> list[tuple[str, str]]:
    """(wiki code, url) of every dump: each spec is ``PATH``, ``LL=PATH`` or a folder of dumps,
    PATH may be a glob. Sorted by language, then path, so the order of the arguments does not
    change the output."""
    found: dict[str, str] = {}
    for spec in specs:
        given = None
        head, sep, tail = spec.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]*", head):
            given, spec = wiki_code(head, f"language code in --wiki-dump {head}={tail}"), tail
        for url in _files(spec):
            named = name_language(url)
            site = site_language(url)
            if named is not None:
                named = wiki_code(named, f"language in the file name {posixpath.basename(url)}:")
            if site is not None:
                site = wiki_code(site, f"<dbname> language of {url}:")
            claims = {k: v for k, v in (("argument", given), ("file name", named), ("<siteinfo>", site)) if v}
            if len(set(claims.values())) > 1:
                said = ", ".join(f"{k} says {v!r}" for k, v in claims.items())
                raise InputError(f"{url}: the dump's language is ambiguous: {said}")
            if not claims:
                raise InputError(
                    f"{url}: no language in the file name (LLwiki-...) nor in <siteinfo>; give it as LL={url}"
                )
            lang = next(iter(claims.values()))
            if found.setdefault(url, lang) != lang:
                raise InputError(f"{url}: given twice, as {found[url]!r} and {lang!r}")
    return sorted(((lang, url) for url, lang in found.items()), key=lambda p: (p[0], p[1]))
