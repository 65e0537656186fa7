"""`--recipe metaclip`: MetaCLIP v1's substring rule, side by side with the default `clip` rule.

MetaCLIP's rule: an entry matches when " " + entry + " " occurs in the text padded with a
space at both ends, with each of , . ; : ? ! ` surrounded by spaces and tab/newline/CR made
spaces; case-sensitive. The clip rule: word boundaries (no letter, digit or mark touches
the query on either side), case-sensitive by default.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.collect.config import MatchConfig
from pipeline.collect.match import MetaClipMatcher, QueryMatcher, make_matcher
from pipeline.errors import InputError
from tests.conftest import assert_one_line_error, run_cli
from tests.support.collect import match_pool


def found(queries: list[str | None], text: str | None, recipe: str) -> list[str | None]:
    return [queries[i] for i in make_matcher(queries, MatchConfig(recipe=recipe)).match(text)]


# (entry, text, matches under clip, matches under metaclip)
TABLE = [
    # parentheses, quotes, possessive, hyphen, underscore, slash: boundaries for clip only
    ("dog", "(dog)", True, False),
    ("dog", "the dog's bone", True, False),
    ("dog", 'a "dog" here', True, False),
    ("dog", "dog-friendly", True, False),
    ("dog", "dog_house", True, False),
    ("dog", "dog/cat", True, False),
    # the seven wrapped characters next to a word
    ("dog", "a dog, a cat", True, True),
    ("dog", "a dog.", True, True),
    ("dog", "dog; cat", True, True),
    ("dog", "dog:cat", True, True),
    ("dog", "a dog?", True, True),
    ("dog", "dog!", True, True),
    ("dog", "`dog`", True, True),
    ("dog", "dog.com", True, True),
    ("dog", ",dog,", True, True),
    # inside words: neither
    ("dog", "hotdog", False, False),
    ("dog", "dogs", False, False),
    ("dog", "dog2", False, False),
    # spaces: doubled, tabs, newlines, CR, NBSP, NUL
    ("dog", "big  dog", True, True),
    ("big dog", "big  dog", False, False),
    ("big dog", "a big dog", True, True),
    ("big dog", "big\tdog", False, True),
    ("big dog", "big\ndog", False, True),
    ("big dog", "big\rdog", False, True),
    ("big dog", "big\r\ndog", False, False),  # two spaces for metaclip
    ("dog", "a\tdog\n", True, True),
    ("dog", "\rdog\r", True, True),
    ("dog", "a\u00a0dog", True, False),  # NBSP is not one of MetaCLIP's spaces
    ("big dog", "big\u00a0dog", False, False),
    ("dog", "dog\x00", True, False),
    (" dog", "a dog", False, False),  # a leading space in the entry needs a space before it...
    (" dog", "a  dog", True, True),  # ... which a second space gives
    # entries with a wrapped character next to a non-space (or a tab/newline/CR): never under metaclip
    ("U.S. Army", "the U.S. Army band", True, False),
    ("U.S. Army", "the U . S . Army band", False, False),
    ("a, b", "a, b", True, False),
    ("Mr.", "Mr. Smith", True, False),
    ("3.5", "version 3.5 now", True, False),
    ("Yahoo!", "Yahoo! Mail", True, False),
    ("what?", "so what?", True, False),
    ("`x`", "a `x` b", True, False),
    ("big\tdog", "big\tdog", True, False),
    ("a . . b", "a.. b", False, False),  # the dots would need a space each
    # ... unless the entry's wrapped characters already stand between spaces (MetaCLIP's code)
    ("dog !", "dog!", False, True),
    ("a , b", "a,b", False, True),
    ("a , b", "a, b", False, False),  # " a ,  b ": two spaces after the comma
    ("C++", "C++ code", True, True),  # '+' is not wrapped
    ("C#", "in C# now", True, True),
    # CJK without spaces: metaclip needs spaces or wrapped characters around the entry
    ("東京", "東京タワー", False, False),
    ("東京", "大東京都", False, False),
    ("東京", "東京 タワー", True, True),
    ("東京", "「東京」", True, False),
    ("東京", "東京。", True, False),  # U+3002, not '.'
    ("東京", "東京,タワー", True, True),
    # emoji
    ("dog", "dog🐕", True, False),
    ("dog", "🐕 dog 🐕", True, True),
    ("🐕", "a 🐕 here", True, True),
    ("🐕", "a🐕", False, False),
    ("🐕", "🐕🐕", True, False),
    # case-sensitive in both
    ("dog", "Dog", False, False),
    ("Dog", "dog", False, False),
    ("dog", "DOG!", False, False),
    # text start and end
    ("dog", "dog", True, True),
    ("dog", "dog at start", True, True),
    ("dog", "at the end dog", True, True),
    ("big dog", "big dog", True, True),
]


@pytest.mark.parametrize("recipe", ["clip", "metaclip"])
@pytest.mark.parametrize("entry, text, clip, metaclip", TABLE)
def test_table(entry, text, clip, metaclip, recipe):
    expected = clip if recipe == "clip" else metaclip
    assert found(["filler", entry], text, recipe) == ([entry] if expected else [])


def _metaclip_reference(entries: list[str], text: str) -> list[int]:
    """MetaCLIP v1's `spacing` + `substr_matching`, literally (empty entries left out)."""
    spaced = f" {text} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return [i for i, e in enumerate(entries) if e.strip() and f" {e} " in spaced]


def test_agrees_with_metaclip_code_on_random_texts():
    rng = random.Random(0)
    alphabet = "ab   ,.;:?!`\t\n\r(')-東🐕"
    for _ in range(400):
        entries = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(8)]
        entries += ["a", "b", "a b", "ab", "b a"]
        matcher = MetaClipMatcher(entries)
        for _ in range(10):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
            assert matcher.match(text) == _metaclip_reference(entries, text), (entries, text)


@pytest.mark.parametrize("recipe", ["clip", "metaclip"])
def test_multi_word_and_overlapping_entries(recipe):
    queries = ["New York", "York", "New York City", "City", "York City", "Yor", "New"]
    everything = ["New York", "York", "New York City", "City", "York City", "New"]
    assert sorted(found(queries, "a New York City tour", recipe)) == sorted(everything)
    assert sorted(found(queries, "New York City", recipe)) == sorted(everything)
    assert sorted(found(queries, "New York, City", recipe)) == ["City", "New", "New York", "York"]
    assert found(["a b", "b c", "a b c d"], "a b c", recipe) == ["a b", "b c"]  # sharing the space


@pytest.mark.parametrize("recipe", ["clip", "metaclip"])
def test_ids_sorted_unique_and_empty_entries(recipe):
    matcher = make_matcher(["cat", "", " ", "\t", None, "dog", "dog"], MatchConfig(recipe=recipe))
    assert matcher.match("dog cat dog  cat\t\tdog") == [0, 5, 6]
    assert matcher.match("") == [] and matcher.match(None) == []
    assert make_matcher([None, "", "a,b"], MatchConfig(recipe=recipe)).match("a,b  x") == (
        [2] if recipe == "clip" else []
    )


def test_metaclip_refuses_ignore_case_and_unknown_recipes(tmp_path):
    with pytest.raises(InputError, match="--ignore-case cannot be used with --recipe metaclip"):
        make_matcher(["dog"], MatchConfig(ignore_case=True, recipe="metaclip"))
    with pytest.raises(InputError, match="unknown matching recipe 'laion'"):
        make_matcher(["dog"], MatchConfig(recipe="laion"))
    assert isinstance(make_matcher(["dog"], MatchConfig()), QueryMatcher)


# ------------------------------------------------------------------ the stage and the CLI

TEXTS = ["a dog, a cat", "(dog)", "the dog's bone", "hotdog", "the U.S. Army band", "a big dog."]
QUERIES = ["dog", "cat", "U.S. Army", "big dog"]
CLIP = {"a dog, a cat": [0, 1], "(dog)": [0], "the dog's bone": [0], "the U.S. Army band": [2], "a big dog.": [0, 3]}
METACLIP = {"a dog, a cat": [0, 1], "a big dog.": [0, 3]}


def test_match_pool_applies_the_recipe(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table({"uid": [f"u{i}" for i in range(len(TEXTS))], "text": TEXTS}), pool / "part-00000.parquet")
    qpath = tmp_path / "q.parquet"
    pq.write_table(pa.table({"query": QUERIES}), qpath)

    def ids(out):
        t = pq.read_table(out / "part-00000.parquet").to_pylist()
        return {TEXTS[int(r["uid"][1:])]: r["query_ids"] for r in t}

    for recipe, expected in (("clip", CLIP), ("metaclip", METACLIP)):
        out = tmp_path / recipe
        assert match_pool(str(pool / "*.parquet"), str(qpath), str(out), recipe=recipe)["matched"] == len(expected)
        assert ids(out) == expected
    with pytest.raises(InputError, match="MetaCLIP matches case-sensitively"):
        match_pool(str(pool / "*.parquet"), str(qpath), str(tmp_path / "x"), recipe="metaclip", ignore_case=True)


def _cli_matches(out) -> dict[str, list[int]]:
    """text -> query ids, from the pool and matches the CLI wrote."""
    cur = out / "curation"
    text = {
        r["uid"]: r["text"]
        for p in sorted((cur / "pool").glob("part-*.parquet"))
        for r in pq.read_table(p, columns=["uid", "text"]).to_pylist()
    }
    return {
        text[r["uid"]]: r["query_ids"]
        for p in sorted((cur / "matches").glob("part-*.parquet"))
        for r in pq.read_table(p).to_pylist()
    }


def test_cli_recipe_metaclip_then_clip(tmp_path):
    pairs, qpath, out = tmp_path / "pairs.parquet", tmp_path / "q.parquet", tmp_path / "o"
    pq.write_table(
        pa.table({"url": [f"http://example.com/{i}.jpg" for i in range(len(TEXTS))], "caption": TEXTS}), pairs
    )
    pq.write_table(pa.table({"query": QUERIES}), qpath)
    assert run_cli("pool", "--pool", str(pairs), "--out", str(out), "--quiet").returncode == 0
    match = ("match", "--out", str(out), "--queries", str(qpath), "--workers", "1")

    assert_one_line_error(
        run_cli(*match, "--recipe", "metaclip", "--ignore-case"), "--ignore-case cannot be used with --recipe metaclip"
    )
    res = run_cli(*match, "--recipe", "metaclip", "--quiet")
    assert res.returncode == 0, res.stderr
    assert _cli_matches(out) == METACLIP
    res = run_cli(*match, "--recipe", "clip")
    assert res.returncode == 0, res.stderr
    assert "match: inputs or settings changed" in res.stderr
    assert _cli_matches(out) == CLIP
    assert json.loads((out / "curation" / "match_stats.json").read_text())["matched"] == len(CLIP)
    res = run_cli(*match, "--recipe", "metaclip")  # and back: redone again
    assert res.returncode == 0 and "inputs or settings changed" in res.stderr, res.stderr
    assert _cli_matches(out) == METACLIP
    res = run_cli(*match, "--recipe", "metaclip")  # unchanged: the step key keeps every part
    assert res.returncode == 0 and "inputs or settings changed" not in res.stderr, res.stderr
    stats = json.loads((out / "curation" / "match_stats.json").read_text())
    assert stats["parts_skipped"] == stats["parts"] == 1 and stats["recipe"] == "metaclip"
