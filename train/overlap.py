"""Train-test overlap (CLIP paper, section 5 and appendix C): how much of each evaluation set
is in the training shards, and does it inflate the zero-shot score?

    python -m train.overlap --checkpoint runs/NAME                  # the shards it was trained on
    python -m train.overlap --checkpoint runs/NAME --shards 'shards/[0-9]*.tar' --datasets digits
    python -m train.overlap --model tiny-ViT-64 --pretrained runs/NAME/checkpoints/step-00000400.pt \\
        --shards s3://bucket/shards/ --phash-distance 4 digits=2 --min-cosine 0.95

Detectors (an evaluation image overlaps if any of them matches one shard image):
- ``exact``: sha256 of the decoded RGB pixels and the size (transparency composited onto
  white, as `train.eval_data` and the downloader do): a lossless re-encoding matches, a
  JPEG or resized copy is left to phash;
- ``phash``: `imagehash.phash` (64 bits, DCT of a 32x32 grey thumbnail) within a Hamming
  distance, found through a multi-index hash (`NearIndex`), not by comparing all pairs;
- ``embedding``: cosine similarity of the model's L2-normalised image embeddings
  (``encode_image`` after its validation preprocessing) at or above a threshold: each
  shard batch times the (small) evaluation matrix, keeping each shard image's best match.
Each evaluation image is counted once, under the strongest kind that matched it
(exact > phash > embedding); ``overlap_pairs.parquet`` lists every (evaluation image,
shard sample) pair with both distances.

Statistics (paper, section 5): Overlap = matched images, Clean = the rest, All = both. The
zero-shot top-1 (the "openai" prompt ensemble, as `train.evaluate`) on each; All - Clean is
how much overlap inflated the reported accuracy. A one-sided binomial test asks whether
Overlap is more accurate than Clean's accuracy would make it by chance, and a 99.5%
Clopper-Pearson interval bounds Overlap's accuracy (Figure 17).

Thresholds (``--phash-distance``, ``--min-cosine``: one value for every set and/or
NAME=VALUE per set; ``off`` for no embedding detector) were set on the sample (5 shards,
4,425 openclipart images; tiny-ViT-64 trained 400 steps on them) from the pairs found there
and from planted copies: 150 images of a set re-encoded (JPEG q75), scaled 0.5x or 2x or
cropped by 2% or 3% a side, matched against those 150; "others" are the set's remaining
images, re-encoded as the shards are, which are not copies of them.

phash, at most 2 bits for all three sets (the distances are nearly always even):
  digits        copies within 2: 100% (2% crops: 93%); others within 2: 0/1500 (within 4:
                13/1500); the nearest sample shard image is 10 bits away: no overlap.
  animal-mnist  copies within 2: 100% (0.5x: 88%); others within 2: 12/1500 (within 4:
                48/1500); the nearest sample shard images are 6 and 8 bits away, and all 9
                pairs within 8 are flags or cut-outs against a 28x28 silhouette.
  openclipart   copies of images with a stable phash within 2: 99-100% (JPEG, scaled),
                81-92% (crops); others within 2: 2/482. On the sample shards, 20 held-out
                images at distance 0: 16 the same drawing (colour variants included: phash
                is grey, and the paper's detector was trained to ignore colour jitter too),
                4 not (three tricolour flags, an arrow against a clock hand); 31 more at 2:
                18 the same drawing, 13 another member of a series (another card of the
                same deck, another clock time, zoom-in against zoom-out, a forklift against
                a biohazard sign). At 4 and 6 bits series members are most of the pairs.
unstable phash (`perceptual_hash`): 175 of the 632 openclipart images (149 of them the
  symmetric line-art shapes/stars), none in the other sets; re-encoding moves such a hash by
  about 20 bits (a stable one's by 2-6 at most), and matching them anyway finds 8-30% of
  their copies, so only the exact and embedding detectors see them (counted,
  ``phash_unstable``).
embedding: off by default. With the sample model a copy's cosine falls below other images'
  on every set (digits: other images reach 0.9994, 0.5x copies start at 0.88; animal-mnist:
  0.994 against 0.75; openclipart: the nearest other image is above 0.999 for 10% of them,
  2% crops start at 0.54), and the sample pairs above 0.9998 include a star against a map
  outline: no threshold is precise (the paper saw the same with CLIP's own embedding,
  appendix C). A randomly initialised model puts nearly every pair above 0.99. Give
  ``--min-cosine`` for a model whose embedding does separate copies, after looking at the
  pairs it finds.

The shards are streamed one at a time (local paths, globs, folders or fsspec URLs such as
s3://; see `train.shards.expand_urls`), each image decoded once; undecodable images and
unreadable shards are counted (``shard_errors``, by reason in ``skipped``), never fatal.
Memory holds one batch of shard images and the evaluation sets' fingerprints.

Output: OUT/eval/overlap.json and OUT/eval/overlap_pairs.parquet (written under temporary
names and renamed), OUT as `train.evaluate`: the checkpoint's run folder, or
runs/models/SOURCE for --model. One line per set on stderr. ``python -m pipeline
decontaminate`` takes the pairs file and writes the shards without the matched samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_INPUT_ERROR, InputError

from . import sources
from .precision import autocast_factory

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

KINDS = ("exact", "phash", "embedding")  # strongest first
DEFAULT_DATASETS = ("openclipart", "animal-mnist", "digits")
HASH_BITS = 64
# Per-set defaults (see the module docstring for the evidence); other sets get the DEFAULT_*.
# None: the embedding detector is off (its threshold depends on the model; see the docstring).
PHASH_MAX_DISTANCE = {"openclipart": 2, "animal-mnist": 2, "digits": 2}
MIN_COSINE: dict[str, float | None] = {"openclipart": None, "animal-mnist": None, "digits": None}
DEFAULT_PHASH_MAX_DISTANCE = 2
DEFAULT_MIN_COSINE: float | None = None
# A phash with more than PHASH_MAX_TIES of its 64 DCT coefficients within PHASH_TIE_MARGIN
# (scipy's unnormalised DCT-II of 0..255 grey levels) of their median is unstable.
PHASH_TIE_MARGIN = 50.0
PHASH_MAX_TIES = 8
# Each evaluation image's phash is indexed for the image and for these crops of it (a fraction
# of the width and height off each side): 90% of the copies cropped by 2-3% a side lie within 4
# bits of one of them, while that percentile is 4-14 bits from the uncropped hash alone.
CROP_VARIANTS = (0.0, 0.025)
PAIR_COLUMNS = ("dataset", "eval_index", "label", "shard", "key", "uid", "kind", "phash_distance", "cosine")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Fingerprints


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # of b"WxH\0" + the RGB pixels
    phash: int  # 64-bit perceptual hash, as an unsigned integer
    phash_ok: bool  # whether the phash is stable enough to match on (see `perceptual_hash`)


def fingerprint(image: Image.Image) -> Fingerprint:
    """The exact and perceptual fingerprints of an image, on its RGB form (transparency
    composited onto white, as the evaluation sets and the downloader see it)."""
    from .eval_data import to_rgb

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


# ---------------------------------------------------------------------------------------
# The evaluation side


@dataclass
class EvalSet:
    """One labelled set's fingerprints, embeddings and zero-shot correctness, per image."""

    name: str
    labels: np.ndarray
    sha256: list[str]
    phash: np.ndarray  # uint64 [n, len(CROP_VARIANTS)]: the image's phash, then its cropped variants'
    phash_ok: np.ndarray  # bool, the same shape: a stable phash (`perceptual_hash`)
    chance: float
    embedding: torch.Tensor | None = None  # [n, dim], unit rows
    correct: np.ndarray | None = None  # bool: the zero-shot top-1 is the label

    def subset(self, indices) -> EvalSet:
        """The images at `indices`, renumbered 0..len-1 (e.g. a held-out half, in tests)."""
        import numpy as np

        idx = np.asarray(indices, dtype=np.int64)

        def pick(x):
            return x[idx] if x is not None else None

        return EvalSet(
            self.name,
            self.labels[idx],
            [self.sha256[i] for i in idx],
            self.phash[idx],
            self.phash_ok[idx],
            self.chance,
            pick(self.embedding),
            pick(self.correct),
        )


def _embed(model, tensors: list, device, autocast) -> torch.Tensor:
    """Unit image embeddings [n, dim] (float32, CPU) of preprocessed images."""
    import torch

    from .zeroshot import encode_images

    return encode_images(model, [(torch.stack(tensors), torch.zeros(len(tensors)))], device, autocast)[0]


def load_eval_set(
    spec: str,
    cache_dir: str | Path,
    model=None,
    tokenizer=None,
    preprocess=None,
    device="cpu",
    batch_size: int = 256,
    autocast: Callable[[], ContextManager] | None = None,
    templates: str = "openai",
    feature_cache: str | Path | None = None,
    precision: str = "fp32",
    weights: str | None = None,
) -> EvalSet:
    """`build_eval_set` of a labelled set of `train.eval_data` (its PIL images). With a model,
    the embeddings come from `train.features` as `train.evaluate` computes them (and from its
    `feature_cache`, e.g. the trainer's final evaluation's), so the zero-shot accuracy on All
    is the evaluation's own, image for image (`weights`: the model's `weights_digest`, if known)."""
    from . import eval_data, features

    ds = eval_data.load_dataset(spec, cache_dir)
    embedding = None
    if model is not None:
        from torch.utils.data import DataLoader

        cache = features.FeatureCache(feature_cache) if feature_cache else None
        shown = ds.with_transform(preprocess)
        loader = DataLoader(shown, batch_size=batch_size, shuffle=False, num_workers=0)
        embedding = features.cached_encode(
            model, shown, loader, spec, cache, weights, preprocess, precision, device, autocast
        ).embedding
    return build_eval_set(
        spec,
        (ds.image(i) for i in range(len(ds))),
        ds.labels,
        ds.classnames,
        model,
        tokenizer,
        preprocess,
        device,
        batch_size,
        autocast,
        templates,
        embedding=embedding,
    )


def build_eval_set(
    name: str,
    images: Iterable[Image.Image],
    labels,
    classnames: Sequence[str],
    model=None,
    tokenizer=None,
    preprocess=None,
    device="cpu",
    batch_size: int = 256,
    autocast: Callable[[], ContextManager] | None = None,
    templates: str = "openai",
    embedding: torch.Tensor | None = None,
) -> EvalSet:
    """Fingerprint each image (and its CROP_VARIANTS' phashes); with a model also embed it
    (unless its `embedding` rows are given) and classify it zero-shot (the `templates` prompt
    ensemble over `classnames`; ties go to the lower class, as
    `train.zeroshot.accuracy_from_features`). Images are read once."""
    import numpy as np
    import torch

    from .eval_data import to_rgb
    from .zeroshot import build_classifier

    sha, hashes, chunks, pending = [], [], [], []
    for image in images:
        image = to_rgb(image)
        fp = fingerprint(image)
        sha.append(fp.sha256)
        hashes.append([(fp.phash, fp.phash_ok)] + [perceptual_hash(cropped(image, f)) for f in CROP_VARIANTS[1:]])
        if model is not None and embedding is None:
            pending.append(preprocess(image))
            if len(pending) == batch_size:
                chunks.append(_embed(model, pending, device, autocast))
                pending = []
    labels = np.asarray(labels, dtype=np.int64)
    if not sha or len(sha) != len(labels):
        raise ValueError(f"{name}: {len(sha)} images for {len(labels)} labels")
    out = EvalSet(
        name,
        labels,
        sha,
        np.array([[h for h, _ in row] for row in hashes], dtype=np.uint64),
        np.array([[ok for _, ok in row] for row in hashes], dtype=bool),
        1.0 / len(classnames),
    )
    if model is not None:
        out.embedding = (
            embedding.float()
            if embedding is not None
            else torch.cat(chunks + ([_embed(model, pending, device, autocast)] if pending else []))
        )
        classifier = build_classifier(model, tokenizer, classnames, templates, device, autocast=autocast).cpu()
        out.correct = (out.embedding @ classifier).argmax(1).numpy() == labels
    return out


# ---------------------------------------------------------------------------------------
# Matching shard images against one evaluation set


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


# ---------------------------------------------------------------------------------------
# The shard side, streamed


@dataclass
class ScanResult:
    pairs: list[dict] = field(default_factory=list)  # PAIR_COLUMNS
    n_images: int = 0
    phash_unstable: int = 0  # shard images whose phash is unstable (only exact and embedding can match them)
    skipped: Counter = field(default_factory=Counter)  # reason -> count (shards or samples)


# what `train.shards`' reader and decoder count as skipped, plus samples without an image
SKIP_REASONS = (
    "shard_unreadable",
    "shard_truncated",
    "shard_read_error",
    "partial_sample",
    "missing_image",
    "bad_image",
    "image_too_large",
)


@dataclass
class _Batch:
    where: list[tuple[str, str, str | None]] = field(default_factory=list)  # (url, key, uid)
    fps: list[Fingerprint] = field(default_factory=list)
    tensors: list = field(default_factory=list)


def _shard_images(url: str, counts: Counter, max_pixels: int | None):
    """(key, uid, decoded image) of each sample of one shard; what cannot be read is counted."""
    from pipeline.shard_format import image_ext

    from .shards import decode_image, iter_shard

    for raw in iter_shard(url, counts):
        ext = image_ext(raw)
        if ext is None:
            counts["missing_image"] += 1
            continue
        image = decode_image(raw[ext], counts, max_pixels)
        if image is not None:
            yield raw["__key__"], _uid(raw.get("json")), image


def _uid(meta: bytes | None) -> str | None:
    """The sample's uid from its json member; None when it has none or the json is unreadable
    (the key still names the sample)."""
    from pipeline.shard_format import read_uid

    try:
        return read_uid(meta) if meta else None
    except ValueError:
        return None


def scan_shards(
    urls: Sequence[str],
    matchers: dict[str, Matcher],
    model=None,
    preprocess=None,
    device="cpu",
    batch_size: int = 256,
    autocast: Callable[[], ContextManager] | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
) -> ScanResult:
    """Stream the shards once, each image decoded once and fingerprinted (and embedded in
    batches when `model` is given), and match it against every evaluation set. Memory: one
    batch. Returns the pairs (unsorted), the images scanned and what was skipped."""
    from tqdm import tqdm

    from .config import DEFAULT_MAX_IMAGE_PIXELS
    from .eval_data import to_rgb

    max_pixels = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    counts: Counter[str] = Counter()
    result, batch = ScanResult(), _Batch()
    for url in tqdm(
        urls, desc="overlap", unit="shard", file=sys.stderr, dynamic_ncols=True, disable=None if progress else True
    ):
        for key, uid, image in _shard_images(url, counts, max_pixels):
            image = to_rgb(image)  # as the evaluation images: transparency onto white, for both detectors
            batch.where.append((url, key, uid))
            batch.fps.append(fingerprint(image))
            if model is not None:
                batch.tensors.append(preprocess(image))
            if len(batch.fps) == batch_size:
                _flush(batch, matchers, result, model, device, autocast)
                batch = _Batch()
    _flush(batch, matchers, result, model, device, autocast)
    result.skipped = Counter({r: counts[r] for r in SKIP_REASONS if counts[r]})
    return result


def _flush(batch: _Batch, matchers: dict[str, Matcher], result: ScanResult, model, device, autocast) -> None:
    if not batch.fps:
        return
    result.n_images += len(batch.fps)
    result.phash_unstable += sum(not fp.phash_ok for fp in batch.fps)
    embedding = _embed(model, batch.tensors, device, autocast) if model is not None else None
    for name, matcher in matchers.items():
        labels = matcher.eval_set.labels
        for m in matcher.match(batch.fps, embedding):
            url, key, uid = batch.where[m.pos]
            result.pairs.append(
                {
                    "dataset": name,
                    "eval_index": m.eval_index,
                    "label": int(labels[m.eval_index]),
                    "shard": url,
                    "key": key,
                    "uid": uid,
                    "kind": m.kind,
                    "phash_distance": m.phash_distance,
                    "cosine": m.cosine,
                }
            )


# ---------------------------------------------------------------------------------------
# Statistics


def overlap_stats(correct, is_overlap, chance: float) -> dict:
    """All / Overlap / Clean sizes and zero-shot top-1, All - Clean, a one-sided binomial test
    of Overlap's accuracy against Clean's (alternative "greater") and the 99.5% Clopper-Pearson
    interval on Overlap's accuracy (the paper's Figure 17). None where a subset is empty."""
    import numpy as np
    from scipy.stats import binomtest

    correct = np.asarray(correct, dtype=bool)
    is_overlap = np.asarray(is_overlap, dtype=bool)
    if correct.shape != is_overlap.shape or correct.ndim != 1 or not len(correct):
        raise ValueError("correct and is_overlap must be equal-length, non-empty 1-d arrays")
    n, n_over = len(correct), int(is_overlap.sum())
    k_over, k_all = int(correct[is_overlap].sum()), int(correct.sum())
    n_clean, k_clean = n - n_over, k_all - k_over
    top1_all = k_all / n
    top1_clean = k_clean / n_clean if n_clean else None
    out: dict[str, Any] = {
        "all": n,
        "overlap": n_over,
        "clean": n_clean,
        "overlap_rate": n_over / n,
        "top1_all": top1_all,
        "top1_overlap": k_over / n_over if n_over else None,
        "top1_clean": top1_clean,
        "all_minus_clean": top1_all - top1_clean if top1_clean is not None else None,
        "chance_top1": chance,
        "binomial_p": None,
        "overlap_top1_ci995": None,
    }
    if n_over:  # Clopper-Pearson: the two-sided interval (a one-sided test's would end at 1)
        ci = binomtest(k_over, n_over).proportion_ci(confidence_level=0.995, method="exact")
        out["overlap_top1_ci995"] = [float(ci.low), float(ci.high)]
        if n_clean:
            out["binomial_p"] = float(binomtest(k_over, n_over, p=top1_clean, alternative="greater").pvalue)
    return out


def dataset_result(eval_set: EvalSet, pairs: Iterable[dict]) -> dict:
    """`overlap_stats` of one set given its pairs, with ``by_kind``: each overlapping image
    once, under the strongest kind that matched it."""
    import numpy as np

    strongest: dict[int, int] = {}
    for p in pairs:
        rank = KINDS.index(p["kind"])
        strongest[p["eval_index"]] = min(rank, strongest.get(p["eval_index"], rank))
    is_overlap = np.zeros(len(eval_set.labels), dtype=bool)
    is_overlap[list(strongest)] = True
    correct = eval_set.correct if eval_set.correct is not None else np.zeros(len(eval_set.labels), dtype=bool)
    out = overlap_stats(correct, is_overlap, eval_set.chance)
    if eval_set.correct is None:  # fingerprints only: no accuracies
        out.update(
            {
                k: None
                for k in (
                    "top1_all",
                    "top1_overlap",
                    "top1_clean",
                    "all_minus_clean",
                    "binomial_p",
                    "overlap_top1_ci995",
                )
            }
        )
    counts = Counter(strongest.values())
    out["by_kind"] = {kind: counts[rank] for rank, kind in enumerate(KINDS)}
    out["phash_unstable"] = int((~eval_set.phash_ok[:, 0]).sum())
    return out


def summary_line(name: str, r: dict) -> str:
    """One stderr line per set."""

    def f(x, spec=".4f"):
        return "n/a" if x is None else format(x, spec)

    ci = r["overlap_top1_ci995"]
    kinds = ", ".join(f"{k} {v}" for k, v in r["by_kind"].items())
    return (
        f"overlap {name}: {r['overlap']}/{r['all']} images ({r['overlap_rate']:.2%}; {kinds}); top1 all "
        f"{f(r['top1_all'])} overlap {f(r['top1_overlap'])} clean {f(r['top1_clean'])} "
        f"(chance {r['chance_top1']:.4f}), all-clean {f(r['all_minus_clean'], '+.4f')}, "
        f"p {f(r['binomial_p'], '.3g')}, overlap CI99.5 " + (f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a")
    )


# ---------------------------------------------------------------------------------------
# Outputs


def sorted_pairs(pairs: Iterable[dict]) -> list[dict]:
    return sorted(pairs, key=lambda p: (p["dataset"], p["eval_index"], p["shard"], p["key"]))


def write_pairs(pairs: Sequence[dict], path: str | Path) -> None:
    """overlap_pairs.parquet, rows in `sorted_pairs` order, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.io import atomic_path

    schema = pa.schema(
        [
            ("dataset", pa.string()),
            ("eval_index", pa.int64()),
            ("label", pa.int64()),
            ("shard", pa.string()),
            ("key", pa.string()),
            ("uid", pa.string()),
            ("kind", pa.string()),
            ("phash_distance", pa.int32()),
            ("cosine", pa.float64()),
        ]
    )
    rows = sorted_pairs(pairs)
    table = pa.table({c: [r[c] for r in rows] for c in PAIR_COLUMNS}, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# ---------------------------------------------------------------------------------------
# The whole analysis


def thresholds_for(datasets: Sequence[str], phash: Sequence[str] = (), cosine: Sequence[str] = ()) -> dict:
    """{"phash_max_distance": {name: int}, "min_cosine": {name: float}}: the per-set
    defaults, overridden by "VALUE" (every set) then "NAME=VALUE" (that set)."""
    return {
        "phash_max_distance": _per_set(
            datasets, phash, PHASH_MAX_DISTANCE, DEFAULT_PHASH_MAX_DISTANCE, _distance, "--phash-distance"
        ),
        "min_cosine": _per_set(datasets, cosine, MIN_COSINE, DEFAULT_MIN_COSINE, _cosine, "--min-cosine"),
    }


def _distance(text: str) -> int:
    value = int(text)
    if not 0 <= value < HASH_BITS:
        raise ValueError(f"a Hamming distance is between 0 and {HASH_BITS - 1}")
    return value


def _cosine(text: str) -> float | None:
    if text == "off":
        return None
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise ValueError("a cosine is between -1 and 1")
    return value


def _per_set(datasets, given: Sequence[str], defaults: dict, fallback, parse, option: str) -> dict:
    out = {name: defaults.get(name, fallback) for name in datasets}
    for item in sorted(given, key=lambda s: "=" in s):  # global values first, then per set
        name, _, text = item.rpartition("=")
        if name and name not in out:
            raise InputError(f"{option} {item}: {name!r} is not among --datasets ({', '.join(datasets)})")
        try:
            value = parse(text)
        except ValueError as e:
            raise InputError(f"{option} {item}: {e}") from None
        for target in [name] if name else list(out):
            out[target] = value
    return out


def analyse(
    model,
    tokenizer,
    preprocess,
    urls: Sequence[str],
    datasets: Sequence[str],
    cache_dir: str | Path,
    thresholds: dict,
    device="cpu",
    batch_size: int = 256,
    autocast=None,
    templates: str = "openai",
    max_pixels: int | None = None,
    log: Callable[[str], None] | None = _log,
    progress: bool = True,
    feature_cache: str | Path | None = None,
    precision: str = "fp32",
) -> tuple[dict, list[dict]]:
    """(overlap.json's ``datasets``, ``n_shard_images``, ``shard_errors``, ``skipped``, ``shards``;
    the sorted pairs). `model` None: hashes only (no embedding detector, no accuracies)."""
    from . import features

    sets = {}
    weights = features.weights_digest(model) if model is not None and feature_cache else None  # once, not per set
    for spec in datasets:
        t0 = time.perf_counter()
        sets[spec] = load_eval_set(
            spec,
            cache_dir,
            model,
            tokenizer,
            preprocess,
            device,
            batch_size,
            autocast,
            templates,
            feature_cache,
            precision,
            weights,
        )
        if log:
            log(
                f"overlap {spec}: {len(sets[spec].labels)} evaluation images fingerprinted in "
                f"{time.perf_counter() - t0:.1f}s"
            )
    matchers = {
        name: Matcher(s, thresholds["phash_max_distance"][name], thresholds["min_cosine"][name])
        for name, s in sets.items()
    }
    scan = scan_shards(urls, matchers, model, preprocess, device, batch_size, autocast, max_pixels, progress)
    pairs = sorted_pairs(scan.pairs)
    result: dict[str, Any] = {
        "shards": list(urls),
        "n_shard_images": scan.n_images,
        "shard_errors": sum(scan.skipped.values()),
        "skipped": dict(sorted(scan.skipped.items())),
        "shard_phash_unstable": scan.phash_unstable,
        "datasets": {},
    }
    for name, s in sets.items():
        r = result["datasets"][name] = dataset_result(s, [p for p in pairs if p["dataset"] == name])
        if log:
            log(summary_line(name, r))
    return result, pairs


# ---------------------------------------------------------------------------------------
# CLI


def _shard_urls(given: Sequence[str] | None, config: dict) -> list[str]:
    """--shards, else the training data the checkpoint's run was given."""
    from .shards import expand_urls

    patterns = given or config.get("train_data")
    if not patterns:
        raise InputError("pass --shards: the model does not say which shards it was trained on")
    return expand_urls(list(patterns) if not isinstance(patterns, str) else patterns)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m train.overlap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sources.add_model_arguments(ap)
    ap.add_argument(
        "--shards",
        nargs="+",
        help="training shards: paths, globs, brace patterns, folders or fsspec URLs "
        "(default: the checkpoint's --train-data)",
    )
    ap.add_argument(
        "--datasets",
        nargs="+",
        default=list(DEFAULT_DATASETS),
        help="labelled sets as train.evaluate (default: %(default)s)",
    )
    ap.add_argument("--cache", default=".cache/sample", help="sample cache (default: %(default)s)")
    ap.add_argument("--out", help="results go to OUT/eval/ (default: as train.evaluate)")
    ap.add_argument(
        "--phash-distance",
        nargs="+",
        default=[],
        metavar="[NAME=]N",
        help=f"largest phash Hamming distance that counts as a match, for every set or NAME's "
        f"(defaults: {PHASH_MAX_DISTANCE}, {DEFAULT_PHASH_MAX_DISTANCE} for others)",
    )
    ap.add_argument(
        "--min-cosine",
        nargs="+",
        default=[],
        metavar="[NAME=]X",
        help="smallest embedding cosine that counts as a match, for every set or NAME's; 'off': no "
        "embedding detector (default: off for every set, see above)",
    )
    ap.add_argument(
        "--templates",
        choices=["openai", "simple"],
        default="openai",
        help="prompt templates of the zero-shot classifier (default: %(default)s)",
    )
    ap.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: %(default)s)")
    ap.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="shard images declaring more pixels are skipped and counted (default: the trainer's)",
    )
    sources.add_device_arguments(ap)
    ap.add_argument(
        "--feature-cache",
        default=".cache/features",
        help="evaluation-image features cached by train.evaluate / the trainer (--linear-probe) are read "
        "from here, and kept, so the zero-shot accuracies are the evaluation's own; '' for none "
        "(default: %(default)s)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    sources.check_model_arguments(ap, args)
    try:
        from . import eval_data

        for spec in args.datasets:
            eval_data.check_spec(spec)
        thresholds = thresholds_for(args.datasets, args.phash_distance, args.min_cosine)
        device = sources.pick_device(args.device)
        autocast = autocast_factory(args.precision, device)
        loaded = sources.load(args, device)
        config = loaded.meta.get("config")
        urls = _shard_urls(args.shards, config if isinstance(config, dict) else {})
        out = loaded.out(args.out)
        t0 = time.perf_counter()
        result, pairs = analyse(
            loaded.model,
            loaded.tokenizer,
            loaded.preprocess,
            urls,
            args.datasets,
            args.cache,
            thresholds,
            device,
            args.batch_size,
            autocast,
            args.templates,
            args.max_image_pixels,
            feature_cache=args.feature_cache or None,
            precision=args.precision,
        )
        if not result["n_shard_images"]:
            raise InputError(
                f"no image could be read from the {len(urls)} shard(s) "
                f"({', '.join(f'{k} {v}' for k, v in result['skipped'].items()) or 'they are empty'})"
            )
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    from pipeline.io import write_json

    fields = {
        "checkpoint": str(loaded.checkpoint) if loaded.checkpoint else None,
        "model": loaded.name,
        "step": loaded.step,
    }
    result = {**fields, **result, "thresholds": thresholds, "seconds": round(time.perf_counter() - t0, 3)}
    json_path = out / "eval" / "overlap.json"
    write_pairs(pairs, out / "eval" / "overlap_pairs.parquet")
    write_json(json_path, result)
    from .report import refresh_report

    refresh_report(out)  # OUT/report.html gets the overlap table
    print(
        json.dumps(
            {
                "out": str(json_path),
                **{
                    name: {k: r[k] for k in ("all", "overlap", "overlap_rate", "all_minus_clean", "binomial_p")}
                    for name, r in result["datasets"].items()
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
