"""The language identifiers bench/lid.py compares, and the map from their codes to Wikipedia's.

Each candidate loads lazily (its import is part of its load time) and gives a `Detector`:
`detect(text)` -> the identifier's own code or None, and `codes`, every code it can answer.
`wiki_code` turns those codes into Wikipedia language codes (the keys of the worldwide
recipe's per-language query lists). Candidates (PyPI distribution in brackets):

  * py3langid [py3langid]: langid.py's naive Bayes model, `LanguageIdentifier.classify`;
  * lingua-high / lingua-low [lingua-language-detector]: Lingua's detector built from all its
    languages with the models preloaded, in its default (high accuracy) mode and in low
    accuracy mode (trigrams only);
  * pycld2 [pycld2]: Chrome's CLD2 with `bestEffort=True` (answers for short texts too);
    pycld2-default is the same without it (CLD2 then says "un" when unsure).

gcld3 is not here: PyPI has no wheel of it for CPython 3.11 on Linux, only an sdist whose
build needs protoc and libprotobuf from the system.
fasttext-langdetect and the like fetch their model at run time, so they are not offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Codes that mean "no language" or a script rather than a language.
NO_LANGUAGE = {"un", "und", "zxx", "xxx", "zzp", "tlh"}
# Identifier codes whose Wikipedia code differs (old ISO codes, macro languages, varieties).
WIKI_CODE = {
    "iw": "he",  # CLD2: Hebrew
    "jw": "jv",  # CLD2: Javanese
    "in": "id",
    "ji": "yi",
    "nb": "no",  # Bokmal: no.wikipedia.org (nn has its own)
    "yue": "zh-yue",  # Cantonese: zh-yue.wikipedia.org
    "fil": "tl",
    "gug": "gn",
    "fuv": "ff",
    "uzs": "uz",
}


def wiki_code(code: str | None) -> str | None:
    """An identifier's language code -> Wikipedia language code, or None for no language.

    Lower case, '_' read as '-', the region or script subtag dropped (zh-Hant, zh-Hans, zh_TW,
    pt-BR -> zh, pt), then the aliases of WIKI_CODE (iw -> he, nb -> no, yue -> zh-yue)."""
    if not code:
        return None
    c = code.strip().lower().replace("_", "-")
    if c in NO_LANGUAGE or c.startswith("xx-"):
        return None
    base = c.split("-")[0]
    return WIKI_CODE.get(base, base)


@dataclass(frozen=True)
class Detector:
    detect: Callable[[str], str | None]
    codes: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    name: str
    dist: str  # PyPI distribution
    settings: str
    load: Callable[[], Detector]


def load_py3langid() -> Detector:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE)
    return Detector(lambda text: ident.classify(text)[0], tuple(ident.labels))


def load_lingua(low_accuracy: bool) -> Detector:
    from lingua import Language, LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.build()

    def detect(text: str) -> str | None:
        lang = detector.detect_language_of(text)
        return None if lang is None else lang.iso_code_639_1.name.lower()

    return Detector(detect, tuple(lang.iso_code_639_1.name.lower() for lang in Language.all()))


def load_pycld2(best_effort: bool) -> Detector:
    import pycld2

    def detect(text: str) -> str | None:
        try:
            return pycld2.detect(text, bestEffort=best_effort)[2][0][1]
        except pycld2.error:  # invalid UTF-8 and the like
            return None

    detected = set(pycld2.DETECTED_LANGUAGES)
    return Detector(detect, tuple(sorted({code for name, code in pycld2.LANGUAGES if name in detected})))


CANDIDATES = (
    Candidate("py3langid", "py3langid", "LanguageIdentifier.from_model_file(MODEL_FILE).classify", load_py3langid),
    Candidate(
        "lingua-high",
        "lingua-language-detector",
        "from_all_languages().with_preloaded_language_models(), default (high accuracy) mode",
        lambda: load_lingua(low_accuracy=False),
    ),
    Candidate(
        "lingua-low",
        "lingua-language-detector",
        "from_all_languages().with_preloaded_language_models().with_low_accuracy_mode()",
        lambda: load_lingua(low_accuracy=True),
    ),
    Candidate("pycld2", "pycld2", "detect(text, bestEffort=True), top language", lambda: load_pycld2(True)),
    Candidate("pycld2-default", "pycld2", "detect(text), top language ('un' when unsure)", lambda: load_pycld2(False)),
)
BY_NAME = {c.name: c for c in CANDIDATES}
BASELINE = "py3langid"
DROPPED = {
    "gcld3": "PyPI has no wheel for CPython 3.11 on Linux, only the sdist gcld3-3.0.13.tar.gz; pip fails building it: "
    "'RuntimeError: Please install the proto buffer compiler.' (needs protoc and libprotobuf-dev from apt)",
    "fasttext-langdetect": "downloads its fastText model (lid.176) at run time: not offline",
}
