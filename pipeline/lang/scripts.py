"""Scripts written without spaces, as MetaCLIP 2's curation reads them.

`no_space_edge` is MetaCLIP 2's ``is_cjk_or_similar`` (``metaclip/curation/
substr_matching.py``), kept literal because it decides which entries match: an entry is
padded with a space on a side unless its character on that side is a CJK ideograph, Thai,
Lao, Burmese, Khmer or Tibetan, or punctuation. Literal includes its gaps: kana (U+3040-30FF),
Hangul and the full-width forms are not in its ranges, so a Japanese entry that begins or
ends with kana is padded and matches only where the text has a space or wrapped punctuation
beside it.
"""

from __future__ import annotations

import string

_RANGES = (
    # CJK ideographs, extensions, compatibility ideographs, radicals, description characters
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),
    # Thai, Lao, Burmese, Khmer, Tibetan
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
)  # fmt: skip
# ASCII punctuation and the full-width marks of its `additional_punctuation`; the copy in
# its build_metadata.py, which drops punctuation-only entries, also has the inverted "¿".
PUNCTUATION = frozenset(string.punctuation) | frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
ENTRY_PUNCTUATION = PUNCTUATION | {"¿"}


def no_space_edge(char: str) -> bool:
    """MetaCLIP 2's ``is_cjk_or_similar``: no space is needed beside this character."""
    if char in PUNCTUATION:
        return True
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _RANGES)


def is_punctuation_only(entry: str) -> bool:
    """MetaCLIP 2's ``is_pure_punctuations``: such entries are dropped (a space is not
    punctuation, so ``- -`` stays)."""
    return all(c in ENTRY_PUNCTUATION for c in entry)
