"""How every stage sees an image: its colours, and how many pixels it may have.

`to_rgb`: RGB, transparency composited onto white. One home for the audit's thumbnails,
the dataset browser, the trainer's transforms, the evaluation sets and the overlap analysis,
so a drawing on a transparent background looks the same
to all of them.

`MAX_IMAGE_PIXELS`: the largest image decoded, the default of the download step's
`--max-image-pixels` (and the trainer's, through `train.config`). This module imports Pillow
only when `to_rgb` first runs, so the CLIs read the constant before parsing and `--help`
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold (Image.MAX_IMAGE_PIXELS)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (alpha, premultiplied alpha, LA, palette or colour-key)
    composited onto white. An RGB image without transparency comes back as it is (no copy:
    the training stream calls this per image)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
