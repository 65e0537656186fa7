"""MetaCLIP's word rule: the reference functions, and `count_chunk_metaclip` equal to them."""

import random
import re
from collections import Counter

import pyarrow as pa
import pytest

from pipeline.wiki.metaclip_words import (
    count_chunk_metaclip,
    count_text_metaclip,
    has_digit,
    words,
)
from tests.pipeline.wiki.test_tokens_arrow import PIECES


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Dog's big-eyed (dog)", ["dog's", "big-eyed", "dog"]),
        ("snake_case __init__", ["snake_case", "__init__"]),
        ("In 1969, 12,000 paid $3.50", ["in", "1969", "12", "000", "paid", "3", "50"]),
        ("Zürich São-Paulo 東京都に住む", ["zürich", "são-paulo", "東京都に住む"]),
        ("'quoted' -- words'", ["'quoted'", "--", "words'"]),
        ("New\u00a0York\tCity\nend.Next", ["new", "york", "city", "end", "next"]),
        ("ΟΔΟΣ ΟΔΟΣ.", ["οδος", "οδος"]),  # str.lower's final sigma
        ("İstanbul", ["i", "stanbul"]),  # lowered to i + U+0307, a mark: not \w
        ("cafe\u0301 R2-D2", ["cafe", "r2-d2"]),
        ("", []),
        ("... ()", []),
    ],
)
def test_words(text, expected):
    assert words(text) == expected


@pytest.mark.parametrize(
    "word, expected",
    [
        ("abc", False),
        ("a1", True),
        ("r2-d2", True),
        ("\u0663", True),
        ("\uff11", True),
        ("\u00b2", False),
        ("\u00bd", False),
        ("", False),
    ],
)
def test_has_digit(word, expected):
    assert has_digit(word) is expected


def test_count_text_metaclip():
    unigrams, bigrams, docs = Counter(), Counter(), Counter()
    n = count_text_metaclip("The dog's 2 dogs. The dog's\nend", unigrams, bigrams, docs)
    assert n == 7
    assert unigrams == Counter({"the": 2, "dog's": 2, "dogs": 1, "end": 1})
    assert docs == Counter({"the": 1, "dog's": 1, "dogs": 1, "end": 1})
    assert bigrams == Counter({"the dog's": 2, "dog's 2": 1, "2 dogs": 1, "dogs the": 1, "dog's end": 1})


def reference(texts) -> tuple[Counter, Counter, Counter, int]:
    unigrams, bigrams, docs = Counter(), Counter(), Counter()
    n = sum(count_text_metaclip(t, unigrams, bigrams, docs) for t in texts)
    return unigrams, bigrams, docs, n


def as_counters(chunk) -> tuple[Counter, Counter, Counter, int]:
    u, b = chunk.unigrams.to_pydict(), chunk.bigrams.to_pydict()
    assert len(set(u["w"])) == len(u["w"]) and len(set(b["b"])) == len(b["b"])
    assert all(c > 0 for c in u["c"] + u["d"] + b["c"])
    return (
        Counter(dict(zip(u["w"], u["c"]))),
        Counter(dict(zip(b["b"], b["c"]))),
        Counter(dict(zip(u["w"], u["d"]))),
        chunk.tokens,
    )


def test_doc_frequency_once_per_text():
    chunk = count_chunk_metaclip(["a a a", "A b", "c", "", "a"])
    assert as_counters(chunk) == (
        Counter({"a": 5, "b": 1, "c": 1}),
        Counter({"a a": 2, "a b": 1}),
        Counter({"a": 3, "b": 1, "c": 1}),
        7,
    )


def test_bigrams_do_not_cross_texts_but_cross_punctuation():
    chunk = count_chunk_metaclip(["x y.", "z, w", "", "v"])
    assert as_counters(chunk)[1] == Counter({"x y": 1, "z w": 1})


def test_digit_words_in_bigrams_only():
    chunk = count_chunk_metaclip(["in 1969 the"])
    assert as_counters(chunk) == (
        Counter({"in": 1, "the": 1}),
        Counter({"in 1969": 1, "1969 the": 1}),
        Counter({"in": 1, "the": 1}),
        3,
    )
    assert chunk.unigrams.schema == pa.schema([("w", pa.string()), ("c", pa.int64()), ("d", pa.int64())])
    assert chunk.bigrams.schema == pa.schema([("b", pa.string()), ("c", pa.int64())])


@pytest.mark.parametrize("texts", [[], [""], ["... ()", ""], ["1 2 3"], ["a"]])
def test_empty_and_tiny(texts):
    chunk = count_chunk_metaclip(texts)
    assert as_counters(chunk) == reference(texts)
    assert chunk.unigrams.schema.types == [pa.string(), pa.int64(), pa.int64()]
    assert chunk.bigrams.schema.types == [pa.string(), pa.int64()]


MORE = ["ΟΔΟΣ", "Σ", "ẞ", "\ufb03", "I", "\u00b2", "\uff11", "X1", "O'Neil", "A-B", "__"]


@pytest.mark.parametrize("seed", range(20))
def test_random_texts(seed):
    rng = random.Random(seed)
    texts = [
        "" if rng.random() < 0.05 else "".join(rng.choices(PIECES + MORE, k=rng.randint(1, 60))) for _ in range(300)
    ]
    for t in texts[:50]:
        assert words(t) == [w for w in re.split(r"[^\w\-']", t.lower()) if w]
    expected = reference(texts)
    assert expected[3] > 1000 and len(expected[1]) > 100 and max(expected[2].values()) > 1
    assert as_counters(count_chunk_metaclip(texts)) == expected


def test_sample_dump(sample_articles):
    texts = sample_articles
    expected = reference(texts)
    assert expected[3] > 100_000
    assert as_counters(count_chunk_metaclip(texts)) == expected
