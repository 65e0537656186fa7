"""WordNet 3.0 synset head words: the last source of CLIP's query list.

CLIP added "every WordNet synset not already in the list"; a synset enters the list as its
head word, the first word of its synset line (what NLTK's ``Synset.name()`` is built from).
We read the Princeton database files directly (no NLTK needed), from a local folder or any
fsspec URL.

Case is kept (``Einstein``, ``Gas``): the query builder decides about case. For
reference, MetaCLIP's 86,654 WordNet entries are reproduced exactly from these files by
lowercasing, cutting each word at its first ``.`` (a side effect of parsing NLTK's
``name.pos.nn`` at the first dot: ``St._John's`` becomes ``st``), dropping empty and
single-punctuation entries (86,554 left) and counting the 100 entries ``"0"``..``"99"``
MetaCLIP seeds its set with.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import InputError

# (file suffix, synset types allowed in it): adjectives include satellites ("s").
DATA_FILES = (("noun", "n"), ("verb", "v"), ("adj", "as"), ("adv", "r"))
# Where a WordNet database sits under a root: Debian package, nltk_data, source tarballs.
SUBFOLDERS = ("usr/share/wordnet", "corpora/wordnet", "wordnet", "dict")
# Adjective syntactic markers (attributive, predicative, immediately postnominal).
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass
class WordNetHeadWords:
    words: list[str]  # distinct head words, first occurrence order
    synsets: int  # synset lines read
    synsets_by_pos: dict[str, int] = field(default_factory=dict)  # noun/verb/adj/adv
    files: list[str] = field(default_factory=list)  # data files read, in order


def find_database(folder: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return (filesystem, path) of the folder holding data.noun etc.

    ``folder`` itself, or the first of SUBFOLDERS beneath it that has a data file, so a
    ``dpkg -x`` root or an nltk_data root work as well as the database folder.
    """
    fs, root = fsspec.core.url_to_fs(folder)
    root = root.rstrip("/") or "/"
    names = [f"data.{suffix}" for suffix, _ in DATA_FILES]
    candidates = [root] + [posixpath.join(root, sub) for sub in SUBFOLDERS]
    for cand in candidates:
        present = [n for n in names if fs.isfile(posixpath.join(cand, n))]
        if present:
            missing = [n for n in names if n not in present]
            if missing:
                missing_list = ", ".join(missing)
                raise InputError(f"{cand}: WordNet database incomplete: missing {missing_list}")
            return fs, cand
    where = "folder does not exist" if not fs.isdir(root) else "no WordNet data files found"
    raise InputError(
        f"{folder}: {where}: missing {', '.join(names)} "
        f"(looked in the folder and in {', '.join(SUBFOLDERS)} beneath it; "
        "an nltk_data wordnet.zip must be extracted first)"
    )


def parse_synset_line(line: str, allowed_types: str, where: str) -> str:
    """Head word of one synset line, as text (underscores -> spaces, markers removed).

    Line: ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ...``
    with w_cnt two hex digits. Anything else is a corrupt database: fatal, with position.
    """

    def bad(why: str) -> InputError:
        return InputError(f"{where}: malformed synset line: {why}: {line[:80]!r}")

    parts = line.split(" ", 6)
    if len(parts) < 7 or not all(parts[:7]):
        raise bad("too few fields")
    offset, lex_filenum, ss_type, w_cnt, word, _lex_id, rest = parts
    if not (offset.isdigit() and lex_filenum.isdigit()):
        raise bad("offset or lex_filenum not numeric")
    if len(ss_type) != 1 or ss_type not in allowed_types:
        raise bad(f"synset type {ss_type!r} not in {allowed_types!r}")
    if len(w_cnt) != 2 or not all(c in "0123456789abcdefABCDEF" for c in w_cnt) or w_cnt == "00":
        raise bad(f"word count {w_cnt!r} is not 2 hex digits >= 1")
    # after the w_cnt (word, lex_id) pairs comes a 3-digit pointer count
    n_words = int(w_cnt, 16)
    tail = rest.split(" ", 2 * n_words - 1)
    if len(tail) < 2 * n_words - 1 or not tail[2 * n_words - 2].isdigit():
        raise bad(f"{n_words} words announced, pointer count not found after them")
    if ss_type in "as":
        word = _ADJ_MARKER.sub("", word)
    return word.replace("_", " ")


def read_head_words(folder: str) -> WordNetHeadWords:
    """Head words of every synset in data.noun, data.verb, data.adj, data.adv (that order,
    file order within each), distinct by exact string, first occurrence wins."""
    fs, base = find_database(folder)
    seen: set[str] = set()
    result = WordNetHeadWords(words=[], synsets=0)
    for suffix, allowed in DATA_FILES:
        path = posixpath.join(base, f"data.{suffix}")
        count = 0
        with fs.open(path, "rb") as f:
            if not isinstance(fs, LocalFileSystem):
                # fsspec remote files copy a whole block per readline (data.noun: 16 s vs 0.2 s).
                f = io.BufferedReader(f, 1 << 20)
            for lineno, raw in enumerate(f, 1):
                if raw.startswith(b"  "):  # license header
                    continue
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{where}: not UTF-8 text ({e.reason})") from None
                head = parse_synset_line(line.rstrip("\r\n"), allowed, where)
                count += 1
                if head not in seen:
                    seen.add(head)
                    result.words.append(head)
        result.synsets += count
        result.synsets_by_pos[suffix] = count
        result.files.append(path)
    return result
