"""What the worldwide recipe's bigram rules select in Wikipedias of every size.

MetaCLIP 2 keeps, per language, the bigrams with PMI = log2(N c(xy) / (c(x) c(y))) > 30.
Since c(xy) <= min(c(x), c(y)), PMI <= log2(N), so a language with N < 2^30 ~ 1.07e9 tokens
can admit no bigram at all, and at English's N ~ 4.5e9 only pairs whose words occur a
handful of times in all of Wikipedia. This bench measures it on counts rather than arguing
it: it takes the simulated full English Wikipedia of `bench/queries_fullscale.py`
(`tests/support/wikisim.py`, N = 4.5e9) and thins every unigram and bigram count
binomially to a fraction f of the tokens, which gives the counts of a Wikipedia of f N
tokens with English's shape (a random f of its text). Each size then goes through the real
`Aggregates` and the worldwide recipe's `select_language`, once with MetaCLIP 2's literal
rule (``--bigram-rule metaclip2``) and once with the default ranked rule (pairs seen as often
as the language's last kept word, best PMI first, at most 40% of the words kept).

Sizes: f = 1 (English, 4.5e9), 0.25 (1.1e9: German, French), 0.1 (4.5e8: Russian,
Japanese, Spanish are 0.5-1e9; Chinese, Italian lie between), 0.02 (9e7: Czech, Korean,
Finnish), 0.004 (1.8e7: Estonian, Thai), 0.0005 (2.3e6: the long tail of small Wikipedias).
The simulated world leaves out words seen once or twice (and, below --scale 1, thins those
seen 3-99 times), so distinct-word counts, and with them the 10% unigram caps, are lower
than a real dump's; bigram figures at PMI > 30 do not depend on it (no such pair survives
below 2^30 tokens whatever the words). Prints one JSON object and a markdown table.

    .venv/bin/python bench/queries_worldwide_sizes.py [--scale 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.checks import produced  # noqa: E402
from pipeline.queries.aggregate import Aggregates  # noqa: E402
from pipeline.queries.worldwide import WorldwideRules, select_language  # noqa: E402
from tests.support import wikisim  # noqa: E402

FRACTIONS = (1.0, 0.25, 0.1, 0.02, 0.004, 0.0005)


def thin(src: Path, dst: Path, f: float, rng: np.random.Generator) -> None:
    """Every count of the spill tables under `src` thinned to Binomial(c, f), zeros dropped;
    a bigram's count then clamped to its words' thinned counts (a pair cannot occur more
    often than either of its words, as in any real text; independent thinning would break it)."""
    uni = pa.concat_tables(pq.read_table(p) for p in sorted((src / "uni").glob("*.parquet")))
    uc = uni.column("c").to_numpy()
    uc = uc if f == 1.0 else rng.binomial(uc, f)
    bi = pa.concat_tables(pq.read_table(p) for p in sorted((src / "bi").glob("*.parquet")))
    bc = bi.column("c").to_numpy()
    bc = bc if f == 1.0 else rng.binomial(bc, f)
    words = uni.column("w").combine_chunks()
    halves = pc.split_pattern(bi.column("b").combine_chunks(), " ", max_splits=1)
    for k in (0, 1):
        at = pc.index_in(pc.list_element(halves, k), value_set=words).to_numpy(zero_copy_only=False)
        known = ~np.isnan(at.astype(float))
        word_c = np.zeros(len(bc), dtype=np.int64)
        word_c[known] = uc[at[known].astype(np.int64)]
        bc = np.minimum(bc, np.where(known, word_c, bc))
    for sub, table, c in (("uni", uni, uc), ("bi", bi, bc)):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        table = table.set_column(table.schema.get_field_index("c"), "c", pa.array(c, pa.int64()))
        pq.write_table(table.filter(pa.array(c > 0)), dst / sub / "part-000.parquet")
    shutil.copytree(src / "titles", dst / "titles")


def select(work: Path, rules: WorldwideRules, threads: int, memory_limit: str) -> dict:
    agg = Aggregates(work, memory_limit=memory_limit, threads=threads)
    try:
        chosen = select_language(agg, rules, "en", [], None)
        top = next(iter(agg.bigrams(None)), None)
    finally:
        agg.close()
    r = chosen.report
    return {
        "N": r["tokens_in_unigram_table"],
        "pmi_ceiling": r["pmi_ceiling"],
        "max_pmi": None if top is None else round(top[2], 3),
        "distinct_unigrams": r["distinct_unigrams"],
        "unigrams": r["sources"]["unigram"]["added"],
        "bigram_floor": r["bigram_floor"],
        "bigram_cap": r["caps"]["bigram"],
        "bigrams_counted": r["bigrams_reaching_min_count"],
        "bigrams": r["sources"]["bigram"]["added"],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| f | N tokens | log2 N | max PMI, pairs >= floor | PMI > 30 (metaclip2) | ranked: floor | ranked: bigrams | words kept |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, k = r["metaclip2"], r["ranked"]
        lines.append(
            f"| {r['fraction']} | {k['N']:.2e} | {k['pmi_ceiling']} | {k['max_pmi']} | {m['bigrams']:,} | "
            f"{k['bigram_floor']:,} | {k['bigrams']:,} | {k['unigrams']:,} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1, help="wikisim's --scale (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        ap.error("--scale must be in (0, 1]")
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="queries-worldwide-sizes-"))
    rows = []
    try:
        world = wikisim.world_for(args.seed, args.scale)
        wikisim.write_counts(world, "clip", work / "full")
        rng = np.random.default_rng(args.seed)
        for f in FRACTIONS:
            size = work / f"f{f}"
            thin(work / "full" / "dump", size, f, rng)
            row = {"fraction": f}
            for name, rules in (("metaclip2", WorldwideRules(bigram_rule="metaclip2")), ("ranked", WorldwideRules())):
                row[name] = select(size, rules, args.threads, args.memory_limit)
            produced("queries_worldwide_sizes", f"the ranked rule's bigrams at f={f}", row["ranked"]["bigrams"])
            # The literal rule: nothing can pass below 2^30 tokens; a pair that did would be a bug.
            if row["ranked"]["N"] < 2**30 and row["metaclip2"]["bigrams"]:
                print(f"error: PMI > 30 admitted bigrams at N = {row['ranked']['N']:.3g}", file=sys.stderr)
                return 1
            rows.append(row)
            shutil.rmtree(size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "queries_worldwide_sizes",
        "scale": args.scale,
        "seed": args.seed,
        "pmi30_needs_tokens": 2**30,
        "log2_of_english_N": round(math.log2(4.5e9), 3),
        "sizes": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=1))
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
