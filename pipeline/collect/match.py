"""Match: which queries each text contains (CLIP: keep a pair whose text contains a query).

A query matches where it occurs in the text as a whole word or phrase: the character before
its start and the one after its end must not be word characters. A word character is a
Unicode letter or digit (``str.isalnum()``) or a combining mark (category M): marks belong
to the letter they modify, as in `pipeline.wiki.tokens`, so ``cafe`` does not match inside
a decomposed ``cafe\\u0301`` nor a Devanagari stem inside a word that goes on with a vowel
sign. Everything else (space, punctuation, ``_``, ``'``, ``-``) is a boundary: ``dog's``
and ``(dog)`` contain ``dog``. Overlapping matches all count: ``New York City`` contains
``New York``, ``York`` and ``City``. Matching is case-sensitive unless ``ignore_case``.

How it stays fast with 500k queries: one Aho-Corasick automaton (pyahocorasick) scans each
text once. Checking boundaries in Python for every raw hit would be slow, because short
queries hit inside most words (``a`` in ``cat``). So both the queries and the text get a
marker (NUL) at every switch between word and non-word characters; the key of ``dog`` is
``\\0dog\\0``, and the automaton only reports occurrences that begin and end at word
boundaries. Only queries that begin or end with a non-word character (``C++``, ``.NET``)
need a check in Python: "is the marked text's neighbour a marker?". A NUL in a text or
query is read as U+0001 (another non-word character), as the marker needs NUL.

That is the ``clip`` recipe. ``--recipe metaclip`` swaps in `MetaClipMatcher`, MetaCLIP
v1's substring rule, to reproduce MetaCLIP's curation exactly; see its docstring.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import IO, Any

import ahocorasick
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..distribute import Engine, run_parts
from ..errors import InputError
from ..io import atomic_path, expand_inputs
from ..lang import lid
from ..lang.codes import OTHER
from ..lang.scripts import no_space_edge
from ..layout import part_counts, part_stats
from ..storage import location
from ..wiki.tokens import MARKS
from .config import MatchConfig

MARK = "\x00"
STAT_KEYS = ("rows", "matched", "dropped_no_match", "null_text", "matches")
OUT_SCHEMA = pa.schema([("uid", pa.string()), ("query_ids", pa.list_(pa.int32()))])
# worldwide: each matched text's language bucket too
OUT_SCHEMA_LANG = OUT_SCHEMA.append(pa.field("lang", pa.string()))
BATCH_ROWS = 16_384  # rows read at a time from a pool part
FLUSH_ROWS = 131_072  # matched rows per output row group


# Runs of word characters. ASCII text (most alt-text) takes the simpler class, twice as
# fast; it agrees with the full one on ASCII. Marks: the tokenizer's (BMP only).
_WORD_RUN = re.compile(r"((?:[^\W_]|[%s])+)" % MARKS)
_ASCII_WORD_RUN = re.compile(r"([A-Za-z0-9]+)")

# Per-character lowercase that keeps every offset: str.lower() turns 'İ' into two
# characters and 'Σ' into 'ς' or 'σ' depending on its neighbours. We map 'İ' -> 'i' and
# both sigmas -> 'σ'; every other character lowers to exactly one character, context-free
# (checked over all of Unicode), and keeps its word/non-word class.
_FOLD_SPECIAL = {"\u0130": "i", "\u03a3": "\u03c3", "\u03c2": "\u03c3"}


def fold_case(text: str) -> str:
    """Lowercase `text` character by character; the result has the same length."""
    if text.isascii():
        return text.lower()
    if "\u0130" in text or "\u03a3" in text or "\u03c2" in text:
        return "".join([_FOLD_SPECIAL.get(c) or c.lower() for c in text])
    return text.lower()


def mark_boundaries(text: str) -> str:
    """`text` with MARK inserted at every switch between word and non-word characters
    (text start and end count as non-word): ``"a dog."`` -> ``"\\0a\\0 \\0dog\\0."``."""
    if MARK in text:
        text = text.replace(MARK, "\x01")
    run = _ASCII_WORD_RUN if text.isascii() else _WORD_RUN
    return MARK.join(run.split(text))  # split keeps the runs: [gap, run, gap, ..., gap]


class QueryMatcher:
    """All queries of a list in one automaton; `match(text)` gives the ids found in a text.

    Automaton values are the query id, or a tuple of ids where several queries share a key
    (``Gas``/``gas`` under ignore_case, duplicates) or where the key needs the boundary
    check in Python (then `self.edges` holds its key length and which ends to check).
    The object pickles (pyahocorasick automata do), but the stage's workers each rebuild it
    from the query list instead: for 500k queries a build takes ~2-2.5 s, while shipping a
    pickle costs the parent a build plus ~1 s to dump 114 MB, and each worker ~0.3 s to
    load it, so parallel builds finish first (bench/match.py measures both).
    """

    def __init__(self, queries: Sequence[str | None], ignore_case: bool = False):
        self.ignore_case = ignore_case
        groups: dict[str, list[int]] = {}
        for qid, query in enumerate(queries):
            if query is None or not query.strip():
                continue  # empty and whitespace-only queries would match everywhere
            groups.setdefault(self._prepare(query), []).append(qid)
        self.edges: dict[tuple, tuple[int, bool, bool]] = {}
        self.automaton = ahocorasick.Automaton()
        for key, ids in groups.items():
            check_start, check_end = key[0] != MARK, key[-1] != MARK
            value: int | tuple[int, ...]  # the automaton's payload: one id, or a tuple of them
            if check_start or check_end:
                value = tuple(ids)
                self.edges[value] = (len(key), check_start, check_end)
            else:
                value = ids[0] if len(ids) == 1 else tuple(ids)
            self.automaton.add_word(key, value)
        self.size = sum(len(ids) for ids in groups.values())  # queries in the automaton
        if self.size:
            self.automaton.make_automaton()

    def _prepare(self, text: str) -> str:
        return mark_boundaries(fold_case(text) if self.ignore_case else text)

    def match(self, text: str | None) -> list[int]:
        """Sorted unique ids of every query occurring in `text` at word boundaries."""
        if not text or not self.size:
            return []
        marked = self._prepare(text)
        edges, ids = self.edges, set()
        for end, value in self.automaton.iter(marked):
            if value.__class__ is int:
                ids.add(value)
                continue
            edge = edges.get(value)
            if edge is not None:
                start = end - edge[0] + 1
                if edge[1] and start > 0 and marked[start - 1] == MARK:
                    continue  # a word character touches the query's first character
                if edge[2] and end + 1 < len(marked) and marked[end + 1] == MARK:
                    continue  # ... or its last
            ids.update(value)
        return sorted(ids)


# MetaCLIP v1 (`substr_matching`): these are surrounded by spaces, these become a space.
METACLIP_PUNCT = ",.;:?!`"
METACLIP_SPACED = "\t\n\r"
RECIPES = ("clip", "metaclip", "worldwide")


def metaclip_spacing(text: str, pad: bool = True) -> str:
    """MetaCLIP v1's text normalisation: pad with a space at both ends, surround each of
    ``, . ; : ? !`` and backtick with spaces, turn tab/newline/CR into spaces."""
    for c in METACLIP_PUNCT:  # a guarded replace per character: 3x faster than str.translate
        if c in text:
            text = text.replace(c, f" {c} ")
    for c in METACLIP_SPACED:
        if c in text:
            text = text.replace(c, " ")
    return f" {text} " if pad else text


def _metaclip_can_occur(key: str) -> bool:
    """Whether `key` occurs in some normalised text: each wrapped character in it has a
    space of its own on both sides, and it has no tab/newline/CR. Undoing the wrapping and
    redoing it gives `key` back exactly then (it is then the normalised text of the undone one)."""
    undone = key
    for c in METACLIP_PUNCT:
        if c in undone:
            undone = undone.replace(f" {c} ", c)
    return metaclip_spacing(undone, pad=False) == key


class MetaClipMatcher:
    """MetaCLIP v1's rule: an entry matches when ``" " + entry + " "`` occurs in
    `metaclip_spacing(text)`; case-sensitive, whole-string, no word-boundary logic.

    So ``(dog)`` and ``dog's`` do not contain ``dog``, ``big  dog`` (two spaces) contains
    ``dog`` but not ``big dog``, and ``東京タワー`` does not contain ``東京``. An entry with
    a tab/newline/CR, or with a wrapped character not between spaces of its own (``U.S.
    Army``, ``Yahoo!``, ``a . . b``), can never match: the normalised text has none of those,
    so such entries are left out of the automaton. One whose wrapped characters already stand
    between spaces does match (``dog !`` in ``dog!``), as in MetaCLIP's code. Unlike
    MetaCLIP's loop, empty and whitespace-only entries never match (as in `QueryMatcher`).
    Same interface and output as `QueryMatcher` (sorted unique ids); one Aho-Corasick
    automaton over the space-wrapped keys keeps the speed of the default matcher: every
    reported hit is a match, overlapping ones included, with no check in Python.
    """

    ignore_case = False

    def __init__(self, queries: Sequence[str | None]):
        groups: dict[str, list[int]] = {}
        special = set(METACLIP_PUNCT + METACLIP_SPACED)
        for qid, query in enumerate(queries):
            if query is None or not query.strip():
                continue
            key = f" {query} "
            if not special.isdisjoint(query) and not _metaclip_can_occur(key):
                continue
            groups.setdefault(key, []).append(qid)
        self.automaton = ahocorasick.Automaton()
        for key, ids in groups.items():
            self.automaton.add_word(key, ids[0] if len(ids) == 1 else tuple(ids))
        self.size = sum(len(ids) for ids in groups.values())  # queries in the automaton
        if self.size:
            self.automaton.make_automaton()

    def match(self, text: str | None) -> list[int]:
        """Sorted unique ids of every entry whose space-wrapped form occurs in the text."""
        if not text or not self.size:
            return []
        ids = set()
        for _, value in self.automaton.iter(metaclip_spacing(text)):
            if value.__class__ is int:
                ids.add(value)
            else:
                ids.update(value)
        return sorted(ids)


def worldwide_key(entry: str) -> str:
    """MetaCLIP 2's spaced entry (``get_spaced_metadata``): a space on each side whose edge
    character is not of a script written without spaces (CJK, Thai, Lao, Burmese, Khmer,
    Tibetan) nor punctuation (`pipeline.lang.scripts.no_space_edge`)."""
    if not no_space_edge(entry[0]):
        entry = " " + entry
    if not no_space_edge(entry[-1]):
        entry = entry + " "
    return entry


class WorldwideMatcher:
    """MetaCLIP 2's rule, per language: an entry of the text's language matches when its
    `worldwide_key` occurs in `metaclip_spacing(text)`; case-sensitive, no word-boundary
    logic, so ``东京`` matches inside ``东京大学`` (no pad beside a Han character) while
    ``dog`` needs a space or wrapped punctuation on both sides, as in MetaCLIP v1.

    One automaton per language bucket (the query list's ``lang``). `answerable`: the
    buckets the language identifier can answer; entries of the other buckets are pooled
    into ``other``, which is also where a text goes whose language has no entries, as
    MetaCLIP 2's ``align_lid_to_wiki.py`` and ``lid_langcode_to_metadata_langcode`` do.
    `match(text, lang)` gives sorted unique ids, like the other matchers.
    """

    ignore_case = False

    def __init__(self, queries: Sequence[str | None], langs: Sequence[str | None], answerable=None):
        groups: dict[str, dict[str, list[int]]] = {}
        for qid, (query, lang) in enumerate(zip(queries, langs)):
            if query is None or not query.strip() or lang is None:
                continue
            bucket = lang if answerable is None or lang in answerable else OTHER
            groups.setdefault(bucket, {}).setdefault(worldwide_key(query), []).append(qid)
        self.automata: dict[str, ahocorasick.Automaton] = {}
        for bucket, keys in groups.items():
            automaton = ahocorasick.Automaton()
            for key, ids in keys.items():
                automaton.add_word(key, ids[0] if len(ids) == 1 else tuple(ids))
            automaton.make_automaton()
            self.automata[bucket] = automaton
        self.size = sum(len(ids) for keys in groups.values() for ids in keys.values())

    def bucket_of(self, lang: str | None) -> str:
        return lang if lang in self.automata else OTHER

    def match(self, text: str | None, lang: str | None = None) -> list[int]:
        """Sorted unique ids of the entries of `lang`'s bucket found in the text."""
        automaton = self.automata.get(self.bucket_of(lang))
        if not text or automaton is None:
            return []
        ids = set()
        for _, value in automaton.iter(metaclip_spacing(text)):
            if value.__class__ is int:
                ids.add(value)
            else:
                ids.update(value)
        return sorted(ids)


Matcher = QueryMatcher | MetaClipMatcher | WorldwideMatcher


def make_matcher(
    queries: Sequence[str | None], config: MatchConfig, langs: Sequence[str | None] | None = None
) -> Matcher:
    """The matcher of the config's recipe. MetaCLIP matches case-sensitively only: folding
    case would not reproduce it, so `ignore_case` with ``metaclip`` or ``worldwide`` is
    refused. ``worldwide`` needs the list's `langs` (a list built with that recipe)."""
    if config.recipe == "clip":
        return QueryMatcher(queries, config.ignore_case)
    if config.recipe not in RECIPES:
        raise InputError(f"unknown matching recipe {config.recipe!r} (choose from {', '.join(RECIPES)})")
    if config.ignore_case:
        raise InputError(
            f"--ignore-case cannot be used with --recipe {config.recipe}: MetaCLIP matches case-sensitively"
        )
    if config.recipe == "metaclip":
        return MetaClipMatcher(queries)
    if langs is None:
        raise InputError(
            "--recipe worldwide needs a query list with a lang column: build it with `pipeline queries --recipe worldwide`"
        )
    return WorldwideMatcher(queries, langs, lid.answerable_buckets())


# ---------------------------------------------------------------------------- the stage


def read_queries(queries_path: str) -> list[str | None]:
    """The `query` column of a query list; row index = query id."""
    try:
        with fsspec.open(queries_path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            if "query" not in names:
                raise InputError(f"{queries_path}: no 'query' column (columns: {', '.join(names)})")
            return pf.read(columns=["query"]).column("query").to_pylist()
    except FileNotFoundError:
        raise InputError(f"{queries_path}: query list not found (build it with `make queries`)") from None
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{queries_path}: cannot read as parquet: {e}") from None


def read_query_langs(queries_path: str) -> list[str | None] | None:
    """The `lang` column of a worldwide query list (row index = query id); None for a list
    without one (the clip and metaclip recipes)."""
    with fsspec.open(queries_path, "rb") as f:
        pf = pq.ParquetFile(f)
        if "lang" not in pf.schema_arrow.names:
            return None
        return pf.read(columns=["lang"]).column("lang").to_pylist()


def queries_digest(queries: Sequence[str | None]) -> str:
    """Identifies the query list's content: the match step records it (`match_stats.json`),
    and the balance step refuses a list the matches were not made with."""
    h = hashlib.sha256()
    for q in queries:
        h.update(b"\xff" if q is None else q.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:16]


def _open_part(url: str) -> tuple[pq.ParquetFile, IO[bytes]]:
    """(ParquetFile, open file) of a pool part that has string columns `uid` and `text`."""
    f = fsspec.open(url, "rb").open()
    try:
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{url}: cannot read as parquet: {e}") from None
        schema = pf.schema_arrow
        for column in ("uid", "text"):
            if column not in schema.names:
                raise InputError(f"{url}: no '{column}' column (columns: {', '.join(schema.names)})")
            kind = schema.field(column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise InputError(f"{url}: column '{column}' is {kind}, expected string")
        return pf, f
    except BaseException:
        f.close()
        raise


def _batches(pf: pq.ParquetFile, url: str):
    """The part's (uid, text) record batches; a read failure is the input's fault."""
    it = pf.iter_batches(batch_size=BATCH_ROWS, columns=["uid", "text"])
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{url}: cannot read: {e}") from None
        yield batch


def match_part(url: str, out_dir: str, matcher: Matcher) -> dict:
    """Match one pool part into out_dir/NAME.parquet and its per-query counts into
    out_dir/_counts/NAME.parquet, then out_dir/_stats/NAME.json (marks it complete).
    Worldwide: each text's language is identified first (`pipeline.lang.lid`), matched
    rows carry it (``lang``), and the stats count rows and matches per language."""
    name = posix_stem(url)
    out_parquet, out_json = location(out_dir) / f"{name}.parquet", part_stats(out_dir, name)
    stats: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0)
    counts: Counter = Counter()
    pf, f = _open_part(url)
    worldwide = isinstance(matcher, WorldwideMatcher)
    schema = OUT_SCHEMA_LANG if worldwide else OUT_SCHEMA
    match = matcher.match
    uids: list[str | None] = []
    hits: list[list[int]] = []
    hit_langs: list[str] = []
    by_lang: dict[str, list[int]] = {}  # bucket -> [rows, matched]
    try:
        with atomic_path(out_parquet) as tmp, pq.ParquetWriter(tmp, schema) as writer:

            def flush() -> None:
                if uids:
                    columns = [pa.array(uids, pa.string()), pa.array(hits, OUT_SCHEMA.field(1).type)]
                    if worldwide:
                        columns.append(pa.array(hit_langs, pa.string()))
                    writer.write_table(pa.table(columns, schema=schema))
                    uids.clear()
                    hits.clear()
                    hit_langs.clear()

            for batch in _batches(pf, url):
                texts = batch.column("text").to_pylist()
                stats["rows"] += len(texts)
                text_langs = lid.identify(texts) if worldwide else None
                for i, (uid, text) in enumerate(zip(batch.column("uid").to_pylist(), texts)):
                    if text is None:
                        stats["null_text"] += 1
                        continue
                    if text_langs is not None:
                        lang = matcher.bucket_of(text_langs[i])  # type: ignore[union-attr]
                        tally = by_lang.setdefault(lang, [0, 0])
                        tally[0] += 1
                        ids = matcher.match(text, lang)  # type: ignore[call-arg]
                    else:
                        ids = match(text)
                    if not ids:
                        stats["dropped_no_match"] += 1
                        continue
                    if text_langs is not None:
                        tally[1] += 1
                        hit_langs.append(lang)
                    uids.append(uid)
                    hits.append(ids)
                    counts.update(ids)
                    stats["matched"] += 1
                    stats["matches"] += len(ids)
                if len(uids) >= FLUSH_ROWS:
                    flush()
            flush()
    finally:
        f.close()
    if worldwide:
        stats["by_lang"] = dict(sorted(by_lang.items()))
    ids = sorted(counts)
    with atomic_path(part_counts(out_dir, name)) as tmp:
        pq.write_table(
            pa.table({"query_id": pa.array(ids, pa.int32()), "count": pa.array([counts[i] for i in ids], pa.int64())}),
            tmp,
        )
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(stats, sort_keys=True) + "\n")
    return stats


def posix_stem(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")


def _num_rows(url: str) -> int:
    pf, f = _open_part(url)
    with f:
        return pf.metadata.num_rows


def _is_complete(out_dir: str, name: str) -> dict | None:
    """The stats of a part already matched (its files and, written last, its stats), else None."""
    js, pqt = part_stats(out_dir, name), location(out_dir) / f"{name}.parquet"
    if not (js.exists() and pqt.exists() and part_counts(out_dir, name).exists()):
        return None
    try:
        return json.loads(js.read_text())
    except ValueError:
        return None


_worker_matcher: Matcher | None = None


def _init_worker(queries_path: str, config: MatchConfig) -> None:
    """Each worker builds the automaton once (measured faster than unpickling one)."""
    global _worker_matcher
    langs = read_query_langs(queries_path) if config.recipe == "worldwide" else None
    _worker_matcher = make_matcher(read_queries(queries_path), config, langs)


def _run_part(url: str, out_dir: str) -> dict:
    assert _worker_matcher is not None
    return match_part(url, out_dir, _worker_matcher)


def match_pool(
    pool_glob: str, queries_path: str, out_dir: str, config: MatchConfig, engine: Engine, progress=None
) -> dict:
    """Match every pool part; returns stats summed over all parts (done now or before).

    `config.recipe`: ``clip`` (`QueryMatcher`, word boundaries) or ``metaclip``
    (`MetaClipMatcher`, MetaCLIP v1's substring rule).

    Output per part: NAME.parquet (`uid`, `query_ids` list<int32>, matched rows only, in the
    part's order), _counts/NAME.parquet and _stats/NAME.json (stats, written last; see
    `pipeline.layout`: the folder stays a parquet dataset). A part whose stats exist is
    skipped, so a killed run resumes; the parts in `out_dir` must have been made from these
    pool parts, queries and config: the match step (`shards.run_match`) clears the folder
    when its key changes. Output does not depend on the engine's workers. The totals
    include `queries_sha256` (`queries_digest`), which the balance step checks.
    `progress`: optional factory called with the total row count, returning a tqdm-like
    bar (`update(rows)`, `close()`).
    """
    urls = expand_inputs(pool_glob, "pool part")
    names = [posix_stem(u) for u in urls]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(
            f"{pool_glob}: several pool parts share a file name ({', '.join(dup)}): outputs are named after them"
        )
    queries = read_queries(queries_path)
    langs = read_query_langs(queries_path) if config.recipe == "worldwide" else None
    make_matcher([], config, [] if langs is not None else None)  # refuses a bad recipe/option before any work
    location(out_dir).mkdir(parents=True, exist_ok=True)

    stats_by_part: dict[str, dict] = {}
    todo = []
    for url, name in zip(urls, names):
        done = _is_complete(out_dir, name)
        if done is not None:
            stats_by_part[name] = done
        else:
            todo.append(url)

    bar = None
    if progress is not None:
        bar = progress(sum(_num_rows(u) for u in urls))
        bar.update(sum(s["rows"] for s in stats_by_part.values()))

    def finished(url: str, stats: dict) -> None:
        stats_by_part[posix_stem(url)] = stats
        if bar is not None:
            bar.update(stats["rows"])

    try:
        run_parts(
            partial(_run_part, out_dir=out_dir),
            todo,
            engine,
            setup=_init_worker,
            setup_args=(queries_path, config),
            on_done=finished,
            describe=str,
        )
    finally:
        if bar is not None:
            bar.close()

    totals: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0)
    for stats in stats_by_part.values():
        for k in STAT_KEYS:
            totals[k] += stats[k]
    totals["parts"] = len(urls)
    totals["parts_skipped"] = len(urls) - len(todo)
    totals["queries"] = len(queries)
    if langs is not None:  # worldwide: rows and matched rows per text language
        per_lang: dict[str, dict] = {}
        for stats in stats_by_part.values():
            for lang, (rows, matched) in stats.get("by_lang", {}).items():
                info = per_lang.setdefault(lang, {"rows": 0, "matched": 0})
                info["rows"] += rows
                info["matched"] += matched
        totals["languages"] = dict(sorted(per_lang.items()))
        totals["language_identifier"] = lid.NAME
    return {**totals, "queries_sha256": queries_digest(queries)}
