"""Linear-probe evaluation over frozen features, after CLIP (Radford et al., 2021), Appendix A.3.

The paper's protocol: scikit-learn's L-BFGS logistic regression, at most 1,000 iterations; the
L2 strength lambda is chosen on a validation split by a "parametric binary search" that starts at
lambda in {1e-6, 1e-4, 1e-2, 1, 1e2, 1e4, 1e6} and halves the interval around the peak until it
reaches 8 steps per decade (97 points, "96 logarithmically spaced steps", between 1e-6 and 1e6);
the validation split is then merged back into training and the score is reported on the test split.

Choices the paper leaves open, fixed here (each can be audited in the returned results):

* lambda -> C. scikit-learn minimises ``C * sum_i loss_i + 0.5 * ||w||^2``. We read lambda as the
  L2 strength on the *mean* loss, ``mean_i loss_i + 0.5 * lambda * ||w||^2``; dividing sklearn's
  objective by ``C * n`` gives ``C = 1 / (lambda * n)``, with n the number of examples in that fit.
  So one lambda means the same regularisation whatever the training-set size, which is what lets
  the value chosen on train be reused for the refit on train+validation.
* Ties in validation accuracy go to the larger lambda (the stronger regularisation, the simpler
  model).
* Features: the paper says nothing, so by default each fit standardises its inputs with the mean
  and std of the examples it is fit on (train in the search, train+validation in the refit);
  "l2" (unit rows) and "none" are options.
* Few-shot validation: the paper does not say how lambda was chosen for its k-shot curves. Here each
  seed draws one permutation per class; the k-shot set is its first k examples (so the sets are
  nested in k) and the validation set is drawn from the examples after position max(shots)
  (disjoint from every k-shot set, and the same for every k), at most ``val_per_class`` of them
  per class (all, if None). The few-shot probe is *not* refit on train+validation: that would no
  longer be k-shot.
* Fits that stop at the 1,000-iteration cap are kept (that cap is part of the protocol); their
  ConvergenceWarning is silenced.

On a labelled set (`probe_dataset`: ``python -m train.evaluate --linear-probe``'s
``linear_probe`` entry) the features come from `train.features`. A set without a split of its
own is split 60/20/20 per class into train / validation / test by a seeded permutation
(`probe_split`); a set with its own test split keeps it, and its train part is split 75/25
into train and validation (`probe_given_split`), as the paper does for sets without a
validation split. The k-shot sets are drawn from the train split only, and the zero-shot
top-1 is scored on the same test split, so the three numbers compare.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

#: The paper's start grid, as log10(lambda).
START_EXPONENTS = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
#: Final resolution: 8 steps per decade.
FINAL_STEP = 1.0 / 8
MAX_ITER = 1000
NORMALIZE = ("standardize", "l2", "none")


@dataclass(frozen=True)
class Point:
    """One lambda the search evaluated."""

    log10_lambda: float
    lam: float
    val_acc: float


@dataclass(frozen=True)
class SearchResult:
    best_lambda: float
    best_log10_lambda: float
    best_val_acc: float
    visited: tuple[Point, ...]  # in evaluation order: the 7 start points, then pairs of midpoints
    n_train: int
    n_val: int


@dataclass(frozen=True)
class ProbeResult:
    test_acc: float
    lam: float  # the chosen lambda
    search: SearchResult
    n_train: int
    n_val: int
    n_fit: int  # examples in the final fit (train+val when refit, else train)
    n_test: int
    num_classes: int  # distinct classes among the test labels
    chance: float  # 1 / num_classes


@dataclass(frozen=True)
class FewShotResult:
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    acc: dict[int, tuple[float, ...]]  # k -> test accuracy per seed (in `seeds` order)
    mean: dict[int, float]
    std: dict[int, float]  # population std (ddof=0) over seeds
    lam: dict[int, tuple[float, ...]]  # k -> chosen lambda per seed
    indices: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (k, seed) -> (train, val)
    short_classes: dict[int, dict]  # k -> {class: examples available} for classes with < k
    chance: float


def lambda_to_c(lam: float, n: int) -> float:
    """sklearn's C for L2 strength `lam` on the mean loss over `n` examples (see module doc)."""
    return 1.0 / (lam * n)


def _normalizer(x: np.ndarray, how: str) -> Callable[[np.ndarray], np.ndarray]:
    """The transform to apply, with statistics taken from `x` (the examples being fit)."""
    if how == "standardize":
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # constant features stay finite
        return lambda a: (a - mean) / std
    if how == "l2":
        return lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    if how == "none":
        return lambda a: a
    raise ValueError(f"normalize must be one of {NORMALIZE}, not {how!r}")


def _fit(x: np.ndarray, y: np.ndarray, lam: float, seed: int, normalize: str):
    """Fit the paper's classifier; return a predict function on raw features."""
    norm = _normalizer(x, normalize)
    clf = LogisticRegression(C=lambda_to_c(lam, len(y)), solver="lbfgs", max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(norm(x), y)
    return lambda a: clf.predict(norm(a))


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(pred == y))


def binary_search(score: Callable[[float], float]) -> tuple[float, float, list[tuple[float, float]]]:
    """The paper's parametric binary search over log10(lambda), for any score (higher is better).

    Evaluates START_EXPONENTS, then, with step = 1, 1/2, 1/4, 1/8, the two points best +- step
    that lie in [-6, 6]; the best is the highest score over all points so far, ties to the larger
    exponent. Every exponent is a multiple of 1/8, exact in floating point. Returns
    (best exponent, its score, [(exponent, score)] in evaluation order).
    """
    visited: list[tuple[float, float]] = []
    seen: dict[float, float] = {}

    def visit(e: float) -> None:
        if e not in seen:
            seen[e] = float(score(e))
            visited.append((e, seen[e]))

    for e in START_EXPONENTS:
        visit(e)
    step = START_EXPONENTS[1] - START_EXPONENTS[0]
    lo, hi = START_EXPONENTS[0], START_EXPONENTS[-1]
    best = max(seen, key=lambda e: (seen[e], e))
    while step > FINAL_STEP:
        step /= 2
        for e in (best - step, best + step):
            if lo <= e <= hi:
                visit(e)
        best = max(seen, key=lambda e: (seen[e], e))
    return best, seen[best], visited


def search_l2(train_x, train_y, val_x, val_y, seed: int = 0, normalize: str = "standardize") -> SearchResult:
    """Choose lambda by validation top-1 accuracy with the paper's binary search (deterministic)."""
    train_x, val_x = np.asarray(train_x, dtype=np.float64), np.asarray(val_x, dtype=np.float64)
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    if len(val_y) == 0:
        raise ValueError("the lambda search needs a non-empty validation set")

    def score(e: float) -> float:
        return _accuracy(_fit(train_x, train_y, 10.0**e, seed, normalize)(val_x), val_y)

    best, acc, visited = binary_search(score)
    return SearchResult(
        best_lambda=10.0**best,
        best_log10_lambda=best,
        best_val_acc=acc,
        visited=tuple(Point(e, 10.0**e, a) for e, a in visited),
        n_train=len(train_y),
        n_val=len(val_y),
    )


def linear_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    test_x,
    test_y,
    seed: int = 0,
    normalize: str = "standardize",
    refit_on_val: bool = True,
) -> ProbeResult:
    """Search lambda on validation, refit on train+validation (the paper), score top-1 on test.

    `refit_on_val=False` fits on train alone (used by `few_shot`, where merging would add examples).
    """
    train_x, val_x, test_x = (np.asarray(a, dtype=np.float64) for a in (train_x, val_x, test_x))
    train_y, val_y, test_y = (np.asarray(a) for a in (train_y, val_y, test_y))
    search = search_l2(train_x, train_y, val_x, val_y, seed=seed, normalize=normalize)
    if refit_on_val:
        fit_x, fit_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    else:
        fit_x, fit_y = train_x, train_y
    predict = _fit(fit_x, fit_y, search.best_lambda, seed, normalize)
    num_classes = len(np.unique(test_y))
    return ProbeResult(
        test_acc=_accuracy(predict(test_x), test_y),
        lam=search.best_lambda,
        search=search,
        n_train=len(train_y),
        n_val=len(val_y),
        n_fit=len(fit_y),
        n_test=len(test_y),
        num_classes=num_classes,
        chance=1.0 / num_classes,
    )


def few_shot_split(
    train_y, k: int, seed: int, max_k: int | None = None, val_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (k-shot train, validation) into `train_y`, deterministic in `seed` alone.

    Per class (in sorted order) one permutation from `default_rng(seed)`: train takes its first
    min(k, available) entries, validation the entries from position `max_k` (default k) on, at
    most `val_per_class` of them (all if None). Same seed, same permutation, whatever k: the k-shot
    sets are nested and validation does not change with k as long as max_k is fixed.
    """
    train_y = np.asarray(train_y)
    max_k = k if max_k is None else max_k
    if k < 1 or max_k < k:
        raise ValueError(f"need 1 <= k <= max_k, got k={k}, max_k={max_k}")
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(train_y):
        perm = rng.permutation(np.flatnonzero(train_y == c))
        tr.append(perm[:k])
        rest = perm[max_k:]
        va.append(rest if val_per_class is None else rest[:val_per_class])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def few_shot(
    train_x,
    train_y,
    test_x,
    test_y,
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    val_per_class: int | None = None,
    normalize: str = "standardize",
) -> FewShotResult:
    """k-shot linear probes: per k and seed, search lambda on held-out train examples, fit on the
    k-shot set only, report test top-1; mean and std over seeds (see `few_shot_split`)."""
    train_x, test_x = np.asarray(train_x, dtype=np.float64), np.asarray(test_x, dtype=np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    shots, seeds = tuple(int(k) for k in shots), tuple(int(s) for s in seeds)
    max_k = max(shots)
    classes, counts = np.unique(train_y, return_counts=True)
    acc, lam, indices, short = {}, {}, {}, {}
    chance = math.nan
    for k in shots:
        short[k] = {c.item(): int(n) for c, n in zip(classes, counts) if n < k}
        accs, lams = [], []
        for s in seeds:
            tr, va = few_shot_split(train_y, k, s, max_k=max_k, val_per_class=val_per_class)
            indices[(k, s)] = (tr, va)
            r = linear_probe(
                train_x[tr],
                train_y[tr],
                train_x[va],
                train_y[va],
                test_x,
                test_y,
                seed=s,
                normalize=normalize,
                refit_on_val=False,
            )
            accs.append(r.test_acc)
            lams.append(r.lam)
            chance = r.chance
        acc[k], lam[k] = tuple(accs), tuple(lams)
    return FewShotResult(
        shots=shots,
        seeds=seeds,
        acc=acc,
        mean={k: float(np.mean(v)) for k, v in acc.items()},
        std={k: float(np.std(v)) for k, v in acc.items()},
        lam=lam,
        indices=indices,
        short_classes=short,
        chance=chance,
    )


# ---------------------------------------------------------------------------------------
# A labelled set's probes: its split, the fits, and the zero-shot top-1 on the same test split


PROBE_FRACTIONS = (0.6, 0.2, 0.2)  # train / validation / test, per class
GIVEN_SPLIT_FRACTIONS = (0.75, 0.25, 0.0)  # a set with its own test split: its train part, per class


def probe_split(labels, seed: int = 0, fractions: Sequence[float] = PROBE_FRACTIONS):
    """(train, validation, test) indices into `labels`, stratified and deterministic in `seed`.

    Per class (sorted), one permutation from ``numpy.random.default_rng(seed)``: its first
    round(test fraction * n_c) entries go to test, the next round(validation fraction * n_c)
    to validation, the rest to train; a class with at least 3 examples gives each split with
    a non-zero fraction at least one. Each index array is sorted.
    """
    labels = np.asarray(labels)
    _, f_val, f_test = fractions
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for c in np.unique(labels):
        perm = rng.permutation(np.flatnonzero(labels == c))
        n = len(perm)
        n_test, n_val = int(round(f_test * n)), int(round(f_val * n))
        if n >= 3:  # at least one image in each split that has a share
            n_test = min(max(int(f_test > 0), n_test), n - 2)
            n_val = min(max(int(f_val > 0), n_val), n - 1 - n_test)
        te.append(perm[:n_test])
        va.append(perm[n_test : n_test + n_val])
        tr.append(perm[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (tr, va, te))


def probe_dataset(
    feats,
    labels,
    classifier,
    seed: int = 0,
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    probe_features=None,
    kind: str | None = None,
    split=None,
) -> dict:
    """The CLIP paper's linear probe (`linear_probe`, `few_shot`) on image features already encoded.

    `feats`: the L2-normalised embeddings the zero-shot `classifier` scores; `probe_features`
    (default: `feats`): what the probes fit, for ViTs the features before the projection
    (`train.features`; `kind` says which), standardised per fit by `linear_probe`. The set
    is split 60/20/20 per class by `probe_split(labels, seed)` (or `split`, a given (train,
    validation, test) triple of index arrays): the probe searches lambda on validation,
    refits on train+validation and is scored on test; `few_shot` draws its k-shot sets (k
    in `shots`, one draw per seed in `seeds`) from the train split only and is scored on the
    same test split, where the zero-shot top-1 is computed too (``zero_shot_top1``).
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    from .zeroshot import accuracy_from_features

    t0 = time.perf_counter()
    x = (feats if probe_features is None else probe_features).float().cpu().numpy()
    y = labels.long().cpu().numpy()
    tr, va, te = probe_split(y, seed) if split is None else split
    out: dict = {
        "features": kind or "image embedding (encode_image), L2-normalised; standardised per fit",
        "split": {"seed": int(seed), "fractions": list(PROBE_FRACTIONS), "stratified": True}
        if split is None
        else {"seed": int(seed), "given": True},
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "n_test": int(len(te)),
    }
    if not len(tr) or not len(va) or not len(te):
        out["skipped"] = "too few images per class for a train/validation/test split"
        return out
    zs = accuracy_from_features(feats[te], labels[te], classifier, topk=(1,))
    out["zero_shot_top1"] = zs["top1"]
    # One BLAS thread: beside torch's threads, OpenBLAS's own pool makes these small L-BFGS fits
    # ~15x slower on 2 cores, and its threaded sums make the probe's accuracy vary between runs.
    with threadpool_limits(limits=1, user_api="blas"):
        _fit_probes(out, x, y, tr, va, te, seed, shots, seeds)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def probe_given_split(
    fit, test, classifier, seed: int = 0, shots: Sequence[int] = (1, 2, 4, 8, 16), seeds: Sequence[int] = (0, 1, 2)
) -> dict:
    """`probe_dataset` for a set that brings its own test split (``imagefolder:ROOT`` with
    ``train/`` and ``test/``): as the paper does for sets without a validation split, the
    train part (`fit`, `train.features.Features`) is split 75/25 per class by `seed` into
    train and validation for the lambda search; `test` (the test part's features, the ones
    zero-shot is scored on) is the test split."""
    import torch

    tr, va, _ = probe_split(fit.labels.numpy(), seed, GIVEN_SPLIT_FRACTIONS)
    te = np.arange(len(fit.labels), len(fit.labels) + len(test.labels), dtype=np.int64)
    out = probe_dataset(
        torch.cat([fit.embedding, test.embedding]),
        torch.cat([fit.labels, test.labels]),
        classifier,
        seed=seed,
        shots=shots,
        seeds=seeds,
        probe_features=torch.cat([fit.probe, test.probe]),
        kind=test.kind,
        split=(tr, va, te),
    )
    out["split"].update({"fractions_of_train": list(GIVEN_SPLIT_FRACTIONS[:2]), "test": "the set's test/ folder"})
    return out


def _fit_probes(out: dict, x, y, tr, va, te, seed: int, shots: Sequence[int], seeds: Sequence[int]) -> None:
    probe = linear_probe(x[tr], y[tr], x[va], y[va], x[te], y[te], seed=seed)
    out.update(
        {
            "test_acc": probe.test_acc,
            "lambda": probe.lam,
            "log10_lambda": probe.search.best_log10_lambda,
            "val_acc": probe.search.best_val_acc,
            "n_fit": probe.n_fit,
            "num_classes": probe.num_classes,
            "chance": probe.chance,
        }
    )
    try:
        fs = few_shot(x[tr], y[tr], x[te], y[te], shots=shots, seeds=seeds)
    except ValueError as e:  # e.g. no train examples beyond max(shots) left for validation
        out["few_shot"] = {"skipped": str(e)}
    else:
        out["few_shot"] = {
            "seeds": list(fs.seeds),
            "chance": fs.chance,
            "zero_shot_top1": out["zero_shot_top1"],
            "shots": {
                str(k): {
                    "mean": fs.mean[k],
                    "std": fs.std[k],
                    "acc": list(fs.acc[k]),
                    "lambda": list(fs.lam[k]),
                    "short_classes": {str(c): n for c, n in fs.short_classes[k].items()},
                }
                for k in fs.shots
            },
        }


def probe_line(name: str, probe: dict) -> str:
    """One line for a `probe_dataset` result."""
    if "skipped" in probe:
        return f"probe {name}: skipped ({probe['skipped']})"
    shots = probe.get("few_shot", {}).get("shots", {})
    top = max(shots, key=int) if shots else None
    few = f" {top}-shot {shots[top]['mean']:.4f}+-{shots[top]['std']:.4f}" if top else " few-shot skipped"
    return (
        f"probe {name}: linear probe {probe['test_acc']:.4f} (lambda {probe['lambda']:.3g}){few} "
        f"zero-shot {probe['zero_shot_top1']:.4f} on the same test split (chance {probe['chance']:.4f}) "
        f"n={probe['n_train']}/{probe['n_val']}/{probe['n_test']} {probe['seconds']:.1f}s"
    )
