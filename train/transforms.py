"""Images to model inputs: CLIP's training augmentation (a random square crop, nothing else)
and the center crop of the held-out set, both as uint8 [S, S, 3]; `stack` makes a batch of
them and `normalize` turns it into the model's float32 input, on the device.

The loader's work per image is the floor's (decode, one bicubic resize) and little else:
a JPEG much larger than the crop is decoded at a reduced size (`draft_size`, libjpeg's
scaled IDCT), and the images go to the device as uint8 (a quarter of float32's bytes) and
are normalised there per batch, instead of a float pass per image on the loader's core.
`bench/loader.py` measures it. Implemented with PIL and numpy rather than torchvision:
per-image torch ops pay intra-op threading overhead (8x slower with 2 threads on a loaded
2-core machine when the stream runs in the training process). The evaluation sets use
open_clip's own transform instead (`train.model.eval_transform`), as the published numbers do.
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
DRAFT_MARGIN = 2  # decode a JPEG at 1/2, 1/4 or 1/8 only while its crop stays >= 2x the output: the
# bicubic resize still does the last step, so the image differs from a full decode by little


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] (any strides: `stack` hands over a channels-last view) -> float32
    contiguous, (x - 255 mean) / (255 std): the values of torchvision's to_tensor +
    normalize, bit for bit what this module's per-image float pass gave."""
    mean = torch.as_tensor(_MEAN_255, device=images.device).view(3, 1, 1)
    inv_std = torch.as_tensor(_INV_STD_255, device=images.device).view(3, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return out.copy_(images).sub_(mean).mul_(inv_std)  # one batch-sized float tensor, in place


def draft_size(size: tuple[int, int], image_size: int) -> tuple[int, int] | None:
    """The size to ask a JPEG decoder for (`Image.draft`) so that the square crop of the
    shorter side still has DRAFT_MARGIN x `image_size` pixels a side; None when the image
    is too small for any reduction to keep that."""
    w, h = size
    s = min(w, h)
    need = DRAFT_MARGIN * image_size
    if s < 2 * need:
        return None
    return -(-w * need // s), -(-h * need // s)


def _square_uint8(img: Image.Image, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop `box`, resize to size x size (bicubic): uint8 [size, size, 3], a read-only view of
    the resized image's bytes (PIL keeps RGB as 4 bytes a pixel: `tobytes` packs it in one
    pass, where numpy's array interface costs two)."""
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.frombuffer(out.tobytes(), dtype=np.uint8).reshape(size, size, 3)


def _box(img: Image.Image, left: int, top: int, s: int, source: tuple[int, int]) -> tuple[float, float, float, float]:
    """The square (left, top, s) of the source image in `img`'s pixels: the same region when
    `img` was decoded at a reduced size (`draft_size`)."""
    fx, fy = img.size[0] / source[0], img.size[1] / source[1]
    return (left * fx, top * fy, (left + s) * fx, (top + s) * fy)


def stack(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 [S, S, 3] images -> uint8 [B, 3, S, S]: one contiguous copy into channels-last
    memory, handed over as a view in the model's axis order (`normalize` makes it contiguous
    on the device)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


class TrainTransform:
    """Resize the shorter side to `image_size`, take a random square crop of that size.

    CLIP's only augmentation: no flip, no colour jitter, no scale jitter. Implemented as the
    equivalent crop-then-resize (a random square of the shorter side's length in the
    original image, resized once to `image_size`), which never materialises the resized
    full image (a 1x5000 banner would otherwise become 224x1,120,000 pixels). The crop
    position comes from `rng` (a `random.Random`; default: the `random` module), drawn on
    the `source` size (the image's before a reduced-size decode), so a draft decode crops
    the same region. Returns uint8 [S, S, 3] (see `stack` and `normalize`).
    """

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(
        self, img: Image.Image, rng: random.Random | None = None, source: tuple[int, int] | None = None
    ) -> np.ndarray:
        crop_rng = rng or random
        img = to_rgb(img)
        w, h = source or img.size
        s = min(w, h)
        left, top = crop_rng.randint(0, w - s), crop_rng.randint(0, h - s)
        return _square_uint8(img, _box(img, left, top, s, (w, h)), self.image_size)

    def __repr__(self) -> str:
        return f"TrainTransform(image_size={self.image_size}, random square crop, bicubic)"


class ValTransform:
    """Resize the shorter side to `image_size`, center crop (deterministic): uint8 [S, S, 3]."""

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image, source: tuple[int, int] | None = None) -> np.ndarray:
        img = to_rgb(img)
        w, h = source or img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return _square_uint8(img, _box(img, left, top, s, (w, h)), self.image_size)

    def __repr__(self) -> str:
        return f"ValTransform(image_size={self.image_size}, center crop, bicubic)"


def train_transform(image_size: int) -> TrainTransform:
    """PIL image -> uint8 [S, S, 3], random square crop (see TrainTransform)."""
    return TrainTransform(image_size)


def val_transform(image_size: int) -> ValTransform:
    """PIL image -> uint8 [S, S, 3], center crop."""
    return ValTransform(image_size)
