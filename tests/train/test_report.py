"""`train.report`: a run's report.html from its JSON files, written here as the trainer,
`train.evaluate` and `train.overlap` write them (a resumed run, evaluations every 100
steps, probes on the final one, an overlap measurement)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_one_line_error
from train.report import load_run, matching_shots, read_metrics, write_report

NAME = "<b>x</b>&"
ODD = "imagefolder:/data/<cats> & dogs"  # a dataset name is user input too
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SHOTS = (1, 2, 4, 8, 16)


def _metrics_row(step: int, resumed: bool = False) -> dict:
    return {
        "step": step,
        "loss": 4.2 * math.exp(-step / 150) + (0.05 if resumed else 0.0) + 0.3,
        "lr": 1e-3 * min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * step / 400)),
        "logit_scale": round(14.29 + step / 40, 4),
        "samples_per_s": 310.5 + step % 7,
        "data_time": 0.01,
        "batch_time": 0.4,
        "interval_time": 8.1,
        "elapsed_time": 2.0 * step,
        "skipped_samples": step // 100,
        "shard_errors": 0,
        "skipped_by_reason": {"decode_error": step // 100} if step >= 100 else {},
    }


def _dataset(n_classes: int, top1: float) -> dict:
    d = {
        "top1": top1,
        "chance_top1": 1 / n_classes,
        "n": 60 * n_classes,
        "n_classes": n_classes,
        "mean_per_class_top1": top1 - 0.01,
        "per_class_top1": {},
        "classnames": [],
        "info": {},
        "seconds": 1.5,
    }
    if n_classes > 5:
        d.update(top5=min(1.0, top1 * 2.2), chance_top5=5 / n_classes)
    return d


def _probe(n_classes: int, zero_shot: float, means: tuple) -> dict:
    shots = {
        str(k): {
            "mean": m,
            "std": 0.02 + 0.01 * i,
            "acc": [m - 0.02, m, m + 0.02],
            "lambda": [1.0] * 3,
            "short_classes": {},
        }
        for i, (k, m) in enumerate(zip(SHOTS, means))
    }
    return {
        "features": "ViT features before the projection",
        "n_train": 36 * n_classes,
        "n_val": 12 * n_classes,
        "n_test": 12 * n_classes,
        "zero_shot_top1": zero_shot,
        "test_acc": 0.642,
        "lambda": 0.0316,
        "log10_lambda": -1.5,
        "val_acc": 0.63,
        "n_fit": 48 * n_classes,
        "num_classes": n_classes,
        "chance": 1 / n_classes,
        "seconds": 3.2,
        "cached_features": False,
        "few_shot": {"seeds": [0, 1, 2], "chance": 1 / n_classes, "zero_shot_top1": zero_shot, "shots": shots},
    }


def _eval(step: int | None, probes: bool = False, **extra) -> dict:
    g = (step or 400) / 400
    out = {
        "step": step,
        "templates": "openai",
        "n_templates": 80,
        "seconds": 12.0,
        **extra,
        "datasets": {
            "digits": _dataset(10, 0.12 + 0.2 * g),
            "animal-mnist": _dataset(12, 0.1 + 0.25 * g),
            ODD: _dataset(2, 0.55 + 0.1 * g),
        },
        "retrieval": {
            "val": {
                **{
                    f"{d}_R@{k}": min(1.0, 0.02 * k * (1 + g) * f)
                    for k in (1, 5, 10)
                    for d, f in (("image_to_text", 1.0), ("text_to_image", 0.9))
                },
                "chance_R@1": 1 / 420,
                "chance_R@5": 5 / 420,
                "chance_R@10": 10 / 420,
                "n": 420,
                "image_to_text_mean_rank": 40.0,
                "info": {},
                "seconds": 0.4,
            }
        },
    }
    if probes:
        out["datasets"]["digits"]["linear_probe"] = _probe(10, 0.321, (0.18, 0.24, 0.30, 0.37, 0.45))
        out["datasets"]["animal-mnist"]["linear_probe"] = _probe(12, 0.35, (0.40, 0.45, 0.5, 0.55, 0.6))
        out["datasets"][ODD]["linear_probe"] = {
            "n_train": 0,
            "n_val": 0,
            "n_test": 0,
            "skipped": "too few images per class for a train/validation/test split",
        }
    return out


OVERLAP = {
    "checkpoint": "runs/x/checkpoints/step-00000400.pt",
    "model": "tiny-ViT-64",
    "step": 400,
    "n_shard_images": 4213,
    "shard_errors": 2,
    "skipped": {"decode_error": 2},
    "thresholds": {
        "phash_max_distance": {"digits": 4, "animal-mnist": 6},
        "min_cosine": {"digits": 0.95, "animal-mnist": 0.9},
    },
    "datasets": {
        "digits": {
            "all": 1797,
            "overlap": 37,
            "clean": 1760,
            "overlap_rate": 37 / 1797,
            "by_kind": {"exact": 5, "phash": 20, "embedding": 12},
            "top1_all": 0.3211,
            "top1_overlap": 0.4054,
            "top1_clean": 0.3193,
            "all_minus_clean": 0.0018,
            "chance_top1": 0.1,
            "binomial_p": 0.2712,
            "overlap_top1_ci995": [0.2101, 0.6237],
        },
        "animal-mnist": {
            "all": 720,
            "overlap": 0,
            "clean": 720,
            "overlap_rate": 0.0,
            "by_kind": {"exact": 0, "phash": 0, "embedding": 0},
            "top1_all": 0.35,
            "top1_overlap": None,
            "top1_clean": 0.35,
            "all_minus_clean": 0.0,
            "chance_top1": 1 / 12,
            "binomial_p": None,
            "overlap_top1_ci995": None,
        },
    },
}


def make_run(root: Path, *, overlap: bool = True) -> Path:
    """A run of 400 steps killed after step 200 and resumed from its step-100 checkpoint (so
    steps 100-200 are logged twice, the later rows differing), evaluated every 100 steps, the
    final evaluation with probes, then `train.evaluate` (final.json) and `train.overlap`."""
    run = root / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"name": NAME, "model": "tiny-ViT-64", "steps": 400, "global_batch": 128, "eval_every": 100})
    )
    first = [_metrics_row(s) for s in [1, *range(20, 201, 20)]]
    second = [_metrics_row(s, resumed=True) for s in range(100, 401, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first + second) + '{"step": 40')
    for step in (100, 200, 300, 400):
        (run / "eval" / f"step-{step:08d}.json").write_text(json.dumps(_eval(step, probes=step == 400), indent=2))
    (run / "eval" / "final.json").write_text(
        json.dumps(_eval(None, checkpoint="x.pt", model="tiny-ViT-64", checkpoint_step=400))
    )
    if overlap:
        (run / "eval" / "overlap.json").write_text(json.dumps(OVERLAP))
    return run


def plots_in(html: str) -> list[str]:
    return re.findall(r'<svg class="plot" data-plot="([^"]+)"', html)


@pytest.fixture
def report(tmp_path) -> tuple[Path, str]:
    run = make_run(tmp_path)
    path = write_report(run, now=NOW)
    return run, path.read_text()


def test_every_chart_is_drawn_with_title_axes_and_legend(report):
    run, html = report
    assert (run / "report.html").is_file()
    assert plots_in(html) == [
        "train_loss",
        "train_lr",
        "train_logit_scale",
        "train_samples_per_s",
        "zeroshot_top1",
        "zeroshot_top5",
        "retrieval_val",
        "fewshot_digits",
        "fewshot_animal-mnist",
    ]
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        assert re.search(r"<title>[^<]+</title>", svg) and 'role="img"' in svg
        assert 'class="legend"' in svg and "rotate(-90" in svg  # a legend and a y label
        assert re.search(r"<(polyline|circle)\b", svg)
    assert [
        s.index(x)
        for s in [html]
        for x in (
            'id="training"',
            'id="zeroshot"',
            'id="retrieval"',
            'id="fewshot"',
            'id="linear_probe"',
            'id="overlap"',
        )
    ] == sorted(
        html.index(x)
        for x in (
            'id="training"',
            'id="zeroshot"',
            'id="retrieval"',
            'id="fewshot"',
            'id="linear_probe"',
            'id="overlap"',
        )
    ), "sections in the page's order"


def test_header_says_run_model_steps_and_samples(report):
    _, html = report
    assert "model <code>tiny-ViT-64</code>" in html and "2024-05-01T12:00:00+00:00" in html
    assert 'data-tile="steps"><b>400</b><span>steps done of 400' in html
    assert 'data-tile="samples"><b>51.2k</b>' in html  # 400 steps x 128
    assert 'data-tile="evals"><b>5</b>' in html
    assert "rewrites this page after each evaluation" in html


def test_names_are_escaped_and_the_page_is_self_contained(report):
    _, html = report
    assert "<b>x</b>" not in html and "Training run: &lt;b&gt;x&lt;/b&gt;&amp;</h1>" in html
    assert "<title>Training run: &lt;b&gt;x&lt;/b&gt;&amp;</title>" in html
    assert "<cats>" not in html and "imagefolder:/data/&lt;cats&gt; &amp; dogs" in html
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert "url(" not in html and "@import" not in html and "<img" not in html


def test_metrics_dedup_keeps_the_last_row_of_a_step(report, tmp_path):
    run, html = report
    warnings: list[str] = []
    rows = read_metrics(run / "metrics.jsonl", warnings)
    steps = [r["step"] for r in rows]
    assert steps == [1, *range(20, 401, 20)] and len(set(steps)) == len(steps)
    assert rows[steps.index(120)]["loss"] == pytest.approx(_metrics_row(120, resumed=True)["loss"])
    assert rows[steps.index(80)]["loss"] == pytest.approx(_metrics_row(80)["loss"])
    assert warnings == ["metrics.jsonl: 1 unreadable line(s) left out"]  # the line cut by the kill
    loss = re.search(r'data-plot="train_loss".*?<polyline data-series="[^"]*" points="([^"]+)"', html, re.S)
    assert len(loss.group(1).split()) == len(steps)
    assert "21 logged steps, 1 to 400; 4 samples skipped (decode error 4), 0 shard errors so far." in html


def test_zero_shot_chance_lines_and_retrieval(report):
    _, html = report
    top1 = re.search(r'data-plot="zeroshot_top1".*?</svg>', html, re.S).group(0)
    for name, chance in (("digits", "10%"), ("animal-mnist", "8.333%"), (ODD, "50%")):
        e = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f'data-ref="chance: {e}"' in top1 and f"<title>chance: {e}: {chance}</title>" in top1
        assert f'data-series="{e}"' in top1
    top5 = re.search(r'data-plot="zeroshot_top5".*?</svg>', html, re.S).group(0)
    assert 'data-series="digits"' in top5 and "cats" not in top5, "no top-5 for 2 classes"
    assert top1.count("<circle") == 12  # 3 sets x 4 steps; final.json (step 400) is not drawn twice
    ret = re.search(r'data-plot="retrieval_val".*?</svg>', html, re.S).group(0)
    assert ret.count("<polyline") == 6 and ret.count('stroke-dasharray="6,4"') >= 3 + 3 + 1
    assert 'data-ref="chance R@1"' in ret
    # final values: step-00000400.json (the step file wins over final.json of the same step)
    assert "Latest values from eval/step-00000400.json (step 400)." in html
    assert '<td>val</td><td class="n">420</td><td class="n">4.0%</td><td class="n">20.0%</td>' in html


def test_few_shot_curve_references_and_probe_table(report):
    _, html = report
    fs = re.search(r'data-plot="fewshot_digits".*?</svg>', html, re.S).group(0)
    points = re.findall(r"<circle[^>]*><title>k-shot linear probe \(mean ± std, 3 draws\): (\d+) → ([^<]+)</title>", fs)
    assert points == [("1", "18% ± 2%"), ("2", "24% ± 3%"), ("4", "30% ± 4%"), ("8", "37% ± 5%"), ("16", "45% ± 6%")]
    assert "<polygon" in fs, "the ± std band"
    assert "<title>zero-shot top-1 (same test split): 32.1%</title>" in fs
    assert "<title>linear probe, full train split: 64.2%</title>" in fs
    assert "<title>chance: 10%</title>" in fs and 'stroke-dasharray="6,4"><title>chance' in fs
    for tick in ("1", "2", "4", "8", "16"):
        assert f'text-anchor="middle" fill="#666">{tick}</text>' in fs, "log2 x axis"
    assert "digits: zero-shot top-1 32.1% on the probes' test split is as good as a 4.9-shot probe." in html
    assert "animal-mnist: zero-shot top-1 35.0% on the probes' test split is below the 1-shot probe" in html
    assert "few-shot probes skipped (too few images per class" in html
    probe = re.search(r'<section id="linear_probe">.*?</section>', html, re.S).group(0)
    assert (
        '<td>digits</td><td class="n">64.2%</td><td class="n">0.0316</td><td class="n">32.1%</td>'
        "<td>16-shot: 45.0% ± 6.0%</td>" in probe
    )
    assert "360 / 120 / 120" in probe and "step-00000400.json" in probe


def test_overlap_table(report):
    _, html = report
    sec = re.search(r'<section id="overlap">.*?</section>', html, re.S).group(0)
    assert (
        '<td>digits</td><td class="n">1,797</td><td class="n">37</td><td class="n">1,760</td>'
        '<td class="n">2.06%</td><td class="n">5 / 20 / 12</td><td class="n">32.1%</td>'
        '<td class="n">40.5%</td><td class="n">31.9%</td><td class="n">+0.18 pp</td>'
        '<td class="n">0.271</td><td>[21.0%, 62.4%]</td><td>phash_max_distance 4, min_cosine 0.95</td>'
    ) in sec
    assert '<td>animal-mnist</td><td class="n">720</td><td class="n">0</td>' in sec and "–" in sec
    assert "against 4,213 training images (2 unreadable, left out)." in sec
    assert "phash_max_distance 6, min_cosine 0.9</td>" in sec


def test_missing_files_are_said_not_fatal(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(_metrics_row(1)) + "\n")
    html = write_report(run, now=NOW).read_text()
    assert plots_in(html) == ["train_loss", "train_lr", "train_logit_scale", "train_samples_per_s"]
    assert "No evaluation yet: eval/ holds no step-NNNNNNNN.json or final.json" in html
    assert "No retrieval results" in html and "No linear-probe results" in html
    assert f"No eval/overlap.json: run python -m train.overlap {run}" in html
    assert "model <code>unknown</code>" in html and "Training run: bare" in html

    only_eval = tmp_path / "evalonly"  # train.evaluate on a pretrained model: final.json of no step
    (only_eval / "eval").mkdir(parents=True)
    (only_eval / "eval" / "final.json").write_text(json.dumps(_eval(None, model="ViT-B-32")))
    (only_eval / "eval" / "step-00000007.json").write_text("{not json")
    html = write_report(only_eval, now=NOW).read_text()
    assert "No metrics.jsonl yet" in html and "model <code>ViT-B-32</code>" in html
    assert "No evaluation with a known step: nothing to draw over steps." in html
    assert "Latest values from eval/final.json." in html and "<td>digits</td>" in html
    assert "eval/step-00000007.json: unreadable, left out (JSONDecodeError" in html


def test_nan_and_null_values_leave_gaps(tmp_path):
    run = make_run(tmp_path, overlap=False)
    r = json.loads((run / "eval" / "step-00000200.json").read_text())
    r["datasets"]["digits"]["top1"] = float("nan")
    r["retrieval"]["val"]["image_to_text_R@1"] = None
    (run / "eval" / "step-00000200.json").write_text(json.dumps(r))
    html = write_report(run, now=NOW).read_text()
    assert not re.search(r"(>|→ )nan\b", html, re.I)
    assert len(plots_in(html)) == 9


def test_load_run_reads_steps_and_the_newest_probe(tmp_path):
    run = load_run(make_run(tmp_path))
    assert [(e["file"], e["step"]) for e in run["evals"]] == [("eval/final.json", 400)] + [
        (f"eval/step-{s:08d}.json", s) for s in (100, 200, 300, 400)
    ]
    assert run["name"] == NAME and run["overlap"]["n_shard_images"] == 4213


def test_matching_shots_interpolates_on_log2_k():
    curve = [(1, 0.2), (2, 0.3), (4, 0.4), (8, 0.5), (16, 0.6)]
    assert matching_shots(curve, 0.4) == "as good as a 4.0-shot probe"
    assert matching_shots(curve, 0.35) == "as good as a 2.8-shot probe"  # 2 ** 1.5
    assert matching_shots(curve, 0.1).startswith("below the 1-shot probe")
    assert matching_shots(curve, 0.7).startswith("above the 16-shot probe")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_writes_the_page_and_refuses_an_empty_folder(tmp_path):
    run = make_run(tmp_path)
    res = _cli(str(run), "--out", str(tmp_path / "elsewhere" / "r.html"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "elsewhere" / "r.html").is_file() and not (run / "report.html").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["r.html"], "no temporary file left"
    (tmp_path / "empty").mkdir()
    assert_one_line_error(_cli(str(tmp_path / "empty")), "no metrics.jsonl and no eval/")
    assert_one_line_error(_cli(str(tmp_path / "nowhere")), "nowhere")
    res = _cli("--help")
    assert res.returncode == 0 and "--out FILE" in res.stdout


def test_the_report_needs_no_torch():
    res = subprocess.run(
        [sys.executable, "-c", "import sys, train.report; assert 'torch' not in sys.modules, 'torch'"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
