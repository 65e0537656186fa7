"""AdamW with CLIP's parameter groups and a cosine schedule with linear warm-up.

CLIP applies weight decay to weights only: gains and biases (every parameter of fewer
than two dimensions: norms, biases, the logit scale) and embeddings (token, positional,
class) are excluded, as in the paper and open_clip's trainer. Betas and eps follow
CLIP's Tables 18-20: (0.9, 0.98, 1e-6) for ViTs, (0.9, 0.999, 1e-8) for ResNets.
"""

from __future__ import annotations

import math

import torch


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Gains and biases are the parameters under 2 dims; embeddings and the scale by name."""
    return param.ndim < 2 or "embedding" in name or "logit_" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": rest, "weight_decay": 0.0, "name": "no_decay"},
    ]


def default_betas_eps(model_name: str, config: dict) -> tuple[tuple[float, float], float]:
    """CLIP's Adam settings by architecture family."""
    layers = config.get("vision_cfg", {}).get("layers")
    is_resnet = isinstance(layers, (list, tuple)) or model_name.upper().startswith("RN")
    return ((0.9, 0.999), 1e-8) if is_resnet else ((0.9, 0.98), 1e-6)


def make_optimizer(model, lr: float, weight_decay: float, betas, eps: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warm-up from 0 over `warmup` steps, then cosine decay to min_lr at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
