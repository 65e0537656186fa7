"""Sum pageviews per title over all pageview files, one spilled parquet part per file.

Each file is read by `pageviews.file_title_views` (the per-file parsing); this module
applies the recipe's rules to it (domains, formats, title normalisation: `RULES`), spills
one part per file and resumes, as `counting.py` does for the dumps. Which titles become
queries (the threshold on the summed views) is decided later, by
`aggregate.Aggregates.viewed_titles`.

A year of hourly files is ~8,760 files of ~10M lines each; each file is aggregated alone
(bounded by one file's titles) and the parts are summed by DuckDB later, so memory does
not grow with the number of files, and a rerun skips files already done.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..distribute import Engine, run_parts
from ..io import atomic_path, file_fingerprint, sum_stats
from ..storage import listing
from .counting import prepare_work_dir
from .pageviews import file_title_views


def normalise_title(title: str) -> str:
    """Pageview titles use underscores and sometimes percent-escapes; dump titles use spaces."""
    if "%" in title:
        title = unquote(title)
    return title.replace("_", " ").strip()


def metaclip_title(title: str) -> str:
    """MetaCLIP's rule: underscores to spaces, nothing else (no percent-decoding)."""
    return title.replace("_", " ")


# Per recipe: the domain codes read, the file formats accepted, the title rule.
RULES = {
    "clip": (("en", "en.wikipedia"), None, normalise_title),
    "metaclip": (("en",), ("hourly",), metaclip_title),
}


def _count_file(args: tuple) -> dict:
    i, url, work_dir, recipe, min_hourly_views = args
    domains, formats, normalise = RULES[recipe]
    views, stats = file_title_views(url, domains=domains, min_hourly_views=min_hourly_views, formats=formats)
    merged: dict[str, int] = {}
    for title, v in views.items():
        t = normalise(title)
        if t:
            merged[t] = merged.get(t, 0) + v
    work = storage.location(work_dir)
    with atomic_path(work / "parts" / f"{i:06d}.parquet") as tmp:
        pq.write_table(
            pa.table(
                {"title": pa.array(list(merged), pa.string()), "views": pa.array(list(merged.values()), pa.int64())}
            ),
            tmp,
            compression="zstd",
        )
    with atomic_path(work / "stats" / f"{i:06d}.json") as tmp:
        tmp.write_text(json.dumps(stats, sort_keys=True))
    return stats


def count_pageviews(
    urls: list[str],
    work_dir,
    workers: int = 1,
    recipe: str = "clip",
    min_hourly_views: int = 50,
    progress_factory=None,
    engine: Engine | None = None,
) -> tuple[Path, dict]:
    """Returns (the work dir holding parts/*.parquet, summed line statistics); the work dir
    may be local or remote (see `storage`). `recipe` picks the domains, formats and title
    rule (`RULES`): clip reads desktop and daily/monthly "en.wikipedia" lines and decodes
    percent-escapes; metaclip reads only hourly files' "en " (desktop) lines, as MetaCLIP did."""
    work_dir = storage.location(work_dir)
    prepare_work_dir(
        work_dir,
        {
            "inputs": [file_fingerprint(u) for u in urls],
            "recipe": recipe,
            "min_hourly_views": min_hourly_views,
        },
    )
    done = {p.name for p in listing(work_dir / "stats", "*.json")}
    todo = [
        (i, u, storage.url(work_dir), recipe, min_hourly_views)
        for i, u in enumerate(urls)
        if f"{i:06d}.json" not in done
    ]
    bar = progress_factory(len(urls)) if progress_factory else None
    if bar is not None:
        bar.update(len(urls) - len(todo))
    run_parts(
        _count_file,
        todo,
        engine or Engine(workers=workers),
        describe=lambda t: t[1],
        on_done=lambda task, stats: bar.update(1) if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    return work_dir, sum_stats(listing(work_dir / "stats", "*.json"))
