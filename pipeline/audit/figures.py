"""Every number of the audit, computed by DuckDB over the views; small results only.

`compute(inputs)` returns summary.json's content: `headline` plus one dict per section
(`query_list`, `pool`, `matching`, `balancing`, `download`, `text`, `source_scores`). A section whose
inputs are missing is `{"available": false, "reason": ...}`.

Bounded memory at any scale: aggregates are GROUP BYs (which DuckDB spills), quantiles
come from per-value counts of small-domain integers (widths, heights, caption lengths)
rather than from sorting every row, and per-query curves are sampled on a log grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import duckdb

from ..layout import BUILD, CURATION, ENTRY_COUNTS, QUERIES, step_stats, step_stats_name
from ..storage import total_size
from .views import Inputs

SOURCE_ORDER = ("wordnet", "unigram", "bigram", "title")
# build.json fields that would say when the query list was built (today's build.json has none:
# only its timings, `timings_s`, which the report shows instead).
BUILD_TIME_KEYS = ("built_at", "generated_at", "finished_at")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOP_K = 15
EXAMPLES_PER_SOURCE = 6
OPT_OUT_PATTERN = "%X-Robots-Tag%"  # img2dataset: "Use of image disallowed by X-Robots-Tag directive"
HOST_SQL = r"lower(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^\]]*\]|[^/:?#]*)', 1))"

# Fixed bins, identical on every run and every dataset, so reports compare side by side.
MATCHES_PER_TEXT_BINS = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 9), (10, 19), (20, 49), (50, None)]
CAPTION_CHAR_BINS = [
    (0, 9),
    (10, 19),
    (20, 39),
    (40, 59),
    (60, 79),
    (80, 99),
    (100, 149),
    (150, 199),
    (200, 299),
    (300, 499),
    (500, 999),
    (1000, None),
]
# Per-pair scores a pool carries (`--pool-format datacomp`: its CLIP scores; `laion`: its
# similarity), followed from the pool to the shards. Counted in bins of 1/SCORE_BINS (a
# GROUP BY on an integer, no sort of billions of floats): quantiles are bins' lower edges.
SCORE_COLUMNS = ("clip_b32_similarity_score", "clip_l14_similarity_score", "similarity")
SCORE_BINS = 100  # bins per unit of score: 0.01 wide
SCORE_HIST_EDGES = (10, 15, 20, 25, 30, 35, 40, 45)  # in bins: < 0.10, 0.10-0.15, ..., >= 0.45
SHORT_SIDE_BINS = [(0, 63), (64, 127), (128, 255), (256, 511), (512, 1023), (1024, 2047), (2048, 4095), (4096, None)]
# width / height; the bin's label says what it holds.
ASPECT_BINS = [
    ("< 1:2", None, 0.5),
    ("1:2 - 2:3", 0.5, 2 / 3),
    ("2:3 - 9:10", 2 / 3, 0.9),
    ("~ square", 0.9, 1 / 0.9),
    ("10:9 - 3:2", 1 / 0.9, 1.5),
    ("3:2 - 2:1", 1.5, 2.0),
    ("> 2:1", 2.0, None),
]


def unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 6)


def _int(v) -> int:
    return int(v or 0)


def bin_label(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def int_bins(value_counts: Iterable[tuple[int, int]], bins: list[tuple[int, int | None]]) -> list[dict]:
    out: list[dict[str, Any]] = [{"bin": bin_label(lo, hi), "lo": lo, "hi": hi, "count": 0} for lo, hi in bins]
    for v, n in value_counts:
        for b in out:
            if v >= b["lo"] and (b["hi"] is None or v <= b["hi"]):
                b["count"] += int(n)
                break
    return out


def distribution(value_counts: list[tuple[int, int]]) -> dict:
    """n, mean, min, max and nearest-rank quantiles from (value, count) pairs."""
    vc = sorted((int(v), int(n)) for v, n in value_counts if v is not None)
    total = sum(n for _, n in vc)
    if not total:
        return {"n": 0, "mean": None, "min": None, "max": None, "quantiles": {}}
    mean = sum(v * n for v, n in vc) / total
    quantiles, cum, i = {}, 0, 0
    for q in QUANTILES:
        need = max(1, math.ceil(q * total))
        while cum < need:
            cum += vc[i][1]
            i += 1
        quantiles[f"p{round(q * 100)}"] = vc[i - 1][0]
    return {"n": total, "mean": round(mean, 4), "min": vc[0][0], "max": vc[-1][0], "quantiles": quantiles}


def log_grid(n: int, per_decade: int = 24) -> list[int]:
    """Ranks 1..n sampled evenly on a log scale (always including 1 and n)."""
    if n <= 0:
        return []
    pts = {1, n}
    k = 0
    while True:
        r = int(round(10 ** (k / per_decade)))
        if r > n:
            break
        pts.add(r)
        k += 1
    return sorted(pts)


def rank_frequency(inp: Inputs, table_sql: str) -> dict:
    """Counts sorted descending, sampled on a log grid of ranks: {queries, points: [[rank, count]]}."""
    n = _int(inp.value(f"SELECT count(*) FROM ({table_sql}) WHERE count > 0"))
    grid = log_grid(n)
    rows = inp.con.execute(
        f"""SELECT rank, count FROM (
                SELECT row_number() OVER (ORDER BY count DESC, query_id) AS rank, count
                FROM ({table_sql}) WHERE count > 0)
            WHERE rank IN (SELECT unnest(?::BIGINT[])) ORDER BY rank""",
        [grid],
    ).fetchall()
    return {"queries": n, "points": [[int(r), int(c)] for r, c in rows]}


def value_counts(inp: Inputs, expr: str, from_sql: str) -> list[tuple[int, int]]:
    return [
        (int(v), int(n))
        for v, n in inp.con.execute(
            f"SELECT v, count(*) FROM (SELECT ({expr})::BIGINT AS v FROM {from_sql}) WHERE v IS NOT NULL "
            f"GROUP BY v ORDER BY v"
        ).fetchall()
    ]


# --------------------------------------------------------------------------- sections


def query_list(inp: Inputs) -> dict:
    if not inp.has("queries"):
        return unavailable(inp.why_not("queries"))
    total = _int(inp.value("SELECT count(*) FROM queries"))
    counts = {r["source"]: _int(r["n"]) for r in inp.rows("SELECT source, count(*) AS n FROM queries GROUP BY source")}
    examples: dict[str, list[str]] = {}
    for r in inp.rows(f"""SELECT source, query FROM (
            SELECT source, query, query_id, row_number() OVER (PARTITION BY source ORDER BY query_id) AS r
            FROM queries) WHERE r <= {EXAMPLES_PER_SOURCE} ORDER BY source, query_id"""):
        examples.setdefault(r["source"], []).append(r["query"])
    order = [s for s in SOURCE_ORDER if s in counts] + sorted(
        s for s in counts if s not in SOURCE_ORDER and s is not None
    )
    if None in counts:
        order.append(None)
    by_source = [
        {"source": s, "queries": counts[s], "share": ratio(counts[s], total), "examples": examples.get(s, [])}
        for s in order
    ]
    out = {"available": True, "file": inp.available["queries"], "queries": total, "by_source": by_source}
    build = inp.stats.get("build")
    if build is None:
        out["build"] = unavailable(f"{inp.queries_file.parent / BUILD} not found")
    else:
        out["build"] = {
            "available": True,
            "tool": build.get("tool"),
            # lists built before recipes existed were all built the clip way
            "recipe": build.get("recipe", "clip"),
            "parameters": build.get("parameters", {}),
            "titles_from": build.get("titles_from"),
            "total": build.get("total"),
            "sources": build.get("sources", {}),
            "dump": build.get("dump"),
            "seconds": build_seconds(build.get("timings_s")),
            "built_at": next((str(build[k]) for k in BUILD_TIME_KEYS if build.get(k)), None),
        }
        if build.get("total") is not None and build["total"] != total:
            inp.warnings.append(f"{BUILD} says {build['total']} queries, {QUERIES} has {total}")
    return out


def build_seconds(timings) -> float | None:
    """How long the query list's build took: its `total` timing, else the sum of the steps'
    (summing them all would count the total twice)."""
    if not isinstance(timings, dict):
        return None
    if isinstance(timings.get("total"), (int, float)):
        return round(float(timings["total"]), 3)
    steps = [v for v in timings.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(float(sum(steps)), 3) if steps else None


def pool(inp: Inputs) -> dict:
    stats = inp.stats.get("pool")
    if not inp.has("pool") and stats is None:
        return unavailable(inp.why_not("pool") + f"; no {CURATION}/{step_stats_name('pool')}")
    if inp.has("pool"):
        rows = _int(inp.value("SELECT count(*) FROM pool"))
    else:
        assert stats is not None  # returned above when there is neither
        rows = _int(stats.get("kept"))
    out: dict = {"available": True, "rows": rows}
    if stats is None:
        out["accounting"] = unavailable(f"{step_stats(inp.curation, 'pool')} not found")
        return out
    dropped = {k[len("dropped_") :]: _int(v) for k, v in sorted(stats.items()) if k.startswith("dropped_")}
    out.update(
        {
            "rows_in": _int(stats.get("rows_in")),
            "kept": _int(stats.get("kept")),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "kept_share": ratio(_int(stats.get("kept")), _int(stats.get("rows_in"))),
            "text_truncated": _int(stats.get("text_truncated")),
            "input_files": _int(stats.get("files")) or len(stats.get("inputs") or []),
            "inputs": [
                {"path": i.get("path"), "format": i.get("format"), "rows_in": i.get("rows_in")}
                for i in (stats.get("inputs") or [])
            ][:20],
            "wat": {k[len("wat_") :]: _int(v) for k, v in sorted(stats.items()) if k.startswith("wat_")},
        }
    )
    if out["kept"] != rows and inp.has("pool"):
        inp.warnings.append(f"{step_stats_name('pool')} says {out['kept']} rows kept, the pool parts hold {rows}")
    if inp.has("pool") and "source" in inp.columns("pool"):
        out["by_source"] = [
            {"source": r["source"], "rows": _int(r["n"])}
            for r in inp.rows(
                f"SELECT source, count(*) AS n FROM pool GROUP BY source ORDER BY n DESC, source LIMIT {TOP_K}"
            )
        ]
    return out


def matching(inp: Inputs, pool_rows: int | None) -> dict:
    if not inp.has("matches"):
        return unavailable(inp.why_not("matches"))
    stats = inp.stats.get("match") or {}
    r = inp.one(
        "SELECT count(*) FILTER (WHERE len(query_ids) > 0), coalesce(sum(len(query_ids)), 0), count(*) FROM matches"
    )
    matched, occurrences, match_rows = _int(r[0]), _int(r[1]), _int(r[2])
    texts = pool_rows if pool_rows is not None else _int(stats.get("rows")) or None
    vc = value_counts(inp, "len(query_ids)", "matches WHERE len(query_ids) > 0")
    if texts is not None:
        vc = [(0, max(0, texts - matched))] + vc
    dist_matched = distribution([(v, n) for v, n in vc if v > 0])
    out = {
        "available": True,
        "texts": texts,
        "matched": matched,
        "unmatched": None if texts is None else texts - matched,
        "matched_share": ratio(matched, texts),
        "matches": occurrences,
        "matches_per_matched_text": dist_matched,
        "matches_per_text_histogram": int_bins(vc, MATCHES_PER_TEXT_BINS),
        "null_text": _int(stats.get("null_text")),
        "recipe": stats.get("recipe", "clip") if stats else None,
    }
    if stats:
        if _int(stats.get("matched")) != matched:
            inp.warnings.append(
                f"{step_stats_name('match')} says {stats.get('matched')} texts matched, the parts hold {matched}"
            )
    if match_rows != matched:
        out["empty_match_rows"] = match_rows - matched
    return out


def balancing(inp: Inputs, matched_texts: int | None) -> dict:
    if not inp.has("entry_counts"):
        return unavailable(inp.why_not("entry_counts"))
    bstats = inp.stats.get("balance") or {}
    t = bstats.get("per_query")
    if t is None:
        return unavailable(f"the cap per query is unknown: no {step_stats_name('balance')}")
    t = int(t)
    con = inp.con
    b = inp.rows(f"""SELECT count(*) AS queries, count(*) FILTER (WHERE count > 0) AS with_matches,
                            coalesce(sum(count), 0) AS matches, max(count) AS max_count,
                            count(*) FILTER (WHERE count > {t}) AS over_cap,
                            coalesce(sum(count) FILTER (WHERE count > {t}), 0) AS over_cap_matches
                     FROM entry_counts""")[0]
    before = {
        "queries": _int(b["queries"]),
        "queries_with_matches": _int(b["with_matches"]),
        "queries_without_matches": _int(b["queries"]) - _int(b["with_matches"]),
        "matches": _int(b["matches"]),
        "max_per_query": _int(b["max_count"]),
        "rank_frequency": rank_frequency(inp, "SELECT query_id, count FROM entry_counts"),
    }
    head = {
        "queries_over_cap": _int(b["over_cap"]),
        "share_of_matched_queries": ratio(_int(b["over_cap"]), _int(b["with_matches"])),
        "matches_before": _int(b["over_cap_matches"]),
        "share_of_matches_before": ratio(_int(b["over_cap_matches"]), _int(b["matches"])),
        "tail_queries": _int(b["with_matches"]) - _int(b["over_cap"]),
    }
    out: dict = {
        "available": True,
        "per_query": t,
        "seed": bstats.get("seed"),
        "before": before,
        "head": head,
    }
    if inp.has("queries"):
        nq = _int(inp.value("SELECT count(*) FROM queries"))
        if nq != before["queries"]:
            inp.warnings.append(
                f"{ENTRY_COUNTS} has {before['queries']} queries, the query list {nq}: "
                f"the curation was made from another query list"
            )
    if bstats.get("expected_kept") is not None:
        out["expected_kept"] = bstats["expected_kept"]

    if not inp.has("selected"):
        out["after"] = unavailable(inp.why_not("selected"))
        return out
    if bstats.get("mode") == "online":
        out["online"] = online_expectation(inp, t, bstats)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _after AS SELECT query_id, count(*)::BIGINT AS count "
        "FROM (SELECT unnest(query_ids) AS query_id FROM selected) GROUP BY query_id"
    )
    kept = _int(inp.value("SELECT count(*) FROM selected"))
    if matched_texts is None:
        matched_texts = bstats.get("matched")
    a = inp.rows(f"""SELECT count(*) AS with_selected, coalesce(sum(a.count), 0) AS matches,
                            max(a.count) AS max_count,
                            count(*) FILTER (WHERE a.count > {t}) AS over_cap_after,
                            coalesce(sum(a.count) FILTER (WHERE e.count > {t}), 0) AS head_matches
                     FROM _after a LEFT JOIN entry_counts e USING (query_id)""")[0]
    lost = _int(
        inp.value(
            "SELECT count(*) FROM entry_counts e WHERE e.count > 0 AND NOT EXISTS "
            "(SELECT 1 FROM _after a WHERE a.query_id = e.query_id)"
        )
    )
    out["after"] = {
        "texts_matched": matched_texts,
        "texts_kept": kept,
        "texts_dropped": None if matched_texts is None else matched_texts - kept,
        "kept_fraction": ratio(kept, matched_texts),
        "matches": _int(a["matches"]),
        "matches_kept_fraction": ratio(_int(a["matches"]), before["matches"]),
        "queries_with_selected": _int(a["with_selected"]),
        "queries_matched_but_none_selected": lost,
        "max_per_query": _int(a["max_count"]),
        "queries_over_cap_after": _int(a["over_cap_after"]),
        "rank_frequency": rank_frequency(inp, "SELECT query_id, count FROM _after"),
    }
    head["matches_after"] = _int(a["head_matches"])
    head["share_of_matches_after"] = ratio(_int(a["head_matches"]), _int(a["matches"]))

    shards_ok = inp.has("samples") and "query_ids" in inp.columns("samples")
    if shards_ok:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _shards AS SELECT query_id, count(*)::BIGINT AS count "
            "FROM (SELECT unnest(query_ids) AS query_id FROM samples WHERE status = 'success') "
            "GROUP BY query_id"
        )
        out["in_shards"] = {
            "queries_with_images": _int(inp.value("SELECT count(*) FROM _shards")),
            "queries_selected_but_no_image": _int(
                inp.value(
                    "SELECT count(*) FROM _after a WHERE NOT EXISTS (SELECT 1 FROM _shards s WHERE s.query_id = a.query_id)"
                )
            ),
            "rank_frequency": rank_frequency(inp, "SELECT query_id, count FROM _shards"),
        }
    else:
        out["in_shards"] = unavailable(
            inp.why_not("samples") if not inp.has("samples") else "the shards' parquet files carry no query_ids column"
        )

    shards_col = "coalesce(s.count, 0)" if shards_ok else "NULL"
    shards_join = "LEFT JOIN _shards s USING (query_id)" if shards_ok else ""
    if inp.has("queries"):
        out["by_source"] = [
            {k: (_int(v) if k != "source" else v) for k, v in r.items()}
            for r in inp.rows(f"""SELECT q.source, count(*) AS queries,
                    count(*) FILTER (WHERE e.count > 0) AS queries_with_matches,
                    count(*) FILTER (WHERE e.count > {t}) AS queries_over_cap,
                    coalesce(sum(e.count), 0) AS matches_before,
                    coalesce(sum(a.count), 0) AS matches_after
                FROM queries q LEFT JOIN entry_counts e USING (query_id) LEFT JOIN _after a USING (query_id)
                GROUP BY q.source""")
        ]
        order = {s: i for i, s in enumerate(SOURCE_ORDER)}
        out["by_source"].sort(key=lambda r: (order.get(r["source"], len(order)), str(r["source"])))
        name_sql, name_join = "q.query, q.source", "LEFT JOIN queries q USING (query_id)"
    else:
        name_sql, name_join = "NULL AS query, NULL AS source", ""
    # The top queries first (a small table), then their names and counts: joins stay tiny.
    top = inp.rows(f"""WITH e AS (SELECT query_id, count FROM entry_counts WHERE count > 0
                                  ORDER BY count DESC, query_id LIMIT {TOP_K})
                       SELECT e.query_id, {name_sql}, e.count AS before, coalesce(a.count, 0) AS after,
                              {shards_col} AS in_shards
                       FROM e LEFT JOIN _after a USING (query_id) {shards_join} {name_join}
                       ORDER BY e.count DESC, e.query_id""")
    per_lang = bstats.get("languages")
    lang_of: dict[int, str] = {}
    if isinstance(per_lang, dict) and top and inp.has("queries") and "lang" in inp.columns("queries"):
        ids = ", ".join(str(int(r["query_id"])) for r in top)
        lang_of = {
            int(r["query_id"]): r["lang"]
            for r in inp.rows(f"SELECT query_id, lang FROM queries WHERE query_id IN ({ids})")
        }
    for r in top:
        t_q = (per_lang.get(lang_of.get(int(r["query_id"])), {}) or {}).get("t") if lang_of else t  # type: ignore[union-attr]
        r["keep_prob"] = round(min(1.0, (t_q or 0) / r["before"]), 6)
    out["top_queries"] = top
    if isinstance(per_lang, dict):
        out["languages"] = languages(inp, per_lang)
        out["reference_lang"] = bstats.get("reference_lang")
    return out


def online_expectation(inp: Inputs, t: int, bstats: dict) -> dict:
    """An online-balanced dataset holds every matched pair; what a training pass at t keeps
    is an expectation: a text is kept with 1 - prod(1 - min(1, t_q / count_q)) (its
    `keep_prob`), so a query's expected pairs per pass is the sum of its texts' keep_prob.
    Head queries come out near t, tail queries keep all theirs."""
    rows = inp.rows(f"""WITH e AS (SELECT query_id, count FROM entry_counts WHERE count > 0
                                   ORDER BY count DESC, query_id LIMIT {TOP_K}),
                            x AS (SELECT q AS query_id, sum(keep_prob) AS expected, count(*) AS selected
                                  FROM (SELECT unnest(query_ids) AS q, keep_prob FROM selected) GROUP BY q)
                       SELECT e.query_id, e.count AS matched, coalesce(x.selected, 0) AS downloaded_candidates,
                              coalesce(x.expected, 0) AS expected_at_t
                       FROM e LEFT JOIN x USING (query_id) ORDER BY e.count DESC, e.query_id""")
    for r in rows:
        r["expected_at_t"] = round(float(r["expected_at_t"]), 1)
    return {
        "t": t,
        "online_cap": bstats.get("online_cap"),
        "expected_texts_per_pass": bstats.get("expected_kept"),
        "top_queries": rows,
    }


def languages(inp: Inputs, per_lang: dict) -> list[dict]:
    """Worldwide: per text language, what each step did: the list's entries, texts the
    identifier gave it and those that matched, its t and tail share, kept, downloaded."""
    identified = (inp.stats.get("match") or {}).get("languages") or {}
    downloaded: dict[str, int] | None = {} if inp.has("samples") else None  # None: no shards to count
    if downloaded is not None and "lang" in inp.columns("samples"):
        downloaded = {
            r["lang"]: _int(r["n"])
            for r in inp.rows("SELECT lang, count(*) FILTER (WHERE status = 'success') AS n FROM samples GROUP BY lang")
        }
    rows = []
    for lang in sorted(set(per_lang) | set(identified)):
        info = per_lang.get(lang) or {}
        rows.append(
            {
                "lang": lang,
                "entries": info.get("entries"),
                "texts": (identified.get(lang) or {}).get("rows"),
                "matched": info.get("matched", (identified.get(lang) or {}).get("matched")),
                "t": info.get("t"),
                "tail_share": info.get("tail_share"),
                "kept": info.get("kept"),
                "downloaded": None if downloaded is None else downloaded.get(lang, 0),
            }
        )
    return rows


def download(inp: Inputs) -> dict:
    if not inp.has("samples"):
        return unavailable(inp.why_not("samples"))
    cols = set(inp.columns("samples"))
    err = "error_message" if "error_message" in cols else "NULL"
    r = inp.one(
        f"SELECT count(*), count(*) FILTER (WHERE status = 'success'), "
        f"count(*) FILTER (WHERE {err} ILIKE '{OPT_OUT_PATTERN}') FROM samples"
    )
    attempted, ok, opt_out = _int(r[0]), _int(r[1]), _int(r[2])
    out: dict = {
        "available": True,
        "shards": _int(inp.value("SELECT count(*) FROM (SELECT shard FROM samples GROUP BY shard)")),
        "tar_bytes": total_size(inp.shards, "[0-9]*.tar"),
        "attempted": attempted,
        "successes": ok,
        "failures": attempted - ok,
        "success_rate": ratio(ok, attempted),
        "opt_out_refusals": opt_out,
        "by_status": [
            {"status": s["status"], "count": _int(s["n"])}
            for s in inp.rows("SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY n DESC, status")
        ],
        "by_error": [
            {"error": (s["error"] or "").strip(), "count": _int(s["n"])}
            for s in inp.rows(
                f"SELECT {err} AS error, count(*) AS n FROM samples WHERE status <> 'success' AND {err} IS NOT NULL "
                f"GROUP BY error ORDER BY n DESC, error LIMIT {TOP_K}"
            )
        ]
        if err != "NULL"
        else [],
    }
    stats = inp.stats.get("download")
    if stats is not None:
        out["stats_file"] = {
            k: stats.get(k) for k in ("shards", "count", "successes", "failed_to_download", "failed_to_resize")
        }
        if _int(stats.get("count")) != attempted:
            inp.warnings.append(
                f"{step_stats_name('download')} counts {stats.get('count')} attempts, the shards' parquet files {attempted}"
            )
    if "url" in cols:
        out["top_hosts"] = [
            {
                "host": h["host"],
                "attempted": _int(h["n"]),
                "successes": _int(h["ok"]),
                "success_rate": ratio(_int(h["ok"]), _int(h["n"])),
            }
            for h in inp.rows(
                f"SELECT {HOST_SQL} AS host, count(*) AS n, count(*) FILTER (WHERE status = 'success') AS ok "
                f"FROM samples GROUP BY host ORDER BY n DESC, host LIMIT {TOP_K}"
            )
        ]
        out["hosts"] = _int(inp.value(f"SELECT count(*) FROM (SELECT {HOST_SQL} AS host FROM samples GROUP BY host)"))
    ok_rows = "samples WHERE status = 'success'"
    if {"original_width", "original_height", "width", "height"} <= cols:
        short = "least(original_width, original_height)"
        out["image_sizes"] = {
            "original_width": distribution(value_counts(inp, "original_width", ok_rows)),
            "original_height": distribution(value_counts(inp, "original_height", ok_rows)),
            "stored_width": distribution(value_counts(inp, "width", ok_rows)),
            "stored_height": distribution(value_counts(inp, "height", ok_rows)),
            "original_short_side_histogram": int_bins(value_counts(inp, short, ok_rows), SHORT_SIDE_BINS),
        }
        cases = " ".join(
            f"WHEN ar {'>= ' + repr(lo) if lo is not None else 'IS NOT NULL'} "
            f"{'AND ar < ' + repr(hi) if hi is not None else ''} THEN {i}"
            for i, (_, lo, hi) in enumerate(ASPECT_BINS)
        )
        got = dict(
            inp.con.execute(
                f"""SELECT b, count(*) FROM (
                    SELECT CASE {cases} END AS b FROM (
                        SELECT original_width::DOUBLE / original_height AS ar FROM {ok_rows}
                        AND original_height > 0 AND original_width > 0))
                WHERE b IS NOT NULL GROUP BY b"""
            ).fetchall()
        )
        out["aspect_ratio_histogram"] = [
            {"bin": label, "lo": lo, "hi": hi, "count": _int(got.get(i))}
            for i, (label, lo, hi) in enumerate(ASPECT_BINS)
        ]
    else:
        out["image_sizes"] = unavailable("the shards' parquet files carry no width/height columns")
    if "sha256" in cols:
        d = inp.one(f"""SELECT count(*), coalesce(sum(n), 0), coalesce(sum(n - 1), 0) FROM (
                          SELECT sha256, count(*) AS n FROM {ok_rows} AND sha256 IS NOT NULL
                          GROUP BY sha256 HAVING count(*) > 1)""")
        hashed = _int(inp.value(f"SELECT count(*) FROM {ok_rows} AND sha256 IS NOT NULL"))
        cap = "caption" if "caption" in cols else "status"
        out["duplicates"] = {
            "images_with_sha256": hashed,
            "distinct_sha256": hashed - _int(d[2]),
            "duplicate_groups": _int(d[0]),
            "images_in_duplicate_groups": _int(d[1]),
            "redundant_images": _int(d[2]),
            "redundant_share": ratio(_int(d[2]), hashed),
            "largest_groups": [
                {"sha256": g["sha256"], "images": _int(g["n"]), "examples": g["images"], "captions": g["captions"]}
                # The few largest groups first, then their examples: no per-hash lists over every image.
                for g in inp.rows(
                    f"""WITH top AS (SELECT sha256, count(*) AS n FROM {ok_rows} AND sha256 IS NOT NULL
                                     GROUP BY sha256 HAVING count(*) > 1 ORDER BY n DESC, sha256 LIMIT 5)
                        SELECT top.sha256, any_value(top.n) AS n,
                               list(s.shard || '.tar:' || s.key || '.jpg' ORDER BY s.shard, s.key)[1:3] AS images,
                               list(s.{cap} ORDER BY s.shard, s.key)[1:3] AS captions
                        FROM top JOIN samples s ON s.sha256 = top.sha256 AND s.status = 'success'
                        GROUP BY top.sha256 ORDER BY n DESC, top.sha256"""
                )
            ],
        }
    else:
        out["duplicates"] = unavailable("the shards' parquet files carry no sha256 column")
    return out


def text(inp: Inputs) -> dict:
    if not inp.has("samples"):
        return unavailable(inp.why_not("samples"))
    cols = set(inp.columns("samples"))
    if "caption" not in cols:
        return unavailable("the shards' parquet files carry no caption column")
    ok_rows = "samples WHERE status = 'success'"
    lengths = value_counts(inp, "length(caption)", ok_rows)
    words = inp.value(
        f"SELECT avg(len(regexp_split_to_array(trim(caption), '\\s+'))) FROM {ok_rows} AND length(trim(caption)) > 0"
    )
    out: dict = {
        "available": True,
        "captions": _int(inp.value(f"SELECT count(*) FROM {ok_rows}")),
        "empty_captions": _int(inp.value(f"SELECT count(*) FROM {ok_rows} AND coalesce(length(trim(caption)), 0) = 0")),
        "caption_chars": distribution(lengths),
        "caption_chars_histogram": int_bins(lengths, CAPTION_CHAR_BINS),
        "mean_words": None if words is None else round(float(words), 4),
    }
    if "queries" in cols:
        q = "unnest(queries)"
    elif "query_ids" in cols and inp.has("queries"):
        q = None
    else:
        out["top_queries"] = unavailable("the shards' parquet files carry no queries column")
        return out
    if q is not None:
        sql = f"SELECT query, count(*) AS n FROM (SELECT {q} AS query FROM {ok_rows}) GROUP BY query"
    else:
        sql = (
            "SELECT q.query, count(*) AS n FROM (SELECT unnest(query_ids) AS query_id FROM "
            f"{ok_rows}) s JOIN queries q USING (query_id) GROUP BY q.query"
        )
    out["top_queries"] = [
        {"query": r["query"], "samples": _int(r["n"])} for r in inp.rows(f"{sql} ORDER BY n DESC, query LIMIT 20")
    ]
    if "query_ids" in cols:
        out["mean_queries_per_caption"] = round(
            float(inp.value(f"SELECT coalesce(avg(len(query_ids)), 0) FROM {ok_rows}")), 4
        )
    return out


def source_scores(inp: Inputs) -> dict:
    """What curation does to the scores a pool came with: does matching and balancing keep
    the pairs DataComp's or LAION's CLIP filters would? Per score column, its distribution in
    the pool, the balanced selection and the downloaded shards, and each one's share at or
    above the pool's median (the pool's own share is about one half: the comparison)."""
    cols = [c for c in SCORE_COLUMNS if c in inp.columns("pool")] if inp.has("pool") else []
    if not cols:  # an optional section, not a gap in the inputs: the report leaves it out
        why = f"the pool carries none of {', '.join(SCORE_COLUMNS)}" if inp.has("pool") else inp.why_not("pool")
        return {"available": True, "columns": {}, "note": why}
    stages = {"pool": ("pool", ""), "selected": ("selected", ""), "downloaded": ("samples", "status = 'success' AND ")}
    out: dict = {"available": True, "bin_width": 1 / SCORE_BINS, "columns": {}}
    for col in cols:
        counts: dict[str, list[tuple[int, int]]] = {}
        means: dict[str, float | None] = {}
        per: dict = {}
        for stage, (view, cond) in stages.items():
            if not inp.has(view) or col not in inp.columns(view):
                per[stage] = unavailable(inp.why_not(view) if not inp.has(view) else f"{view} has no {col} column")
                continue
            score = f"TRY_CAST({col} AS DOUBLE)"  # the pool keeps a source's extra columns as text
            rows = f"{view} WHERE {cond}isfinite({score})"
            counts[stage] = value_counts(inp, f"floor({score} * {SCORE_BINS})", rows)
            means[stage] = inp.value(f"SELECT avg({score}) FROM {rows}")
        median = distribution(counts["pool"])["quantiles"].get("p50")
        for stage, vc in counts.items():
            d = distribution(vc)
            n = d["n"]
            edges = (None, *SCORE_HIST_EDGES, None)
            per[stage] = {
                "available": True,
                "n": n,
                "mean": _round(means[stage], 4),
                "quantiles": {k: v / SCORE_BINS for k, v in d["quantiles"].items()},
                "at_or_above_pool_median": ratio(sum(c for v, c in vc if median is not None and v >= median), n),
                "histogram": [
                    {
                        "bin": _score_bin_label(lo, hi),
                        "mid": _score_bin_mid(lo, hi),
                        "share": ratio(sum(c for v, c in vc if (lo is None or v >= lo) and (hi is None or v < hi)), n),
                    }
                    for lo, hi in zip(edges[:-1], edges[1:])
                ],
            }
        out["columns"][col] = {"pool_median": None if median is None else median / SCORE_BINS, **per}
    return out


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(float(v), digits)


def _score_bin_mid(lo: int | None, hi: int | None) -> float:
    """Where a histogram point goes: the bin's middle; an open bin's as if it were as wide as the others."""
    width = SCORE_HIST_EDGES[1] - SCORE_HIST_EDGES[0]
    start = lo if lo is not None else (hi if hi is not None else 0) - width
    return round((start + width / 2) / SCORE_BINS, 4)


def _score_bin_label(lo: int | None, hi: int | None) -> str:
    if hi is None:
        return f">= {(lo or 0) / SCORE_BINS:.2f}"
    if lo is None:
        return f"< {hi / SCORE_BINS:.2f}"
    return f"{lo / SCORE_BINS:.2f}-{hi / SCORE_BINS:.2f}"


SECTIONS = ("query_list", "pool", "matching", "balancing", "download", "text", "source_scores")


def _guard(name: str, inp: Inputs, fn: Callable[[], dict]) -> dict:
    """A section that cannot be computed (corrupt file, unexpected schema or stats) is reported in
    the report and on stderr, not fatal: the other sections still get written."""
    try:
        return fn()
    except (duckdb.Error, ValueError, TypeError, KeyError, AttributeError) as e:
        text = str(e).strip().splitlines()
        msg = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
        inp.warnings.append(f"{name}: {msg}")
        return unavailable(f"error while reading its files: {msg}")


def compute(inp: Inputs) -> dict:
    """All figures, nested by section, plus the headline numbers."""
    s: dict = {}
    s["query_list"] = _guard("query_list", inp, lambda: query_list(inp))
    s["pool"] = _guard("pool", inp, lambda: pool(inp))
    pool_rows = s["pool"].get("rows") if s["pool"].get("available") else None
    s["matching"] = _guard("matching", inp, lambda: matching(inp, pool_rows))
    matched = s["matching"].get("matched") if s["matching"].get("available") else None
    s["balancing"] = _guard("balancing", inp, lambda: balancing(inp, matched))
    s["download"] = _guard("download", inp, lambda: download(inp))
    s["text"] = _guard("text", inp, lambda: text(inp))
    s["source_scores"] = _guard("source_scores", inp, lambda: source_scores(inp))

    def get(section: str, *path):
        v = s[section]
        if not v.get("available"):
            return None
        for p in path:
            if not isinstance(v, dict) or p not in v:
                return None
            v = v[p]
        return v

    kept = get("balancing", "after", "texts_kept")
    headline = {
        "queries": get("query_list", "queries"),
        "pool_rows": get("pool", "rows"),
        "matched_share": get("matching", "matched_share"),
        "kept_after_balancing": kept,
        "kept_fraction": get("balancing", "after", "kept_fraction"),
        "images_downloaded": get("download", "successes"),
        "download_success_rate": get("download", "success_rate"),
    }
    return {"headline": headline, **s}
