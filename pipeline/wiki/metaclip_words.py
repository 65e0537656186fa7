"""MetaCLIP v1's word rule, to reproduce the Wikipedia counts its metadata was built from.

The word sequence of a text is its pieces after lowercasing with Python's ``str.lower()``
and splitting on the regex ``[^\\w\\-']`` (Python ``re``, so ``\\w`` is Unicode), empty
pieces dropped: ``Dog's big-eyed (dog)`` -> ``dog's``, ``big-eyed``, ``dog``. This is not
our own token definition (`pipeline.wiki.tokens`: case kept, possessive ``'s`` cut off,
underscores and free-standing hyphens separate, phrases end at punctuation); it exists only
so that counts match the count file MetaCLIP's maintainers point to.

Unigrams count the words without a digit (Python ``\\d``), with their document frequency
(number of texts containing them). Bigrams are the pairs adjacent in a text's word sequence,
digit words included (they drop out later, by table membership). Punctuation is just a
separator here, so a bigram crosses it (``end. Next`` -> ``end next``), but never crosses
from one text to the next.
"""

import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tokens import bigram_table, distinct_counts, encode_words

_SEPARATOR = re.compile(r"[^\w\-']")
_WORD = re.compile(r"[\w\-']+")  # the non-empty pieces between separators
_DIGIT = re.compile(r"\d")


def words(text: str) -> list[str]:
    """The word sequence of `text`."""
    return [w for w in _SEPARATOR.split(text.lower()) if w]


def has_digit(word: str) -> bool:
    return _DIGIT.search(word) is not None


def count_text_metaclip(text: str, unigrams: Counter, bigrams: Counter, docs: Counter) -> int:
    """Add the digit-free words of `text` to `unigrams` (and each once to `docs`), and every
    adjacent pair, as "w1 w2", to `bigrams`; return the number of words, digit ones included.
    The reference for `count_chunk_metaclip`."""
    seq = words(text)
    plain = [w for w in seq if not has_digit(w)]
    unigrams.update(plain)
    docs.update(set(plain))
    bigrams.update(" ".join(pair) for pair in pairwise(seq))
    return len(seq)


class MetaClipChunkCounts(NamedTuple):
    unigrams: pa.Table  # w: string, c: int64 (occurrences), d: int64 (texts containing w)
    bigrams: pa.Table  # b: string, c: int64
    tokens: int


def count_chunk_metaclip(texts: Sequence[str]) -> MetaClipChunkCounts:
    """`count_text_metaclip` summed over `texts`, as tables: words found by Python `re`,
    one list per text; pairing, counting and document frequency in Arrow and numpy."""
    lists = pa.array([_WORD.findall(t.lower()) for t in texts], pa.list_(pa.string()))
    vocab, ids = encode_words(lists)
    n = len(vocab)
    text_of = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    in_texts = distinct_counts(text_of * n + ids)[0] % max(n, 1)  # (text, word) pairs
    unigrams = pa.table(
        {
            "w": vocab,
            "c": np.bincount(ids, minlength=n),
            "d": np.bincount(in_texts, minlength=n),
        }
    )
    plain = pa.array([not has_digit(w) for w in vocab.to_pylist()], pa.bool_())
    return MetaClipChunkCounts(unigrams.filter(plain), bigram_table(lists, vocab, ids), len(ids))
