import re
import time
from collections import Counter

import pytest

from pipeline.wiki.tokens import TOKEN_PATTERN, count_text, phrases, tokenize


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("The quick brown fox", ["The", "quick", "brown", "fox"]),
        ("Zürich, São Paulo and Kraków", ["Zürich", "São", "Paulo", "and", "Kraków"]),
        ("東京 is 東京都に住む", ["東京", "is", "東京都に住む"]),  # no segmentation
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # combining vowel signs stay inside
        ("cafe\u0301 au lait", ["cafe\u0301", "au", "lait"]),  # decomposed accent
        ("In 1969, 12,000 paid $3.50", ["In", "1969", "12", "000", "paid", "3", "50"]),
        ("R2-D2 and COVID-19", ["R2-D2", "and", "COVID-19"]),
        ("state-of-the-art a--b -x- c‐d", ["state-of-the-art", "a", "b", "x", "c‐d"]),
        ("don't O'Brien rock’n’roll", ["don't", "O'Brien", "rock’n’roll"]),
        ("Einstein's or Einstein’s theory", ["Einstein", "or", "Einstein", "theory"]),
        ("it's the dogs' bone", ["it", "the", "dogs", "bone"]),
        ("O'Brien's car, Ma'shallah", ["O'Brien", "car", "Ma'shallah"]),
        ("'quoted' words'", ["quoted", "words"]),
        ("snake_case __init__", ["snake", "case", "init"]),
        ("iPhone NASA nasa", ["iPhone", "NASA", "nasa"]),
        ("", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_token_pattern_is_the_tokenizer():
    text = "Einstein's state-of-the-art theory, don't"
    assert re.findall(TOKEN_PATTERN, text) == tokenize(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("New York City is big", [["New", "York", "City", "is", "big"]]),
        ("New York, City", [["New", "York"], ["City"]]),
        ("end of line\nnext line", [["end", "of", "line"], ["next", "line"]]),
        ("tab\tand\u00a0nbsp\u2009thin  double", [["tab", "and", "nbsp", "thin", "double"]]),
        ("Einstein's theory", [["Einstein"], ["theory"]]),
        ("snake_case", [["snake"], ["case"]]),
        ("a - b", [["a"], ["b"]]),
        ("state-of-the-art design (new)", [["state-of-the-art", "design"], ["new"]]),
        ("line\u2028break\rreturn", [["line"], ["break"], ["return"]]),
    ],
)
def test_phrases(text, expected):
    assert phrases(text) == expected


def test_count_text():
    unigrams, bigrams = Counter(), Counter()
    n = count_text("New York is in New York State.\nState-of-the-art New\u00a0York's subway", unigrams, bigrams)
    assert n == 11
    assert unigrams == Counter({"New": 3, "York": 3, "is": 1, "in": 1, "State": 1, "State-of-the-art": 1, "subway": 1})
    assert bigrams == Counter(
        {
            "New York": 3,
            "York is": 1,
            "is in": 1,
            "in New": 1,
            "York State": 1,
            "State-of-the-art New": 1,
        }
    )


def test_count_text_accumulates():
    unigrams, bigrams = Counter({"a": 5}), Counter({"a b": 5})
    assert count_text("a b a b", unigrams, bigrams) == 4
    assert unigrams == Counter({"a": 7, "b": 2})
    assert bigrams == Counter({"a b": 7, "b a": 1})
    assert count_text("", unigrams, bigrams) == 0
    assert count_text("... ---", unigrams, bigrams) == 0


def test_count_text_matches_phrases():
    text = "One two, three four five.\nSix - seven eight's nine_ten\televen  twelve"
    unigrams, bigrams = Counter(), Counter()
    count_text(text, unigrams, bigrams)
    runs = phrases(text)
    assert unigrams == Counter(t for run in runs for t in run)
    assert bigrams == Counter(f"{a} {b}" for run in runs for a, b in zip(run, run[1:]))


MB = 1_000_000


@pytest.mark.parametrize(
    "text",
    ["a's " * (MB // 4), "a-" * (MB // 2), "a'" * (MB // 2), "word " * (MB // 5), "-" * MB, "\u0915" + "\u093f" * MB],
    ids=lambda text: repr(text[:6]),
)
def test_count_text_is_linear(text):
    start = time.process_time()  # CPU time: other load on the machine does not count
    count_text(text, Counter(), Counter())
    assert time.process_time() - start < 2.0
