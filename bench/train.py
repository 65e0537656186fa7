"""Benchmark training throughput: samples/s of `python -m train` against open_clip's own trainer.

open_clip ships its reference trainer in the wheel (`open_clip_train`, run here with the
pinned webdataset 0.2.86). Both train the same model config (`--model`, default our
`tiny-ViT-64`, registered with open_clip in each process) from the same shards with the
same per-rank batch size, data-loader workers and torch CPU threads (`--threads` for ours,
and OMP_NUM_THREADS/MKL_NUM_THREADS = T in both environments), fp32, for the same number
of steps, one process each (or `--world 2`: both under torchrun). They alternate
(ours, open_clip, ours, open_clip, ...) `--repeats` times in one invocation: this machine is
shared, so only ratios taken in one run mean anything.

  ours:      python -m train --train-data SHARDS --model M --steps N --batch-size B
                 --workers W --threads T --warmup 1 --log-every 1 --eval-every 0
                 --save-every 100000 --eval-datasets [E ...] --quiet
  open_clip: python bench/train.py _open_clip --train-data 'S0::S1::...' --dataset-type
                 webdataset --train-num-samples N*B*world --epochs 1 --batch-size B --model M
                 --workers W --precision fp32 --device cpu --lr 5e-4 --warmup 1
                 --save-frequency 0 --report-to '' --log-every-n-steps 1
             (`_open_clip` registers train/model_configs with open_clip's registry and calls
             `open_clip_train.main.main`; under torchrun on a CPU it also drops the
             `device_ids=[cpu]` that open_clip passes to DistributedDataParallel, which torch
             refuses for CPU modules.)
  --world N: `python -m torch.distributed.run --standalone --nproc_per_node N [-m] -- ...`
             for both (the `--` keeps torchrun from rejecting `--logs` as an ambiguous
             abbreviation of its own `--logs-specs`).

What is measured, per step, from what each trainer logs itself (`--log-every 1` /
`--log-every-n-steps 1`), as the median over the steps after the first `--skip`:

  * `samples_per_s` as logged. open_clip: batch x world / "Batch (t)", where its batch time
    runs from the previous step's end mark to this one's, so it covers the whole wall time
    of a step (data wait, forward, backward, optimizer step, and the previous step's
    logging). Ours: global batch / `batch_time`, from before `next(batches)` to after the
    optimizer step and logit-scale clamp: loss all-reduce, metrics line and tensorboard
    scalars are outside it.
  * `wall_samples_per_s`: the like-for-like figure, global batch / wall time between
    consecutive steps. open_clip: its logged figure. Ours: from `interval_time` (time between
    consecutive metrics lines, one per step here).
  * `data_time`, `batch_time` (seconds per step; open_clip's batch time recomputed from its
    6-digit samples/s, its "Batch (t)" field has 3 decimals).

Each run must log its steps and reach step N, else the bench fails (exit 1, one line on
stderr; `bench/checks.py`): a trainer that stops early would look fast.

The ratio is ours/open_clip per (ours, open_clip) pair of the same repeat, wall figures,
median over pairs (`ratio`); `ratio_as_logged` does the same with the logged figures.
Outside the per-step figures, each run's wall clock is split (a thread of this process
polls the metrics file / log every 0.1 s) into start-up (process start to the first step
line: imports, model, data-loader workers filling the shuffle buffer), the steps (first to
last step line) and the tail (last step line to exit: final checkpoint for both, and for
ours the end-of-run evaluation, whose own `seconds` is read from `eval/step-N.json`).
Checkpoints are deleted after each run unless `--keep`. Run folders live under
`bench/out/train/` (git-ignored).

    .venv/bin/python bench/train.py [--steps 40] [--skip 10] [--batch-size 64] [--workers 1]
        [--threads 1] [--repeats 2] [--world 1] [--model tiny-ViT-64]
        [--eval-datasets [digits ...]]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "train"
sys.path.insert(0, str(ROOT))

from bench.checks import fail, produced  # noqa: E402

# open_clip_train/train.py's line, e.g.
# "Train Epoch: 0 [ 64/256 (25%)] Data (t): 0.007 Batch (t): 0.828, 38.6407/s, 38.6407/s/gpu LR: ..."
OPEN_CLIP_LINE = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<seen>\d+)/(?P<total>\d+) \([^)]*\)\] "
    r"Data \(t\): (?P<data>[0-9.eE+-]+) Batch \(t\): (?P<batch>[0-9.eE+-]+), "
    r"(?P<sps>[0-9.eE+-]+)/s, (?P<sps_gpu>[0-9.eE+-]+)/s/gpu"
)


# --------------------------------------------------------------------------- open_clip entry point


def open_clip_entry(argv: list[str]) -> int:
    """`bench/train.py _open_clip ARGS`: open_clip_train's main with our model configs registered
    (run as a subprocess, alone or under torchrun)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from train import model as models

    models.register_builtin()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        ddp_cls = torch.nn.parallel.DistributedDataParallel

        class CpuDDP(ddp_cls):  # open_clip passes device_ids=[device]; torch refuses it for CPU modules
            def __init__(self, module, device_ids=None, **kwargs):
                if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                    device_ids = None
                super().__init__(module, device_ids=device_ids, **kwargs)

        torch.nn.parallel.DistributedDataParallel = CpuDDP
    print(
        f"bench: torch threads {torch.get_num_threads()}, rank {os.environ.get('RANK', '0')}",
        file=sys.stderr,
        flush=True,
    )
    from open_clip_train.main import main

    rc = main(argv)
    return rc if isinstance(rc, int) else 0


# --------------------------------------------------------------------------- running and parsing


class Watcher(threading.Thread):
    """Polls a growing text file; records when the first and the last step line appeared."""

    def __init__(self, path: Path, is_step_line, interval: float = 0.1):
        super().__init__(daemon=True)
        self.path, self.is_step_line, self.interval = path, is_step_line, interval
        self.first: float | None = None
        self.last: float | None = None
        self.lines = 0
        self.stop = threading.Event()
        self._pos = 0
        self._partial = ""

    def poll(self) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return
        if not chunk:
            return
        now = time.perf_counter()
        text = self._partial + chunk
        *complete, self._partial = text.split("\n")
        n = sum(1 for line in complete if self.is_step_line(line))
        if n:
            self.lines += n
            if self.first is None:
                self.first = now
            self.last = now

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        NO_ALBUMENTATIONS_UPDATE="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def launcher(world: int, target: list[str]) -> list[str]:
    """`python TARGET` or, for world > 1, `torchrun --standalone --nproc_per_node WORLD [-m] -- TARGET`.

    The `--` keeps torchrun's parser off the trainer's arguments: without it, `--logs` is an
    "ambiguous option" to torchrun (a prefix of its `--logs-specs`/`--logs_specs`), and the
    launch fails before any process starts."""
    if world == 1:
        return [sys.executable, *target]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    if target[0] == "-m":
        return run + ["-m", "--", *target[1:]]
    return run + ["--", *target]


def run_child(cmd: list[str], log: Path, watch: Path, is_step_line, env: dict) -> dict:
    watcher = Watcher(watch, is_step_line)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        watcher.start()
        rc = proc.wait()
    t_end = time.perf_counter()
    watcher.stop.set()
    watcher.join()
    watcher.poll()
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"exit status {rc}: {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    first = watcher.first if watcher.first is not None else t_end
    last = watcher.last if watcher.last is not None else t_end
    return {
        "wall_s": round(t_end - t0, 2),
        "startup_s": round(first - t0, 2),
        "steps_s": round(last - first, 2),
        "tail_s": round(t_end - last, 2),
    }


def median(xs: list[float], nd: int = 3) -> float | None:
    return round(statistics.median(xs), nd) if xs else None


def summarise(steps: list[dict], skip: int) -> dict:
    """Medians over the steps after the first `skip` (all of them if fewer)."""
    kept = [s for s in steps if s["step"] > skip] or steps
    out = {
        "steps_logged": len(steps),
        "steps_measured": len(kept),
        "last_step": max((s["step"] for s in steps), default=0),
    }
    for k in ("samples_per_s", "wall_samples_per_s", "data_time", "batch_time"):
        vals = [s[k] for s in kept if s.get(k) is not None]
        out[k] = median(vals, 4 if k.endswith("time") else 2)
    return out


def parse_ours(run_dir: Path) -> list[dict]:
    config = json.loads((run_dir / "config.json").read_text())
    gb = config["global_batch"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps, prev = [], 0
    for r in rows:
        n = r["step"] - prev  # steps covered by this line's interval_time (1 with --log-every 1)
        prev = r["step"]
        steps.append(
            {
                "step": r["step"],
                "samples_per_s": r["samples_per_s"],
                "wall_samples_per_s": gb * n / r["interval_time"] if r.get("interval_time") else None,
                "data_time": r["data_time"],
                "batch_time": r["batch_time"],
            }
        )
    return steps


def parse_open_clip(log_path: Path, batch_size: int, world: int) -> list[dict]:
    steps = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = OPEN_CLIP_LINE.search(line)
        if not m:
            continue
        sps = float(m["sps"])
        steps.append(
            {
                "step": int(m["seen"]) // (batch_size * world),
                "samples_per_s": sps,
                "wall_samples_per_s": sps,
                "data_time": float(m["data"]),
                "batch_time": batch_size * world / sps if sps > 0 else None,
            }
        )
    return steps


def drop_checkpoints(run_dir: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def run_ours(a, name: str, bench_dir: Path, shards: list[str]) -> dict:
    run_dir = bench_dir / name
    cmd = launcher(a.world, ["-m", "train"])
    cmd += [
        "--train-data",
        a.shards,
        "--name",
        name,
        "--runs",
        str(bench_dir),
        "--model",
        a.model,
        "--steps",
        str(a.steps),
        "--batch-size",
        str(a.batch_size),
        "--workers",
        str(a.workers),
        "--threads",
        str(a.threads),
        "--warmup",
        "1",
        "--lr",
        str(a.lr),
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--save-every",
        "100000",
        "--keep-checkpoints",
        "1",
        "--quiet",
        "--eval-datasets",
        *a.eval_datasets,
    ]
    timing = run_child(
        cmd,
        bench_dir / f"{name}.log",
        run_dir / "metrics.jsonl",
        lambda line: line.startswith("{"),
        child_env(a.threads),
    )
    res = {"trainer": "ours", "run": name, **summarise(parse_ours(run_dir), a.skip), **timing}
    evals = sorted((run_dir / "eval").glob("step-*.json"))
    if evals:
        res["eval_s"] = json.loads(evals[-1].read_text()).get("seconds")
    drop_checkpoints(run_dir, a.keep)
    res["cmd"] = " ".join(cmd)
    return res


def run_open_clip(a, name: str, bench_dir: Path, shards: list[str]) -> dict:
    run_dir = bench_dir / name
    cmd = launcher(a.world, [str(Path(__file__).resolve()), "_open_clip"])
    cmd += [
        "--train-data",
        "::".join(shards),
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        str(a.steps * a.batch_size * a.world),
        "--epochs",
        "1",
        "--batch-size",
        str(a.batch_size),
        "--model",
        a.model,
        "--workers",
        str(a.workers),
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--lr",
        str(a.lr),
        "--warmup",
        "1",
        "--logs",
        str(bench_dir),
        "--name",
        name,
        "--save-frequency",
        "0",
        "--report-to",
        "",
        "--log-every-n-steps",
        "1",
        "--seed",
        "0",
    ]
    timing = run_child(
        cmd,
        bench_dir / f"{name}.log",
        run_dir / "out.log",
        lambda line: "Train Epoch:" in line and "Batch (t)" in line,
        child_env(a.threads),
    )
    res = {
        "trainer": "open_clip",
        "run": name,
        **summarise(parse_open_clip(run_dir / "out.log", a.batch_size, a.world), a.skip),
        **timing,
    }
    drop_checkpoints(run_dir, a.keep)
    res["cmd"] = " ".join(repr(c) if c == "" else c for c in cmd)
    return res


def ratio(x, y):
    return round(x / y, 3) if x and y else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_open_clip"]:
        return open_clip_entry(argv[1:])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--shards", default="shards/[0-9]*.tar", help="shard glob, relative to the repo (default: %(default)s)"
    )
    ap.add_argument("--model", default="tiny-ViT-64")
    ap.add_argument(
        "--steps",
        type=int,
        default=40,
        help="steps per run; rounded up to a multiple of --workers "
        "(open_clip splits an epoch evenly over its workers) (default: %(default)s)",
    )
    ap.add_argument("--skip", type=int, default=10, help="first steps left out of the medians (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=64, help="per rank (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=1, help="data-loader workers per rank (default: %(default)s)")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads per rank (default: max(1, cores / world - workers))"
    )
    ap.add_argument("--repeats", type=int, default=2, help="pairs (ours, open_clip) (default: %(default)s)")
    ap.add_argument("--world", type=int, default=1, help="processes per trainer; >1 runs both under torchrun")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument(
        "--eval-datasets",
        nargs="*",
        default=[],
        help="our trainer's end-of-run zero-shot sets (default: none, retrieval on the held-out "
        "part only); the evaluation is outside the per-step figures either way",
    )
    ap.add_argument("--out", default=str(OUT), help="folder for the run folders (default: bench/out/train)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    a = ap.parse_args(argv)
    shards = sorted(glob.glob(str(ROOT / a.shards)))
    if not shards:
        ap.error(f"no shards match {a.shards} (run `make shards`)")
    if a.workers * a.world > len(shards):
        ap.error(f"open_clip needs at least workers x world = {a.workers * a.world} shards, have {len(shards)}")
    w = max(1, a.workers)
    a.steps = math.ceil(a.steps / w) * w
    a.threads = a.threads or max(1, cores // a.world - a.workers)

    bench_dir = Path(a.out) / time.strftime("%Y%m%d-%H%M%S")
    bench_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs = []
    for i in range(1, a.repeats + 1):
        for trainer, fn in (("ours", run_ours), ("open_clip", run_open_clip)):
            name = f"{trainer}-w{a.world}-{i}"
            r = fn(a, name, bench_dir, shards)
            produced("train", f"{name} (steps logged)", r["steps_logged"])
            if r["last_step"] != a.steps:
                fail("train", f"{name} trained {r['last_step']} steps of {a.steps}: the runs did not do the same work")
            r["repeat"] = i
            runs.append(r)
            print(
                f"{name}: {r['wall_samples_per_s']} samples/s (as logged {r['samples_per_s']}), wall {r['wall_s']}s",
                file=sys.stderr,
                flush=True,
            )

    def by(trainer):
        return {r["repeat"]: r for r in runs if r["trainer"] == trainer}

    ours, oc = by("ours"), by("open_clip")
    pairs = [
        {
            "repeat": i,
            "ratio": ratio(ours[i]["wall_samples_per_s"], oc[i]["wall_samples_per_s"]),
            "ratio_as_logged": ratio(ours[i]["samples_per_s"], oc[i]["samples_per_s"]),
        }
        for i in sorted(ours)
        if i in oc
    ]

    def med(trainer, key):
        vals = [r[key] for r in runs if r["trainer"] == trainer and r.get(key) is not None]
        return round(statistics.median(vals), 4) if vals else None

    keys = ("wall_samples_per_s", "samples_per_s", "data_time", "batch_time", "startup_s", "tail_s", "wall_s")
    result = {
        "bench": "train",
        "ratio": median([p["ratio"] for p in pairs if p["ratio"] is not None]),
        "ratio_as_logged": median([p["ratio_as_logged"] for p in pairs if p["ratio_as_logged"] is not None]),
        "pairs": pairs,
        "medians": {t: {k: med(t, k) for k in keys} for t in ("ours", "open_clip")},
        "settings": {
            "model": a.model,
            "batch_size": a.batch_size,
            "world": a.world,
            "global_batch": a.batch_size * a.world,
            "threads": a.threads,
            "workers": a.workers,
            "steps": a.steps,
            "skip": a.skip,
            "repeats": a.repeats,
            "precision": "fp32",
            "shards": len(shards),
            "eval_datasets": a.eval_datasets,
        },
        "cores": cores,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "torch": version("torch"),
            "open_clip_torch": version("open_clip_torch"),
            "webdataset": version("webdataset"),
        },
        "runs": runs,
        "out": str(bench_dir.relative_to(ROOT)) if bench_dir.is_relative_to(ROOT) else str(bench_dir),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
