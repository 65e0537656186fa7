"""Near-duplicate images: the fingerprints and detectors with which `train.overlap` finds
evaluation images in the training shards.

- ``exact``: sha256 of the decoded RGB pixels and the size (transparency composited onto
  white, as `train.eval_data` and the downloader do): a lossless re-encoding matches, a
  JPEG or resized copy is left to phash;
- ``phash``: `imagehash.phash` (64 bits, DCT of a 32x32 grey thumbnail) within a Hamming
  distance, found through a multi-index hash (`NearIndex`), not by comparing all pairs; a
  phash decided by noise (`perceptual_hash`) matches nothing, since its copies' hashes land
  anywhere;
- ``embedding``: cosine similarity of the model's L2-normalised image embeddings at or above
  a threshold: each shard batch times the (small) evaluation matrix, keeping each shard
  image's best match.

A `Matcher` holds one evaluation set's fingerprints and thresholds, and reports each (shard
image, evaluation image) pair once, under the strongest kind that matched (exact > phash >
embedding), with both distances. Why the constants and the thresholds have their values:
docs/overlap-calibration.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from .overlap import EvalSet

KINDS = ("exact", "phash", "embedding")  # strongest first
HASH_BITS = 64
# A phash with more than PHASH_MAX_TIES of its 64 DCT coefficients within PHASH_TIE_MARGIN
# (scipy's unnormalised DCT-II of 0..255 grey levels) of their median is unstable.
PHASH_TIE_MARGIN = 50.0
PHASH_MAX_TIES = 8
# Each evaluation image's phash is indexed for the image and for these crops of it (a fraction
# of the width and height off each side): 90% of the copies cropped by 2-3% a side lie within 4
# bits of one of them, while that percentile is 4-14 bits from the uncropped hash alone.
CROP_VARIANTS = (0.0, 0.025)


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # of b"WxH\0" + the RGB pixels
    phash: int  # 64-bit perceptual hash, as an unsigned integer
    phash_ok: bool  # whether the phash is stable enough to match on (see `perceptual_hash`)


def fingerprint(image: Image.Image) -> Fingerprint:
    """The exact and perceptual fingerprints of an image, on its RGB form (transparency
    composited onto white, as the evaluation sets and the downloader see it)."""
    from pipeline.imaging import to_rgb

    rgb = to_rgb(image)  # no copy of an RGB image
    digest = hashlib.sha256(b"%dx%d\0" % rgb.size)
    digest.update(rgb.tobytes())
    return Fingerprint(digest.hexdigest(), *perceptual_hash(rgb))


def perceptual_hash(image: Image.Image) -> tuple[int, bool]:
    """(`imagehash.phash` as a 64-bit integer, whether it is stable).

    phash keeps one bit per low-frequency DCT coefficient of a 32x32 grey thumbnail: above
    the median or not. When many coefficients sit at the median (a blank image, a small
    object on a white page, a symmetric drawing, whose odd coefficients are zero), those bits
    are decided by noise and flip under re-encoding or resizing: such an image matches
    unrelated ones and misses its copies. More than PHASH_MAX_TIES coefficients within
    PHASH_TIE_MARGIN of the median make the hash unstable; those images are left to the
    other detectors (and counted).
    """
    import imagehash
    import numpy as np
    from PIL import Image
    from scipy.fftpack import dct

    thumb = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    value = int(str(imagehash.phash(thumb, hash_size=8)), 16)  # phash makes this same thumbnail first
    low = dct(dct(np.asarray(thumb, dtype=np.float64), axis=0), axis=1)[:8, :8]
    ties = int((np.abs(low - np.median(low)) < PHASH_TIE_MARGIN).sum())
    return value, ties <= PHASH_MAX_TIES


def cropped(image: Image.Image, fraction: float) -> Image.Image:
    """`image` without `fraction` of its width and height on each side."""
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy)) if w - 2 * dx > 0 and h - 2 * dy > 0 else image


def hamming(a, b):
    """Bits that differ between uint64 arrays (or ints) `a` and `b`."""
    import numpy as np

    return np.bitwise_count(np.asarray(a, dtype=np.uint64) ^ np.asarray(b, dtype=np.uint64))


class NearIndex:
    """Multi-index hashing: which of `hashes` lie within `max_distance` bits of a query.

    The bits are cut into t+1 disjoint blocks (t = max_distance): two hashes that differ in
    at most t bits are equal on at least one block (pigeonhole), so the candidates are the
    hashes that share some block with the query (a sorted array per block, binary search),
    and a popcount keeps those within t. The result equals comparing with every hash; the
    work grows with the candidates, not with queries x hashes.
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray, max_distance: int, bits: int = HASH_BITS, chunk: int = 4096):
        import numpy as np

        if not 0 <= max_distance < bits:
            raise ValueError(f"max_distance must be in [0, {bits}), got {max_distance}")
        self.hashes = np.asarray(hashes, dtype=np.uint64)
        self.max_distance = int(max_distance)
        self.chunk = int(chunk)
        n_blocks = max_distance + 1
        widths = [bits // n_blocks + (1 if i < bits % n_blocks else 0) for i in range(n_blocks)]
        shifts = [sum(widths[i + 1 :]) for i in range(n_blocks)]
        self._blocks = []  # (shift, width, order of the hashes by block value, sorted block values)
        for shift, width in zip(shifts, widths):
            values = self._block(self.hashes, shift, width)
            order = np.argsort(values, kind="stable")
            self._blocks.append((shift, width, order, values[order]))

    @staticmethod
    def _block(hashes, shift: int, width: int):
        import numpy as np

        return (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)

    def search(self, queries: Sequence[int] | np.ndarray):
        """(query index, hash index, distance) arrays of every pair within `max_distance`,
        sorted by query then hash index."""
        import numpy as np

        queries = np.asarray(queries, dtype=np.uint64)
        parts = [self._search_chunk(queries[i : i + self.chunk], i) for i in range(0, len(queries), self.chunk)]
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _search_chunk(self, queries, offset: int):
        import numpy as np

        q_parts, h_parts = [], []
        for shift, width, order, values in self._blocks:
            v = self._block(queries, shift, width)
            lo = np.searchsorted(values, v, "left")
            n = np.searchsorted(values, v, "right") - lo
            total = int(n.sum())
            starts = np.repeat(lo - (np.cumsum(n) - n), n)  # position of each candidate in `values`
            q_parts.append(np.repeat(np.arange(len(queries)), n))
            h_parts.append(order[starts + np.arange(total)])
        q = np.concatenate(q_parts)
        h = np.concatenate(h_parts)
        pair = np.unique(q * len(self.hashes) + h)  # a pair found through several blocks, once; sorted
        q, h = pair // len(self.hashes), pair % len(self.hashes)
        d = hamming(queries[q], self.hashes[h]).astype(np.int64)
        keep = d <= self.max_distance
        return q[keep] + offset, h[keep], d[keep]


@dataclass
class Match:
    pos: int  # the shard image's position in its batch
    eval_index: int
    kind: str
    phash_distance: int
    cosine: float | None


class Matcher:
    """The three detectors for one evaluation set, with its thresholds."""

    def __init__(self, eval_set: EvalSet, phash_max_distance: int, min_cosine: float | None):
        import numpy as np

        self.eval_set = eval_set
        self.min_cosine = min_cosine
        stable = eval_set.phash_ok.ravel()  # unstable hashes match nothing
        self.near_ids = np.flatnonzero(stable) // eval_set.phash.shape[1]  # -> evaluation image
        self.near = NearIndex(eval_set.phash.ravel()[stable], phash_max_distance)
        self.exact: dict[str, list[int]] = {}
        for i, digest in enumerate(eval_set.sha256):
            self.exact.setdefault(digest, []).append(i)

    def match(self, fps: Sequence[Fingerprint], embedding: torch.Tensor | None = None) -> list[Match]:
        """Every (shard image, evaluation image) pair that a detector finds, under its
        strongest kind; `embedding` [len(fps), dim] unit rows, or None: no embedding detector."""
        import numpy as np

        kinds: dict[tuple[int, int], str] = {}
        for pos, fp in enumerate(fps):
            for i in self.exact.get(fp.sha256, ()):
                kinds[pos, i] = "exact"
        phashes = np.array([fp.phash for fp in fps], dtype=np.uint64)
        stable = np.flatnonzero([fp.phash_ok for fp in fps])
        for q, h, _ in zip(*self.near.search(phashes[stable])):  # (a pair found through two variants: once)
            kinds.setdefault((int(stable[q]), int(self.near_ids[h])), "phash")
        sims = None  # computed whenever both sides have embeddings: the pairs report their cosine
        if embedding is not None and self.eval_set.embedding is not None:
            sims = embedding @ self.eval_set.embedding.T  # [batch, n_eval]
        if sims is not None and self.min_cosine is not None:
            best, arg = sims.max(dim=1)
            for row in np.flatnonzero(best.numpy() >= self.min_cosine):
                kinds.setdefault((int(row), int(arg[row])), "embedding")
        out = []
        for (pos, i), kind in sorted(kinds.items()):
            cosine = round(float(sims[pos, i]), 6) if sims is not None else None
            distance = int(hamming(phashes[pos], self.eval_set.phash[i]).min())  # the nearest variant
            out.append(Match(pos, i, kind, distance, cosine))
        return out
