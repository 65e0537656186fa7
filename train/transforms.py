"""Images to model inputs: CLIP's training augmentation (a random square crop, nothing else)
and the center crop of the held-out set, both to normalised float32 tensors.

Implemented with PIL and numpy rather than torchvision: per-image torch ops pay intra-op
threading overhead (8x slower with 2 threads on a loaded 2-core machine when the stream
runs in the training process). The evaluation sets use open_clip's own transform instead
(`train.model.eval_transform`), as the published numbers do.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from pipeline.imaging import to_rgb

_MEAN_255 = np.asarray(OPENAI_DATASET_MEAN, dtype=np.float32) * 255
_INV_STD_255 = 1.0 / (np.asarray(OPENAI_DATASET_STD, dtype=np.float32) * 255)


def _square_to_tensor(img: Image.Image, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop `box`, resize to size x size (bicubic), normalise: float32 [3, size, size], the
    values of torchvision's to_tensor + normalize."""
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    arr = (np.asarray(out, dtype=np.float32) - _MEAN_255) * _INV_STD_255
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


class TrainTransform:
    """Resize the shorter side to `image_size`, take a random square crop of that size.

    CLIP's only augmentation: no flip, no colour jitter, no scale jitter. Implemented as the
    equivalent crop-then-resize (a random square of the shorter side's length in the
    original image, resized once to `image_size`), which never materialises the resized
    full image (a 1x5000 banner would otherwise become 224x1,120,000 pixels). The crop
    position comes from `rng` (a `random.Random`; default: the `random` module).
    """

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        crop_rng = rng or random
        img = to_rgb(img)
        w, h = img.size
        s = min(w, h)
        left, top = crop_rng.randint(0, w - s), crop_rng.randint(0, h - s)
        return _square_to_tensor(img, (left, top, left + s, top + s), self.image_size)

    def __repr__(self) -> str:
        return f"TrainTransform(image_size={self.image_size}, random square crop, bicubic)"


class ValTransform:
    """Resize the shorter side to `image_size`, center crop (deterministic)."""

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img)
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return _square_to_tensor(img, (left, top, left + s, top + s), self.image_size)

    def __repr__(self) -> str:
        return f"ValTransform(image_size={self.image_size}, center crop, bicubic)"


def train_transform(image_size: int) -> TrainTransform:
    """PIL image -> normalised float32 [3, S, S], random square crop (see TrainTransform)."""
    return TrainTransform(image_size)


def val_transform(image_size: int) -> ValTransform:
    """PIL image -> normalised float32 [3, S, S], center crop."""
    return ValTransform(image_size)
