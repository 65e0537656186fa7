"""Tokens and phrases: the word definition used to count unigrams and bigrams.

A token is a maximal run of Unicode letters and digits (regex ``[^\\W_]``, with the
combining marks that follow a letter, so that Devanagari or decomposed accents stay whole),
possibly joined by single internal hyphens (``-``, U+2010, U+2011) or apostrophes (``'``,
``’``) to further letters and digits: ``state-of-the-art``, ``don't`` and ``O'Brien`` are
one token each. Case is kept. A possessive ``'s`` / ``’s`` ending a word is not part of the
token: ``Einstein's`` -> ``Einstein`` (and likewise ``it's`` -> ``it``). Underscores and
all other characters separate tokens: ``12,000`` is ``12`` and ``000``. Scripts written
without spaces are not segmented: ``東京都に住む`` is one token.

Two tokens are adjacent, and form a bigram, only when the gap between them is horizontal
whitespace (space, tab, NBSP and other spaces that do not break a line). Any other
character between them breaks the phrase: punctuation, a line break, an underscore, the
possessive ``'s``, a free-standing hyphen as in ``a - b``."""

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _char_class(chars) -> str:
    """Regex class body for sorted BMP `chars`, as escaped ranges."""
    ranges: list[list[str]] = []
    for c in chars:
        if ranges and ord(c) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join("\\u%04x" % ord(a) if a == b else "\\u%04x-\\u%04x" % (ord(a), ord(b)) for a, b in ranges)


# Combining marks (category M) are not \w in Python. Only those of the Basic Multilingual
# Plane: `re` tests a BMP class with a bitmap, a class with astral ranges range by range
# (twice as slow), and astral scripts are negligible in English Wikipedia. MARKS is the
# body of a regex class (``[%s]``); the match step (`pipeline.collect.match`) uses it too.
MARKS = _char_class(c for c in map(chr, range(0x300, 0x10000)) if unicodedata.category(c)[0] == "M")
_REST = r"[^\W_]*(?:[%s]+[^\W_]*)*" % MARKS  # rest of a word after its first letter
_JOIN = r"(?:[\-\u2010\u2011]|['\u2019](?!s(?![^\W_])))"  # but not a possessive 's
# The lookbehinds stop the "s" of a possessive from starting a token of its own. They
# follow the first letter so that the regex starts with a class, which `re` scans fast.
_START = r"[^\W_](?<![^\W_]['\u2019].)(?<![%s]['\u2019].)" % MARKS
TOKEN_PATTERN = r"%s%s(?:%s[^\W_]%s)*" % (_START, _REST, _JOIN, _REST)
_HSPACE = r"[^\S\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"  # whitespace but no line break

_TOKEN = re.compile(TOKEN_PATTERN)
_PHRASE = re.compile(r"%s(?:%s+%s)*" % (TOKEN_PATTERN, _HSPACE, TOKEN_PATTERN))


def tokenize(text: str) -> list[str]:
    """The tokens of `text`, in order."""
    return _TOKEN.findall(text)


def phrases(text: str) -> list[list[str]]:
    """The maximal runs of adjacent tokens (tokens separated by horizontal whitespace)."""
    return [phrase.split() for phrase in _PHRASE.findall(text)]


def count_text(text: str, unigrams: Counter, bigrams: Counter) -> int:
    """Add the tokens of `text` to `unigrams` and its adjacent pairs, as "w1 w2", to
    `bigrams`; return the number of tokens.

    The hot loop over all of Wikipedia, so the per-token work stays in C: one findall for
    the phrases, str.split for their tokens (phrases hold no other whitespace), and
    Counter.update over flat iterables. (Regex-only pair extraction measured slower.)
    """
    split = [phrase.split() for phrase in _PHRASE.findall(text)]
    tokens = [token for phrase in split for token in phrase]
    unigrams.update(tokens)
    bigrams.update(" ".join(pair) for phrase in split for pair in pairwise(phrase))
    return len(tokens)


class ChunkCounts(NamedTuple):
    unigrams: pa.Table  # w: string, c: int64
    bigrams: pa.Table  # b: string, c: int64
    tokens: int


def count_chunk(texts: Sequence[str]) -> ChunkCounts:
    """The counts that `count_text` would add up over `texts`, as tables.

    About twice as fast: one findall over the whole chunk (texts joined by a line break,
    which ends every phrase), then splitting, pairing and counting in Arrow kernels.
    Arrow's whitespace split is exactly str.split on phrases (tests/pipeline/wiki/test_tokens_arrow.py).
    """
    lists = pc.utf8_split_whitespace(pa.array(_PHRASE.findall("\n".join(texts)), pa.string()))
    words, ids = encode_words(lists)
    unigrams = pa.table({"w": words, "c": np.bincount(ids, minlength=len(words))})
    return ChunkCounts(unigrams, bigram_table(lists, words, ids), len(ids))


def encode_words(lists: pa.ListArray) -> tuple[pa.StringArray, np.ndarray]:
    """The distinct words of `lists` and, for each word in order, its index among them."""
    encoded = pc.dictionary_encode(lists.flatten())
    return encoded.dictionary, encoded.indices.to_numpy().astype(np.int64)


def bigram_table(lists: pa.ListArray, words: pa.StringArray, ids: np.ndarray) -> pa.Table:
    """Counts of "w1 w2" over the pairs of words adjacent within one list of `lists`
    (`words`, `ids` from `encode_words`). Pairs are counted as integers; only distinct
    pairs become strings."""
    parent = pc.list_parent_indices(lists).to_numpy()
    same_list = parent[:-1] == parent[1:]
    keys, counts = distinct_counts(ids[:-1][same_list] * len(words) + ids[1:][same_list])
    left, right = (pa.array(k) for k in np.divmod(keys, max(len(words), 1)))
    pairs = pc.binary_join_element_wise(words.take(left), words.take(right), " ")
    return pa.table({"b": pairs, "c": counts})


def distinct_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `keys` and how often each occurs. By sorting: numpy's int64
    sort measured several times faster here than Arrow's value_counts or np.unique."""
    keys = np.sort(keys)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys
    return keys[starts], np.diff(np.r_[starts, len(keys)])
