"""The worldwide recipe: one query list over every Wikipedia given, each language selected by
MetaCLIP 2's per-language rules (``metaclip/metadata/build_metadata.py``).

Per Wikipedia edition, in this order, a query already taken skipped (first source wins):

1. number   "0" ... "99", in every language;
2. wordnet  the language's Open Multilingual WordNet lemmas (`omw.py`; for English, the
            Princeton WordNet head words the clip recipe takes), no cap;
3. unigram  words by count, the top 10% of the language's distinct words, at most 251,465;
4. bigram   MetaCLIP 2's literal rule (``--bigram-rule metaclip2``): PMI > 30, best first,
            at most 100,646. PMI = log2(N c(xy) / (c(x) c(y))) cannot exceed log2(N), so
            below ~1e9 tokens (all but the largest Wikipedias) it admits nothing, and
            above it only pairs of words seen a handful of times (README, "Two recipes").
            The default (``ranked``) is the clip recipe's honest form of it: pairs seen at
            least as often as the language's last kept word (the count of its
            unigram-cap-th word; ``--min-bigram-count`` sets a fixed floor), ranked by
            PMI, at most 40% as many as the unigrams kept (MetaCLIP 2's documented x) and
            100,646;
5. title    titles by summed pageviews (Wikipedia desktop and mobile lines of the
            language; titles with ':' dropped), the top 76%, at most 61,235; without
            ``--pageviews``, the dump's article titles in dump order, the first 76%.

Entries are at most 256 characters; punctuation-only ones are dropped. A no-space
language's bigram is written without its space. Editions folded into one bucket
(`codes.bucket`: ``zh_yue`` -> ``zh``) are selected on their own, then concatenated in
code order with duplicates dropped, as MetaCLIP 2 unions them; ``lang`` is the bucket,
``wiki`` the edition a query came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError
from ..lang.codes import bucket, no_space
from ..lang.scripts import is_punctuation_only
from ..lang.segment import bigram_separator, has_segmenter
from .aggregate import Aggregates
from .combine import Row, combine

SOURCES = ("number", "wordnet", "unigram", "bigram", "title")
OPTION_NAMES = ("bigram_rule", "unigram_share", "bigram_share", "title_share")
BIGRAM_RULES = ("ranked", "metaclip2")
NUMBERS = tuple(str(i) for i in range(100))
MAX_CHARS = 256


@dataclass(frozen=True)
class WorldwideRules:
    unigram_share: float = 0.1
    max_unigrams: int | None = 251_465
    bigram_rule: str = "ranked"
    bigram_share: float = 0.4  # ranked: bigram cap as a share of the unigrams kept
    min_bigram_count: int | None = None  # ranked: None = the count of the last kept word
    min_pmi: float | None = None  # ranked: an optional PMI floor (metaclip2: > 30)
    max_bigrams: int | None = 100_646
    title_share: float = 0.76
    max_titles: int | None = 61_235
    min_views: int = 1  # MetaCLIP 2 keeps every title viewed at all, then its top 76%
    min_hourly_views: int = 1

    def as_dict(self) -> dict:
        return {"recipe": "worldwide", **asdict(self)}


def resolve(given: dict) -> WorldwideRules:
    """The defaults, overridden by every given value that is not None ("none" lifts a cap)."""
    for name in ("unigram_case", "min_doc_freq", "size", "min_count"):
        if given.get(name) is not None:
            raise InputError(f"--{name.replace('_', '-')} does not apply to --recipe worldwide")
    rule = given.get("bigram_rule") or "ranked"
    if rule not in BIGRAM_RULES:
        raise InputError(f"--bigram-rule must be one of {', '.join(BIGRAM_RULES)}")
    if rule == "metaclip2":
        for name in ("min_bigram_count", "min_pmi", "bigram_share"):
            if given.get(name) is not None:
                raise InputError(f"--{name.replace('_', '-')} does not apply to --bigram-rule metaclip2 (PMI > 30)")
    for name in ("unigram_share", "bigram_share", "title_share"):
        v = given.get(name)
        if v is not None and not 0 < v <= 1:
            raise InputError(f"--{name.replace('_', '-')} must be in (0, 1], got {v}")
    fields = WorldwideRules.__dataclass_fields__
    values: dict[str, Any] = {
        k: (None if v == "none" else v) for k, v in given.items() if k in fields and v is not None
    }
    return WorldwideRules(**values)


def accept(entry: str) -> bool:
    return 0 < len(entry) <= MAX_CHARS and not is_punctuation_only(entry)


@dataclass
class Selected:
    rows: list[Row]
    report: dict


def select_language(
    agg: Aggregates,
    rules: WorldwideRules,
    lang: str,
    wordnet: list[str],
    titles_from: str | object | None,
) -> Selected:
    """One edition's queries from its built unigram table (`Aggregates.build_unigrams`; the
    bigram table is built here, once its floor is known). `titles_from`: the language's
    pageview folder, or None for the dump's titles."""
    stats = agg.build_unigrams()
    unigram_cap = _cap(int(rules.unigram_share * stats["distinct_unigrams"]), rules.max_unigrams)
    min_pmi: float | None
    if rules.bigram_rule == "metaclip2":
        floor, min_pmi, bigram_cap = 1, math.nextafter(30.0, math.inf), rules.max_bigrams
    else:
        # the count of the last kept word (1 when none is kept or there are fewer words)
        floor = rules.min_bigram_count or (agg.unigram_count_at(unigram_cap) if unigram_cap > 0 else None) or 1
        min_pmi = rules.min_pmi
        bigram_cap = _cap(int(rules.bigram_share * unigram_cap), rules.max_bigrams)
    stats.update(agg.build_bigrams(floor))
    join = bigram_separator(lang)

    if titles_from is not None:
        title_total = agg.viewed_title_count(titles_from, rules.min_views)
        titles: Iterator[Row] = (
            Row(t, "title", views=v) for t, v in agg.viewed_titles(titles_from, rules.min_views, False)
        )
    else:
        title_total = agg.dump_title_count()
        titles = (Row(t, "title") for t, _ in agg.dump_titles())
    title_cap = _cap(int(rules.title_share * title_total), rules.max_titles)

    rows, report = combine(
        [
            ("number", (Row(n, "number") for n in NUMBERS), None),
            ("wordnet", (Row(w, "wordnet") for w in wordnet), None),
            ("unigram", (Row(w, "unigram", count=c) for w, c in agg.unigrams(1)), unigram_cap),
            (
                "bigram",
                (Row(b.replace(" ", join), "bigram", count=c, pmi=pmi) for b, c, pmi in agg.bigrams(min_pmi)),
                bigram_cap,
            ),
            ("title", titles, title_cap),
        ],
        None,
        accept=accept,
    )
    for row, c in zip(rows, agg.occurrence_counts([r.query for r in rows])):
        if row.count is None:
            row.count = c
    n = stats["tokens_in_unigram_table"]
    report = {
        **stats,
        "segmenter": has_segmenter(lang) if no_space(lang) else None,
        "caps": {"unigram": unigram_cap, "bigram": bigram_cap, "title": title_cap},
        "bigram_floor": floor,
        # the highest PMI any pair can have in this language: c(xy) <= min(c(x), c(y))
        "pmi_ceiling": round(math.log2(n), 3) if n > 1 else None,
        "titles_considered": title_total,
        "sources": report,
        "total": len(rows),
    }
    return Selected(rows, report)


def _cap(share_cap: int, hard_cap: int | None) -> int:
    return share_cap if hard_cap is None else min(share_cap, hard_cap)


def merge_buckets(selected: dict[str, Selected]) -> tuple[list[tuple[Row, str, str]], dict[str, dict]]:
    """(row, bucket, wiki) for every query, buckets in code order and within a bucket its
    editions in code order, a query already in the bucket dropped; and per-bucket counts."""
    out: list[tuple[Row, str, str]] = []
    buckets: dict[str, dict] = {}
    seen: dict[str, set[str]] = {}
    for wiki in sorted(selected, key=lambda w: (bucket(w), w)):
        b = bucket(wiki)
        taken = seen.setdefault(b, set())
        info = buckets.setdefault(b, {"editions": [], "queries": 0, "duplicates_across_editions": 0})
        info["editions"].append(wiki)
        for row in selected[wiki].rows:
            if row.query in taken:
                info["duplicates_across_editions"] += 1
                continue
            taken.add(row.query)
            out.append((row, b, wiki))
            info["queries"] += 1
    return out, buckets


def wordnet_for(lang: str, omw: dict[str, list[str]], english: Callable[[], list[str]] | None) -> list[str]:
    """The WordNet entries of an edition: OMW's lemmas, or Princeton's for English."""
    if lang == "en" and english is not None:
        return english()
    return omw.get(lang, [])
