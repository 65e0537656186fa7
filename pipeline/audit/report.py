"""Writers: `summary.json` (every figure), `report.html` (self-contained), `report.md` (short).

The HTML has inline CSS and inline SVG charts, no scripts and no external resources, so it
opens from disk in any browser, offline, and can be attached anywhere. Apart from the time
the report was written (one place: the header, `generated_at` in the JSON) the outputs
depend only on the inputs.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeGuard

from .. import __version__, page, plots
from ..errors import InputError
from ..layout import BUILD, step_stats_name
from ..options import MEMORY_LIMIT
from ..outlock import hold
from ..page import esc, table
from ..plots import fmt_int, fmt_pct
from .figures import SECTIONS, compute
from .location import Location, output_location, write_outputs
from .sheets import BUDGET_BYTES, contact_sheets, without_images
from .views import open_inputs

TITLES = {
    "query_list": "Query list",
    "pool": "Pool",
    "matching": "Matching",
    "balancing": "Balancing",
    "download": "Download",
    "text": "Text",
    "source_scores": "Scores the pool came with",
}
STAGE_COLORS = {"pool": plots.GREY, "selected": plots.ORANGE, "downloaded": plots.GREEN}
REASON_LABELS = {
    "bad_encoding": "bad text encoding",
    "bad_url": "bad URL",
    "duplicate": "duplicate (url, text)",
    "empty_text": "empty text",
    "malformed": "malformed row",
    "null_url": "no URL",
    "private_host": "private/loopback host",
    "scheme": "not http(s)",
}


def _ok(section: dict | None) -> TypeGuard[dict]:
    return isinstance(section, dict) and bool(section) and section.get("available", True)


def _shown(s: dict) -> list[str]:
    """The sections a report shows: all but the pool's scores when the pool came without any."""
    return [k for k in SECTIONS if not (k == "source_scores" and _ok(s[k]) and not s[k]["columns"])]


def _f(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


# ---------------------------------------------------------------------- findings (prose)


def findings(s: dict) -> dict[str, list[str]]:
    """The few sentences per section that tell the story; shared by the HTML and the markdown."""
    out: dict[str, list[str]] = {k: [] for k in SECTIONS}
    q = s["query_list"]
    if _ok(q):
        parts = ", ".join(f"{r['source']} {fmt_int(r['queries'])} ({fmt_pct(r['share'])})" for r in q["by_source"])
        out["query_list"].append(f"{fmt_int(q['queries'])} queries: {parts}.")
        b = q.get("build", {})
        if _ok(b) and b.get("recipe"):
            how = {"clip": "our reading of the CLIP paper", "metaclip": "MetaCLIP v1's rules"}.get(b["recipe"], "")
            out["query_list"].append(f"Recipe: {b['recipe']}" + (f" ({how})." if how else "."))
        if _ok(b) and b.get("titles_from"):
            out["query_list"].append(f"Titles from: {b['titles_from']}.")
    p = s["pool"]
    if _ok(p):
        if "rows_in" in p:
            drops = {k: v for k, v in p["dropped"].items() if v}
            why = (
                ", ".join(
                    f"{REASON_LABELS.get(k, k)} {fmt_int(v)}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])
                )
                or "none"
            )
            out["pool"].append(
                f"{fmt_int(p['rows_in'])} candidate rows read from {fmt_int(p['input_files'])} "
                f"file(s); {fmt_int(p['rows'])} in the pool ({fmt_pct(p['kept_share'])}); "
                f"dropped: {why}."
            )
        else:
            out["pool"].append(f"{fmt_int(p['rows'])} rows in the pool (no {step_stats_name('pool')}: drops unknown).")
    m = s["matching"]
    if _ok(m):
        d = m["matches_per_matched_text"]
        out["matching"].append(
            f"{fmt_int(m['matched'])} of {fmt_int(m['texts'])} texts ({fmt_pct(m['matched_share'])}) contain at "
            f"least one query; {fmt_int(m['matches'])} matches in all, {_f(d['mean'])} per matched text "
            f"(median {d['quantiles'].get('p50', '–')}, max {fmt_int(d['max'])})"
            + (f"; matched with the {m['recipe']} recipe." if m.get("recipe") else ".")
        )
    bal = s["balancing"]
    if _ok(bal) and bal.get("online"):
        o = bal["online"]
        out["balancing"].append(
            "This dataset is not balanced (--balance online): it holds every matched pair"
            + (f" (at most about {o['online_cap']} x t per query)" if o.get("online_cap") else "")
            + f"; balancing a training pass at t = {fmt_int(o['t'])} keeps about "
            f"{fmt_int(round(o['expected_texts_per_pass'] or 0))} texts a pass; each query's counts over the whole "
            "matched set are in entry_counts.parquet beside the shards (python -m train --balance-t T draws a "
            "balanced subset each pass)."
        )
    if _ok(bal):
        h, b = bal["head"], bal["before"]
        out["balancing"].append(
            f"Cap t = {fmt_int(bal['per_query'])} per query. {fmt_int(h['queries_over_cap'])} of "
            f"{fmt_int(b['queries_with_matches'])} matched queries ({fmt_pct(h['share_of_matched_queries'])}) "
            f"exceed it (head) and hold {fmt_pct(h['share_of_matches_before'])} of all matches before balancing"
            + (
                f", {fmt_pct(h['share_of_matches_after'])} after."
                if h.get("share_of_matches_after") is not None
                else "."
            )
        )
        a = bal.get("after", {})
        if _ok(a):
            out["balancing"].append(
                f"Kept {fmt_int(a['texts_kept'])} of {fmt_int(a['texts_matched'])} matched texts "
                f"({fmt_pct(a['kept_fraction'])}"
                + (f"; expected {fmt_int(round(bal['expected_kept']))}" if bal.get("expected_kept") is not None else "")
                + f"); the largest query went from {fmt_int(b['max_per_query'])} to {fmt_int(a['max_per_query'])} "
                f"texts ({fmt_int(a['queries_over_cap_after'])} "
                + ("query stays" if a["queries_over_cap_after"] == 1 else "queries stay")
                + " above t: their texts are also kept for rarer queries)."
            )
        miss = [f"{fmt_int(b['queries_without_matches'])} of {fmt_int(b['queries'])} queries match no text"]
        if _ok(a):
            miss.append(f"{fmt_int(a['queries_matched_but_none_selected'])} lost all texts to balancing")
        sh = bal.get("in_shards", {})
        if _ok(sh):
            miss.append(f"{fmt_int(sh['queries_selected_but_no_image'])} lost all images in the download")
        out["balancing"].append("Queries with no sample: " + "; ".join(miss) + ".")
    dl = s["download"]
    if _ok(dl):
        fails = ", ".join(f"{r['status']} {fmt_int(r['count'])}" for r in dl["by_status"] if r["status"] != "success")
        out["download"].append(
            f"{fmt_int(dl['successes'])} of {fmt_int(dl['attempted'])} images downloaded "
            f"({fmt_pct(dl['success_rate'])}) into {fmt_int(dl['shards'])} shard(s)"
            + (f" ({plots.fmt_bytes(dl['tar_bytes'])} of tar files)" if dl["tar_bytes"] else " (no tar files found)")
            + "; "
            f"failures: {fails or 'none'}; opt-out refusals: {fmt_int(dl['opt_out_refusals'])}."
        )
        du = dl.get("duplicates", {})
        if _ok(du):
            out["download"].append(
                f"{fmt_int(du['distinct_sha256'])} distinct images by sha256; {fmt_int(du['duplicate_groups'])} "
                f"duplicate groups, {fmt_int(du['redundant_images'])} redundant copies "
                f"({fmt_pct(du['redundant_share'], 2)})."
            )
        sz = dl.get("image_sizes", {})
        if _ok(sz):
            out["download"].append(
                f"Original size median {fmt_int(sz['original_width']['quantiles'].get('p50'))} x "
                f"{fmt_int(sz['original_height']['quantiles'].get('p50'))} px; stored median "
                f"{fmt_int(sz['stored_width']['quantiles'].get('p50'))} x "
                f"{fmt_int(sz['stored_height']['quantiles'].get('p50'))} px."
            )
    t = s["text"]
    if _ok(t):
        c = t["caption_chars"]
        top = t.get("top_queries")
        line = (
            f"{fmt_int(t['captions'])} captions: {_f(c['mean'], 1)} characters on average (median "
            f"{c['quantiles'].get('p50', '–')}, 95% under {c['quantiles'].get('p95', '–')}), "
            f"{_f(t['mean_words'], 1)} words."
        )
        if isinstance(top, list) and top:
            line += (
                " Most frequent queries: " + ", ".join(f"{r['query']} ({fmt_int(r['samples'])})" for r in top[:8]) + "."
            )
        out["text"].append(line)
    sc = s["source_scores"]
    if _ok(sc):
        for col, per in sc["columns"].items():
            said = [
                f"{stage}: mean {_f(per[stage]['mean'], 3)}, {fmt_pct(per[stage]['at_or_above_pool_median'])} at or above the pool median"
                for stage in STAGE_COLORS
                if _ok(per.get(stage))
            ]
            out["source_scores"].append(f"{col}: pool median {_f(per['pool_median'], 2)}; " + "; ".join(said) + ".")
    return out


# ---------------------------------------------------------------------- charts


def charts(s: dict) -> dict[str, list[str]]:
    """Section -> SVG strings. The set depends only on which figures are available."""
    out: dict[str, list[str]] = {k: [] for k in ("flow", *SECTIONS)}
    p, m, bal, dl, t = s["pool"], s["matching"], s["balancing"], s["download"], s["text"]
    steps = []
    if _ok(p) and "rows_in" in p:
        steps.append(("candidate rows read", p["rows_in"]))
    if _ok(p):
        steps.append(("in the pool", p["rows"]))
    if _ok(m):
        steps.append(("text matches a query", m["matched"]))
    if _ok(bal) and _ok(bal.get("after")):
        steps.append(("kept by balancing", bal["after"]["texts_kept"]))
    if _ok(dl):
        steps.append(("images downloaded", dl["successes"]))
    if steps:
        first = steps[0][1] or 1
        out["flow"].append(
            plots.hbars(
                "flow",
                "From candidate pairs to shards",
                steps,
                values=[f"{fmt_int(v)}  ({fmt_pct(v / first)})" for _, v in steps],
                colors=[plots.GREY, plots.BLUE, plots.BLUE, plots.ORANGE, plots.GREEN][-len(steps) :],
                width=760,
                label_width=180,
            )
        )
    q = s["query_list"]
    if _ok(q):
        out["query_list"].append(
            plots.hbars(
                "queries_by_source",
                "Queries per source",
                [(r["source"] or "(none)", r["queries"]) for r in q["by_source"]],
                values=[f"{fmt_int(r['queries'])}  ({fmt_pct(r['share'])})" for r in q["by_source"]],
                label_width=90,
            )
        )
    if _ok(p) and p.get("dropped_total"):
        drops = sorted(((REASON_LABELS.get(k, k), v) for k, v in p["dropped"].items() if v), key=lambda kv: -kv[1])
        out["pool"].append(
            plots.hbars("pool_dropped", "Pool rows dropped, by reason", drops, colors=[plots.RED] * len(drops))
        )
    if _ok(m):
        out["matching"].append(
            plots.columns(
                "matches_per_text",
                "Queries matched per pool text",
                [(b["bin"], b["count"]) for b in m["matches_per_text_histogram"]],
                xlabel="queries found in the text",
                ylabel="texts",
                highlight={0},
            )
        )
    if _ok(bal):
        series = [("before balancing (all matches)", bal["before"]["rank_frequency"]["points"], plots.GREY)]
        if _ok(bal.get("after")):
            series.append(("after balancing (selected)", bal["after"]["rank_frequency"]["points"], plots.BLUE))
        if _ok(bal.get("in_shards")):
            series.append(("in the shards (downloaded)", bal["in_shards"]["rank_frequency"]["points"], plots.GREEN))
        out["balancing"].append(
            plots.loglog(
                "rank_frequency",
                "Texts per query, by rank (log-log)",
                series,
                xlabel="query rank",
                ylabel="texts matching the query",
                hline=(bal["per_query"], f"cap t = {fmt_int(bal['per_query'])}"),
                width=620,
                height=320,
            )
        )
        if bal.get("top_queries"):
            tq = bal["top_queries"][:10]
            out["balancing"].append(
                plots.hbars(
                    "top_queries_balance",
                    "Most matched queries: texts before (grey) → after (blue) balancing",
                    [(r["query"] if r["query"] is not None else f"#{r['query_id']}", r["before"]) for r in tq],
                    values=[f"{fmt_int(r['before'])} → {fmt_int(r['after'])}" for r in tq],
                    colors=[plots.GREY] * len(tq),
                    overlay=[r["after"] for r in tq],
                    label_width=110,
                    width=560,
                )
            )
    if _ok(dl):
        out["download"].append(
            plots.hbars(
                "download_status",
                "Download attempts by status",
                [(r["status"], r["count"]) for r in dl["by_status"]],
                values=[
                    f"{fmt_int(r['count'])}  ({fmt_pct(r['count'] / (dl['attempted'] or 1))})" for r in dl["by_status"]
                ],
                colors=[plots.GREEN if r["status"] == "success" else plots.RED for r in dl["by_status"]],
                label_width=130,
            )
        )
        if dl.get("top_hosts"):
            hs = dl["top_hosts"][:10]
            out["download"].append(
                plots.hbars(
                    "top_hosts",
                    "Top hosts (attempts; success rate)",
                    [(h["host"] or "(none)", h["attempted"]) for h in hs],
                    values=[f"{fmt_int(h['attempted'])}  ({fmt_pct(h['success_rate'])} ok)" for h in hs],
                    label_width=150,
                )
            )
        sz = dl.get("image_sizes", {})
        if _ok(sz):
            out["download"].append(
                plots.columns(
                    "image_short_side",
                    "Original image size (shorter side)",
                    [(b["bin"], b["count"]) for b in sz["original_short_side_histogram"]],
                    xlabel="pixels",
                    ylabel="images",
                )
            )
        if dl.get("aspect_ratio_histogram"):
            out["download"].append(
                plots.columns(
                    "aspect_ratio",
                    "Aspect ratio (width : height) of the originals",
                    [(b["bin"], b["count"]) for b in dl["aspect_ratio_histogram"]],
                    xlabel="width : height",
                    ylabel="images",
                    color=plots.GREEN,
                )
            )
    if _ok(t):
        out["text"].append(
            plots.columns(
                "caption_length",
                "Caption length",
                [(b["bin"], b["count"]) for b in t["caption_chars_histogram"]],
                xlabel="characters",
                ylabel="captions",
                color="#8e5fb5",
            )
        )
        top = t.get("top_queries")
        if isinstance(top, list) and top:
            out["text"].append(
                plots.hbars(
                    "top_queries_shards",
                    "Most frequent queries in the shards",
                    [(r["query"], r["samples"]) for r in top[:15]],
                    label_width=130,
                    colors=["#8e5fb5"] * min(15, len(top)),
                )
            )
    sc = s["source_scores"]
    if _ok(sc):
        for col, per in sc["columns"].items():
            curves = [
                plots.Line(stage, [(b["mid"], b["share"]) for b in per[stage]["histogram"]], color, markers=True)
                for stage, color in STAGE_COLORS.items()
                if _ok(per.get(stage))
            ]
            out["source_scores"].append(
                plots.lines(
                    f"scores_{col}",
                    f"{col}, pool to shards",
                    curves,
                    xlabel="score (0.05 bins; the ends hold everything below 0.10 and from 0.45)",
                    ylabel="share of pairs",
                    y_from_zero=True,
                )
            )
    return out


# ---------------------------------------------------------------------- html


def _kv(pairs: list[tuple[str, object]]) -> str:
    return table(["", ""], [[k, v] for k, v in pairs])


def _section_html(name: str, s: dict, find: dict, ch: dict) -> str:
    sec = s[name]
    parts = [f'<section id="{name}"><h2>{esc(TITLES[name])}</h2>']
    if not _ok(sec):
        parts.append(f'<p class="unavail">Section unavailable: {esc(sec.get("reason"))}</p></section>')
        return "".join(parts)
    if find[name]:
        parts.append('<ul class="find">' + "".join(f"<li>{esc(x)}</li>" for x in find[name]) + "</ul>")
    grid = list(ch.get(name, []))
    extra = []
    if name == "query_list":
        extra.append(
            table(
                ["source", "queries", "share", "first queries (highest priority first)"],
                [[r["source"], r["queries"], fmt_pct(r["share"]), ", ".join(r["examples"])] for r in sec["by_source"]],
                {1, 2},
            )
        )
        b = sec["build"]
        if _ok(b):
            params = [(k, v) for k, v in (b.get("parameters") or {}).items()]
            params += [
                ("titles from", b.get("titles_from")),
                ("tool", (b.get("tool") or {}).get("version")),
                ("built at", b.get("built_at") or "not recorded"),
                ("build seconds", b.get("seconds")),
            ]
            srcs = [
                [k, v.get("considered"), v.get("duplicates_skipped"), v.get("added")]
                for k, v in (b.get("sources") or {}).items()
                if isinstance(v, dict)
            ]
            extra.append(
                f"<details><summary>Build parameters and sources ({BUILD})</summary>"
                + _kv(params)
                + (table(["source", "considered", "duplicates skipped", "added"], srcs, {1, 2, 3}) if srcs else "")
                + (_kv(list((b.get("dump") or {}).items())) if b.get("dump") else "")
                + "</details>"
            )
        else:
            extra.append(f'<p class="unavail">Build parameters unavailable: {esc(b.get("reason"))}</p>')
    elif name == "pool" and "rows_in" in sec:
        rows = [["rows read", sec["rows_in"]]] + [
            [f"dropped: {REASON_LABELS.get(k, k)}", v] for k, v in sec["dropped"].items() if v
        ]
        zero = [REASON_LABELS.get(k, k) for k, v in sec["dropped"].items() if not v]
        if zero:
            rows.append([f"dropped for no other reason ({', '.join(zero)})", 0])
        rows += [["kept (pool rows)", sec["rows"]], ["texts truncated", sec["text_truncated"]]]
        if any(sec.get("wat", {}).values()):
            rows += [[f"WAT {k.replace('_', ' ')}", v] for k, v in sec["wat"].items()]
        extra.append(table([f"accounting ({step_stats_name('pool')})", "rows"], rows, {1}))
        if sec.get("inputs"):
            extra.append(
                "<details><summary>Input files</summary>"
                + table(
                    ["path", "format", "rows"], [[i["path"], i["format"], i["rows_in"]] for i in sec["inputs"]], {2}
                )
                + "</details>"
            )
    elif name == "matching":
        d = sec["matches_per_matched_text"]
        extra.append(
            table(
                ["matches per matched text", "value"],
                [["mean", _f(d["mean"])], *[[k, v] for k, v in d["quantiles"].items()], ["max", d["max"]]],
                {1},
            )
        )
    elif name == "balancing":
        h = sec["head"]
        rows = [
            ["queries over the cap (head)", fmt_int(h["queries_over_cap"]), fmt_pct(h["share_of_matched_queries"])],
            ["queries at or under the cap (tail)", fmt_int(h["tail_queries"]), ""],
            ["head's share of matches before", fmt_int(h["matches_before"]), fmt_pct(h["share_of_matches_before"])],
        ]
        if h.get("matches_after") is not None:
            rows.append(
                ["head's share of matches after", fmt_int(h["matches_after"]), fmt_pct(h["share_of_matches_after"])]
            )
        a = sec.get("after", {})
        if _ok(a):
            rows += [
                ["matched texts kept", fmt_int(a["texts_kept"]), fmt_pct(a["kept_fraction"])],
                ["(query, text) matches kept", fmt_int(a["matches"]), fmt_pct(a["matches_kept_fraction"])],
            ]
        extra.append(table(["head / tail (MetaCLIP's figures)", "count", "share"], rows, {1, 2}))
        if sec.get("online"):
            o = sec["online"]
            cap = f", at most about {o['online_cap']} x t per query" if o.get("online_cap") else ""
            extra.append(
                "<h3>Not balanced: online balancing</h3>"
                f"<p>These shards hold every matched pair{esc(cap)}; a training pass at t = {fmt_int(o['t'])} "
                f"keeps about {fmt_int(round(o['expected_texts_per_pass'] or 0))} texts "
                "(a text is kept with its keep_prob). Expected pairs per query and pass:</p>"
                + table(
                    ["query id", "matched", "selected", "expected per pass at t"],
                    [
                        [r["query_id"], r["matched"], r["downloaded_candidates"], r["expected_at_t"]]
                        for r in o["top_queries"]
                    ],
                    {0, 1, 2, 3},
                )
            )
        if sec.get("languages"):
            ref = sec.get("reference_lang")
            extra.append(
                "<h3>By language (t by equal tail share"
                + (f" with {esc(ref)}'s" if ref else "")
                + ")</h3>"
                + table(
                    ["language", "entries", "texts", "matched", "t", "tail share", "kept", "downloaded"],
                    [
                        [
                            r["lang"],
                            r["entries"],
                            r["texts"],
                            r["matched"],
                            r["t"],
                            fmt_pct(r["tail_share"]),
                            r["kept"],
                            r["downloaded"],
                        ]
                        for r in sec["languages"]
                    ],
                    {1, 2, 3, 4, 5, 6, 7},
                )
            )
        if sec.get("by_source"):
            extra.append(
                "<h3>By source</h3>"
                + table(
                    ["source", "queries", "with matches", "over cap", "matches before", "after"],
                    [
                        [
                            r["source"],
                            r["queries"],
                            r["queries_with_matches"],
                            r["queries_over_cap"],
                            r["matches_before"],
                            r["matches_after"],
                        ]
                        for r in sec["by_source"]
                    ],
                    {1, 2, 3, 4, 5},
                )
            )
        if sec.get("top_queries"):
            extra.append(
                "<h3>Most matched queries</h3>"
                + table(
                    ["id", "query", "source", "before", "keep p", "after", "in shards"],
                    [
                        [
                            str(r["query_id"]),
                            r["query"],
                            r["source"],
                            r["before"],
                            f"{r['keep_prob']:.3f}",
                            r["after"],
                            r["in_shards"],
                        ]
                        for r in sec["top_queries"]
                    ],
                    {0, 3, 4, 5, 6},
                )
            )
        if not _ok(a):
            extra.append(f'<p class="unavail">After balancing unavailable: {esc(a.get("reason"))}</p>')
    elif name == "download":
        if sec.get("by_error"):
            extra.append(
                "<h3>Failures by error</h3>"
                + table(["error", "count"], [[r["error"][:300], r["count"]] for r in sec["by_error"]], {1}, cls="mono")
            )
        sz = sec.get("image_sizes", {})
        if _ok(sz):
            keys = ("original_width", "original_height", "stored_width", "stored_height")
            qs = ("p5", "p25", "p50", "p75", "p95")
            extra.append(
                "<h3>Image sizes (pixels, downloaded images)</h3>"
                + table(
                    ["", "min", *qs, "max", "mean"],
                    [
                        [
                            k.replace("_", " "),
                            sz[k]["min"],
                            *[sz[k]["quantiles"].get(x) for x in qs],
                            sz[k]["max"],
                            _f(sz[k]["mean"], 1),
                        ]
                        for k in keys
                    ],
                    {1, 2, 3, 4, 5, 6, 7, 8},
                )
            )
        du = sec.get("duplicates", {})
        if _ok(du):
            rows = [
                ["images with sha256", du["images_with_sha256"]],
                ["distinct", du["distinct_sha256"]],
                ["duplicate groups", du["duplicate_groups"]],
                ["redundant copies", du["redundant_images"]],
            ]
            extra.append("<h3>Duplicate images (sha256)</h3>" + table(["", "images"], rows, {1}))
            if du["largest_groups"]:
                extra.append(
                    table(
                        ["sha256", "copies", "examples", "captions"],
                        [
                            [
                                g["sha256"][:16] + "…",
                                g["images"],
                                ", ".join(g["examples"] or []),
                                " | ".join(str(c) for c in (g["captions"] or [])),
                            ]
                            for g in du["largest_groups"]
                        ],
                        {1},
                    )
                )
        if sec.get("stats_file"):
            extra.append(
                f"<details><summary>img2dataset's own totals ({step_stats_name('download')})</summary>"
                + _kv(list(sec["stats_file"].items()))
                + "</details>"
            )
    elif name == "text":
        c = sec["caption_chars"]
        extra.append(
            table(
                ["caption characters", "value"],
                [
                    ["mean", _f(c["mean"], 1)],
                    ["min", c["min"]],
                    *[[k, v] for k, v in c["quantiles"].items()],
                    ["max", c["max"]],
                    ["empty captions", sec["empty_captions"]],
                    ["mean words", _f(sec["mean_words"], 1)],
                    ["mean queries per caption", _f(sec.get("mean_queries_per_caption"), 2)],
                ],
                {1},
            )
        )
        if not isinstance(sec.get("top_queries"), list):
            extra.append(f'<p class="unavail">Top queries unavailable: {esc(sec["top_queries"].get("reason"))}</p>')
    elif name == "source_scores":
        for col, per in sec["columns"].items():
            shown = [st for st in STAGE_COLORS if _ok(per.get(st))]
            quantile_keys = list(per["pool"]["quantiles"])
            extra.append(
                table(
                    [col, *shown],
                    [
                        ["pairs", *[per[st]["n"] for st in shown]],
                        ["mean", *[_f(per[st]["mean"], 3) for st in shown]],
                        *[[k, *[_f(per[st]["quantiles"].get(k), 2) for st in shown]] for k in quantile_keys],
                        [
                            "at or above the pool median",
                            *[fmt_pct(per[st]["at_or_above_pool_median"]) for st in shown],
                        ],
                    ],
                    set(range(1, len(shown) + 1)),
                )
            )
    if grid or extra:
        parts.append('<div class="grid">' + "".join(f"<div>{x}</div>" for x in grid + extra) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _tiles(s: dict) -> str:
    h = s["headline"]
    return page.tiles(
        [
            ("queries", fmt_int(h["queries"]), "in the query list"),
            ("pool", fmt_int(h["pool_rows"]), "pool rows (image URL, text)"),
            ("matched", fmt_pct(h["matched_share"]), "of pool texts contain a query"),
            (
                "kept",
                fmt_int(h["kept_after_balancing"]),
                "kept after balancing"
                + (f" ({fmt_pct(h['kept_fraction'])} of matched)" if h["kept_fraction"] is not None else ""),
            ),
            ("images", fmt_int(h["images_downloaded"]), "images downloaded"),
            ("success", fmt_pct(h["download_success_rate"]), "download success rate"),
        ]
    )


def _sheets_html(sheets: dict | None) -> str:
    """The contact sheets section: what the dataset looks like, before any number."""
    if sheets is None:
        return ""
    parts = ['<section id="images"><h2>Images</h2>']
    if not sheets.get("available"):
        parts.append(f'<p class="unavail">Unavailable: {esc(sheets.get("reason"))}</p></section>')
        return "".join(parts)
    parts.append(
        f'<p class="small">Thumbnails read from the tars by key, drawn with seed {esc(sheets["seed"])} '
        f"(the same shards give the same pictures); caption under each, whole on hover.</p>"
    )
    for s in sheets["sheets"]:
        parts.append(f'<h3>{esc(s["title"])} <span class="small">{esc(s["note"])}</span></h3>')
        parts.append(page.thumbs(s["images"]) if s["images"] else '<p class="small">no readable image</p>')
    failed = sheets.get("failure_reasons") or []
    without = [f for f in failed if not f["with_image"]]
    if without:
        parts.append(
            '<p class="small">Failure reasons without an image in the shards (a failed download '
            "stores none): " + "; ".join(f"{esc(f['reason'])} ({fmt_int(f['failed'])})" for f in without) + "</p>"
        )
    if sheets.get("left_out_for_budget"):
        parts.append(
            f'<p class="small">{fmt_int(sheets["left_out_for_budget"])} thumbnails left out to keep the '
            f"report under its image budget ({BUDGET_BYTES / 1e6:.1f} MB).</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def render_html(s: dict, sheets: dict | None = None) -> str:
    """report.html; `sheets` (`sheets.contact_sheets`, with the thumbnails) adds the Images section."""
    find, ch = findings(s), charts(s)
    inputs = s["inputs"]
    head = [
        *page.head(f"Dataset audit: {inputs['shards']}"),
        "<header><h1>Dataset audit</h1>",
        f'<p class="sub">query list <code>{esc(inputs["queries"])}</code> · shards <code>{esc(inputs["shards"])}</code>'
        f" · report written {esc(s['generated_at'])} by pipeline audit {esc(s['tool']['version'])}</p>",
        _tiles(s),
    ]
    missing = [k for k in SECTIONS if not _ok(s[k])]
    if missing:
        head.append(
            '<p class="unavail">Unavailable sections: '
            + "; ".join(f"<b>{esc(TITLES[k])}</b> ({esc(s[k]['reason'])})" for k in missing)
            + "</p>"
        )
    for w in s["warnings"]:
        head.append(f'<p class="warn">{esc(w)}</p>')
    if ch["flow"]:
        head.append('<div class="flow">' + ch["flow"][0] + "</div>")
    head.append("</header>")
    body = [_sheets_html(sheets)] + [_section_html(k, s, find, ch) for k in _shown(s)]
    foot = [
        "<footer>Every figure here is in <code>summary.json</code> beside this file. Explore further with "
        '<code>python -m pipeline audit --sql "SELECT ..."</code> or <code>--query WORD</code>.</footer>',
        page.END,
    ]
    return "\n".join(head + body + foot) + "\n"


# ---------------------------------------------------------------------- markdown


def _query_list_built(s: dict) -> str:
    """When the query list was built, from its build.json: its time if it records one, else
    how long the build took (never the report's own time)."""
    q = s["query_list"]
    b = q.get("build") if _ok(q) else None
    if not _ok(b):
        return ""
    if b.get("built_at"):
        return f", built {b['built_at']}"
    took = f"; the build took {b['seconds']:,} s" if b.get("seconds") is not None else ""
    return f" (its {BUILD} records no build time{took})"


def render_md(s: dict) -> str:
    h, find = s["headline"], findings(s)
    lines = [
        f"# Dataset audit: `{s['inputs']['shards']}`",
        "",
        f"Report written {s['generated_at']}; query list `{s['inputs']['queries']}`{_query_list_built(s)}; "
        "every figure is in `summary.json`.",
        "",
        "| queries | pool rows | matched | kept after balancing | images | download success |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {fmt_int(h['queries'])} | {fmt_int(h['pool_rows'])} | {fmt_pct(h['matched_share'])} | "
        f"{fmt_int(h['kept_after_balancing'])} | {fmt_int(h['images_downloaded'])} | "
        f"{fmt_pct(h['download_success_rate'])} |",
        "",
    ]
    for k in _shown(s):
        lines.append(f"## {TITLES[k]}")
        lines.append("")
        if not _ok(s[k]):
            lines.append(f"- *unavailable*: {s[k]['reason']}")
        else:
            lines.extend(f"- {x}" for x in find[k])
        lines.append("")
    if s["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in s["warnings"]] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- entry point


def build_summary(
    queries: str | Path | Location,
    shards: str | Path | Location,
    memory_limit: str = MEMORY_LIMIT,
    now: datetime | None = None,
) -> dict:
    return _build(queries, shards, memory_limit, now, images=False)[0]


def _build(queries, shards, memory_limit: str, now: datetime | None, images: bool) -> tuple[dict, dict | None]:
    """(summary, contact sheets with their thumbnails or None); summary.json lists the
    sheets' samples without the pictures."""
    sheets = None
    with open_inputs(queries, shards, memory_limit=memory_limit) as inp:
        if not inp.available and not inp.stats:
            raise InputError(
                f"nothing to audit: {inp.queries_file} and {inp.shards} hold none of the pipeline's "
                f"outputs; run `make queries shards` or pass --queries/--shards"
            )
        figures = compute(inp)
        if images:
            sheets = contact_sheets(inp)
        summary = {
            "generated_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "tool": {"name": "pipeline audit", "version": __version__},
            "inputs": {
                "queries": str(inp.queries_file),
                "shards": str(inp.shards),
                "views": dict(inp.available),
                "missing": dict(inp.missing),
            },
            **figures,
            "warnings": list(inp.warnings),
        }
        if sheets is not None:
            summary["contact_sheets"] = without_images(sheets)
    summary["plots"] = [
        svg.split('data-plot="', 1)[1].split('"', 1)[0] for group in charts(summary).values() for svg in group
    ]
    return summary, sheets


def build_audit(
    queries: str | Path | Location = "query_lists",
    shards: str | Path | Location = "shards",
    out: str | Path | Location | None = None,
    memory_limit: str = MEMORY_LIMIT,
    quiet: bool = False,
    now: datetime | None = None,
) -> dict:
    """Compute every figure and write OUT/summary.json, report.html and report.md; returns the summary.

    Paths may be fsspec URLs; OUT defaults to SHARDS/audit, on the same store as the shards.
    A local OUT is held (`outlock`) while the report is made: two audits writing one folder
    would interleave their files."""
    out = output_location(shards, out)
    with hold(out, "audit"):
        summary, sheets = _build(queries, shards, memory_limit, now, images=True)
        write_outputs(
            out,
            {
                "summary.json": json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n",
                "report.html": render_html(summary, sheets),
                "report.md": render_md(summary),
            },
        )
    if not quiet:
        for w in summary["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        missing = [k for k in SECTIONS if not _ok(summary[k])]
        if missing:
            print(f"audit: unavailable sections: {', '.join(missing)}", file=sys.stderr)
    return summary
