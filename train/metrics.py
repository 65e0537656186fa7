"""What a run reports while it trains: the skip counters, metrics.jsonl, TensorBoard, and a
progress bar (or a line per logged step when stderr is not a terminal).

Counters travel with batches (`train.stream`): each rank adds its batches' skips to a
`SkipTally` and the ranks sum theirs only when a line is logged, the one collective of a
step besides the gradients'. The totals go into every checkpoint, so a resumed run keeps
counting where it stopped, and `trim_metrics` drops the lines of steps it runs again.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from .distributed import all_reduce_sum
from .run_folder import RunFolder
from .shards import SAMPLE_REASONS, SHARD_REASONS

REASONS = SAMPLE_REASONS + SHARD_REASONS

# open_clip_train's TensorBoard names (its train.py: "train/" + data_time, batch_time,
# samples_per_second, samples_per_second_per_gpu, scale, lr and its losses), so runs of both
# trainers overlay; ours where it has none.
TENSORBOARD_TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "logit_scale": "train/scale",
    "data_time": "train/data_time",
    "batch_time": "train/batch_time",
    "samples_per_s": "train/samples_per_second",
    "skipped_samples": "train/skipped_samples",
    "shard_errors": "train/shard_errors",
}


@dataclass
class SkipTally:
    """Samples skipped and shard errors. `pending`: this rank's since the last logged step;
    the rest: the run's totals over every rank, as of that step."""

    skipped: int = 0
    shard_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    pending: Counter = field(default_factory=Counter)

    @classmethod
    def from_checkpoint(cls, data: dict) -> SkipTally:
        """The totals a checkpoint's `data` holds (zeros for a checkpoint without them)."""
        reasons = data.get("skipped_by_reason") or {}
        return cls(
            int(data.get("skipped_samples", 0)),
            int(data.get("shard_errors", 0)),
            {str(k): int(v) for k, v in reasons.items()},
        )

    def add(self, info: dict) -> None:
        """One batch's `info` (what its worker skipped since its previous batch)."""
        self.pending["skipped"] += int(info.get("skipped", 0))
        self.pending["shard_errors"] += int(info.get("shard_errors", 0))
        for k, v in info.get("reasons", {}).items():
            self.pending[k] += int(v)

    def reduce(self, loss: float, world: int, device: torch.device) -> float:
        """Sum every rank's pending counts into the totals; returns `loss` summed over ranks."""
        p = self.pending
        skipped, shard_errors, loss_sum, *by_reason = all_reduce_sum(
            [float(p["skipped"]), float(p["shard_errors"]), float(loss)] + [float(p[r]) for r in REASONS],
            world,
            device,
        )
        self.pending = Counter()
        self.skipped += int(skipped)
        self.shard_errors += int(shard_errors)
        for r, n in zip(REASONS, by_reason):
            if n:
                self.by_reason[r] = self.by_reason.get(r, 0) + int(n)
        return loss_sum

    def state(self) -> dict:
        """The totals, as a checkpoint's `data` and a metrics row carry them."""
        return {
            "skipped_samples": self.skipped,
            "shard_errors": self.shard_errors,
            "skipped_by_reason": dict(sorted(self.by_reason.items())),
        }


def trim_metrics(path: Path, start_step: int) -> None:
    """On resume, drop lines of steps that will be run again: nothing is logged twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start_step:  # the checkpoint's own step is done: keep its line
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut by a kill
    path.write_text("".join(line + "\n" for line in kept))


def tensorboard_scalars(row: dict, world: int) -> dict[str, float]:
    """A metrics.jsonl row as TensorBoard scalars under open_clip_train's names."""
    out = {tag: row[k] for k, tag in TENSORBOARD_TAGS.items()}
    out["train/contrastive_loss"] = row["loss"]  # open_clip's ClipLoss term; the only term here
    out["train/samples_per_second_per_gpu"] = row["samples_per_s"] / world
    out.update({f"skipped/{r}": n for r, n in row["skipped_by_reason"].items()})
    return out


class MetricsLog:
    """Rank 0's reports: a metrics.jsonl row (and TensorBoard scalars) per logged step, the
    progress bar on a terminal, a line per logged step on stderr otherwise. Everything it
    opens is closed by `held`, however the run ends; the metrics of a remote run folder are
    uploaded then too."""

    def __init__(self, run: RunFolder, args: Any, world: int, global_batch: int, start_step: int, held: Any):
        self.run, self.world, self.global_batch, self.steps = run, world, global_batch, args.steps
        run.download("metrics.jsonl")  # a remote run's metrics so far, to append to
        trim_metrics(run.local / "metrics.jsonl", start_step)
        held.callback(run.upload, "metrics.jsonl")
        self.file = held.enter_context(open(run.local / "metrics.jsonl", "a"))
        self.writer = None
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.tensorboard))
            held.callback(self.writer.close)
        self.bar = None
        if not args.quiet:
            from tqdm import tqdm

            self.bar = tqdm(  # disable=None: no bar when stderr is not a terminal
                total=args.steps,
                initial=start_step,
                desc="train",
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,
            )
            held.callback(self.bar.close)
        # Without a terminal (stderr to a file, a batch job) a line per logged step says the run is alive.
        self.lines = self.bar is not None and self.bar.disable
        self.t_last = time.perf_counter()

    def step_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(
        self,
        step: int,
        loss: float,
        lr: float,
        logit_scale: float,
        times: tuple,
        elapsed: float,
        tally: SkipTally,
        balance: dict | None = None,
    ):
        """The row of logged step `step`; `times`: (start, data loaded, step done) perf_counter
        values; `balance`: balancing while training, the newest pass's totals (`train.balance`)."""
        t0, t1, t2 = times
        now = time.perf_counter()
        row = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "logit_scale": round(logit_scale, 4),
            "samples_per_s": round(self.global_batch / max(1e-9, t2 - t0), 2),
            "data_time": round(t1 - t0, 4),
            "batch_time": round(t2 - t0, 4),
            "interval_time": round(now - self.t_last, 3),
            "elapsed_time": round(elapsed, 3),
            **tally.state(),
        }
        if balance is not None:
            row["balance"] = balance
        self.t_last = now
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.run.upload("metrics.jsonl", min_interval=60)  # remote: the whole file, at most once a minute
        if self.writer is not None:
            for tag, v in tensorboard_scalars(row, self.world).items():
                self.writer.add_scalar(tag, v, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        if self.lines:
            print(
                f"step {step}/{self.steps}: loss {loss:.4f}, lr {lr:.3g}, scale {row['logit_scale']:.2f}, "
                f"{row['samples_per_s']:.1f} samples/s, {timedelta(seconds=round(elapsed))} elapsed"
                + (f", {tally.skipped} samples skipped" if tally.skipped else ""),
                file=sys.stderr,
                flush=True,
            )
