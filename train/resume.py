"""Where a run starts: step 0 of a fresh run, or the step of a checkpoint it continues.

Rank 0 holds the run folder and decides, the others follow: ranks that looked at the run
folder on their own could disagree (a checkpoint written while they listed, a node that
does not see the folder), and ranks at different steps hang in the first all-reduce. Every
rank then loads the chosen checkpoint itself (its own RNG state is in it), and the ranks
agree on whether all of them could before anyone trains. What a run resumes with (the
step, the skip counters, the elapsed time, the stream positions) comes back as one
`Resumed`; the stream positions are checked by the loader that continues them
(`train.stream.TrainLoader.mismatch`).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.errors import InputError, one_line

from . import checkpoint, distributed
from .metrics import SkipTally
from .run_folder import RunFolder


class StoppedElsewhere(Exception):
    """Another rank found the error and reported it; this rank stops without a word."""


class RankError(InputError):
    """Bad input found on this rank only (its copy of a checkpoint): this rank reports it."""


@dataclass
class Resumed:
    """The state a run starts from (all zero for a fresh run)."""

    step: int = 0
    path: str | None = None  # the checkpoint continued
    elapsed: float = 0.0  # training seconds of the steps before it
    tally: SkipTally = field(default_factory=SkipTally)
    streams: Any = None  # the checkpoint's stream position of every rank

    def stream_state(self, rank: int) -> Any:
        """This rank's stream position for `make_train_loader(resume=...)`: None for a fresh
        run, {} (continued by no loader, which says why) for a checkpoint without one."""
        if self.path is None:
            return None
        if isinstance(self.streams, list) and rank < len(self.streams):
            return self.streams[rank]
        return {}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _decide(args: Any, run: RunFolder, held: contextlib.ExitStack) -> tuple[str | None, dict | None]:
    """Rank 0: take the run folder's lock, then (checkpoint path or None, the checkpoint if
    already loaded). InputError for a held folder, a fresh run over old checkpoints, or
    `--resume latest` over checkpoints none of which loads."""
    run.hold(held)
    ckpt_dir = run.checkpoints
    try:
        if not args.resume:
            if checkpoint.list_checkpoints(ckpt_dir):
                raise InputError(
                    f"{ckpt_dir} holds checkpoints of an earlier run: pass --resume latest to continue it, "
                    "or choose another --name"
                )
            return None, None
        if args.resume == "latest":
            path, ckpt = checkpoint.load_latest(ckpt_dir, log=_log)
            if path is None:
                _log(f"no checkpoint in {ckpt_dir}: starting from step 0")
            return (str(path) if path is not None else None), ckpt
        return args.resume, None
    except checkpoint.CheckpointError as e:
        raise InputError(f"--resume latest: {e}") from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a remote run folder that cannot be listed
        raise InputError(f"{ckpt_dir}: cannot list the checkpoints ({one_line(e, typed=True)})") from None


def resume(
    args: Any,
    run: RunFolder,
    held: contextlib.ExitStack,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: Any,
    model_name: str,
    rank: int,
    world: int,
    device: torch.device,
) -> Resumed:
    """Decide (rank 0), broadcast, load and restore the model, optimizer, scaler and RNG on
    every rank. InputError on every rank for a refused start (rank 0 reports it); for a
    checkpoint that a rank cannot load, RankError there and StoppedElsewhere on the others."""
    path, ckpt, error = None, None, None
    if rank == 0:
        try:
            path, ckpt = _decide(args, run, held)
        except InputError as e:
            error = str(e)
    path, error = distributed.broadcast_from_rank0([path, error], world)
    if error:
        raise InputError(error) if rank == 0 else StoppedElsewhere()
    if path is None:
        return Resumed()

    load_error = None
    try:
        if ckpt is None:
            ckpt = checkpoint.load(path)
        restore(ckpt, path, net, opt, scaler, model_name, rank)
    except checkpoint.CheckpointError as e:  # one line, on every rank alike
        load_error = str(e)
    except Exception as e:  # noqa: BLE001 - e.g. RNG or optimizer state of the wrong shape
        load_error = f"{path}: not a usable checkpoint ({one_line(e, typed=True)})"
    if distributed.all_reduce_sum([float(load_error is not None)], world, device)[0]:
        if load_error is None:
            raise StoppedElsewhere()
        where = f" on rank {rank} ({socket.gethostname()})" if world > 1 else ""
        shared = "; every node must see the run folder (a shared filesystem or s3://)" if world > 1 else ""
        raise RankError(f"--resume: {load_error}{where}{shared}")

    assert ckpt is not None  # loaded above (a failed load raised)
    saved = ckpt.get("data")
    data = saved if isinstance(saved, dict) else {}
    step = int(ckpt["step"])
    if rank == 0:
        _log(f"resumed from {path} at step {step}")
    return Resumed(
        step=step,
        path=path,
        elapsed=float(data.get("elapsed_time", 0.0)),
        tally=SkipTally.from_checkpoint(data),
        streams=data.get("streams"),
    )


def restore(ckpt: dict, path: Any, net: torch.nn.Module, opt: Any, scaler: Any, model_name: str, rank: int) -> None:
    """Model, optimizer, scaler and RNG state from a loaded checkpoint; CheckpointError (one
    line) when they do not fit this model."""
    own = net.state_dict()
    saved = ckpt["model"]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [
        k for k in own if k in saved and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != own[k].shape)
    ]
    if missing or unexpected or shapes:
        saved_config = ckpt.get("config")
        config = saved_config if isinstance(saved_config, dict) else {}
        was = f" (it was saved from {config['model']})" if config.get("model") not in (None, model_name) else ""
        parts = [
            f"{len(missing)} weights missing" if missing else "",
            f"{len(unexpected)} unexpected" if unexpected else "",
            f"{len(shapes)} of another shape" if shapes else "",
        ]
        example = (missing or unexpected or shapes)[0]
        raise checkpoint.CheckpointError(
            f"{path}: its weights do not fit --model {model_name}{was}: "
            f"{', '.join(x for x in parts if x)} (e.g. {example})"
        )
    net.load_state_dict(saved)
    try:
        opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(
            f"{path}: its optimizer state does not fit this model ({one_line(e, typed=True)})"
        ) from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt["rng"]
    checkpoint.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
