"""Language identification of alt-texts, for the worldwide recipe's matching.

py3langid (langid.py's model, 0.4.0): measured in ``bench/lid.py`` on 25,433 real texts
of 1-20 words in 30 languages against lingua (high and low accuracy) and pycld2, single
thread on this machine:

- accuracy: 0.686 on 1-3 words, 0.930 on 4-8, 0.987 on 9-20 (lingua-high 0.743 / 0.921 /
  0.976; pycld2 0.723 / 0.895 / 0.960);
- 32,000 texts/s, 25x lingua-high's speed (which also needs 1.2 GB and ~9 s of loading per
  worker), 1/7 of pycld2's;
- 142 languages (138 Wikipedia codes), lingua 75; pycld2 labels short Latin-script text
  English over a thousand times in the set and leaves genuine Russian unlabelled;
- deterministic (the same label for the same text in every process), a 4.6 MB BSD wheel,
  its model an npz read without pickle.

Its labels are ISO 639-1 or -3 codes; `wiki_code` maps them to Wikipedia's (``nb`` ->
``no``, ``yue`` -> ``zh_yue``, which folds into ``zh``). A text with no letters to judge
(empty or whitespace) has no language and goes to ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from .codes import OTHER, bucket, wikipedias

NAME = "py3langid"
# Identifier codes that are not a Wikipedia code as they stand.
_TO_WIKI = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi", "nb": "no", "yue": "zh_yue", "fil": "tl"}


def wiki_code(code: str) -> str | None:
    """An identifier label as a Wikipedia code, None where no Wikipedia is in that language."""
    c = code.strip().lower().replace("-", "_")
    c = _TO_WIKI.get(c, c)
    return c if c in wikipedias() else None


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def labels() -> list[str]:
    """Every label the identifier can give."""
    return list(_identifier().nb_classes)


def answerable_buckets() -> frozenset[str]:
    """The matching buckets (`codes.bucket`) the identifier can answer."""
    codes = (wiki_code(label) for label in labels())
    return frozenset(bucket(c) for c in codes if c is not None)


def identify(texts: Sequence[str | None]) -> list[str]:
    """The bucket of each text's language (``other`` where it has none we know)."""
    classify = _identifier().classify
    out = []
    for text in texts:
        if not text or text.isspace():
            out.append(OTHER)
            continue
        code = wiki_code(classify(text)[0])
        out.append(OTHER if code is None else bucket(code))
    return out
