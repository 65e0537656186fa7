"""Predict what each recipe's query list holds on full English Wikipedia (N = 4.5e9 tokens).

We cannot count the real dump here, so this writes count tables with Wikipedia's shape
(`tests/support/wikisim.py`: Zipf-Mandelbrot unigrams fitted to the sample dump and to published
vocabulary sizes, case variants, document frequencies, collocations, compositional and
bound rare bigrams, simulated pageviews) and runs the real `Aggregates` + `select_queries`
on them: the clip recipe (defaults), the metaclip recipe, and metaclip with a bigram count
floor of 5. Prints one JSON object, then a markdown table against MetaCLIP's published
list (86,654 WordNet + 251,465 unigrams + 100,646 bigrams + 61,235 titles). The titles
source is assumption-driven (see the module docstring of tests/support/wikisim.py).

    .venv/bin/python bench/queries_fullscale.py [--scale 1] [--seed 0] [--work-dir DIR]

A selection without a single query fails the bench (exit 1, one line on stderr;
`bench/checks.py`). Full size takes about 1.5 minutes, 2.5 GB of memory and ~0.5 GB of disk per recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checks import produced  # noqa: E402
from tests.support import wikisim  # noqa: E402

PUBLISHED = {"wordnet": 86_654, "unigram": 251_465, "bigram": 100_646, "title": 61_235}
SOURCES = tuple(PUBLISHED)


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def markdown(runs: dict) -> str:
    clip, meta = runs["clip"], runs["metaclip"]
    lines = ["| source | MetaCLIP published | simulated metaclip | simulated clip |", "|---|---:|---:|---:|"]
    for s in SOURCES:
        lines.append(f"| {s} | {PUBLISHED[s]:,} | {meta['added'][s]:,} | {clip['added'][s]:,} |")
    lines.append(f"| total | {sum(PUBLISHED.values()):,} | {meta['total']:,} | {clip['total']:,} |")
    lines.append("")
    lines.append("| candidates (before caps and dedup) | simulated metaclip | simulated clip |")
    lines.append("|---|---:|---:|")
    for s in SOURCES:
        lines.append(f"| {s} | {meta['candidates'][s]:,} | {clip['candidates'][s]:,} |")
    case = clip["unigram_candidates_by_case"]
    lines += [
        "",
        f"clip unigram candidates at >= {clip['rules']['min_count']}: case kept {case['keep']:,}, "
        f"case folded {case['fold']:,}; cap {clip['rules']['max_unigrams']:,} "
        f"({'binds' if min(case.values()) > clip['rules']['max_unigrams'] else 'does not bind'} either way).",
    ]
    floor5 = runs["metaclip_min_bigram_count_5"]
    lines.append(
        f"metaclip N = {meta['N']:,}: PMI >= 30 needs c(x)c(y)/c(xy) <= N/2^30 = "
        f"{meta['pmi30_max_ratio']:.3f}; {meta['bound_pairs_ratio_ok']:,} bound rare pairs meet it, "
        f"{meta['added']['bigram']:,} keep both words in >= 3 articles. With a count floor of 5: "
        f"{floor5['added']['bigram']} bigrams (max PMI {floor5['max_pmi']:.2f} < 30)."
    )
    for name, r in (("clip", clip), ("metaclip", meta)):
        lines += [
            "",
            f"{name}: top and bottom selected bigrams",
            "",
            "| rank | bigram | count | PMI |",
            "|---:|---|---:|---:|",
        ]
        n = r["added"]["bigram"]
        rows = [(i + 1, b) for i, b in enumerate(r["top_bigrams"])]
        rows += [(n - len(r["bottom_bigrams"]) + i + 1, b) for i, b in enumerate(r["bottom_bigrams"])]
        seen = set()
        for rank, b in rows:
            if rank not in seen:
                seen.add(rank)
                lines.append(f"| {rank:,} | {b['bigram']} | {b['count']:,} | {b['pmi']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="share of the unselectable rows written (N stays 4.5e9; default: %(default)s)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", help="where the simulated spill tables go (default: a temporary folder, removed)")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        ap.error("--scale must be in (0, 1]")

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="queries-fullscale-"))
    t0 = time.perf_counter()
    timings = {}
    try:
        t = time.perf_counter()
        world = wikisim.world_for(args.seed, args.scale)
        timings["sample_and_world"] = round(time.perf_counter() - t, 1)
        runs = {}
        for name, recipe, overrides in (
            ("clip", "clip", {}),
            ("metaclip", "metaclip", {}),
            ("metaclip_min_bigram_count_5", "metaclip", {"min_bigram_count": 5}),
        ):
            t = time.perf_counter()
            runs[name] = public(
                wikisim.simulate(
                    recipe,
                    work / name,
                    scale=args.scale,
                    seed=args.seed,
                    threads=args.threads,
                    memory_limit=args.memory_limit,
                    **overrides,
                )
            )
            timings[name] = round(time.perf_counter() - t, 1)
            produced("queries_fullscale", f"the {name} selection (queries)", runs[name]["total"])
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    timings["total"] = round(time.perf_counter() - t0, 1)
    meta = runs["metaclip"]
    report = {
        "benchmark": "queries_fullscale",
        "scale": args.scale,
        "seed": args.seed,
        "model": wikisim.model_summary(world),
        "published_metaclip": PUBLISHED,
        "runs": runs,
        # If bound pairs stayed in one article as often as the sample's do, not as often as
        # its words in general: the document-frequency filter would leave this many.
        "metaclip_bigrams_with_sample_bound_pair_spread": round(
            meta["bound_pairs_ratio_ok"] * world.stats.bound_spread
        ),
        "timings_s": timings,
    }
    print(json.dumps(report, indent=1))
    print()
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
