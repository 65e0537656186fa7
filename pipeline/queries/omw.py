"""Open Multilingual WordNet lemmas per Wikipedia language, from OMW 1.4's tab files.

OMW 1.4 (what nltk's ``omw-1.4`` and MetaCLIP 2's ``build_multilingual_wordnet.py`` read)
keeps one ``wn-data-LLL.tab`` per language (``LLL`` an ISO 639-3 code), after a ``#``
header: ``OFFSET-POS<TAB>LLL:lemma<TAB>LEMMA`` (also ``LLL:def`` and ``LLL:exe`` rows, which
are not lemmas). A lemma becomes an entry as MetaCLIP 2 makes it: ``_`` -> space, ``+``
removed, surrounding whitespace stripped; empty and punctuation-only ones are dropped later
with every source's. Languages map to Wikipedia codes by `codes.OMW_TO_WIKI`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

import fsspec

from ..errors import InputError
from ..lang.codes import OMW_TO_WIKI

_FILE = re.compile(r"wn-data-([a-z]{3})\.tab")


@dataclass
class OmwLemmas:
    lemmas: dict[str, list[str]] = field(default_factory=dict)  # wiki code -> lemmas, file order, distinct
    files: dict[str, str] = field(default_factory=dict)  # wiki code -> file read
    no_dump: list[str] = field(default_factory=list)  # OMW languages whose Wikipedia we have no dump of
    unmapped: list[str] = field(default_factory=list)  # OMW languages with no Wikipedia mapping
    bad_lines: int = 0


def find_files(folder: str) -> dict[str, str]:
    """OMW language code -> its tab file, anywhere under `folder`."""
    fs, root = fsspec.core.url_to_fs(folder)
    if not fs.isdir(root):
        raise InputError(f"{folder}: --omw must be a folder holding OMW's wn-data-LLL.tab files")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found: dict[str, str] = {}
    for path in sorted(fs.find(root)):
        m = _FILE.fullmatch(posixpath.basename(path))
        if m and m.group(1) not in found:
            found[m.group(1)] = path if protocol == "file" else f"{protocol}://{path}"
    if not found:
        raise InputError(f"{folder}: no OMW tab file (wn-data-LLL.tab) under this folder")
    return found


def read_lemmas(folder: str, langs: set[str]) -> OmwLemmas:
    """The lemmas of every OMW language whose Wikipedia is in `langs` (wiki codes)."""
    out = OmwLemmas()
    for code, url in find_files(folder).items():
        wiki = OMW_TO_WIKI.get(code)
        if wiki is None:
            out.unmapped.append(code)
            continue
        if wiki not in langs:
            out.no_dump.append(code)
            continue
        seen: dict[str, None] = {}
        with fsspec.open(url, "rt", encoding="utf-8", errors="strict") as f:
            try:
                for line in f:
                    if line.startswith("#") or not line.strip():
                        continue
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) < 3 or "-" not in parts[0]:
                        out.bad_lines += 1
                        continue
                    if parts[1].rpartition(":")[2] != "lemma":
                        continue
                    lemma = parts[2].replace("_", " ").replace("+", "").strip()
                    if lemma:
                        seen.setdefault(lemma, None)
            except UnicodeDecodeError as e:
                raise InputError(f"{url}: not UTF-8 ({e.reason} at byte {e.start})") from None
        out.lemmas[wiki] = list(seen)
        out.files[wiki] = url
    return out
