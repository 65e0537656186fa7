"""CLIP's contrastive loss, sharded across ranks (a thin layer over open_clip).

The loss is the symmetric cross-entropy over the image-text cosine similarities
of a batch, scaled by a learnable temperature (CLIP paper, section 2.5 and
figure 3). The model holds the temperature as a log-parameterised scalar
``logit_scale`` initialised to ``ln(1/0.07)`` and *clipped so the logits are
never scaled by more than 100*: :func:`clamp_logit_scale_` clamps the parameter
to ``[0, ln(100)]`` after every optimizer step, as CLIP and open_clip do. The
model's forward returns ``logit_scale.exp()``; that is what the loss consumes.

Sharding ("the calculation of embedding similarities was also sharded with
individual GPUs computing only the subset of the pairwise similarities necessary
for their local batch of embeddings"): open_clip's ``ClipLoss`` with
``local_loss=True, gather_with_grad=True`` gathers every rank's features with
``torch.distributed.nn.all_gather`` (differentiable; its backward sums the
incoming gradients over ranks) and computes only the local rows
``local x global`` in both directions, with labels offset by ``rank * local``.
Each rank's loss is the mean over its local rows, so the full-batch loss is the
mean over ranks of the per-rank losses; DDP averages gradients over ranks, and
because the gather's backward sums the other ranks' contributions into each
rank's features, the averaged gradient is exactly the single-process
full-batch gradient (proved in ``tests/train/test_loss.py`` with 2 gloo processes).
Requires equal local batch sizes on every rank (``all_gather`` needs them).
"""

from __future__ import annotations

import math

import torch
from open_clip.loss import ClipLoss
from torch import nn

from .distributed import unwrap

__all__ = ["LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX", "make_loss", "clamp_logit_scale_", "ClipLoss"]

#: Initial value of the log-parameterised temperature: logits are scaled by 1/0.07.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
#: Upper clamp of the log-parameterised temperature: logits are never scaled by more than 100.
LOGIT_SCALE_MAX = math.log(100)


def make_loss(rank: int = 0, world_size: int = 1) -> nn.Module:
    """The contrastive loss for one rank of ``world_size``.

    Call it as ``loss(image_features, text_features, logit_scale)`` with the
    rank's *local* (normalised) features and the *exponentiated* scale (what an
    open_clip model returns); it returns a scalar tensor, the mean over the
    local rows of ``(CE(image->text) + CE(text->image)) / 2`` against the
    features of all ranks. With ``world_size == 1`` it is the plain loss over
    the batch and never touches ``torch.distributed``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank/world_size: {rank}/{world_size}")
    if world_size == 1:
        return ClipLoss(cache_labels=True, rank=0, world_size=1)
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world_size)


@torch.no_grad()
def clamp_logit_scale_(model: nn.Module, max_value: float = LOGIT_SCALE_MAX) -> None:
    """Clamp ``model.logit_scale`` (the log of the temperature's inverse) in place
    to ``[0, max_value]``. Call it after each optimizer step."""
    unwrap(model).logit_scale.clamp_(0, max_value)
