"""Big contrastive batches on few GPUs: accumulation by feature caching.

Plain gradient accumulation (one loss per micro-batch, gradients summed) is
wrong for a contrastive loss: each micro-batch only sees its own negatives, so
``k`` micro-batches of ``b`` are *not* a batch of ``k*b``. Instead, as in
open_clip's ``--accum-freq``, one optimizer step over ``k`` chunks does:

1. a no-grad forward of every chunk, caching the per-sample outputs
   (image and text features);
2. for each chunk ``j``: a forward of chunk ``j`` *with* grad, the full
   feature tensors built as ``cat(cached[:j] + [fresh_j] + cached[j+1:])``,
   the loss over all ``k*b`` local samples (sharded across ranks by the loss
   as usual, giving a contrastive batch of ``k * b * world_size``), and a
   backward that accumulates into ``.grad``.

Scaling. Each backward is of the *full* loss ``L`` (not divided by ``k``), but
only chunk ``j``'s features carry grad, so it yields ``dL/df_j * df_j/dtheta``;
summed over ``j`` that is the feature part of the full gradient exactly.

``logit_scale`` (and ``logit_bias`` if the model has one) is not per sample: it
enters ``L`` directly, in every re-forward. Using the fresh one in every chunk
would count ``dL/dlogit_scale`` ``k`` times (open_clip_train's loop does this).
Here it carries grad only in the LAST chunk and is detached in the others (the
value is the same: the parameters do not change within the step), so it is
counted once. The last chunk is chosen because under DDP it is the one whose
backward all-reduces, and DDP (without ``find_unused_parameters``) needs every
parameter in that graph.

DDP. When ``model`` has ``no_sync`` (DistributedDataParallel), the forwards
and backwards of chunks ``0..k-2`` run under ``model.no_sync()`` and only the
last chunk's backward all-reduces (the locally accumulated gradients are then
averaged over ranks). With ``train.loss.make_loss(rank, world)`` the averaged
gradient equals the single-process gradient on the global batch of
``k * b * world`` (``tests/train/test_accum.py`` proves it with 2 gloo processes).

Randomness. The no-grad pass and the re-forward of a chunk must compute the
same features. With ``replay_rng=True`` (default) the CPU and CUDA RNG states
are saved before each chunk's no-grad forward and restored before its
re-forward, so dropout and open_clip's random patch dropout draw the same
masks in both passes. BatchNorm running statistics (ModifiedResNet) are
updated twice per chunk (same batch statistics both times); the features are
unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, cast

import torch
from torch import nn

__all__ = ["accumulate_step", "split_chunks", "model_outputs"]

#: Outputs that are not per sample: shared across chunks, never concatenated.
SHARED_KEYS = ("logit_scale", "logit_bias")
#: Names of the elements of an open_clip CLIP model's tuple output.
TUPLE_KEYS = ("image_features", "text_features", "logit_scale", "logit_bias")


def model_outputs(out: Any) -> dict[str, torch.Tensor]:
    """An open_clip model's output as a dict: ``output_dict=True`` models return
    one already; others return ``(image_features, text_features, logit_scale[,
    logit_bias])``."""
    if isinstance(out, Mapping):
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(out, (tuple, list)) and len(out) in (3, 4):
        return {k: v for k, v in zip(TUPLE_KEYS, out) if v is not None}
    raise TypeError(
        "model must return a dict (output_dict=True) or a tuple "
        "(image_features, text_features, logit_scale[, logit_bias]); "
        f"got {type(out).__name__}"
    )


def split_chunks(batch: torch.Tensor | Sequence[torch.Tensor], accum_freq: int | None) -> list[torch.Tensor]:
    """``accum_freq`` equal chunks of a batch tensor (along dim 0), or the given
    list of chunks (whose length must equal ``accum_freq`` unless that is None)."""
    if isinstance(batch, torch.Tensor):
        if accum_freq is None or accum_freq < 1:
            raise ValueError(f"accum_freq must be >= 1 when the batch is one tensor, got {accum_freq}")
        n = batch.shape[0]
        if n % accum_freq:
            raise ValueError(f"batch of {n} does not split into {accum_freq} equal chunks")
        return list(batch.split(n // accum_freq))
    chunks = list(batch)
    if not chunks:
        raise ValueError("empty list of chunks")
    if accum_freq is not None and len(chunks) != accum_freq:
        raise ValueError(f"{len(chunks)} chunks given, accum_freq={accum_freq}")
    return chunks


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _total(loss_out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(loss_out, Mapping):
        parts = {k: float(v.detach()) for k, v in loss_out.items()}
        return cast(torch.Tensor, sum(loss_out.values())), parts  # 0 + tensors: a tensor
    return loss_out, {}


def accumulate_step(
    model: nn.Module,
    images: torch.Tensor | Sequence[torch.Tensor],
    texts: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Callable[..., Any],
    accum_freq: int | None = 1,
    *,
    autocast: Callable[[], ContextManager] | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    replay_rng: bool = True,
) -> tuple[float, dict[str, Any]]:
    """Accumulate into ``.grad`` the gradient of the contrastive loss over the
    whole local batch, computed ``accum_freq`` chunks at a time.

    Call once per optimizer step, after ``optimizer.zero_grad()`` and before
    ``optimizer.step()`` (then ``train.loss.clamp_logit_scale_(model)``).

    model: an open_clip-style CLIP model (or DDP around one): ``model(image,
        text)`` returns a dict with ``image_features``, ``text_features``,
        ``logit_scale`` (already exponentiated) and optionally ``logit_bias``,
        or the equivalent tuple.
    images, texts: the local batch of ``accum_freq * b`` samples as tensors
        (split along dim 0), or lists of ``accum_freq`` chunks.
    loss_fn: called as ``loss_fn(image_features=..., text_features=...,
        logit_scale=...[, logit_bias=...])`` on the full local batch; returns
        a scalar tensor or a dict of them (summed). ``train.loss.make_loss``.
    accum_freq: k; None to take it from the length of the chunk lists.
    autocast: factory of the mixed-precision context put around the forwards
        and the loss, e.g. ``lambda: torch.autocast("cuda", dtype=torch.bfloat16)``.
    backward: how to backpropagate a loss, e.g. ``lambda l: scaler.scale(l).backward()``
        with a GradScaler; default ``loss.backward()``.
    replay_rng: replay each chunk's RNG state in its re-forward (dropout).

    Returns ``(loss, stats)``: the loss value over the full local batch (the
    mean over this rank's rows; average over ranks for the global loss) and
    ``{"loss", "logit_scale", "local_batch", "accum_freq", "parts"}``.
    """
    image_chunks = split_chunks(images, accum_freq)
    text_chunks = split_chunks(texts, len(image_chunks))
    k = len(image_chunks)
    ctx = autocast or contextlib.nullcontext
    do_backward = backward or (lambda loss: loss.backward())
    no_sync = getattr(model, "no_sync", None)

    if k == 1:  # nothing to cache: one ordinary forward/backward
        with ctx():
            out = model_outputs(model(image_chunks[0], text_chunks[0]))
            loss, parts = _total(loss_fn(**out))
        do_backward(loss)
        return _result(loss, out, image_chunks, parts, k)

    # 1) no-grad pass: cache the per-sample outputs of every chunk.
    cache: dict[str, list[torch.Tensor]] = {}
    rng_states: list[tuple] = []  # one per chunk when replay_rng
    with torch.no_grad():
        for img, txt in zip(image_chunks, text_chunks):
            if replay_rng:
                rng_states.append(_rng_state())
            with ctx():
                out = model_outputs(model(img, txt))
            for key, val in out.items():
                if key not in SHARED_KEYS:
                    cache.setdefault(key, []).append(val)

    # 2) re-forward each chunk with grad; loss over the full batch; backward.
    for j in range(k):
        last = j == k - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            if replay_rng:
                _set_rng_state(rng_states[j])
            with ctx():
                out = model_outputs(model(image_chunks[j], text_chunks[j]))
                inputs = {}
                for key, val in out.items():
                    if key in SHARED_KEYS:
                        # Counted once: grad flows only from the last chunk's loss.
                        inputs[key] = val if last else val.detach()
                    else:
                        cached = cache[key]
                        inputs[key] = torch.cat(cached[:j] + [val] + cached[j + 1 :])
                loss, parts = _total(loss_fn(**inputs))
            do_backward(loss)
            del inputs
    return _result(loss, out, image_chunks, parts, k)


def _result(loss: torch.Tensor, out: dict, image_chunks: list, parts: dict, k: int) -> tuple[float, dict]:
    value = float(loss.detach())
    scale = out.get("logit_scale")
    stats = {
        "loss": value,
        "logit_scale": float(scale.detach().float().mean()) if scale is not None else None,
        "local_batch": sum(c.shape[0] for c in image_chunks),
        "accum_freq": k,
        "parts": parts,
    }
    return value, stats
