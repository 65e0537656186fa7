"""Parity with CLIP_benchmark (clip-benchmark 1.6.1, pinned in requirements/no-deps.txt): on
webdataset sets built here, `train.evaluate` and CLIP_benchmark's own reader and metric code
give the same top-1, top-5, mean per-class recall and recall@k on the same model.

CLIP_benchmark's path is called as its CLI runs it for a ``wds/`` set: ``build_dataset``,
a DataLoader over ``dataset.batched``, ``zero_shot_classifier`` and ``run_classification``
(or ``zeroshot_retrieval.evaluate``). Its ``accuracy()`` fails under numpy 2.4 (see
tests/train/test_zeroshot.py), so its top-k rule is applied to the logits its
``run_classification`` returns, and mean per-class recall is sklearn's
``balanced_accuracy_score``, as in its ``evaluate``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.support.evalsets import classification_samples, retrieval_samples, split, write_set
from tests.support.trained_run import random_checkpoint
from tests.train.test_zeroshot import clip_benchmark_accuracy
from train.config import EvalConfig
from train.eval_data import sklearn_digits
from train.evaluate import evaluate
from train.sources import load_checkpoint

# unbalanced: 30 images of 0 down to 2 of 9
COUNTS = [30, 20, 15, 10, 8, 6, 5, 4, 3, 2]
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parity")
    digits = sklearn_digits()
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(digits.labels.tolist()):
        by_label.setdefault(label, []).append(i)
    picked = [(i, label) for label, n in enumerate(COUNTS) for i in by_label[label][:n]]
    images = [digits.image(i).resize((24, 24)) for i, _ in picked]
    write_set(
        root / "cls",
        split(classification_samples(images, [label for _, label in picked]), 3),
        NAMES,
        ["a photo of the number {c}.", "a drawing of a {c}.", "{c}"],
    )
    # 30 images, one to three captions each, no caption the same as another image's: two
    # images with one caption word for word tie exactly, and there CLIP_benchmark's topk
    # credits whichever comes first where ours counts the tie against the model (see
    # train.zeroshot.captioned_recall)
    captions = [
        [f"the digit {NAMES[lab]} number {i}", f"a {NAMES[lab]}, sample {i}", f"{i}: {lab}"][: 1 + i % 3]
        for i, (_, lab) in enumerate(picked[::3][:30])
    ]
    write_set(
        root / "ret",
        split(retrieval_samples(images[::3][:30], captions), 2),
        dataset_type="retrieval",
    )
    return root / "cls", root / "ret"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run = tmp_path_factory.mktemp("model") / "run"
    random_checkpoint(run, 1)
    net, tokenizer, preprocess, _ = load_checkpoint(run)
    # the random ViT gives every image nearly the same features, so it answers one class for
    # all and the comparison would be weak; a random linear map of 4x4-pooled pixels in its
    # place gives features that vary with the image (both sides evaluate this same model)
    torch.manual_seed(0)
    net.visual = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 128))
    return net.eval(), tokenizer, preprocess


@pytest.fixture(scope="module")
def ours(model, sets) -> dict:
    net, tokenizer, preprocess = model
    config = EvalConfig(
        datasets=(f"wds:{sets[0]}",), retrieval=(f"wds:{sets[1]}",), batch_size=32, feature_cache=None, progress=False
    )
    return evaluate(net, tokenizer, preprocess, config, log=None)


def test_classification_equals_clip_benchmarks(model, sets, ours):
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as zsc
    from sklearn.metrics import balanced_accuracy_score

    net, tokenizer, preprocess = model
    dataset = build_dataset("wds/parity", root=str(sets[0]), transform=preprocess, split="test", download=False)
    loader = torch.utils.data.DataLoader(dataset.batched(32), batch_size=None, shuffle=False, num_workers=0)
    classifier = zsc.zero_shot_classifier(net, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)
    logits, target = zsc.run_classification(net, classifier, loader, "cpu", amp=False)
    pred = logits.argmax(1)
    assert Counter(target.tolist()) == dict(enumerate(COUNTS))
    assert len(set(pred.tolist())) > 1, "a model that answers one class would make the comparison weak"
    acc1, acc5 = clip_benchmark_accuracy(logits, target, (1, 5))

    mine = ours["datasets"][f"wds:{sets[0]}"]
    assert mine["n"] == len(target) == sum(COUNTS) and mine["n_templates"] == 3
    assert mine["acc1"] == acc1 and mine["acc5"] == acc5
    assert mine["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(target, pred), abs=1e-12)
    assert 0 < acc1 < 1 and acc1 != mine["mean_per_class_recall"]  # unbalanced: the two differ


def test_retrieval_equals_clip_benchmarks(model, sets, ours):
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_retrieval as zsr

    net, tokenizer, preprocess = model
    dataset = build_dataset(
        "wds/parity", root=str(sets[1]), transform=preprocess, split="test", download=False, task="zeroshot_retrieval"
    )
    loader = torch.utils.data.DataLoader(dataset.batched(16), batch_size=None, shuffle=False, num_workers=0)
    theirs = zsr.evaluate(net, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])

    mine = ours["retrieval"][f"wds:{sets[1]}"]
    assert mine["n"] == 30 and mine["n_texts"] == 10 * (1 + 2 + 3)
    for name, total in (("image_retrieval_recall", mine["n_texts"]), ("text_retrieval_recall", mine["n"])):
        for k in (1, 5, 10):
            # theirs is a float32 mean: compare the counts of hits, which must be equal
            assert mine[f"{name}@{k}"] * total == round(theirs[f"{name}@{k}"] * total), (name, k)
    assert 0 < mine["image_retrieval_recall@5"] < 1
