"""Train-test overlap (CLIP paper, section 5 and appendix C): how much of each evaluation set
is in the training shards, and does it inflate the zero-shot score?

    python -m train.overlap --checkpoint runs/NAME                  # the shards it was trained on
    python -m train.overlap --checkpoint runs/NAME --shards 'shards/[0-9]*.tar' --datasets digits
    python -m train.overlap --model tiny-ViT-64 --pretrained runs/NAME/checkpoints/step-00000400.pt \\
        --shards s3://bucket/shards/ --phash-distance 4 digits=2 --min-cosine 0.95

An evaluation image overlaps if a detector (`train.duplicates`) matches it with one shard
image: ``exact`` (the same pixels), ``phash`` (a perceptual hash within a Hamming
distance) or ``embedding`` (the model's image embeddings at or above a cosine). Each
evaluation image is counted once, under the strongest kind that matched it (exact > phash >
embedding); ``overlap_pairs.parquet`` lists every (evaluation image, shard sample) pair with
both distances.

Statistics (paper, section 5): Overlap = matched images, Clean = the rest, All = both. The
zero-shot top-1 (the "openai" prompt ensemble, as `train.evaluate`) on each; All - Clean is
how much overlap inflated the reported accuracy. A one-sided binomial test asks whether
Overlap is more accurate than Clean's accuracy would make it by chance, and a 99.5%
Clopper-Pearson interval bounds Overlap's accuracy (Figure 17).

Thresholds (``--phash-distance``, ``--min-cosine``: one value for every set and/or
NAME=VALUE per set; ``off`` for no embedding detector): phash within 2 bits for every set,
the embedding detector off, because on the sample a copy's cosine falls below unrelated
images' (the planted copies, the pairs found and the numbers are in
docs/overlap-calibration.md).

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
from .config import EvalConfig
from .duplicates import CROP_VARIANTS, HASH_BITS, KINDS, Fingerprint, Matcher, cropped, fingerprint, perceptual_hash
from .precision import autocast_factory

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

# Per-set defaults (docs/overlap-calibration.md has the evidence); other sets get the DEFAULT_*.
# None: the embedding detector is off (its threshold depends on the model).
PHASH_MAX_DISTANCE = {"openclipart": 2, "animal-mnist": 2, "digits": 2}
MIN_COSINE: dict[str, float | None] = {"openclipart": None, "animal-mnist": None, "digits": None}
DEFAULT_PHASH_MAX_DISTANCE = 2
DEFAULT_MIN_COSINE: float | None = None
PAIR_COLUMNS = ("dataset", "eval_index", "label", "shard", "key", "uid", "kind", "phash_distance", "cosine")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def embed(model, tensors: list, device, autocast) -> torch.Tensor:
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

    from pipeline.imaging import to_rgb

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
                chunks.append(embed(model, pending, device, autocast))
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
            else torch.cat(chunks + ([embed(model, pending, device, autocast)] if pending else []))
        )
        classifier = build_classifier(model, tokenizer, classnames, templates, device, autocast=autocast).cpu()
        out.correct = (out.embedding @ classifier).argmax(1).numpy() == labels
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
    where: list[tuple[str, str, str]] = field(default_factory=list)  # (url, key, uid)
    fps: list[Fingerprint] = field(default_factory=list)
    tensors: list = field(default_factory=list)


def shard_images(url: str, counts: Counter, max_pixels: int | None):
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
            yield raw["__key__"], _uid(raw, url), image


def _uid(raw: dict, url: str) -> str:
    """The uid the trainer gives the sample (`pipeline.shard_format.sample_uid`); a json that
    cannot be read names none (the trainer skips such a sample; here the image still counts)."""
    from pipeline.shard_format import read_meta, sample_uid

    try:
        meta = read_meta(raw["json"]) if raw.get("json") else {}
    except ValueError:
        meta = {}
    return sample_uid(meta, raw["__key__"], url)


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

    from pipeline.imaging import MAX_IMAGE_PIXELS, to_rgb

    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    counts: Counter[str] = Counter()
    result, batch = ScanResult(), _Batch()
    for url in tqdm(
        urls, desc="overlap", unit="shard", file=sys.stderr, dynamic_ncols=True, disable=None if progress else True
    ):
        for key, uid, image in shard_images(url, counts, max_pixels):
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
    embedding = embed(model, batch.tensors, device, autocast) if model is not None else None
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
            device=device,
            batch_size=batch_size,
            autocast=autocast,
            templates=templates,
            feature_cache=feature_cache,
            precision=precision,
            weights=weights,
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
    """The command's options; the evaluation sets' defaults are `EvalConfig`'s, as train.evaluate's."""
    eval_defaults = EvalConfig()
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
        default=list(eval_defaults.datasets),
        help="labelled sets as train.evaluate (default: %(default)s)",
    )
    ap.add_argument("--cache", default=eval_defaults.cache_dir, help="sample cache (default: %(default)s)")
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
        default=eval_defaults.feature_cache,
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
