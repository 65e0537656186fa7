"""Language codes of the worldwide recipe: Wikipedia's, the buckets they are matched in, and
which languages are written without spaces.

A *wiki code* names a Wikipedia edition as its dump files do (``de``, ``zh_yue``,
``be_tarask``); `wikipedias.txt` lists the 330 editions MetaCLIP 2 built metadata from. A
*bucket* is what an alt-text's language identifier can answer and what the query list's
``lang`` column holds: MetaCLIP 2 (``align_lid_to_wiki.py``) folds an edition with an
underscore into its prefix (``zh_yue``, ``zh_classical``, ``zh_min_nan`` -> ``zh``,
``be_tarask`` -> ``be``, ``nds_nl`` -> ``nds``). Where the prefix is no edition of its own
(``bat_smg``, ``roa_rup``, ``fiu_vro``...) MetaCLIP 2 drops the edition; we keep it as its own
bucket instead, which no identifier answers, so its entries match nothing but stay in the
list and its counts (the match step pools buckets its identifier cannot answer into
``other``, as MetaCLIP 2 does for editions its identifier does not know, e.g. ``simple``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from ..errors import InputError

OTHER = "other"  # the bucket of texts whose language has no entries of its own

# MetaCLIP 2's `no_space_languages` (substr_matching.py), plus the Chinese editions its
# build_metadata.py also joins without spaces.
NO_SPACE = frozenset({"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh", "zh_classical", "zh_yue"})

# OMW 1.4's language codes (ISO 639-3) -> Wikipedia codes: MetaCLIP 2's build_metadata.py
# table, except Albanian (OMW ``als``), which it maps to the Alemannic edition ``als``; its
# Wikipedia is ``sq``.
OMW_TO_WIKI = {
    "arb": "ar", "bul": "bg", "cat": "ca", "cmn": "zh", "dan": "da", "ell": "el", "eus": "eu",
    "fin": "fi", "fra": "fr", "glg": "gl", "heb": "he", "hrv": "hr", "ind": "id", "isl": "is",
    "ita": "it", "jpn": "ja", "lit": "lt", "nld": "nl", "nno": "nn", "nob": "no", "pol": "pl",
    "por": "pt", "ron": "ro", "slk": "sk", "slv": "sl", "spa": "es", "swe": "sv", "tha": "th",
    "zsm": "ms", "als": "sq",
}  # fmt: skip

_CODE = re.compile(r"[a-z][a-z0-9_]*")


@cache
def wikipedias() -> frozenset[str]:
    text = (Path(__file__).parent / "wikipedias.txt").read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() if not line.startswith("#") for w in line.split())


def wiki_code(code: str, what: str = "language code") -> str:
    """`code` as a dump file names it (``zh-yue`` -> ``zh_yue``), refused unless it is a
    Wikipedia edition."""
    norm = code.strip().lower().replace("-", "_")
    if not _CODE.fullmatch(norm) or norm not in wikipedias():
        raise InputError(f"unknown {what} {code!r}: not a Wikipedia language (see pipeline/lang/wikipedias.txt)")
    return norm


def bucket(code: str) -> str:
    """The matching bucket of a wiki code: an underscored edition folds into its prefix
    when the prefix is an edition itself (``zh_yue`` -> ``zh``), else stays as it is."""
    prefix = code.split("_", 1)[0]
    return prefix if "_" in code and prefix in wikipedias() else code


def no_space(code: str) -> bool:
    """Whether the language is written without spaces between words (its words come
    from a segmenter and its bigrams are joined without a space)."""
    return code in NO_SPACE
