"""`train.duplicates`: the fingerprints (phash as `imagehash` computes it, the exact hash on
pixels, transparency as the loaders see it), unstable phashes matching nothing, the
embedding detector keeping each shard image's best match, and the multi-index hash equal
to a brute-force search."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.train.test_overlap import _png


def test_embedding_detector_keeps_the_best_match_above_the_threshold():
    import torch

    from train.duplicates import Fingerprint, Matcher
    from train.overlap import EvalSet

    emb = torch.eye(3, 4)  # three unit evaluation embeddings
    eval_set = EvalSet(
        "x",
        np.array([0, 1, 1]),
        ["a", "b", "c"],
        np.array([[0, 0], [2**63, 2**63], [7, 7]], dtype=np.uint64),
        np.ones((3, 2), dtype=bool),
        0.5,
        emb,
    )
    shard = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1]]), dim=1)
    fps = [Fingerprint("a", 0, True), Fingerprint("z", 2**62, True), Fingerprint("y", 2**61, True)]
    matches = Matcher(eval_set, 0, 0.7).match(fps, shard)
    got = [(m.pos, m.eval_index, m.kind, m.phash_distance) for m in matches]
    assert got == [(0, 0, "exact", 0), (1, 2, "embedding", int(bin(2**62 ^ 7).count("1")))]
    assert matches[1].cosine == pytest.approx(0.8, abs=1e-6)
    assert [m.kind for m in Matcher(eval_set, 0, None).match(fps, shard)] == ["exact"], "off: no embedding"


def test_unstable_hashes_match_nothing():
    """A blank image and a symmetric line drawing hash to a phash decided by noise: they are
    flagged and never matched by phash, however close their hashes."""
    from PIL import ImageDraw

    from train.duplicates import Matcher, fingerprint
    from train.overlap import EvalSet

    blank = Image.new("RGB", (120, 90), "white")
    star = blank.copy()
    ImageDraw.Draw(star).ellipse((30, 15, 90, 75), outline="black")
    for image in (blank, star):
        fp = fingerprint(image)
        assert not fp.phash_ok
        eval_set = EvalSet(
            "x", np.array([0]), ["-"], np.array([[fp.phash] * 2], dtype=np.uint64), np.array([[False, False]]), 1.0
        )
        other = fingerprint(Image.new("RGB", (60, 60), (250, 250, 250)))
        assert Matcher(eval_set, 8, None).match([other]) == []


def test_fingerprint_is_imagehash_and_pixel_exact():
    import imagehash

    from train import eval_data
    from train.duplicates import fingerprint

    ds = eval_data.sklearn_digits()
    image = ds.image(5)
    fp = fingerprint(image)
    assert fp.phash == int(str(imagehash.phash(image)), 16)
    assert fingerprint(Image.open(io.BytesIO(_png(image)))).sha256 == fp.sha256, "same pixels, another file"
    assert fingerprint(image.resize((65, 64))).sha256 != fp.sha256
    rgba = image.convert("RGBA")
    rgba.putpixel((0, 0), (9, 9, 9, 0))  # transparent: white once composited, as the loaders do
    white = image.copy()
    white.putpixel((0, 0), (255, 255, 255))
    assert fingerprint(rgba).sha256 == fingerprint(white).sha256


# ---------------------------------------------------------------------------------------
# Multi-index hashing


def _brute_force(queries, hashes, t):
    d = np.bitwise_count(queries[:, None] ^ hashes[None, :])
    q, h = np.nonzero(d <= t)
    return q, h, d[q, h]


@pytest.mark.parametrize("t", [0, 1, 3, 6, 10, 20])
def test_near_index_equals_brute_force(t):
    from train.duplicates import NearIndex

    rng = np.random.default_rng(t)
    hashes = rng.integers(0, 2**64, 3000, dtype=np.uint64, endpoint=False)
    hashes[:500] &= np.uint64(0xFF)  # a crowded corner: many hashes share most blocks
    hashes[500:510] = hashes[0]  # duplicates
    flips = np.zeros(600, dtype=np.uint64)
    for i in range(600):  # near copies: k random bits flipped, k up to 2t+2
        for bit in rng.choice(64, size=rng.integers(0, 2 * t + 3), replace=False):
            flips[i] |= np.uint64(1) << np.uint64(bit)
    queries = np.concatenate(
        [hashes[rng.integers(0, 3000, 600)] ^ flips, rng.integers(0, 2**64, 400, dtype=np.uint64, endpoint=False)]
    )
    got = NearIndex(hashes, t, chunk=97).search(queries)
    want = _brute_force(queries, hashes, t)
    assert len(want[0]) > 250, "the test exercises matches"
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_near_index_bounds():
    from train.duplicates import NearIndex

    with pytest.raises(ValueError):
        NearIndex([1, 2], 64)
    q, h, d = NearIndex([], 3).search([5])
    assert len(q) == len(h) == len(d) == 0
