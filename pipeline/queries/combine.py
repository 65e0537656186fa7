"""Combine query sources in order; a query already taken by an earlier source is skipped.

A skipped duplicate does not use up the later source's quota, which is how MetaCLIP's list
adds up to exactly 500,000 (86,654 WordNet + 251,465 unigrams + 100,646 bigrams + 61,235
titles). Sources are consumed lazily and abandoned as soon as their quota is met.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class Row:
    query: str
    source: str
    count: int | None = None
    pmi: float | None = None
    views: int | None = None


def combine(
    sources: Iterable[tuple[str, Iterable[Row], int | None]],
    size: int | None,
    accept: Callable[[str], bool] | None = None,
) -> tuple[list[Row], dict]:
    """Take up to `cap` (None: all) new queries from each source in turn; duplicates go to
    the earlier source. Queries `accept` refuses are dropped and counted."""
    seen: set[str] = set()
    rows: list[Row] = []
    report: dict[str, dict] = {}
    cap_all = float("inf") if size is None else size
    for name, candidates, cap in sources:
        limit = float("inf") if cap is None else cap
        added = duplicates = considered = refused = 0
        try:
            for row in candidates:
                if added >= limit or len(rows) >= cap_all:
                    break
                considered += 1
                if accept is not None and not accept(row.query):
                    refused += 1
                    continue
                if row.query in seen:
                    duplicates += 1
                    continue
                seen.add(row.query)
                rows.append(row)
                added += 1
        finally:
            close = getattr(candidates, "close", None)
            if close is not None:
                close()  # a half-read database cursor is released now, not at garbage collection
        report[name] = {"added": added, "duplicates_skipped": duplicates, "considered": considered}
        if accept is not None:
            report[name]["refused"] = refused
    return rows, report
