"""Precision: the names `python -m train`, `train.evaluate` and `train.overlap` accept, and
the autocast each one means.

Every mode is autocast over fp32 weights (`model_precision`). bf16 and amp_fp16 are the
trainer's names; amp_bf16 and amp are open_clip_train's for the same modes, accepted so its
commands carry over. fp16 needs a gradient scaler in training (its narrow range underflows
small gradients), bf16 does not. No torch import at module level: `train.args` reads
`PRECISIONS` before torch is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# name -> the autocast dtype it means; also the feature cache's key (`train.features`), so
# bf16 and amp_bf16 share cached features
AUTOCAST_DTYPE = {"fp32": "fp32", "bf16": "bf16", "amp_fp16": "fp16", "amp_bf16": "bf16", "amp": "fp16"}
PRECISIONS = tuple(AUTOCAST_DTYPE)
_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of `precision`, None for fp32; ValueError for an unknown name."""
    import torch

    if precision not in AUTOCAST_DTYPE:
        raise ValueError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    name = _TORCH_DTYPE.get(AUTOCAST_DTYPE[precision])
    return getattr(torch, name) if name else None


def autocast_factory(precision: str, device: str | torch.device) -> Callable[[], ContextManager]:
    """A zero-argument factory of `precision`'s autocast context on `device` (a new context per
    forward: a context manager is not reentrant); `contextlib.nullcontext` for fp32."""
    import torch

    dtype = torch_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext
    device_type = torch.device(device).type
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def autocast_context(autocast: Callable[[], ContextManager] | None) -> ContextManager:
    """The context of an optional autocast factory (None: none)."""
    return autocast() if autocast is not None else contextlib.nullcontext()


def needs_grad_scaler(precision: str) -> bool:
    """fp16 autocast: the trainer scales the loss (torch.amp.GradScaler)."""
    return AUTOCAST_DTYPE.get(precision) == "fp16"


def model_precision(precision: str) -> str:
    """open_clip's `create_model` precision: master weights stay fp32 in every mode, so AdamW's
    small late-schedule updates are not lost to bf16 rounding (open_clip's "bf16" would cast them)."""
    return "fp32"
