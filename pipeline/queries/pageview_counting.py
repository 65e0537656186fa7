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
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from .. import duck, storage
from ..distribute import Engine, run_parts
from ..io import atomic_path, file_fingerprint, sql_file_list, sum_stats
from ..lang.codes import wikipedias
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


def wikipedia_domains(langs: Iterable[str]) -> dict[str, str]:
    """Pageview domain codes of the Wikipedias of `langs` (wiki codes) -> their wiki code:
    desktop ``zh-yue``, mobile ``zh-yue.m`` (hourly files), ``zh-yue.wikipedia`` (daily and
    monthly files; pagecounts-ez's ``zh-yue.z`` follows from it). MetaCLIP 2 also sums the
    sister projects (``de.b``, ``de.d``...) into a language; a Wiktionary or Wikibooks
    title is not a Wikipedia article, so we do not."""
    out = {}
    for lang in langs:
        dash = lang.replace("_", "-")
        for suffix in ("", ".m", ".wikipedia"):
            out[dash + suffix] = lang
    return out


def _count_file(args: tuple) -> dict:
    i, url, work_dir, recipe, min_hourly_views, langs = args
    work = storage.location(work_dir)
    if recipe == "worldwide":
        domain_lang = wikipedia_domains(langs)
        views, stats = file_title_views(url, domain_lang, min_hourly_views=min_hourly_views, by_domain=True)
        merged_by: dict[tuple[str, str], int] = {}
        for key, v in views.items():
            domain, _, title = key.partition(" ")
            t = normalise_title(title)
            if t:
                k = (domain_lang[domain], t)
                merged_by[k] = merged_by.get(k, 0) + v
        keys = sorted(merged_by)
        columns = {
            "lang": pa.array([k[0] for k in keys], pa.string()),
            "title": pa.array([k[1] for k in keys], pa.string()),
            "views": pa.array([merged_by[k] for k in keys], pa.int64()),
        }
        stats["other_domains"] = _without_dump(stats.get("other_domains", {}))
    else:
        domains, formats, normalise = RULES[recipe]
        views, stats = file_title_views(url, domains=domains, min_hourly_views=min_hourly_views, formats=formats)
        merged: dict[str, int] = {}
        for title, v in views.items():
            t = normalise(title)
            if t:
                merged[t] = merged.get(t, 0) + v
        columns = {"title": pa.array(list(merged), pa.string()), "views": pa.array(list(merged.values()), pa.int64())}
    with atomic_path(work / "parts" / f"{i:06d}.parquet") as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
    with atomic_path(work / "stats" / f"{i:06d}.json") as tmp:
        tmp.write_text(json.dumps(stats, sort_keys=True))
    return stats


def _without_dump(other_domains: dict[str, int]) -> dict[str, int]:
    """Lines of other domains that are a Wikipedia we have no dump for (desktop or mobile
    code of a known language), per wiki code: the build reports them."""
    out: dict[str, int] = {}
    for domain, n in other_domains.items():
        code, _, project = domain.partition(".")
        code = code.replace("-", "_")
        if project in ("", "m", "wikipedia", "z") and code in wikipedias():
            out[code] = out.get(code, 0) + n
    return out


def count_pageviews(
    urls: list[str],
    work_dir,
    workers: int = 1,
    recipe: str = "clip",
    min_hourly_views: int = 50,
    progress_factory=None,
    engine: Engine | None = None,
    langs: Iterable[str] = (),
) -> tuple[Path, dict]:
    """Returns (the work dir holding parts/*.parquet, summed line statistics); the work dir
    may be local or remote (see `storage`). `recipe` picks the domains, formats and title
    rule (`RULES`): clip reads desktop and daily/monthly "en.wikipedia" lines and decodes
    percent-escapes; metaclip reads only hourly files' "en " (desktop) lines, as MetaCLIP did."""
    work_dir = storage.location(work_dir)
    langs = tuple(sorted(langs))
    prepare_work_dir(
        work_dir,
        {
            "inputs": [file_fingerprint(u) for u in urls],
            "recipe": recipe,
            "min_hourly_views": min_hourly_views,
            "languages": sorted(langs),
        },
    )
    done = {p.name for p in listing(work_dir / "stats", "*.json")}
    todo = [
        (i, u, storage.url(work_dir), recipe, min_hourly_views, langs)
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
    stat_files = listing(work_dir / "stats", "*.json")
    totals = sum_stats(stat_files)
    if recipe == "worldwide":
        without: dict[str, int] = {}
        for path in stat_files:
            for code, n in json.loads(storage.location(path).read_text()).get("other_domains", {}).items():
                without[code] = without.get(code, 0) + n
        totals["lines_of_languages_without_a_dump"] = dict(sorted(without.items()))
    return work_dir, totals


def split_by_language(work_dir, langs: Iterable[str], memory_limit: str, threads: int = 1) -> dict[str, object]:
    """Worldwide: each language's title views, summed over all files, into
    ``WORK/by_lang/<lang>/parts/views.parquet``, the layout `Aggregates.viewed_titles` reads;
    returns each language's folder. One DuckDB pass over the parts (a part per file holds
    every language, so a year of hourly files stays 8,760 parts, not one per language)."""
    work_dir = storage.location(work_dir)
    parts = listing(work_dir / "parts", "*.parquet")
    folders = {lang: work_dir / "by_lang" / lang for lang in sorted(langs)}
    with tempfile.TemporaryDirectory(prefix="pageviews-split-") as tmp:
        con = duck.connect(memory_limit=memory_limit, temp_directory=tmp, threads=threads, remote=[work_dir])
        try:
            if parts:
                con.execute(
                    "CREATE TABLE views AS SELECT lang, title, sum(views)::BIGINT AS views "
                    f"FROM read_parquet({sql_file_list([storage.url(p) for p in parts])}) GROUP BY lang, title"
                )
            for lang, folder in folders.items():
                if parts:
                    table = con.sql(
                        "SELECT title, views FROM views WHERE lang = $lang ORDER BY title", params={"lang": lang}
                    ).to_arrow_table()
                else:
                    table = pa.table({"title": pa.array([], pa.string()), "views": pa.array([], pa.int64())})
                with atomic_path(folder / "parts" / "views.parquet") as out:
                    pq.write_table(table, out, compression="zstd")
        finally:
            con.close()
    return dict(folders)
