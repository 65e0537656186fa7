"""Benchmark offline language identifiers on short, caption-like texts.

Why: the worldwide curation recipe (MetaCLIP 2 style) identifies the language of every
alt-text and matches it only against that language's query list, so the identifier decides
which list a caption can ever match. Alt-texts are short (a few words), which is where
identifiers differ most, and it runs once per candidate pair, so its speed matters too.

Measured in one run, single thread (BLAS/OpenMP/Rayon pools pinned to 1):

  * accuracy of each candidate (bench/lid_candidates.py: py3langid, Lingua in high and low
    accuracy mode, pycld2 with and without bestEffort) on a labeled set of real text in ~30
    languages cut into 1-3, 4-8 and 9-20 word texts (bench/lid_data.py: Debian's man
    pages and Firefox language packs, pythainlp's Thai Wikipedia titles, fetched once into
    .cache/bench-lid/); overall, per length bucket, per language (and per language and
    bucket), the most frequent confusions, and Japanese texts written in kanji alone. The
    identifiers' codes are mapped to Wikipedia codes (`wiki_code`); a language a candidate
    cannot answer counts as wrong, and so does no answer;
  * texts/s over the whole set, `--rounds` times, the candidates in rotating order; the
    ratio to py3langid is taken per round and its median reported (the machine is shared,
    so only those ratios compare across runs), by wall and by CPU time;
  * per candidate, in `--workers` fresh processes (bench/lid_worker.py, as a spawned
    pipeline worker would run it): import + model load time, first call, resident memory;
    and whether the labels are the same in every round and every process (deterministic).

Every candidate must answer something and the labeled set must not be empty, else the
bench exits 1 with one line on stderr (bench/checks.py). The labeled texts are written to
bench/out/lid/labeled.jsonl for inspection. Prints one JSON object on stdout.

    .venv/bin/python bench/lid.py [--per-lang 300] [--rounds 3] [--quick]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"  # single thread, also in the worker processes

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from importlib.metadata import PackageNotFoundError, distribution  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import lid_data  # noqa: E402
from bench.checks import fail, produced  # noqa: E402
from bench.lid_candidates import BASELINE, BY_NAME, CANDIDATES, DROPPED, NO_LANGUAGE, WIKI_CODE, wiki_code  # noqa: E402

BENCH = "lid"
OUT = ROOT / "bench" / "out" / "lid"
KANA = re.compile(r"[\u3040-\u30ff]")
ZH_VARIETIES = {"zh-yue": "zh", "wuu": "zh"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--per-lang", type=int, default=300, metavar="N", help="texts per language and length bucket (default 300)"
    )
    p.add_argument("--rounds", type=int, default=3, help="timing rounds over the whole set (default 3)")
    p.add_argument("--workers", type=int, default=2, help="fresh worker processes per candidate (default 2; 0: none)")
    p.add_argument("--worker-texts", type=int, default=2000, help="texts each worker process labels (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the text selection (default 0)")
    p.add_argument("--candidates", default=",".join(c.name for c in CANDIDATES), help="comma-separated subset")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 15 languages, at most --per-lang 20, 1 round, 1 worker of 200 texts per candidate",
    )
    args = p.parse_args(argv)
    if args.per_lang < 0 or args.rounds < 1 or args.workers < 0 or args.worker_texts < 1:
        p.error("--per-lang and --workers must be >= 0, --rounds and --worker-texts >= 1")
    if args.quick:
        args.per_lang, args.rounds = min(args.per_lang, 20), 1
        args.workers, args.worker_texts = min(args.workers, 1), min(args.worker_texts, 200)
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown candidate(s) {unknown}; known: {sorted(BY_NAME)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)  # the ratios need it
    args.names = names
    return args


# --- the package facts ------------------------------------------------------------------------


def package_facts(dist_name: str) -> dict:
    """Version, license and installed size of a PyPI distribution."""
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        return {"installed": False}
    meta = dist.metadata
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    license_ = meta.get("License-Expression") or meta.get("License") or "; ".join(classifiers)
    size = sum(f.size or 0 for f in dist.files or [])
    return {"version": dist.version, "license": license_, "installed_mb": round(size / 2**20, 1)}


# --- timing -----------------------------------------------------------------------------------


def label_all(detect, texts: list[str]) -> tuple[list, float, float]:
    """Labels of `texts`, and the wall and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    labels = [detect(t) for t in texts]
    return labels, time.perf_counter() - wall, time.process_time() - cpu


def time_rounds(detectors: dict, texts: list[str], rounds: int) -> tuple[dict, dict, dict]:
    """Label the whole set `rounds` times, the candidates in rotating order.
    Returns labels per candidate (first round), per-round (wall, cpu) seconds, and whether
    every round gave the first round's labels."""
    names = list(detectors)
    labels: dict[str, list] = {}
    times: dict[str, list] = defaultdict(list)
    stable = dict.fromkeys(names, True)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            got, wall, cpu = label_all(detectors[name].detect, texts)
            times[name].append((wall, cpu))
            if name in labels:
                stable[name] &= got == labels[name]
            else:
                labels[name] = got
            lid_data.log(f"round {r + 1}/{rounds}: {name} {len(texts) / wall:,.0f} texts/s")
    return labels, times, stable


def speed(times: dict, n: int, name: str) -> dict:
    """texts/s (median round) by wall and CPU time, and the median per-round ratio to the baseline."""
    walls = [w for w, _ in times[name]]
    cpus = [c for _, c in times[name]]
    base = times[BASELINE]
    return {
        "texts_per_s": round(n / statistics.median(walls)),
        "texts_per_s_cpu": round(n / statistics.median(cpus)),
        "ratio_texts_per_s_vs_py3langid": round(statistics.median(b[0] / t[0] for b, t in zip(base, times[name])), 3),
        "ratio_texts_per_s_cpu_vs_py3langid": round(
            statistics.median(b[1] / t[1] for b, t in zip(base, times[name])), 3
        ),
        "rounds_wall_s": [round(w, 3) for w in walls],
    }


# --- accuracy ---------------------------------------------------------------------------------


def share(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def accuracy(texts: list[lid_data.Text], predicted: list[str | None]) -> dict:
    """Overall, macro (mean over languages), per bucket, per language (and bucket)."""
    hits = [p == t.lang for t, p in zip(texts, predicted)]
    by_bucket: dict[str, list] = defaultdict(list)
    by_lang: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for t, hit in zip(texts, hits):
        by_bucket[t.bucket].append(hit)
        by_lang[t.lang]["all"].append(hit)
        by_lang[t.lang][t.bucket].append(hit)
    per_lang = {
        lang: {k: share(v) for k, v in sorted(d.items(), key=lambda kv: kv[0] != "all")}
        for lang, d in sorted(by_lang.items())
    }
    macro = statistics.mean(d["all"] for d in per_lang.values())
    macro_bucket = {
        b: round(statistics.mean(d[b] for d in per_lang.values() if d.get(b) is not None), 4) for b in lid_data.BUCKETS
    }
    return {
        "accuracy": share(hits),
        "accuracy_macro": round(macro, 4),
        "by_bucket": {b: share(by_bucket[b]) for b in lid_data.BUCKETS},
        "by_bucket_macro": macro_bucket,
        "by_language": per_lang,
    }


def confusions(texts: list[lid_data.Text], predicted: list[str | None], top: int = 15) -> dict[str, int]:
    """The most frequent errors, as "true>predicted" (none: no answer)."""
    errors = Counter(f"{t.lang}>{p or 'none'}" for t, p in zip(texts, predicted) if p != t.lang)
    return dict(errors.most_common(top))


def kanji_only(texts: list[lid_data.Text], predicted: list[str | None]) -> dict:
    """Japanese texts without a single kana: the ones that read as Chinese."""
    pairs = [(t, p) for t, p in zip(texts, predicted) if t.lang == "ja" and not KANA.search(t.text)]
    return {
        "texts": len(pairs),
        "accuracy": share([p == "ja" for _, p in pairs]),
        "said_zh": sum(p == "zh" for _, p in pairs),
    }


def zh_varieties_as_zh(texts: list[lid_data.Text], predicted: list[str | None]) -> dict:
    """Accuracy if Cantonese and Wu answers (zh-yue, wuu: own Wikipedias) were taken as zh: what a
    recipe that files them under zh would see (py3langid reads much Traditional Chinese as yue)."""
    merged = [ZH_VARIETIES.get(p, p) if p else p for p in predicted]
    full = accuracy(texts, merged)
    return {
        "accuracy": full["accuracy"],
        "by_bucket": full["by_bucket"],
        "zh": full["by_language"].get("zh"),
        "answers_changed": sum(a != b for a, b in zip(predicted, merged)),
    }


def support(codes: tuple[str, ...], langs: list[str]) -> dict:
    """How many Wikipedia codes a candidate can answer, and which test languages it cannot."""
    wiki = {wiki_code(c) for c in codes} - {None}
    missing = [lang for lang in langs if lang not in wiki]
    return {
        "codes": len(set(codes)),
        "wiki_codes": len(wiki),
        "test_languages": len(langs) - len(missing),
        "missing": missing,
    }


# --- worker processes -------------------------------------------------------------------------


def run_worker(name: str, texts: list[str]) -> dict:
    """Load and run one candidate in a fresh interpreter (bench/lid_worker.py)."""
    wall = time.perf_counter()
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lid_worker.py"), name],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if res.returncode != 0:
        lid_data.log(f"worker {name} failed: {res.stderr.strip()[-300:]}")
        return {}
    out = json.loads(res.stdout)
    out["process_s"] = round(time.perf_counter() - wall, 3)
    return out


def worker_checks(names: list[str], texts: list[str], reference: dict[str, list], workers: int) -> dict:
    """Per candidate: medians of load time, first call, memory over `workers` fresh processes,
    and whether each process gave the labels of this process."""
    runs: dict[str, list] = defaultdict(list)
    for _ in range(workers):
        for name in names:
            runs[name].append(run_worker(name, texts))
    out = {}
    for name, got in runs.items():
        ok = [g for g in got if g]
        keys = ("process_s", "load_s", "load_cpu_s", "first_call_s", "rss_mb", "peak_rss_mb", "rss_before_load_mb")
        out[name] = {k: round(statistics.median(g[k] for g in ok), 4) for k in keys} if ok else {}
        out[name]["processes"] = len(ok)
        out[name]["same_labels_as_main_process"] = all(g["labels"] == reference[name] for g in ok) if ok else None
    return out


# --- the run ----------------------------------------------------------------------------------


def write_labeled(texts: list[lid_data.Text]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "labeled.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(
                json.dumps({"lang": t.lang, "bucket": t.bucket, "source": t.source, "text": t.text}, ensure_ascii=False)
                + "\n"
            )
    return path


def labeled_summary(texts: list[lid_data.Text], sources: dict, path: Path) -> dict:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(lid_data.BUCKETS, 0))
    for t in texts:
        counts[t.lang][t.bucket] += 1
    return {
        "texts": len(texts),
        "languages": len(counts),
        "buckets_words": {b: list(r) for b, r in lid_data.BUCKETS.items()},
        "chars_per_word": lid_data.CHARS_PER_WORD,
        "per_language": dict(sorted(counts.items())),
        "sources": sources,
        "file": str(path.relative_to(ROOT)),
    }


def load_detectors(names: list[str]) -> dict:
    detectors = {}
    for name in names:
        lid_data.log(f"loading {name}")
        try:
            detectors[name] = BY_NAME[name].load()
        except ImportError as e:
            fail(BENCH, f"{name}: {e} (install it: .venv/bin/pip install {BY_NAME[name].dist})")
    return detectors


def candidate_report(name, detector, texts, labels, times, stable, worker) -> dict:
    predicted = [wiki_code(code) for code in labels]
    langs = sorted({t.lang for t in texts})
    cand = BY_NAME[name]
    return {
        "package": cand.dist,
        **package_facts(cand.dist),
        "settings": cand.settings,
        "answered": share([p is not None for p in predicted]),
        **accuracy(texts, predicted),
        "ja_kanji_only": kanji_only(texts, predicted),
        "zh_varieties_as_zh": zh_varieties_as_zh(texts, predicted),
        "confusions": confusions(texts, predicted),
        "supports": support(detector.codes, langs),
        "raw_codes_seen": sorted({str(code) for code in labels}),
        **speed(times, len(texts), name),
        "deterministic_across_rounds": stable[name],
        "worker": worker.get(name, {}),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    texts, sources = lid_data.build(args.per_lang, args.seed, args.quick)
    produced(BENCH, "labeled set", len(texts))
    path = write_labeled(texts)
    strings = [t.text for t in texts]
    lid_data.log(f"{len(texts)} labeled texts in {len({t.lang for t in texts})} languages")

    detectors = load_detectors(args.names)
    for detector in detectors.values():  # warm-up: lazy state, caches
        for s in strings[:: max(1, len(strings) // 50)]:
            detector.detect(s)
    labels, times, stable = time_rounds(detectors, strings, args.rounds)
    for name, got in labels.items():
        produced(BENCH, f"{name} answers", sum(code is not None and wiki_code(code) is not None for code in got))

    step = max(1, len(strings) // args.worker_texts)
    sample_idx = list(range(0, len(strings), step))[: args.worker_texts]
    reference = {name: [labels[name][i] for i in sample_idx] for name in args.names}
    worker = worker_checks(args.names, [strings[i] for i in sample_idx], reference, args.workers)

    report = {
        "bench": BENCH,
        "settings": {k: getattr(args, k) for k in ("per_lang", "rounds", "workers", "worker_texts", "seed", "quick")},
        "threads": "single: each candidate runs in this one Python thread; OMP/OPENBLAS/MKL/RAYON_NUM_THREADS=1",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_before],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "labeled_set": labeled_summary(texts, sources, path),
        "code_map": {
            "aliases": WIKI_CODE,
            "no_language": sorted(NO_LANGUAGE),
            "rule": "lower, '_'->'-', drop subtag, alias",
        },
        "dropped": DROPPED,
        "notes": [
            "Lingua keeps its models in one process-wide cache: lingua-low after lingua-high loads nothing "
            "in the main process, so load time and memory come from the fresh worker processes.",
            "accuracy counts no answer and a language the candidate cannot name as wrong; "
            "accuracy_macro is the mean of the per-language accuracies.",
        ],
        "candidates": {
            name: candidate_report(name, detectors[name], texts, labels[name], times, stable, worker)
            for name in args.names
        },
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
