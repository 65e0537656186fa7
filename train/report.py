"""A training run's report: RUN/report.html, one self-contained page (inline CSS and SVG, no
scripts, no external resources), like the dataset audit's.

    python -m train.report runs/NAME [--out FILE]

It reads only the run's JSON files, so it needs no torch and takes well under a second:
``config.json`` (model, planned steps, global batch), ``metrics.jsonl`` (the training
curves; a resumed run appends, and a step logged twice counts once, its last row),
``eval/step-NNNNNNNN.json`` and ``eval/final.json`` (`train.evaluate`: zero-shot accuracy
and retrieval over steps; the few-shot and linear probes of the newest evaluation that has
them), ``eval/overlap.json`` (`train.overlap`: train/test overlap) and, for a run that
balanced while training (`--balance-t`), ``balance/pass-NNNN.parquet`` (`train.balance`:
what the first and the latest pass drew per entry). Whatever is missing
is said on the page instead of a chart. `write_report` is what the trainer calls after
each evaluation; the command rewrites the page by hand (e.g. after ``train.overlap``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from pipeline import page, plots
from pipeline.errors import EXIT_INPUT_ERROR, InputError
from pipeline.io import atomic_path
from pipeline.page import esc, table
from pipeline.plots import Line, Ref, finite, fmt_int, fmt_num

STEP_FILE = re.compile(r"^step-(\d+)\.json$")
COLORS = (plots.BLUE, plots.ORANGE, plots.GREEN, "#8e5fb5", plots.RED, "#1b9aaa", "#8c6d31", plots.GREY)
TRAINING = (  # metrics.jsonl key, chart title, y label, y axis from 0
    ("loss", "Training loss", "contrastive loss", False),
    ("lr", "Learning rate", "learning rate", True),
    ("logit_scale", "Logit scale (1 / temperature)", "exp(logit_scale)", False),
    ("samples_per_s", "Throughput", "samples / s", True),
)
RECALL = [(d, k) for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
ARROW = {"image_to_text": "image→text", "text_to_image": "text→image"}


def pct(v, digits: int = 1) -> str:
    return plots.fmt_pct(v, digits) if finite(v) else "–"


def pct_tick(v: float) -> str:
    return f"{100 * v:.4g}%"


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


# ---------------------------------------------------------------------- reading


def _read_json(path: Path, warnings: list[str]):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.append(f"{path.parent.name}/{path.name}: unreadable, left out ({type(e).__name__}: {e})")
        return None


def read_metrics(path: Path, warnings: list[str]) -> list[dict]:
    """The rows of metrics.jsonl by step, the last row for a step logged twice (a resumed
    run appends); a line cut by a kill is skipped."""
    rows: dict[int, dict] = {}
    bad = 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            rows[int(row["step"])] = row
        except (ValueError, KeyError, TypeError):
            bad += bool(line.strip())
    if bad:
        warnings.append(f"metrics.jsonl: {bad} unreadable line(s) left out")
    return [rows[s] for s in sorted(rows)]


def load_run(run_dir: str | Path) -> dict:
    """Everything the page shows, from the run folder's JSON files."""
    run = Path(run_dir)
    metrics_path, eval_dir = run / "metrics.jsonl", run / "eval"
    if not metrics_path.is_file() and not eval_dir.is_dir():
        raise InputError(f"{run}: no metrics.jsonl and no eval/ in it: not a training run folder (runs/NAME)")
    warnings: list[str] = []
    config = (_read_json(run / "config.json", warnings) if (run / "config.json").is_file() else None) or {}
    evals = []  # {"file", "step", "result"}; final.json's step is the checkpoint's it evaluated
    if eval_dir.is_dir():
        for path in sorted(eval_dir.glob("*.json")):
            m = STEP_FILE.match(path.name)
            if not m and path.name != "final.json":
                continue
            result = _read_json(path, warnings)
            if isinstance(result, dict):
                known = [v for v in (result.get("step"), result.get("checkpoint_step")) if isinstance(v, int)]
                step = int(m.group(1)) if m else (known[0] if known else None)
                evals.append({"file": f"eval/{path.name}", "step": step, "result": result})
    overlap = _read_json(eval_dir / "overlap.json", warnings) if (eval_dir / "overlap.json").is_file() else None
    return {
        "dir": run,
        "name": config.get("name") or run.resolve().name,
        "config": config,
        "metrics": read_metrics(metrics_path, warnings) if metrics_path.is_file() else [],
        "evals": evals,
        "overlap": overlap if isinstance(overlap, dict) else None,
        "warnings": warnings,
    }


def timeline(evals: list[dict]) -> list[tuple[int, dict]]:
    """(step, result) by step; where final.json and a step file evaluated one step, the step file."""
    by_step = {}
    for e in sorted(evals, key=lambda e: e["file"] != "eval/final.json"):  # step files last: they win
        if isinstance(e["step"], int):
            by_step[e["step"]] = e["result"]
    return sorted(by_step.items())


def newest(evals: list[dict], want=lambda result: True) -> dict | None:
    """The evaluation of the latest step that `want`s; a step file before final.json of the
    same step, final.json of no known step only when nothing else is there."""
    found = [e for e in evals if want(e["result"])]
    return max(
        found,
        key=lambda e: (e["step"] if isinstance(e["step"], int) else -1, e["file"] != "eval/final.json"),
        default=None,
    )


def _has_probe(result: dict) -> bool:
    return any(isinstance(d, dict) and "linear_probe" in d for d in (result.get("datasets") or {}).values())


# ---------------------------------------------------------------------- sections


def _unavail(text: str) -> str:
    return f'<p class="unavail">{esc(text)}</p>'


def _missing(key: str, title: str, why: str) -> str:
    return _section(key, title, [_unavail(why)])


def _section(key: str, title: str, parts: list[str], charts: Sequence[str] = ()) -> str:
    grid = '<div class="grid">' + "".join(f"<div>{c}</div>" for c in charts) + "</div>" if charts else ""
    return f'<section id="{key}"><h2>{esc(title)}</h2>' + "".join(parts[:1]) + grid + "".join(parts[1:]) + "</section>"


def training_section(rows: list[dict]) -> str:
    if not rows:
        return _missing(
            "training", "Training", "No metrics.jsonl yet: the trainer appends a row to it every --log-every steps."
        )
    charts = [
        plots.lines(
            f"train_{key}",
            title,
            # a step without the metric is a None y, which lines() leaves out (Line.points says float)
            [Line(ylabel, cast("list[tuple[float, float]]", [(r["step"], r.get(key)) for r in rows]))],
            xlabel="step",
            ylabel=ylabel,
            y_from_zero=zero,
        )
        for key, title, ylabel, zero in TRAINING
    ]
    last = rows[-1]
    reasons = ", ".join(f"{k.replace('_', ' ')} {fmt_int(v)}" for k, v in (last.get("skipped_by_reason") or {}).items())
    text = (
        f"{len(rows):,} logged steps, {fmt_int(rows[0]['step'])} to {fmt_int(last['step'])}; "
        f"{fmt_int(last.get('skipped_samples'))} samples skipped"
        + (f" ({reasons})" if reasons else "")
        + f", {fmt_int(last.get('shard_errors'))} shard errors so far."
    )
    return _section("training", "Training", [f"<p>{esc(text)}</p>"], charts)


def _over_steps(evals: list[dict], group: str) -> tuple[dict | None, list[tuple[int, dict]], list[str]]:
    """For `group` ("datasets" or "retrieval"): the newest evaluation that has results in
    it, every evaluation's (step, {name: results}), and the names in order of appearance."""
    points = [(step, r.get(group) or {}) for step, r in timeline(evals)]
    names = list(dict.fromkeys(n for _, g in points for n in g))
    return newest(evals, lambda r: bool(r.get(group))), points, names


def zeroshot_section(evals: list[dict]) -> str:
    title = "Zero-shot classification"
    latest, points, names = _over_steps(evals, "datasets")
    if latest is None:
        return _missing(
            "zeroshot",
            title,
            "No evaluation yet: eval/ holds no step-NNNNNNNN.json or final.json (the trainer writes "
            "one every --eval-every steps and at the end; python -m train.evaluate --checkpoint RUN "
            "writes final.json).",
        )
    charts = []
    for metric in ("top1", "top5"):
        series, refs = [], []
        for i, name in enumerate(names):
            got = [(s, g[name]) for s, g in points if isinstance(g.get(name), dict) and metric in g[name]]
            if got:
                series.append(Line(name, [(s, d[metric]) for s, d in got], _color(i), markers=True))
                refs.append(Ref(got[-1][1].get(f"chance_{metric}"), f"chance: {name}", _color(i)))
        if series:
            k = metric[3:]
            charts.append(
                plots.lines(
                    f"zeroshot_{metric}",
                    f"Zero-shot top-{k} accuracy",
                    series,
                    refs=refs,
                    xlabel="step",
                    ylabel=f"top-{k} accuracy",
                    y_from_zero=True,
                    yfmt=pct_tick,
                )
            )
    rows = []
    for name, d in latest["result"]["datasets"].items():
        d = d if isinstance(d, dict) else {}
        rows.append(
            [
                name,
                d.get("n_classes"),
                d.get("n"),
                pct(d.get("top1")),
                pct(d.get("top5")),
                pct(d.get("mean_per_class_top1")),
                pct(d.get("chance_top1")),
                pct(d.get("majority_top1")),
                d.get("skipped", ""),
            ]
        )
    parts = [f"<p>{esc(_from(latest))} Dashed lines: chance (1 / classes, 5 / classes for top-5).</p>"]
    if not charts:
        parts.append(_unavail("No evaluation with a known step: nothing to draw over steps."))
    parts.append(
        table(
            [
                "dataset",
                "classes",
                "images",
                "top-1",
                "top-5",
                "mean per-class top-1",
                "chance top-1",
                "majority class",
                "note",
            ],
            rows,
            {1, 2, 3, 4, 5, 6, 7},
        )
    )
    return _section("zeroshot", title, parts, charts)


def suite_section(evals: list[dict]) -> str:
    """The newest evaluation's benchmark suite (`train.eval_suite`): each task's main metric
    beside its random score, DataComp's aggregates with how many tasks each covers, and the
    tasks not scored with the reason; nothing when no evaluation ran one."""
    e = newest(evals, lambda r: isinstance(r.get("suite"), dict))
    if e is None:
        return ""
    suite = e["result"]["suite"]
    rows = [
        [
            r.get("name"),
            r.get("main_metric"),
            pct(r.get("score")),
            pct(r.get("random_score")),
            r.get("n"),
            r.get("partial", ""),
        ]
        for r in suite.get("tasks", [])
    ]
    aggs = [
        [name, pct(a.get("score")), f"{a.get('tasks')} of {a.get('of')}"]
        for name, a in suite.get("aggregates", {}).items()
    ]
    skipped = [[key, why] for key, why in suite.get("not_scored", {}).items()]
    parts = [
        f"<p>{esc(_from(e))} Sets under <code>{esc(str(suite.get('data_root')))}</code>, tasks from "
        f"<code>{esc(str(suite.get('tasklist')))}</code>. Aggregates as DataComp's aggregate_scores.py "
        "computes them, over the tasks scored here.</p>",
        table(["task", "main metric", "score", "random", "images", "note"], rows, {2, 3, 4}),
        table(["aggregate", "mean of main metrics", "tasks"], aggs, {1}),
    ]
    if skipped:
        parts.append(
            f"<details><summary>{len(skipped)} tasks not scored</summary>"
            + table(["task", "why"], skipped)
            + "</details>"
        )
    title = "DataComp suite" if suite.get("name") == "datacomp" else f"Suite {suite.get('name')}"
    return _section("suite", title, parts)


def _from(e: dict) -> str:
    step = f" (step {e['step']:,})" if isinstance(e["step"], int) else ""
    return f"Latest values from {e['file']}{step}."


def retrieval_section(evals: list[dict]) -> str:
    title = "Image-text retrieval"
    latest, points, names = _over_steps(evals, "retrieval")
    if latest is None:
        return _missing(
            "retrieval",
            title,
            "No retrieval results: the trainer measures recall on held-out shards with --val-fraction > 0, "
            "python -m train.evaluate with --retrieval openclipart.",
        )
    charts = []
    for name in names:
        got = [(s, g[name]) for s, g in points if isinstance(g.get(name), dict)]
        series = [
            Line(
                f"{ARROW[d]} R@{k}",
                [(s, m.get(f"{d}_R@{k}")) for s, m in got],
                _color(i % 3),
                dashed=d == "text_to_image",
                markers=True,
            )
            for i, (d, k) in enumerate(RECALL)
        ]
        refs = [Ref(got[-1][1].get("chance_R@1"), "chance R@1")] if got else []
        charts.append(
            plots.lines(
                f"retrieval_{name}",
                f"Retrieval recall: {name}",
                series,
                refs=refs,
                xlabel="step",
                ylabel="recall",
                y_from_zero=True,
                yfmt=pct_tick,
            )
        )
    rows = [
        [name, m.get("n"), *[pct(m.get(f"{d}_R@{k}")) for d, k in RECALL], pct(m.get("chance_R@1"))]
        for name, m in latest["result"]["retrieval"].items()
        if isinstance(m, dict)
    ]
    heads = ["set", "pairs", *[f"{ARROW[d]} R@{k}" for d, k in RECALL], "chance R@1"]
    return _section(
        "retrieval",
        title,
        [f"<p>{esc(_from(latest))} Solid: image→text, dashed: text→image.</p>", table(heads, rows, set(range(1, 9)))],
        charts,
    )


def matching_shots(shots: list[tuple[int, float]], target: float) -> str:
    """Where `target` (zero-shot top-1) meets the k-shot curve, interpolated on log2 k: the
    paper's Figure 6 reads zero-shot CLIP as worth a k-shot linear probe."""
    (k0, m0), (kn, mn) = shots[0], shots[-1]
    if target < m0:
        return f"below the {k0}-shot probe ({pct(m0)})"
    for (ka, ma), (kb, mb) in zip(shots, shots[1:]):
        if ma <= target <= mb:
            t = (target - ma) / (mb - ma) if mb > ma else 0.0
            return f"as good as a {2 ** (math.log2(ka) + t * math.log2(kb / ka)):.1f}-shot probe"
    return f"above the {kn}-shot probe ({pct(mn)})"


def fewshot_section(evals: list[dict]) -> tuple[str, str]:
    """The few-shot curves (Figure 6) and the linear-probe table, from the newest evaluation with probes."""
    e = newest(evals, _has_probe)
    if e is None:
        why = (
            "No linear-probe results: evaluate with --linear-probe (python -m train ... --linear-probe probes "
            "the final model; python -m train.evaluate --checkpoint RUN --linear-probe)."
        )
        return (
            _missing("fewshot", "Few-shot linear probes vs zero-shot", why),
            _missing("linear_probe", "Linear probes", why),
        )
    charts, notes, rows = [], [], []
    for name, d in e["result"]["datasets"].items():
        lp = d.get("linear_probe") if isinstance(d, dict) else None
        if not isinstance(lp, dict):
            continue
        fs = lp.get("few_shot") or {"skipped": "no few-shot results"}
        shots = sorted((int(k), v) for k, v in (fs.get("shots") or {}).items())
        top = f"{shots[-1][0]}-shot: {pct(shots[-1][1].get('mean'))} ± {pct(shots[-1][1].get('std'))}" if shots else ""
        rows.append(
            [
                name,
                pct(lp.get("test_acc")),
                fmt_num(lp.get("lambda")) if finite(lp.get("lambda")) else "–",
                pct(lp.get("zero_shot_top1")),
                top,
                pct(lp.get("chance")),
                f"{fmt_int(lp.get('n_train'))} / {fmt_int(lp.get('n_val'))} / {fmt_int(lp.get('n_test'))}",
                lp.get("skipped") or fs.get("skipped") or "",
            ]
        )
        if "skipped" in lp or "skipped" in fs or not shots:
            notes.append(_unavail(f"{name}: few-shot probes skipped ({lp.get('skipped') or fs.get('skipped')})."))
            continue
        zs = fs.get("zero_shot_top1", lp.get("zero_shot_top1"))
        seeds = len(fs.get("seeds") or shots[0][1].get("acc") or [])
        curve = Line(
            f"k-shot linear probe (mean ± std, {seeds} draws)",
            [(k, v.get("mean")) for k, v in shots],
            spread=[v.get("std") for _, v in shots],
            markers=True,
        )
        # a missing value is a None y, which lines() leaves out (Ref.y says float)
        refs = [
            Ref(cast(float, zs), "zero-shot top-1 (same test split)", plots.ORANGE, dashed=False),
            Ref(cast(float, lp.get("test_acc")), "linear probe, full train split", plots.GREEN, dashed=False),
            Ref(cast(float, fs.get("chance", lp.get("chance"))), "chance"),
        ]
        charts.append(
            plots.lines(
                f"fewshot_{name}",
                f"Few-shot probes vs zero-shot: {name}",
                [curve],
                refs=refs,
                log2x=True,
                y_from_zero=True,
                yfmt=pct_tick,
                ylabel="test accuracy",
                xlabel="labelled examples per class (k, log2 scale)",
            )
        )
        if zs is not None and finite(zs) and all(finite(v.get("mean")) for _, v in shots):
            match = matching_shots([(k, v["mean"]) for k, v in shots], zs)
            notes.append(
                f"<p>{esc(name)}: zero-shot top-1 {esc(pct(zs))} on the probes' test split is {esc(match)}.</p>"
            )
    intro = (
        f"<p>From {esc(e['file'])}. Each k-shot probe is fit on k images per class of the train split and "
        "scored on the same test split as the zero-shot classifier: where the zero-shot line crosses the curve "
        "is how many labelled examples per class zero-shot is worth (the CLIP paper's Figure 6).</p>"
    )
    fewshot = _section("fewshot", "Few-shot linear probes vs zero-shot", [intro, *notes], charts)
    heads = [
        "dataset",
        "linear probe top-1",
        "λ",
        "zero-shot top-1 (same split)",
        "largest k-shot",
        "chance",
        "train / val / test",
        "note",
    ]
    probe = _section(
        "linear_probe",
        "Linear probes",
        [
            f"<p>Logistic regression on frozen image features, λ chosen on the validation split ({esc(e['file'])}).</p>",
            table(heads, rows, {1, 2, 3, 5}),
        ],
    )
    return fewshot, probe


def _ci(v) -> str:
    return f"[{pct(v[0])}, {pct(v[1])}]" if isinstance(v, (list, tuple)) and len(v) == 2 else "–"


def overlap_section(overlap: dict | None, run_dir: Path) -> str:
    title = "Train/test overlap"
    if overlap is None:
        return _missing(
            "overlap",
            title,
            f"No eval/overlap.json: run python -m train.overlap {run_dir} to find evaluation images "
            "that are also in the training shards and compare accuracy on them with the clean rest.",
        )
    rows = []
    thresholds = overlap.get("thresholds") or {}  # {"min_cosine": {name: value}, ...}
    for name, d in (overlap.get("datasets") or {}).items():
        d = d if isinstance(d, dict) else {}
        kinds = d.get("by_kind") or {}
        th = {k: v.get(name) if isinstance(v, dict) else v for k, v in thresholds.items()}
        diff = d.get("all_minus_clean")
        p = d.get("binomial_p")
        rows.append(
            [
                name,
                d.get("all"),
                d.get("overlap"),
                d.get("clean"),
                pct(d.get("overlap_rate"), 2),
                " / ".join(fmt_int(kinds.get(k)) for k in ("exact", "phash", "embedding")),
                pct(d.get("top1_all")),
                pct(d.get("top1_overlap")),
                pct(d.get("top1_clean")),
                f"{100 * diff:+.2f} pp" if diff is not None and finite(diff) else "–",
                f"{p:.3g}" if finite(p) else "–",
                _ci(d.get("overlap_top1_ci995")),
                ", ".join(f"{k} {v}" for k, v in th.items() if v is not None),
            ]
        )
    errors = overlap.get("shard_errors")
    text = (
        f"Checkpoint {overlap.get('checkpoint') or '–'} (model {overlap.get('model') or '–'}, step "
        f"{fmt_int(overlap.get('step'))}) against {fmt_int(overlap.get('n_shard_images'))} training images"
        + (f" ({fmt_int(errors)} unreadable, left out)" if errors else "")
        + ". All − Clean in percentage "
        "points; p: binomial test of the overlap's top-1 against the clean accuracy; CI: 99.5% interval of the "
        "overlap's top-1."
    )
    heads = [
        "dataset",
        "All",
        "Overlap",
        "Clean",
        "overlap rate",
        "exact / pHash / embedding",
        "top-1 All",
        "top-1 Overlap",
        "top-1 Clean",
        "All − Clean",
        "binomial p",
        "99.5% CI (Overlap)",
        "thresholds",
    ]
    return _section("overlap", title, [f"<p>{esc(text)}</p>", table(heads, rows, set(range(1, 11)))])


def balance_section(run_dir: Path, t) -> str:
    """Balancing while training: per entry (by rank of its matches), its matches, what the
    first pass expected and drew, and what the latest pass drew; heads come out flat at T,
    the tail whole. Nothing for a run that did not balance."""
    title = "Balancing while training"
    records = sorted((Path(run_dir) / "balance").glob("pass-*.parquet"))
    if t is None and not records:
        return ""
    if not records:
        return _missing("balance", title, "No balance/pass-*.parquet yet: the trainer writes one as each pass begins.")
    import pyarrow.parquet as pq

    passes = [
        (int(p.stem.split("-")[1]), pq.read_table(p).to_pydict(), pq.read_schema(p).metadata or {})
        for p in (records[0], records[-1])
    ]
    (first, f, fmeta), (latest, last, lmeta) = passes
    order = sorted(range(len(f["count"])), key=lambda i: (-f["count"][i], f["query_id"][i]))
    at = {q: i for i, q in enumerate(last["query_id"])}

    t_value = float(fmeta.get(b"t", t or 0))
    series = [
        ("matches", [[r + 1, f["count"][i]] for r, i in enumerate(order)], plots.GREY),
        ("expected per pass", [[r + 1, f["expected"][i]] for r, i in enumerate(order)], plots.BLUE),
        (f"drawn, pass {first}", [[r + 1, f["drawn"][i]] for r, i in enumerate(order)], plots.ORANGE),
    ]
    if latest != first:
        series.append(
            (
                f"drawn, pass {latest}",
                [[r + 1, last["drawn"][at[f["query_id"][i]]]] for r, i in enumerate(order) if f["query_id"][i] in at],
                plots.GREEN,
            )
        )
    chart = plots.loglog(
        "balance_passes",
        "Samples per entry, by rank of its matches (log-log)",
        series,
        xlabel="entry rank",
        ylabel="samples",
        hline=(t_value, f"T = {fmt_num(t_value)}"),
        width=620,
        height=320,
    )
    rows = []
    for number, meta in ((first, fmeta), (latest, lmeta)):
        totals = json.loads(meta.get(b"totals", b"{}"))
        rows.append(
            [str(number), fmt_int(totals.get("samples")), fmt_num(totals.get("expected")), fmt_int(totals.get("drawn"))]
        )
    text = (
        f"Each pass keeps a sample with 1 − ∏(1 − min(1, T / count)) over its entries, T = {fmt_num(t_value)}, "
        f"a fresh draw per pass; {len(records)} pass record(s) in balance/. Head entries come out near T a pass, "
        "tail entries keep every sample."
    )
    head_rows = [
        [
            f["query"][i],
            fmt_int(f["count"][i]),
            fmt_int(f["samples"][i]),
            f"{f['expected'][i]:.1f}",
            fmt_int(f["drawn"][i]),
        ]
        + ([fmt_int(last["drawn"][at[f["query_id"][i]]]) if f["query_id"][i] in at else "–"] if latest != first else [])
        for i in order[:10]
    ]
    heads = ["entry", "matches", "in shards", "expected / pass", f"drawn, pass {first}"] + (
        [f"drawn, pass {latest}"] if latest != first else []
    )
    return _section(
        "balance",
        title,
        [
            f"<p>{esc(text)}</p>",
            table(["pass", "samples", "expected", "drawn"], rows, {1, 2, 3}),
            table(heads, head_rows, set(range(1, len(heads)))),
        ],
        [chart],
    )


# ---------------------------------------------------------------------- page


def _tiles(run: dict, done: int | None) -> str:
    cfg, rows = run["config"], run["metrics"]
    planned = cfg.get("steps")
    batch = cfg.get("global_batch")
    elapsed = rows[-1].get("elapsed_time") if rows else None
    loss = rows[-1].get("loss") if rows else None
    return page.tiles(
        [
            ("steps", fmt_int(done), f"steps done of {fmt_int(planned)}" if planned else "steps done"),
            ("samples", fmt_num(done * batch) if done and batch else "–", "samples seen (steps × global batch)"),
            ("loss", f"{loss:.4f}" if finite(loss) else "–", "training loss, last logged step"),
            (
                "time",
                str(timedelta(seconds=round(elapsed))) if elapsed is not None and finite(elapsed) else "–",
                "training time",
            ),
            ("evals", str(len(run["evals"])), "evaluations in eval/"),
        ]
    )


def render(run: dict, now: datetime) -> str:
    cfg, rows, evals = run["config"], run["metrics"], run["evals"]
    steps = [r["step"] for r in rows] + [e["step"] for e in evals if isinstance(e["step"], int)]
    done = max(steps, default=None)
    model = cfg.get("model") or next((e["result"].get("model") for e in evals if e["result"].get("model")), None)
    fewshot, probe = fewshot_section(evals)
    head = [
        *page.head(f"Training run: {run['name']}"),
        f"<header><h1>Training run: {esc(run['name'])}</h1>",
        f'<p class="sub">model <code>{esc(model or "unknown")}</code> · folder <code>{esc(run["dir"])}</code>'
        f" · written {esc(now.isoformat(timespec='seconds'))}; the trainer rewrites this page after each "
        f"evaluation, <code>python -m train.report RUN</code> by hand</p>",
        _tiles(run, done),
    ]
    head += [f'<p class="warn">{esc(w)}</p>' for w in run["warnings"]]
    body = [
        training_section(rows),
        zeroshot_section(evals),
        suite_section(evals),
        retrieval_section(evals),
        fewshot,
        probe,
        overlap_section(run["overlap"], run["dir"]),
        balance_section(run["dir"], cfg.get("balance_t")),
    ]
    foot = [
        "<footer>Written by <code>python -m train.report</code> from config.json, metrics.jsonl and eval/*.json "
        "in the run folder.</footer>",
        page.END,
    ]
    return "\n".join(head + ["</header>"] + body + foot) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None, now: datetime | None = None) -> Path:
    """Write RUN/report.html (or `out`) atomically: a reader never sees half a page.
    Raises InputError if RUN holds neither metrics.jsonl nor eval/."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render(run, now or datetime.now(UTC)), encoding="utf-8")
    return path


def refresh_report(run_dir: str | Path) -> bool:
    """`write_report` after an evaluation (the trainer's, `train.evaluate`'s, `train.overlap`'s):
    a failure is a warning on stderr, never the end of what called it; the results are saved."""
    try:
        write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the page is a view of results already written
        print(f"report.html not rewritten: {type(e).__name__}: {e}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.report",
        description="Write a training run's report.html: training curves, zero-shot accuracy and retrieval over "
        "steps, few-shot and linear probes, train/test overlap. Self-contained (inline CSS and SVG, no "
        "scripts); read from the run's JSON files only.",
    )
    ap.add_argument("run", metavar="RUN", help="the run folder (runs/NAME)")
    ap.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN/report.html)")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.run, args.out)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
