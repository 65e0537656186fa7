"""The two recipes of the query list: ``clip`` (our reading of the paper) and ``metaclip``
(MetaCLIP v1's released rules, exactly), as resolved thresholds and entry rules.

Why ``clip`` does not use MetaCLIP's bigram rule: PMI = log2(N c(xy) / (c(x) c(y))) can
only reach 30 when c(x) c(y) / c(xy) <= N / 2^30, about 4.2 at English Wikipedia's
N ~ 4.5e9 tokens. Without a count floor that admits only pairs whose words each occur a
handful of times in all of Wikipedia, always together (hapax pairs); with any floor of 5 or
more it admits nothing. ``clip`` therefore ranks pairs seen at least ``min_bigram_count``
(100, the unigram rule's own floor: a bigram query should be as well attested as a word
query) by PMI and keeps the top ``max_bigrams``; ``min_pmi`` is an optional floor, off by
default, so the list is filled at any scale. Among pairs seen 100 times the highest PMI
goes to pairs whose words rarely occur apart: names and terms ("Kuala Lumpur",
"carbon dioxide"), which is what a collocation is.

Unigram case (``clip``): ``keep`` (default) counts and selects each surface form on its
own, so "Paris" and "paris" are two queries when both are frequent; that suits the
default case-sensitive matching, where a query matches only its own surface form. On full
Wikipedia more case-distinct words pass 100 than the 251,465 cap, so the cap, not the
threshold, decides which are kept. ``fold`` sums the counts of a word's case variants and
keeps one query per word, spelled as its most frequent surface form; it spends the budget
on distinct words and is the choice to pair with ``--ignore-case`` matching (with
case-sensitive matching a folded "Paris" no longer matches "paris").
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields

from ..errors import InputError

RECIPES = ("clip", "metaclip")
UNIGRAM_CASES = ("keep", "fold")


@dataclass(frozen=True)
class Rules:
    """Every threshold and cap of one build (None: no cap / no floor)."""

    recipe: str
    min_count: int
    max_unigrams: int | None
    unigram_case: str  # keep | fold (clip); lower (metaclip: its counting lowercases)
    min_doc_freq: int  # unigrams: articles a word must occur in (metaclip)
    min_bigram_count: int
    min_pmi: float | None
    max_bigrams: int | None
    min_views: int
    min_hourly_views: int
    max_titles: int | None
    size: int | None

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULTS: dict[str, dict] = {
    "clip": dict(
        min_count=100,
        max_unigrams=251_465,
        unigram_case="keep",
        min_doc_freq=1,
        min_bigram_count=100,
        min_pmi=None,
        max_bigrams=100_646,
        min_views=70,
        min_hourly_views=50,
        max_titles=61_235,
        size=500_000,
    ),
    "metaclip": dict(
        min_count=100,
        max_unigrams=None,
        unigram_case="lower",
        min_doc_freq=3,
        min_bigram_count=1,
        min_pmi=30.0,
        max_bigrams=None,
        min_views=70,
        min_hourly_views=50,
        max_titles=None,
        size=None,
    ),
}
# Options that change a rule rather than a threshold: refused where the recipe fixes them.
_CLIP_ONLY = ("unigram_case",)
_METACLIP_ONLY = ("min_doc_freq",)


NONE = "none"  # a cap or the PMI floor given as "none": lifted
_LIFTABLE = ("max_unigrams", "max_bigrams", "max_titles", "size", "min_pmi")


def resolve_rules(recipe: str, **given) -> Rules:
    """The recipe's defaults, overridden by every `given` value that is not None; "none"
    lifts a cap or the PMI floor."""
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r} (choose from {', '.join(RECIPES)})")
    names = {f.name for f in fields(Rules)} - {"recipe"}
    unknown = set(given) - names
    if unknown:
        raise TypeError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    fixed = _CLIP_ONLY if recipe == "metaclip" else _METACLIP_ONLY
    for name in fixed:
        if given.get(name) is not None:
            raise InputError(f"--{name.replace('_', '-')} does not apply to --recipe {recipe}")
    if given.get("unigram_case") not in (None, *UNIGRAM_CASES):
        raise InputError(f"--unigram-case must be one of {', '.join(UNIGRAM_CASES)}")
    for name, value in given.items():
        if value == NONE and name not in _LIFTABLE:
            raise InputError(f"--{name.replace('_', '-')} cannot be none")
    values = {**DEFAULTS[recipe], **{k: (None if v == NONE else v) for k, v in given.items() if v is not None}}
    return Rules(recipe=recipe, **values)


# MetaCLIP seeds its entry set with these before WordNet; they count among its 86,654.
METACLIP_SEED = tuple(str(i) for i in range(100))


def metaclip_wordnet(head_words: Iterable[str]) -> Iterator[str]:
    """MetaCLIP's WordNet entries: the seed, then each synset's first lemma lowercased and
    cut at its first '.' (NLTK's ``name.pos.nn`` split at the first dot, so ``St._John's``
    gives ``st``), underscores already spaces; first occurrence wins."""
    yield from METACLIP_SEED
    for word in head_words:
        yield word.lower().split(".", 1)[0]


_PUNCTUATION = frozenset(string.punctuation)


def is_entry(query: str) -> bool:
    """MetaCLIP drops entries that are empty or a single punctuation character (ASCII
    punctuation and symbols, or any Unicode punctuation)."""
    if not query:
        return False
    return not (len(query) == 1 and (query in _PUNCTUATION or unicodedata.category(query).startswith("P")))
