"""`count_chunk` (Arrow) gives exactly the counts of `count_text` (the reference)."""

import random
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.wiki.tokens import count_chunk, count_text

# Pieces of adversarial text: letters, CJK, combining marks, digits, joiners, possessives,
# every kind of horizontal space and line break, separators, emoji, underscores.
PIECES = [
    "a",
    "B",
    "word",
    "Zürich",
    "東京",
    "हि",
    "\u0915\u093f",
    "e\u0301",
    "\u0301",
    "\u093f",
    "Σ",
    "İ",
    "1",
    "42",
    "\u0663",
    "-",
    "--",
    "\u2010",
    "\u2011",
    "'",
    "\u2019",
    "s",
    "'s",
    "\u2019s",
    "n't",
    " ",
    "  ",
    "\t",
    "\u00a0",
    "\x1f",
    "\u2009",
    "\u3000",
    "\u1680",
    "\u202f",
    "\u205f",
    "\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\U0001f600",
    "_",
    ",",
    ".",
    "(",
    ")",
    "$",
    "\x00",
    "\ufeff",
]


def random_texts(rng: random.Random, n: int) -> list[str]:
    texts = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.05:
            texts.append("")
        elif kind < 0.1:
            texts.append("".join(rng.choices([" ", ",", "\n", "-", "'", "\u0301", "_"], k=rng.randint(1, 9))))
        else:
            texts.append("".join(rng.choices(PIECES, k=rng.randint(1, 60))))
    return texts


def reference(texts) -> tuple[Counter, Counter, int]:
    unigrams, bigrams = Counter(), Counter()
    n = sum(count_text(t, unigrams, bigrams) for t in texts)
    return unigrams, bigrams, n


def as_counters(chunk) -> tuple[Counter, Counter, int]:
    """Counters of a ChunkCounts; a key occurring twice in a table would fail here."""
    u, b = chunk.unigrams.to_pydict(), chunk.bigrams.to_pydict()
    assert len(set(u["w"])) == len(u["w"]) and len(set(b["b"])) == len(b["b"])
    assert all(c > 0 for c in u["c"] + b["c"])
    return Counter(dict(zip(u["w"], u["c"]))), Counter(dict(zip(b["b"], b["c"]))), chunk.tokens


def test_schema():
    chunk = count_chunk(["New York, New York"])
    assert chunk.unigrams.schema == pa.schema([("w", pa.string()), ("c", pa.int64())])
    assert chunk.bigrams.schema == pa.schema([("b", pa.string()), ("c", pa.int64())])
    assert as_counters(chunk) == (Counter({"New": 2, "York": 2}), Counter({"New York": 2}), 4)


@pytest.mark.parametrize("texts", [[], [""], ["", ""], ["... ---", "_"], ["a"]])
def test_empty_and_tiny(texts):
    chunk = count_chunk(texts)
    assert as_counters(chunk) == reference(texts)
    assert chunk.unigrams.schema.types == [pa.string(), pa.int64()]
    assert chunk.bigrams.schema.types == [pa.string(), pa.int64()]


@pytest.mark.parametrize(
    "texts",
    [
        ["a b", "c d"],  # no bigram "b c"
        ["a'", "s b"],  # the "s" is not a possessive of the text before
        ["Einstein", "'s theory"],
        ["a", "\u0301b"],  # a leading mark does not extend the previous text's last token
        ["x-", "y"],
        ["rock\u2019", "n\u2019roll"],
        ["end\t", "\u00a0start here"],
    ],
)
def test_phrases_never_span_texts(texts):
    assert as_counters(count_chunk(texts)) == reference(texts)


def test_arrow_whitespace_split_is_str_split():
    """Splitting "a<c>b" for every code point c: Arrow splits exactly where str.split does,
    so phrases (tokens joined by runs of horizontal whitespace) split alike."""
    strings = ["a%cb" % c for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
    arrow = pc.utf8_split_whitespace(pa.array(strings)).to_pylist()
    differ = [s[1] for s, got in zip(strings, arrow) if got != s.split()]
    assert differ == []


@pytest.mark.parametrize("seed", range(20))
def test_random_texts(seed):
    texts = random_texts(random.Random(seed), 300)
    expected = reference(texts)
    assert expected[2] > 1000 and len(expected[1]) > 100  # the comparison is not vacuous
    assert as_counters(count_chunk(texts)) == expected


def test_sample_dump(sample_articles):
    texts = sample_articles
    expected = reference(texts)
    assert expected[2] > 100_000
    assert as_counters(count_chunk(texts)) == expected
    # and in chunks, summed
    unigrams, bigrams, n = Counter(), Counter(), 0
    for i in range(0, len(texts), 7):
        u, b, k = as_counters(count_chunk(texts[i : i + 7]))
        unigrams.update(u)
        bigrams.update(b)
        n += k
    assert (unigrams, bigrams, n) == expected
