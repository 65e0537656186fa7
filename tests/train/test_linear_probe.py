"""The linear probe of CLIP Appendix A.3 (train/linear_probe.py): separable features score 1.0,
noise scores chance, the lambda search follows the paper's binary search, lambda -> C does not
depend on the training-set size, and few-shot sampling is deterministic, k per class, and helps;
and a labelled set's probes: its stratified split, a set too small for some of them, a set
with its own test split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from train.linear_probe import (
    START_EXPONENTS,
    binary_search,
    few_shot,
    few_shot_split,
    lambda_to_c,
    linear_probe,
    probe_dataset,
    probe_given_split,
    probe_line,
    probe_split,
    search_l2,
)


def blobs(rng, n_per_class, num_classes, dim, sep, noise):
    """Gaussian classes around random means of norm `sep`."""
    means = rng.normal(size=(num_classes, dim))
    means *= sep / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = means[y] + noise * rng.normal(size=(len(y), dim))
    return x, y


def split3(rng, x, y):
    """Shuffle and cut into train / val / test (50 / 20 / 30 %)."""
    p = rng.permutation(len(y))
    a, b = int(0.5 * len(y)), int(0.7 * len(y))
    return (x[p[:a]], y[p[:a]]), (x[p[a:b]], y[p[a:b]]), (x[p[b:]], y[p[b:]])


def test_separable_features_score_one():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 60, 5, 16, sep=10.0, noise=0.3)
    (trx, try_), (vx, vy), (tex, tey) = split3(rng, x, y)
    r = linear_probe(trx, try_, vx, vy, tex, tey)
    assert r.test_acc == 1.0
    assert r.num_classes == 5 and r.chance == 0.2
    assert r.n_fit == len(try_) + len(vy) and r.n_test == len(tey)


def test_noise_scores_chance():
    rng = np.random.default_rng(1)
    num_classes, n_test = 4, 2000
    trx, try_ = rng.normal(size=(400, 16)), rng.integers(0, num_classes, 400)
    vx, vy = rng.normal(size=(200, 16)), rng.integers(0, num_classes, 200)
    tex, tey = rng.normal(size=(n_test, 16)), rng.integers(0, num_classes, n_test)
    r = linear_probe(trx, try_, vx, vy, tex, tey)
    # The predictions do not depend on the (independent, uniform) test labels, so the number
    # correct is Binomial(n_test, 1/num_classes): allow 4.5 standard deviations.
    p = 1 / num_classes
    tol = 4.5 * math.sqrt(p * (1 - p) / n_test)
    assert r.chance == p
    assert abs(r.test_acc - p) < tol, (r.test_acc, p, tol)


def test_binary_search_exact_path():
    """A V-shaped score peaking at 10^1.375: the 7 start points, then midpoints around the best."""
    best, score, visited = binary_search(lambda e: -abs(e - 1.375))
    assert [e for e, _ in visited] == [
        -6,
        -4,
        -2,
        0,
        2,
        4,
        6,  # start grid, best 2
        1,
        3,  # step 1, best 1
        0.5,
        1.5,  # step 1/2, best 1.5
        1.25,
        1.75,  # step 1/4: 1.25 ties 1.5, larger lambda kept
        1.375,
        1.625,
    ]  # step 1/8
    assert best == 1.375 and score == 0.0


def test_binary_search_ties_go_to_larger_lambda_and_stay_in_range():
    best, _, visited = binary_search(lambda e: 0.5)
    assert [e for e, _ in visited] == [*START_EXPONENTS, 5, 5.5, 5.75, 5.875]
    assert best == 6


@pytest.mark.parametrize("peak", np.random.default_rng(2).uniform(-6, 6, 40).round(4))
def test_binary_search_structure(peak):
    best, _, visited = binary_search(lambda e: -abs(e - peak))
    exps = [e for e, _ in visited]
    assert tuple(exps[:7]) == START_EXPONENTS
    assert len(exps) == len(set(exps)) <= 7 + 2 * 4
    assert all(-6 <= e <= 6 and (e * 8).is_integer() for e in exps)
    # Then, for step 1, 1/2, 1/4, 1/8 in turn, only the in-range points best +- step.
    scores = dict(visited)
    rest, seen = exps[7:], exps[:7]
    for step in (1, 0.5, 0.25, 0.125):
        cur = max(seen, key=lambda v: (scores[v], v))
        new = [e for e in (cur - step, cur + step) if -6 <= e <= 6 and e not in seen]
        assert rest[: len(new)] == new, (step, cur, rest)
        rest, seen = rest[len(new) :], seen + new
    assert rest == []
    # It ends at 1/8-decade resolution: both neighbours of the answer were evaluated.
    assert all(n in scores for n in (best - 0.125, best + 0.125) if -6 <= n <= 6)
    assert abs(best - peak) <= 1 / 16 + 1e-9


def test_search_l2_grid_and_determinism():
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 40, 4, 24, sep=2.0, noise=1.0)  # overlapping: lambda matters
    (trx, try_), (vx, vy), _ = split3(rng, x, y)
    a = search_l2(trx, try_, vx, vy)
    b = search_l2(trx, try_, vx, vy)
    assert a == b
    exps = [p.log10_lambda for p in a.visited]
    assert tuple(exps[:7]) == START_EXPONENTS and 7 < len(exps) <= 15
    assert all((e * 8).is_integer() for e in exps)
    assert a.best_val_acc == max(p.val_acc for p in a.visited)
    assert a.best_lambda == 10.0**a.best_log10_lambda
    assert (a.n_train, a.n_val) == (len(try_), len(vy))


def test_lambda_means_the_same_at_any_training_size():
    """C = 1/(lambda n): duplicating every example leaves the mean loss, and so the fit, unchanged
    (with C = 1/lambda the duplicate would be regularised half as much)."""
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 30, 3, 8, sep=2.0, noise=1.0)
    lam = 0.1

    def coef(xx, yy):
        clf = LogisticRegression(C=lambda_to_c(lam, len(yy)), solver="lbfgs", max_iter=1000, tol=1e-10)
        return clf.fit(xx, yy).coef_

    np.testing.assert_allclose(coef(x, y), coef(np.tile(x, (2, 1)), np.tile(y, 2)), atol=1e-5)


def test_few_shot_split_deterministic_k_per_class():
    y = np.repeat(np.arange(4), 30)
    y = np.concatenate([y, [4, 4]])  # a class with only 2 examples
    for seed in (0, 1):
        prev = None
        for k in (1, 2, 4, 8, 16):
            tr, va = few_shot_split(y, k, seed, max_k=16, val_per_class=5)
            tr2, va2 = few_shot_split(y, k, seed, max_k=16, val_per_class=5)
            assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
            counts = np.bincount(y[tr], minlength=5)
            assert list(counts) == [k] * 4 + [min(k, 2)]
            assert not set(tr) & set(va)
            assert list(np.bincount(y[va], minlength=5)) == [5] * 4 + [0]
            if prev is not None:  # nested in k, validation fixed
                assert set(prev[0]) <= set(tr) and np.array_equal(prev[1], va)
            prev = (tr, va)
    assert not np.array_equal(few_shot_split(y, 4, 0)[0], few_shot_split(y, 4, 1)[0])


def test_few_shot_more_shots_help():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, 100, 5, 32, sep=3.0, noise=1.0)
    p = rng.permutation(len(y))
    tr, te = p[:300], p[300:]
    r = few_shot(x[tr], y[tr], x[te], y[te], shots=(1, 4, 16), seeds=(0, 1, 2), val_per_class=10)
    assert r.mean[16] > r.mean[1] + 0.05, r.mean
    assert r.mean[16] >= r.mean[4] - 0.02 and r.mean[4] >= r.mean[1] - 0.02, r.mean
    assert all(len(r.acc[k]) == 3 for k in r.shots)
    assert r.std[1] == float(np.std(r.acc[1]))
    assert r.chance == 0.2 and r.short_classes == {1: {}, 4: {}, 16: {}}
    for (k, s), (t, _v) in r.indices.items():
        assert list(np.bincount(y[tr][t])) == [k] * 5
        assert np.array_equal(t, few_shot_split(y[tr], k, s, max_k=16, val_per_class=10)[0])
    again = few_shot(x[tr], y[tr], x[te], y[te], shots=(1, 4, 16), seeds=(0, 1, 2), val_per_class=10)
    assert again.acc == r.acc and again.lam == r.lam


def test_few_shot_reports_short_classes():
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 20, 3, 8, sep=6.0, noise=0.5)
    keep = np.flatnonzero(y != 2)[:40].tolist() + np.flatnonzero(y == 2)[:3].tolist()
    r = few_shot(x[keep], y[keep], x, y, shots=(2, 8), seeds=(0,), val_per_class=4)
    assert r.short_classes == {2: {}, 8: {2: 3}}
    t, _ = r.indices[(8, 0)]
    assert list(np.bincount(y[keep][t])) == [8, 8, 3]


# -- a labelled set's probes -----------------------------------------------------------


def test_probe_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [10, 5, 3, 1])
    tr, va, te = probe_split(labels, seed=3)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(labels)))
    assert [int((labels[te] == c).sum()) for c in range(4)] == [2, 1, 1, 0]
    assert [int((labels[va] == c).sum()) for c in range(4)] == [2, 1, 1, 0]
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), probe_split(labels, seed=3)))
    assert not np.array_equal(te, probe_split(labels, seed=4)[2])


def test_a_set_too_small_for_few_shot_keeps_the_probe():
    import torch

    labels = torch.arange(2).repeat_interleave(5)  # 5 per class: 3/1/1, nothing beyond 16 shots to validate on
    feats = torch.nn.functional.normalize(torch.randn(10, 8) + 3 * labels[:, None].float(), dim=-1)
    classifier = torch.nn.functional.normalize(torch.randn(8, 2), dim=0)
    probe = probe_dataset(feats, labels, classifier)
    assert (probe["n_train"], probe["n_val"], probe["n_test"]) == (6, 2, 2) and 0 <= probe["test_acc"] <= 1
    assert probe["chance"] == 0.5 and "skipped" in probe["few_shot"] and "few-shot skipped" in probe_line("x", probe)
    tiny = probe_dataset(feats[:4], torch.tensor([0, 0, 1, 1]), classifier)
    assert "skipped" in tiny and "test_acc" not in tiny and "skipped" in probe_line("x", tiny)


def test_a_set_with_its_own_test_split_keeps_it():
    """probe_given_split: the test features are the test split, whole; the train part is split
    75/25 per class into train and validation."""
    from train.features import Features

    gen = torch.Generator().manual_seed(0)

    def part(per_class: int) -> Features:
        labels = torch.arange(3).repeat_interleave(per_class)
        probe = torch.randn(len(labels), 6, generator=gen) + 4 * torch.nn.functional.one_hot(labels, 6).float()
        return Features(torch.nn.functional.normalize(probe, dim=-1), probe, labels, "test features")

    fit, test = part(8), part(5)
    classifier = torch.nn.functional.normalize(torch.eye(6)[:, :3], dim=0)
    probe = probe_given_split(fit, test, classifier, shots=(1, 2), seeds=(0,))
    assert (probe["n_train"], probe["n_val"], probe["n_test"]) == (18, 6, 15)
    assert probe["split"] == {
        "seed": 0,
        "given": True,
        "fractions_of_train": [0.75, 0.25],
        "test": "the set's test/ folder",
    }
    assert probe["features"] == "test features" and probe["test_acc"] == 1.0, "separable classes"
    scored = (test.embedding @ classifier).argmax(1) == test.labels
    assert probe["zero_shot_top1"] == pytest.approx(scored.float().mean().item()), "zero-shot on the test part"
