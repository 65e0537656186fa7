"""Build CLIP's query list: WordNet, Wikipedia unigrams, PMI bigrams, viewed titles.

Sources are combined in that order; a query already taken by an earlier source is skipped
(first source wins) and does not use up the later source's quota, as in MetaCLIP's list
(86,654 WordNet + 251,465 unigrams + 100,646 bigrams + 61,235 titles = 500,000). The
recipe (`recipes.py`) decides how words are counted and which rules select each source.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__, storage
from ..distribute import Engine
from ..errors import InputError
from ..io import atomic_path, expand_inputs, file_fingerprint
from ..lang.codes import bucket
from ..layout import BUILD, QUERIES, QUERIES_TXT
from ..options import MEMORY_LIMIT
from ..outlock import hold
from ..progress import bar_factory
from ..wiki.sites import dump_languages
from ..workers import default_workers
from . import worldwide
from .aggregate import Aggregates
from .combine import Row, combine
from .counting import count_dumps
from .omw import read_lemmas
from .pageview_counting import count_pageviews, split_by_language
from .recipes import Rules, is_entry, metaclip_wordnet, resolve_rules
from .wordnet import read_head_words

SOURCES = ("wordnet", "unigram", "bigram", "title")

SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("source", pa.string()),
        ("count", pa.int64()),
        ("pmi", pa.float64()),
        ("views", pa.int64()),
    ]
)


@dataclass
class QueryParams:
    wiki_dump: list[str]
    wordnet: str | None = None
    pageviews: list[str] = field(default_factory=list)
    out: str = "query_lists"
    recipe: str = "clip"
    # Thresholds and caps; None takes the recipe's default (recipes.DEFAULTS), "none" lifts
    # a cap or the PMI floor.
    min_count: int | None = None
    max_unigrams: int | None = None
    unigram_case: str | None = None
    min_doc_freq: int | None = None
    min_bigram_count: int | None = None
    min_pmi: float | None = None
    max_bigrams: int | None = None
    min_views: int | None = None
    min_hourly_views: int | None = None
    max_titles: int | None = None
    size: int | None = None
    # worldwide only (see worldwide.py)
    omw: str | None = None
    bigram_rule: str | None = None
    unigram_share: float | None = None
    bigram_share: float | None = None
    title_share: float | None = None
    workers: int = field(default_factory=default_workers)
    engine: str = "local"
    ray_address: str | None = None
    max_part_retries: int = 2
    memory_limit: str = MEMORY_LIMIT
    chunk_mb: float = 8.0
    work_dir: str | None = None
    keep_work: bool = False
    quiet: bool = False


RULE_NAMES = (
    "min_count",
    "max_unigrams",
    "unigram_case",
    "min_doc_freq",
    "min_bigram_count",
    "min_pmi",
    "max_bigrams",
    "min_views",
    "min_hourly_views",
    "max_titles",
    "size",
)


def rules_of(p: QueryParams) -> Rules:
    return resolve_rules(p.recipe, **{name: getattr(p, name) for name in RULE_NAMES})


@contextlib.contextmanager
def output_folders(p: QueryParams, log) -> Iterator[tuple]:
    """(out, work) for the run, each checked writable and held (outlock) while it runs; the
    work folder is removed after success unless kept or given (`--work-dir`)."""
    out = storage.location(p.out)
    work = storage.location(p.work_dir) if p.work_dir else out / ".work"
    # A missing bucket or absent credentials: one line now, not a failure in every worker.
    storage.check_writable(out, "--out")
    if p.work_dir:
        storage.check_writable(work, "--work-dir")
    # One writer per folder (outlock): a second run on the same --out or --work-dir would
    # clear or mix this one's chunks. Taken after the cheap checks, before anything is written.
    with contextlib.ExitStack() as held:
        held.enter_context(hold(p.out, "queries", log))
        if p.work_dir:
            held.enter_context(hold(p.work_dir, "queries", log))
        yield out, work
        if not p.keep_work and not p.work_dir:
            storage.rmtree(work)


def build_queries(p: QueryParams) -> dict:
    """Run the whole stage; returns the build report (also written as build.json)."""
    log = (lambda msg: None) if p.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 3)
        return now

    if p.recipe == "worldwide":
        return build_worldwide(p, log, t0, timings, lap)
    if p.wordnet is None:
        raise InputError(f"--wordnet is required by --recipe {p.recipe}")
    for name in ("omw", *worldwide.OPTION_NAMES):
        if getattr(p, name) is not None:
            raise InputError(f"--{name.replace('_', '-')} applies to --recipe worldwide only")
    rules = rules_of(p)
    dumps = expand_inputs(p.wiki_dump, "wiki dump")
    pageviews = expand_inputs(p.pageviews, "pageviews") if p.pageviews else []
    with output_folders(p, log) as (out, work):
        t = time.monotonic()
        wn = read_head_words(p.wordnet)
        log(f"wordnet: {wn.synsets:,} synsets, {len(wn.words):,} distinct head words")
        t = lap("wordnet", t)

        engine = Engine(p.engine, p.workers, p.ray_address, p.max_part_retries)
        dump_stats = count_dumps(
            dumps,
            work / "dump",
            workers=p.workers,
            chunk_mb=p.chunk_mb,
            progress_factory=bar_factory(p.quiet, "counting words", "B", data_size=True),
            log=log,
            engine=engine,
            recipe=rules.recipe,
        )
        t = lap("count_dump", t)

        pv_stats: dict | None = None
        pv_glob = None
        if pageviews:
            pv_glob, pv_stats = count_pageviews(
                pageviews,
                work / "pageviews",
                workers=p.workers,
                recipe=rules.recipe,
                min_hourly_views=rules.min_hourly_views,
                progress_factory=bar_factory(p.quiet, "pageviews", "file"),
                engine=engine,
            )
            t = lap("count_pageviews", t)
        else:
            log(
                "no --pageviews given: titles come from the dump's article titles, in dump order, "
                "with no view threshold"
            )

        agg = Aggregates(work / "dump", memory_limit=p.memory_limit, threads=p.workers)
        try:
            agg_stats = agg.build(rules.min_bigram_count, rules.min_doc_freq)
            t = lap("aggregate", t)
            rows, report = select_queries(agg, rules, wn.words, pv_glob)
            t = lap("select", t)
        finally:
            agg.close()

        for name in SOURCES:
            if report[name]["added"] == 0:
                log(f"warning: source '{name}' contributed no queries (thresholds too high for this input?)")

        build = {
            "tool": {"name": "pipeline queries", "version": __version__},
            "recipe": rules.recipe,
            "inputs": {
                "wiki_dump": [file_fingerprint(u) for u in dumps],
                "pageviews": [file_fingerprint(u) for u in pageviews],
                "wordnet": p.wordnet,
            },
            # Workers, engine and memory only change speed, never the result; these do.
            "parameters": {**rules.as_dict(), "chunk_mb": p.chunk_mb},
            "titles_from": "pageviews" if pageviews else "dump (no pageviews given)",
            "total": len(rows),
            "sources": report,
            "wordnet": {
                "synsets": wn.synsets,
                "synsets_by_pos": wn.synsets_by_pos,
                "distinct_head_words": len(wn.words),
            },
            "dump": {**dump_stats, **agg_stats},
            "pageviews": pv_stats,
            "timings_s": timings,
            # when the list was made: with the timings, the only fields that differ between runs
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        timings["total"] = round(time.monotonic() - t0, 3)
        write_outputs(out, rows, build)
        log(
            f"wrote {len(rows):,} queries to {storage.url(out)}/ (recipe {rules.recipe}): "
            + ", ".join(f"{n} {report[n]['added']:,}" for n in SOURCES)
        )
        return build


def build_worldwide(p: QueryParams, log, t0: float, timings: dict, lap) -> dict:
    """The worldwide recipe's stage (`worldwide.py`): every dump counted as its language in
    one run of the distributor, then each edition selected by its own rules."""
    rules = worldwide.resolve({name: getattr(p, name) for name in (*RULE_NAMES, *worldwide.OPTION_NAMES)})
    langs_urls = dump_languages(p.wiki_dump)
    langs = [lang for lang, _ in langs_urls]
    editions = sorted(set(langs))
    pageviews = expand_inputs(p.pageviews, "pageviews") if p.pageviews else []
    with output_folders(p, log) as (out, work):
        t = time.monotonic()
        omw = read_lemmas(p.omw, set(editions)) if p.omw else None
        english_wn = None
        if "en" in editions and p.wordnet:
            english_wn = read_head_words(p.wordnet)
        t = lap("wordnet", t)
        log(f"worldwide: {len(langs_urls)} dumps in {len(editions)} languages: {', '.join(editions)}")

        engine = Engine(p.engine, p.workers, p.ray_address, p.max_part_retries)
        dump_stats = count_dumps(
            [u for _, u in langs_urls],
            work / "dump",
            workers=p.workers,
            chunk_mb=p.chunk_mb,
            progress_factory=bar_factory(p.quiet, "counting words", "B", data_size=True),
            log=log,
            engine=engine,
            recipe="worldwide",
            langs=langs,
        )
        t = lap("count_dump", t)
        pv_stats: dict | None = None
        pv_folders: dict = {}
        if pageviews:
            pv_dir, pv_stats = count_pageviews(
                pageviews,
                work / "pageviews",
                workers=p.workers,
                recipe="worldwide",
                min_hourly_views=rules.min_hourly_views,
                progress_factory=bar_factory(p.quiet, "pageviews", "file"),
                engine=engine,
                langs=editions,
            )
            pv_folders = split_by_language(pv_dir, editions, p.memory_limit, p.workers)
            t = lap("count_pageviews", t)
        else:
            log("no --pageviews given: titles come from each dump's article titles, in dump order")

        selected: dict[str, worldwide.Selected] = {}
        for lang in editions:
            agg = Aggregates(work / "dump" / lang, memory_limit=p.memory_limit, threads=p.workers)
            try:
                wn = worldwide.wordnet_for(
                    lang, omw.lemmas if omw else {}, (lambda: english_wn.words) if english_wn else None
                )
                selected[lang] = worldwide.select_language(agg, rules, lang, wn, pv_folders.get(lang))
            finally:
                agg.close()
        t = lap("select", t)
        merged, buckets = worldwide.merge_buckets(selected)
        languages = {}
        for lang in editions:
            languages[lang] = {
                "bucket": bucket(lang),
                "dumps": [u for code, u in langs_urls if code == lang],
                "dump": dump_stats["languages"][lang],
                **selected[lang].report,
            }
            if selected[lang].report["sources"]["unigram"]["added"] == 0:
                log(f"warning: {lang}: no unigrams selected (empty dump?)")
        build = {
            "tool": {"name": "pipeline queries", "version": __version__},
            "recipe": "worldwide",
            "inputs": {
                "wiki_dump": [{"lang": lang, **file_fingerprint(u)} for lang, u in langs_urls],
                "pageviews": [file_fingerprint(u) for u in pageviews],
                "wordnet": p.wordnet,
                "omw": p.omw,
            },
            "parameters": {**rules.as_dict(), "chunk_mb": p.chunk_mb},
            "titles_from": "pageviews" if pageviews else "dump (no pageviews given)",
            "total": len(merged),
            "sources": {
                name: {"added": sum(s.report["sources"][name]["added"] for s in selected.values())}
                for name in worldwide.SOURCES
            },
            "buckets": buckets,
            "languages": languages,
            "unsegmented_languages": sorted(lang for lang in editions if languages[lang]["segmenter"] is False),
            "omw": None
            if omw is None
            else {
                "files": omw.files,
                "lemmas": {k: len(v) for k, v in omw.lemmas.items()},
                "skipped_no_dump": omw.no_dump,
                "skipped_no_wikipedia_mapping": omw.unmapped,
                "bad_lines": omw.bad_lines,
            },
            "pageviews": pv_stats,
            "dump": {k: v for k, v in dump_stats.items() if k != "languages"},
            "timings_s": timings,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        timings["total"] = round(time.monotonic() - t0, 3)
        rows = [row for row, _, _ in merged]
        extra = {
            "lang": pa.array([b for _, b, _ in merged], pa.string()),
            "wiki": pa.array([w for _, _, w in merged], pa.string()),
        }
        write_outputs(out, rows, build, extra)
        log(
            f"wrote {len(rows):,} queries in {len(buckets)} languages to {storage.url(out)}/ (recipe worldwide): "
            + ", ".join(f"{b} {info['queries']:,}" for b, info in buckets.items())
        )
        return build


def select_queries(
    agg: Aggregates, rules: Rules, wordnet_words: list[str], pageview_dir=None
) -> tuple[list[Row], dict]:
    """The recipe's selection over built aggregates: the list and its per-source report.
    `pageview_dir` holds the summed pageview parts; without it, titles come from the dump."""
    titles: Iterator[Row]
    if pageview_dir is not None:
        titles = (
            Row(q, "title", views=v)
            for q, v in agg.viewed_titles(pageview_dir, rules.min_views, dump_articles_only=rules.recipe == "clip")
        )
    else:
        titles = (Row(q, "title") for q, _ in agg.dump_titles())
    metaclip = rules.recipe == "metaclip"
    wordnet = metaclip_wordnet(wordnet_words) if metaclip else wordnet_words
    rows, report = combine(
        [
            ("wordnet", (Row(w, "wordnet") for w in wordnet), None),
            (
                "unigram",
                (Row(w, "unigram", count=c) for w, c in agg.unigrams(rules.min_count, rules.unigram_case)),
                rules.max_unigrams,
            ),
            (
                "bigram",
                (Row(b, "bigram", count=c, pmi=pmi) for b, c, pmi in agg.bigrams(rules.min_pmi)),
                rules.max_bigrams,
            ),
            ("title", titles, rules.max_titles),
        ],
        rules.size,
        accept=is_entry if metaclip else None,
    )
    for row, c in zip(rows, agg.occurrence_counts([r.query for r in rows])):
        if row.count is None:
            row.count = c
    return rows, report


def write_outputs(out: Path, rows: list[Row], build: dict, extra: dict[str, pa.Array] | None = None) -> None:
    """queries.parquet, queries.txt, build.json; each renamed into place (local) or uploaded
    whole (remote `out`) only when complete. `extra`: more columns (worldwide: lang, wiki)."""
    for r in rows:
        if "\n" in r.query or "\r" in r.query:
            raise InputError(f"query {r.query!r} from {r.source} contains a line break")
    table = pa.table(
        {
            "query": [r.query for r in rows],
            "source": [r.source for r in rows],
            "count": [r.count for r in rows],
            "pmi": [r.pmi for r in rows],
            "views": [r.views for r in rows],
        },
        schema=SCHEMA,
    )
    for name, column in (extra or {}).items():
        table = table.append_column(name, column)
    if not storage.is_remote(out):  # an object store has no folders to make
        out.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(out / QUERIES) as tmp_parquet,
        atomic_path(out / QUERIES_TXT) as tmp_txt,
        atomic_path(out / BUILD) as tmp_json,
    ):
        pq.write_table(table, tmp_parquet, compression="zstd")
        tmp_txt.write_text("".join(r.query + "\n" for r in rows), encoding="utf-8")
        tmp_json.write_text(json.dumps(build, indent=2, sort_keys=False) + "\n", encoding="utf-8")
