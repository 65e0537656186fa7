"""Count words, bigrams and article titles over dumps, spilling each chunk's counts to disk.

Every chunk of pages becomes its own small set of parquet parts (`uni/`, `bi/`, `titles/`)
plus a `stats/` json written last, which marks the chunk complete. Nothing is summed in
memory across chunks: DuckDB aggregates the parts out of core afterwards (see
`aggregate.py`), so peak memory depends on the chunk size, not on the dump size. A rerun
skips chunks whose stats file exists, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..distribute import Engine, run_parts
from ..errors import InputError
from ..io import atomic_path, file_fingerprint, file_size, sum_stats
from ..progress import PostfixBar
from ..storage import listing
from ..wiki import dump as wd
from ..wiki.markup import clean_wikitext
from ..wiki.metaclip_words import MetaClipChunkCounts, count_chunk_metaclip
from ..wiki.sites import local_namespaces
from ..wiki.tokens import ChunkCounts, count_chunk
from ..wiki.worldwide_words import count_chunk_worldwide

STAT_KEYS = (
    "pages",
    "articles",
    "redirects",
    "other_namespaces",
    "tokens",
    "bytes_xml",
    "invalid_utf8_bytes",
)
WORK_FORMAT = 2  # bump when spill contents change, so stale work dirs are not reused
# How each recipe counts a chunk's cleaned article texts: (unigrams w, c[, d]; bigrams b, c; tokens).
COUNTERS: dict[str, Callable[[Sequence[str]], ChunkCounts | MetaClipChunkCounts]] = {
    "clip": count_chunk,
    "metaclip": count_chunk_metaclip,
}


@dataclass(frozen=True)
class CountTask:
    chunk_id: str
    # Plain dumps: (title, text) of the chunk's articles, read by the main process, plus the
    # page statistics it saw while reading them. Multistream: a byte range the worker reads.
    articles: list[tuple[str, str]] | None = None
    read_stats: dict | None = None
    byte_range: wd.ByteRange | None = None
    span: int = 0  # compressed bytes this task covers, for the progress bar
    lang: str | None = None  # worldwide: the dump's wiki code; its parts go to WORK/<lang>/
    namespaces: tuple[str, ...] = ()  # worldwide: the wiki's names of File/Media/Category


def _write_table(path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def run_count_task(task: CountTask, work_dir: str, recipe: str = "clip") -> dict:
    """Count one chunk and write its parts (to a local or shared remote work dir; the stats
    marker last). Runs in a worker process."""
    work = storage.location(work_dir)
    if task.lang is not None:
        work = work / task.lang
    stats = dict.fromkeys(STAT_KEYS, 0)
    if task.byte_range is not None:
        rs = wd.ReadStats()
        pages = wd.read_range_pages(task.byte_range, rs)
        stats.update(pages=len(pages), bytes_xml=rs.bytes_xml, invalid_utf8_bytes=rs.invalid_utf8_bytes)
        articles = []
        for p in pages:
            if p.is_article:
                articles.append((p.title, p.text))
            elif p.ns == 0:
                stats["redirects"] += 1
            else:
                stats["other_namespaces"] += 1
    else:
        articles = task.articles or []
        stats.update(task.read_stats or {})
    stats["articles"] = len(articles)

    texts = [clean_wikitext(text, task.namespaces) for _, text in articles]
    counts = count_chunk_worldwide(texts, task.lang) if task.lang is not None else COUNTERS[recipe](texts)
    stats["tokens"] = counts.tokens

    cid = task.chunk_id
    _write_table(work / "uni" / f"{cid}.parquet", counts.unigrams)
    _write_table(work / "bi" / f"{cid}.parquet", counts.bigrams)
    _write_table(
        work / "titles" / f"{cid}.parquet",
        pa.table(
            {
                "title": pa.array([t for t, _ in articles], pa.string()),
                "chunk": pa.array([cid] * len(articles), pa.string()),
                "pos": pa.array(range(len(articles)), pa.int32()),
            }
        ),
    )
    with atomic_path(work / "stats" / f"{cid}.json") as tmp:
        tmp.write_text(json.dumps(stats, sort_keys=True))
    return stats


def _plain_tasks(
    file_no: int,
    url: str,
    chunk_bytes: int,
    progress: Callable[[int], object] | None,
    lang: str | None = None,
    namespaces: tuple[str, ...] = (),
) -> Iterator[CountTask]:
    """Chunks of a plain dump, cut by article text volume (independent of worker count)."""
    rs = wd.ReadStats()
    chunk_no = 0
    articles: list[tuple[str, str]] = []
    size = 0
    seen = dict.fromkeys(STAT_KEYS, 0)
    counts = dict.fromkeys(STAT_KEYS, 0)

    def emit() -> CountTask:
        nonlocal chunk_no, articles, size, counts
        counts.update(
            bytes_xml=rs.bytes_xml - seen["bytes_xml"],
            invalid_utf8_bytes=rs.invalid_utf8_bytes - seen["invalid_utf8_bytes"],
        )
        seen.update(bytes_xml=rs.bytes_xml, invalid_utf8_bytes=rs.invalid_utf8_bytes)
        task = CountTask(
            f"f{file_no:04d}-c{chunk_no:06d}",
            articles=articles,
            read_stats=dict(counts),
            lang=lang,
            namespaces=namespaces,
        )
        chunk_no += 1
        articles, size, counts = [], 0, dict.fromkeys(STAT_KEYS, 0)
        return task

    for page in wd.iter_pages(url, rs, progress):
        counts["pages"] += 1
        if page.is_article:
            articles.append((page.title, page.text))
            size += len(page.text)
            if size >= chunk_bytes:
                yield emit()
        elif page.ns == 0:
            counts["redirects"] += 1
        else:
            counts["other_namespaces"] += 1
    if rs.pages == 0:
        raise InputError(f"{url}: no <page> elements found (empty or not a pages-articles dump)")
    if counts["pages"] or chunk_no == 0:
        yield emit()


def _multistream_tasks(
    file_no: int, url: str, index_url: str, chunk_bytes: int, lang: str | None = None, namespaces: tuple[str, ...] = ()
) -> list[CountTask]:
    offsets = wd.read_stream_offsets(index_url)
    # bz2 shrinks wikitext about 4x; cut ranges so each holds about chunk_bytes of XML.
    ranges = wd.stream_ranges(url, offsets, max(1, chunk_bytes // 4))
    size = file_size(url)
    return [
        CountTask(
            f"f{file_no:04d}-c{i:06d}",
            byte_range=r,
            span=(size if r.end is None else r.end) - r.start,
            lang=lang,
            namespaces=namespaces,
        )
        for i, r in enumerate(ranges)
    ]


def _code_version() -> str:
    """Spilled counts are only reusable if the cleaner and tokenizer have not changed."""
    from ..lang import segment
    from ..wiki import markup, metaclip_words, sites, tokens, worldwide_words

    h = hashlib.sha256()
    for module in (markup, tokens, metaclip_words, worldwide_words, segment, sites, wd):
        assert module.__file__ is not None  # imported from their source files
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def prepare_work_dir(work_dir, manifest: dict) -> None:
    """Reuse a work dir (local or remote) only if it was made from the same inputs,
    parameters and code."""
    manifest = {"format": WORK_FORMAT, "code": _code_version(), **manifest}
    path = work_dir / "manifest.json"
    if storage.is_remote(work_dir):
        work_dir.fs.invalidate_cache()
    if path.exists():
        try:
            if json.loads(path.read_text()) == manifest:
                return
        except ValueError:
            pass
        if storage.is_remote(work_dir):
            storage.rmtree(work_dir)
        else:
            shutil.rmtree(work_dir)  # unlike storage.rmtree, a failed removal is an error
    if not storage.is_remote(work_dir):  # an object store has no folders to make
        work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, sort_keys=True))


def count_dumps(
    urls: list[str],
    work_dir,
    workers: int = 1,
    chunk_mb: float = 8.0,
    progress_factory: Callable[[int], PostfixBar] | None = None,
    log: Callable[[str], None] = lambda msg: None,
    engine: Engine | None = None,
    recipe: str = "clip",
    langs: Sequence[str] | None = None,
) -> dict:
    """Count every dump into `work_dir` (a local path or a remote location, see `storage`)
    with the recipe's word rule; returns summed statistics over all chunks.

    `langs` (the worldwide recipe): each dump's wiki code. Its chunks are counted with that
    language's words (`worldwide_words`) into `work_dir/<lang>/`, every language's chunks in
    one run of the distributor; the statistics then also hold ``languages``: each one's sums."""
    chunk_bytes = int(chunk_mb * (1 << 20))
    work_dir = storage.location(work_dir)
    file_langs: list[str | None] = list(langs) if langs is not None else [None] * len(urls)
    manifest = {"chunk_mb": chunk_mb, "inputs": [file_fingerprint(u) for u in urls], "recipe": recipe}
    if langs is not None:
        manifest["languages"] = list(langs)
    prepare_work_dir(work_dir, manifest)
    stat_dirs = {lang: (work_dir / lang if lang else work_dir) / "stats" for lang in dict.fromkeys(file_langs)}
    done = {(lang, p.stem) for lang, folder in stat_dirs.items() for p in listing(folder, "*.json")}
    if done:
        log(f"resuming: {len(done)} chunks already counted in {work_dir}")

    bar = progress_factory(sum(file_size(u) for u in urls)) if progress_factory else None
    advance = bar.update if bar is not None else None
    pages_done = 0

    def tasks() -> Iterator[CountTask]:
        for file_no, (url, lang) in enumerate(zip(urls, file_langs)):
            index_url = wd.multistream_index_url(url)
            namespaces = local_namespaces(url) if lang is not None else ()
            if index_url is None:
                plain = _plain_tasks(file_no, url, chunk_bytes, advance, lang, namespaces)
                yield from (t for t in plain if (lang, t.chunk_id) not in done)
                continue
            log(f"{url}: multistream index found ({index_url}): workers decompress in parallel")
            for t in _multistream_tasks(file_no, url, index_url, chunk_bytes, lang, namespaces):
                if (lang, t.chunk_id) not in done:
                    yield t
                elif advance:
                    advance(t.span)

    def finished(task: CountTask, stats: dict) -> None:
        nonlocal pages_done
        pages_done += stats["pages"]
        if bar is not None:
            if task.span:
                bar.update(task.span)
            bar.set_postfix(pages=f"{pages_done:,}", refresh=False)

    run_parts(
        partial(run_count_task, work_dir=storage.url(work_dir), recipe=recipe),
        tasks(),
        engine or Engine(workers=workers),
        on_done=finished,
        describe=lambda t: t.chunk_id,
    )
    if bar is not None:
        bar.close()

    per_lang = {
        lang: {**dict.fromkeys(STAT_KEYS, 0), **sum_stats(listing(folder, "*.json"))}
        for lang, folder in stat_dirs.items()
    }
    totals: dict = {}
    for stats in per_lang.values():
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    if totals["articles"] == 0:
        raise InputError(f"{', '.join(urls)}: no namespace-0 articles found")
    if langs is not None:
        totals["languages"] = {lang: per_lang[lang] for lang in sorted(filter(None, per_lang))}
    return totals
