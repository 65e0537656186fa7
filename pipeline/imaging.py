"""How every stage sees an image's colours: RGB, transparency composited onto white.

One home for the audit's thumbnails, the dataset browser, the trainer's transforms, the
evaluation sets and the overlap analysis (`train.eval_data` re-exports `to_rgb`), so a
drawing on a transparent background looks the same to all of them.
"""

from __future__ import annotations

from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (alpha, premultiplied alpha, LA, palette or colour-key)
    composited onto white. An RGB image without transparency comes back as it is (no copy:
    the training stream calls this per image)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
