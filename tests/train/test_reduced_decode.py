"""A JPEG much larger than the crop is decoded at 1/2, 1/4 or 1/8 of its size
(`train.shards.decode_image(reduce_for=S)`, libjpeg's scaled IDCT): the model sees the
same region of the image, and pixels within the stated tolerance of the full decode's
(PSNR >= 30 dB, mean |difference| <= 2.5 levels of 255; on these drawings the worst
was 30.8 dB and 2.2 levels, at a 9x enlargement decoded at 1/8). Smaller images, and other
formats, are decoded in full and give bit-identical crops. Checked on real line drawings
(openclipart: sharp black edges, the hardest case for any resampling) enlarged to
photograph sizes."""

from __future__ import annotations

import glob
import io
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tests.conftest import required_path
from train.shards import decode_image
from train.transforms import draft_size, train_transform, val_transform

pytestmark = pytest.mark.sample
S = 224


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _drawings(n: int) -> list[Image.Image]:
    from pipeline.imaging import to_rgb
    from pipeline.sample.openclipart import roots_from_cache

    png_root, _ = roots_from_cache(str(required_path("OPENCLIPART_DIR")))
    out = []
    for path in sorted(glob.glob(f"{png_root}/**/*.png", recursive=True)):
        img = Image.open(path)
        if min(img.size) >= 200:
            out.append(to_rgb(img))
        if len(out) == n:
            return out
    return out


def _draw(how: str, seed: int) -> dict:
    return {"rng": random.Random(seed)} if how == "train" else {}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b.astype(float)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def test_reduced_decode_crops_the_same_region_within_tolerance():
    reductions = Counter()
    for i, drawing in enumerate(_drawings(12)):
        scale = (2.5, 4.5, 9.0)[i % 3]
        big = drawing.resize((int(drawing.width * scale), int(drawing.height * scale)), Image.Resampling.BICUBIC)
        data = _jpeg(big)
        counts: Counter = Counter()
        full = decode_image(data, counts, None)
        reduced = decode_image(data, counts, None, reduce_for=S)
        assert full is not None and reduced is not None and not counts
        assert full.size == big.size and reduced.info["source_size"] == big.size
        factor = round(big.width / reduced.width)
        reductions[factor] += 1
        assert min(reduced.size) >= 2 * S  # the bicubic still makes the last 2x or more
        for transform, how in ((train_transform(S), "train"), (val_transform(S), "val")):
            a = transform(full, source=full.info["source_size"], **_draw(how, i))
            b = transform(reduced, source=reduced.info["source_size"], **_draw(how, i))  # the same crop draw
            diff = np.abs(a.astype(int) - b.astype(int))
            assert _psnr(a, b) >= 30 and diff.mean() <= 2.5, (i, scale, factor, how, _psnr(a, b), diff.mean())
    assert reductions.keys() >= {2, 4}, reductions  # both reductions were exercised


def test_small_images_and_other_formats_are_decoded_in_full_bit_for_bit():
    drawing = _drawings(1)[0]
    below = drawing.resize((3 * S, 3 * S))  # < 4 S: no 1/2 keeps 2 S, so no reduction
    assert draft_size(below.size, S) is None and draft_size((4 * S, 5 * S), S) == (2 * S, 2 * S + S // 2)
    big_png = drawing.resize((6 * S, 5 * S))
    for data in (_jpeg(below), _png(big_png)):
        counts: Counter = Counter()
        full, reduced = decode_image(data, counts, None), decode_image(data, counts, None, reduce_for=S)
        assert reduced.size == full.size
        t = train_transform(S)
        assert np.array_equal(
            t(full, random.Random(1), source=full.size),
            t(reduced, random.Random(1), source=reduced.info["source_size"]),
        )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
