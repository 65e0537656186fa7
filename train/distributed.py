"""Ranks and the process group: torchrun's environment in, (rank, world, local rank, device)
out; the model's DDP / torch.compile wrappers on and off; the few collectives the trainer
runs. Every helper takes the world size and makes no torch.distributed call when it is 1,
so a single process needs no process group.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import cast

import torch
import torch.distributed as dist


def init_distributed(backend: str | None, timeout_min: int = 120) -> tuple[int, int, int, torch.device]:
    """(rank, world, local rank, device) from torchrun's environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), timeout=timedelta(minutes=timeout_min))
    return rank, world, local, device


def teardown() -> None:
    """Destroy the process group if there is one: safe to call again (an early return that
    closes it, then the run's ExitStack)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_world_size(world: int) -> int:
    """Ranks on this node (torchrun's LOCAL_WORLD_SIZE), to share its CPU cores among them."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world))


def wrap(net: torch.nn.Module, world: int, compile: bool = False) -> torch.nn.Module:
    """The model as the training step calls it: DDP over several ranks, then torch.compile
    with `compile`; `unwrap` gives `net` back."""
    wrapped = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    # compiling a Module gives an OptimizedModule (a Module); torch.compile's stub says Callable
    return cast(torch.nn.Module, torch.compile(wrapped)) if compile else wrapped


def unwrap(model):
    """The model inside DDP / DataParallel (``.module``) and torch.compile (``._orig_mod``)
    wrappers, peeled in whatever order they were put on (a compiled DDP as `wrap` builds it,
    or DDP over a compiled model). Any other object comes back as it is."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if inner is None or inner is model:
            return model
        model = inner


def all_reduce_sum(values: list[float], world: int, device: torch.device) -> list[float]:
    """Sum over ranks; the tensor lives on `device` because NCCL refuses CPU tensors."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_from_rank0(values: list, world: int) -> list:
    """Rank 0's values (picklable) on every rank."""
    if world > 1:
        dist.broadcast_object_list(values, src=0)
    return values


def all_gather(state, world: int) -> list:
    """Every rank's `state` (picklable: its RNG state, its data stream position), in rank
    order, so each rank continues its own after a resume."""
    if world == 1:
        return [state]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def barrier(world: int) -> None:
    """Wait for every rank (rank 0 checkpoints and evaluates alone)."""
    if world > 1:
        dist.barrier()


def describe_ranks(rank: int, local_rank: int, world: int) -> list[dict]:
    """Where every rank runs ({rank, local_rank, node, host, pid}; node is torchrun's
    GROUP_RANK), for config.json: shows which nodes joined a multi-node run."""
    me = {
        "rank": rank,
        "local_rank": local_rank,
        "node": int(os.environ.get("GROUP_RANK", "0")),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    return all_gather(me, world)
