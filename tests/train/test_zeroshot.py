"""Zero-shot evaluation: exactly computable cases on a stub model (classifier = prompt
ensemble, top-1/top-5 accuracy, retrieval recall on known permutations, chance levels), the
labelled sets (animal-mnist through $ANIMAL_MNIST_DIR and openclipart through
$OPENCLIPART_DIR, both set by `make test`; missing -> failure). `evaluate` itself, on a real
model, is tests/train/test_evaluate.py."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import InputError
from tests.conftest import required_path
from train import eval_data
from train.eval_data import (
    ANIMAL_MNIST_CLASSES,
    OPENCLIPART_EXCLUDED,
    ImageFolderDataset,
    animal_mnist,
    load_dataset,
    openclipart_heldout,
    openclipart_pairs,
    sklearn_digits,
)
from train.zeroshot import accuracy_from_features, build_classifier, get_templates, retrieval_recall, zero_shot_accuracy

CLASSES = ["cat", "dog", "car", "tree", "house", "boat"]  # one BPE token each


# -- stub model -------------------------------------------------------------------------


class StubModel:
    """encode_text: one-hot of the class word in the prompt (found through its real BPE
    token id), plus one-hot of the template word ("photo"/"drawing") when `template_dims`;
    encode_image: the "images" are already feature vectors."""

    def __init__(self, tokenizer, dim=16, template_dims=False):
        self.dim = dim
        self.class_ids = [tokenizer.encode(c)[0] for c in CLASSES]
        assert all(len(tokenizer.encode(c)) == 1 for c in CLASSES)
        self.template_ids = {tokenizer.encode(w)[0]: 8 + i for i, w in enumerate(["photo", "drawing"])}
        self.template_dims = template_dims
        self.training = False
        self.text_calls = 0

    def encode_text(self, tokens, normalize=False):
        self.text_calls += 1
        out = torch.zeros(tokens.shape[0], self.dim)
        for row, ids in enumerate(tokens.tolist()):
            found = [c for c, tid in enumerate(self.class_ids) if tid in ids]
            assert len(found) == 1, ids
            out[row, found[0]] = 1.0
            if self.template_dims:
                for tid, d in self.template_ids.items():
                    if tid in ids:
                        out[row, d] = 1.0
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_image(self, images):
        return images.float()


@pytest.fixture(scope="module")
def tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=16)


def onehot(i, dim=16, scale=1.0):
    v = torch.zeros(dim)
    v[i] = scale
    return v


def test_classifier_is_prompt_ensemble(tokenizer):
    model = StubModel(tokenizer)
    clf = build_classifier(model, tokenizer, CLASSES, "openai", batch_size=4)
    assert clf.shape == (16, 6) and clf.dtype == torch.float32
    assert torch.allclose(clf, torch.eye(16)[:, :6])  # every prompt of class c -> e_c
    assert model.text_calls == 2  # 6 classes in batches of 4 classes x 80 prompts
    # two templates, each adding its own direction: mean of the two normalised prompt
    # embeddings (e_c + e_t)/sqrt(2), normalised again -> e_c weight 1/sqrt(1 + 1/2)
    model = StubModel(tokenizer, template_dims=True)
    clf = build_classifier(model, tokenizer, CLASSES, ["a photo of a {}.", lambda c: f"a drawing of a {c}."])
    assert torch.allclose(clf.norm(dim=0), torch.ones(6))
    assert math.isclose(float(clf[0, 0]), math.sqrt(2 / 3), rel_tol=1e-6)
    assert math.isclose(float(clf[8, 3]), 0.5 / math.sqrt(1.5), rel_tol=1e-6)
    assert math.isclose(float(clf[1, 0]), 0.0, abs_tol=1e-7)
    assert len(get_templates("openai")) == 80 and len(get_templates("simple")) == 7
    with pytest.raises(ValueError):
        get_templates("fancy")


def test_top1_top5_known_case(tokenizer):
    model = StubModel(tokenizer)
    clf = build_classifier(model, tokenizer, CLASSES, "simple")
    images = torch.stack(
        [
            onehot(0),  # label 0: correct
            onehot(1),  # label 1: correct
            onehot(2) + 0.1 * onehot(5),  # label 2: correct
            onehot(4) + 0.5 * onehot(3),  # label 3: second best -> top-1 miss, top-5 hit
        ]
    )
    labels = torch.tensor([0, 1, 2, 3])
    loader = [(images[:2], labels[:2]), (images[2:], labels[2:])]
    acc = zero_shot_accuracy(model, clf, loader, classnames=CLASSES)
    assert acc["top1"] == 0.75 and acc["top5"] == 1.0
    assert acc["n"] == 4 and acc["n_classes"] == 6
    assert acc["chance_top1"] == 1 / 6 and acc["chance_top5"] == 5 / 6
    assert acc["per_class_top1"] == {"cat": 1.0, "dog": 1.0, "car": 1.0, "tree": 0.0, "house": None, "boat": None}
    assert acc["mean_per_class_top1"] == 0.75
    # a fifth image whose true class scores last of six: a top-5 miss
    last = torch.tensor([5.0, 4.0, 3.0, 0.0, 2.0, 1.0] + [0.0] * 10)
    acc = accuracy_from_features(torch.cat([images, last[None]]), torch.tensor([0, 1, 2, 3, 3]), clf)
    assert acc["top1"] == 3 / 5 and acc["top5"] == 4 / 5
    assert acc["majority_top1"] == 2 / 5  # class 3 has 2 of the 5 images
    # always answering the biggest class: top-1 equals the majority baseline, well above 1/classes
    skewed = torch.tensor([3, 3, 3, 0, 1, 3])
    always = accuracy_from_features(torch.stack([onehot(3)] * 6), skewed, clf)
    assert always["top1"] == always["majority_top1"] == 4 / 6 > always["chance_top1"]
    # top-5 is not reported with 5 classes or fewer
    small = accuracy_from_features(images[:3, :5], labels[:3], torch.eye(5))
    assert small["top1"] == 1.0 and "top5" not in small and small["chance_top1"] == 0.2
    # ties: the lower class index ranks first, deterministically
    tie = accuracy_from_features(torch.zeros(2, 6), torch.tensor([0, 1]), torch.eye(6), topk=(1,))
    assert tie["top1"] == 0.5
    with pytest.raises(ValueError):
        accuracy_from_features(images, torch.tensor([0, 1, 2, 6]), clf)


def clip_benchmark_accuracy(logits: torch.Tensor, target: torch.Tensor, topk) -> list[float]:
    """clip_benchmark.metrics.zeroshot_classification.accuracy's rule (topk of the logits,
    a hit when the target is among them, over n). Its own function ends in
    ``float(<1-element 1-d array>)``, a TypeError under numpy 2.4, so the test counts the
    same way here; the rest of its classification path is called as it is."""
    pred = logits.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [int(correct[:k].sum()) / len(target) for k in topk]


def test_clip_benchmarks_accuracy_still_breaks_under_this_numpy():
    """The reason for clip_benchmark_accuracy: when a release fixes it, call it instead."""
    from clip_benchmark.metrics.zeroshot_classification import accuracy

    with pytest.raises(TypeError, match="0-dimensional"):
        accuracy(torch.eye(3), torch.tensor([0, 1, 2]), topk=(1,))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # sklearn, on the class without images
@pytest.mark.parametrize("n_classes", [4, 5, 12])
def test_clip_benchmark_names_equal_its_own_metric_functions(n_classes):
    """acc1/acc5/mean_per_class_recall as CLIP_benchmark computes them (its accuracy() and
    sklearn's balanced_accuracy_score), F1-macro as WILDS does, on an unbalanced set with
    a class that has no images."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    gen = torch.Generator().manual_seed(n_classes)
    feats = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=-1)
    clf = torch.nn.functional.normalize(torch.randn(16, n_classes, generator=gen), dim=0)
    weights = torch.arange(n_classes, 0, -1).float()  # unbalanced: class 0 the most frequent ...
    weights[-1] = 0  # ... and none of the last
    labels = torch.multinomial(weights, 300, True, generator=gen)
    assert (labels == n_classes - 1).sum() == 0 and len(labels.unique()) == n_classes - 1  # no images of the last
    acc = accuracy_from_features(feats, labels, clf)
    logits = 100.0 * feats @ clf
    pred = logits.argmax(1)
    assert acc["acc1"] == acc["top1"] == clip_benchmark_accuracy(logits, labels, (1,))[0]
    if n_classes >= 5:
        assert acc["acc5"] == clip_benchmark_accuracy(logits, labels, (1, 5))[1]
    else:
        assert acc["acc5"] is None
    assert acc["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-12)
    assert acc["f1_macro"] == pytest.approx(
        f1_score(labels, pred, average="macro", labels=labels.unique().numpy()), abs=1e-12
    )


def test_retrieval_recall_known_permutation():
    n = 12
    perm = list(range(n))
    perm[2], perm[7] = perm[7], perm[2]
    perm[4], perm[9], perm[11] = perm[9], perm[11], perm[4]  # 7 fixed points of 12
    images = torch.eye(n)
    texts = torch.eye(n)[perm]
    r = retrieval_recall(images, texts * 3.0)  # scale must not matter (cosine similarity)
    assert r["n"] == 12
    for k in (1, 5, 10):
        assert r[f"image_to_text_R@{k}"] == 7 / 12 and r[f"text_to_image_R@{k}"] == 7 / 12
        assert r[f"chance_R@{k}"] == k / 12
    assert r["image_to_text_median_rank"] == 1.0
    # graded case: text 0 is closer to image 1 than to image 0
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    r = retrieval_recall(images, texts, ks=(1, 2))
    assert r["image_to_text_R@1"] == 1.0
    assert r["text_to_image_R@1"] == 2 / 3 and r["text_to_image_R@2"] == 1.0
    assert r["text_to_image_mean_rank"] == 4 / 3
    assert r["chance_R@1"] == 1 / 3
    # identical features everywhere: ties count against the model
    r = retrieval_recall(torch.ones(5, 4), torch.ones(5, 4), ks=(1, 4, 5))
    assert r["image_to_text_R@1"] == 0.0 and r["image_to_text_R@5"] == 1.0 and r["chance_R@5"] == 1.0
    with pytest.raises(ValueError):
        retrieval_recall(torch.eye(3), torch.eye(4))


# -- labelled sets ----------------------------------------------------------------------


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.mark.sample
def test_animal_mnist():
    ds = animal_mnist(required_path("ANIMAL_MNIST_DIR"), transform=to_tensor)
    assert len(ds) == 10_000 and ds.classnames == list(ANIMAL_MNIST_CLASSES) and len(ds.classnames) == 10
    assert set(ds.class_counts().values()) == {1000}
    image = ds.image(0)
    assert image.size == (28, 28) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() > 200 and pixels.min() < 30  # a silhouette, not a blank
    x, label = ds[9_999]
    assert x.shape == (3, 28, 28) and label == 9 and ds.classnames[label] == "zebra"
    assert load_dataset("animal-mnist", required_path("ANIMAL_MNIST_DIR").parent).info["n"] == 10_000


def test_animal_mnist_refuses_other_pickles(tmp_path):
    import gzip
    import pickle

    with gzip.open(tmp_path / "animal_data_version_3.gz", "wb") as f:
        pickle.dump(Counter(a=1), f)  # needs a class other than numpy's: refused before it is built
    with pytest.raises(InputError, match="refused"):
        eval_data._animal_arrays(str(tmp_path))
    with pytest.raises(InputError, match="not found"):
        animal_mnist(tmp_path / "nothing")


def test_digits():
    from sklearn.datasets import load_digits

    ds = sklearn_digits(transform=to_tensor)
    assert len(ds) == 1797 and ds.classnames == [str(d) for d in range(10)]
    assert sum(ds.class_counts().values()) == 1797 and min(ds.class_counts().values()) > 170
    raw = load_digits()
    image = np.asarray(ds.image(10))
    assert image.shape == (64, 64, 3)
    expected = np.rint(raw.images[10] * 255 / 16).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    assert (image[..., 0] == expected).all()  # nearest-neighbour 8x, 16 -> 255
    assert ds[10][1] == raw.target[10] and ds[10][0].shape == (3, 64, 64)
    assert sklearn_digits(names="words").classnames[3] == "three"


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for folder, colours in {"big_cat": [(255, 0, 0), (0, 255, 0)], "dog": [(0, 0, 255)], "zebra_fish": []}.items():
        (root / folder).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (20, 10), colour).save(root / folder / f"{i}.png")
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    transparent.putpixel((0, 0), (10, 20, 30, 255))
    transparent.save(root / "dog" / "t.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder(tmp_path):
    root = _folder(tmp_path)
    ds = ImageFolderDataset(root)
    assert ds.classnames == ["big cat", "dog", "zebra fish"]
    assert len(ds) == 4 and list(ds.labels) == [0, 0, 1, 1] and ds.class_counts()["zebra fish"] == 0
    t = np.asarray(ds.image(3))  # dog/t.png: transparency composited onto white
    assert tuple(t[0, 0]) == (10, 20, 30) and tuple(t[5, 5]) == (255, 255, 255)

    plain = tmp_path / "plain.txt"
    plain.write_text("large cat\n\ndog\nfish\n")
    assert ImageFolderDataset(root, plain).classnames == ["large cat", "dog", "fish"]
    tabbed = tmp_path / "tabbed.txt"
    tabbed.write_text("zebra_fish\tzebrafish\nbig_cat\ttiger\ndog\tpuppy\n")
    assert ImageFolderDataset(root, tabbed).classnames == ["tiger", "puppy", "zebrafish"]
    spec = load_dataset(f"imagefolder:{root}::{tabbed}", preprocess=to_tensor)
    assert spec.classnames == ["tiger", "puppy", "zebrafish"] and spec[0][0].shape == (3, 10, 20)
    (root / "classnames.txt").write_text("a\nb\nc\n")  # picked up from the folder itself
    assert load_dataset(f"imagefolder:{root}").classnames == ["a", "b", "c"]

    bad = tmp_path / "bad.txt"
    for text, match in [
        ("a\nb\n", "2 class names for 3"),
        ("big_cat\ttiger\ndog\n", "mixes"),
        ("big_cat\ta\ndog\tb\n", "no name for class folder"),
        ("big_cat\ta\ndog\tb\nzebra_fish\tc\ncow\td\n", "no class folder named 'cow'"),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            ImageFolderDataset(root, bad)
    with pytest.raises(InputError, match="not found"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("cifar10")


@pytest.mark.sample
def test_openclipart_heldout():
    from pipeline.sample.openclipart import is_held_out_image

    cache = required_path("OPENCLIPART_DIR")
    ds = openclipart_heldout(cache)
    cats = ds.info["categories"]
    assert cats == [
        "animals",
        "buildings",
        "computer",
        "education",
        "food",
        "geography",
        "office",
        "people",
        "plants",
        "recreation",
        "shapes",
        "signs_and_symbols",
        "tools",
        "transportation",
    ]
    assert ds.classnames[cats.index("signs_and_symbols")] == "signs and symbols"
    assert not set(cats) & set(OPENCLIPART_EXCLUDED) and all("_" not in c for c in ds.classnames)
    assert len(ds) > 500 and len(ds) == len(ds.paths)
    assert all(is_held_out_image(p, 0.1, 0) for p in ds.paths)
    assert all(p.split("/", 1)[0] == cats[label] for p, label in zip(ds.paths, ds.labels))
    assert min(ds.class_counts().values()) >= 5
    assert not any(set(also) & set(cats) for also in ds.also_in)  # no image filed under two classes
    assert ds.info["ambiguous_images"] > 0 and sum(map(len, ds.also_in)) > 0
    assert (
        ds.info["held_out_images"]
        == len(ds)
        + sum(ds.info["excluded_categories"].values())
        + sum(ds.info["small_categories"].values())
        + ds.info["ambiguous_images"]
    )
    image, label = ds[0]
    assert image.mode == "RGB" and min(image.size) <= 512 and 0 <= label < 14
    pairs = openclipart_pairs(cache)
    assert all(is_held_out_image(p, 0.1, 0) for p in pairs.paths) and set(ds.paths) <= set(pairs.paths)
    assert all(pairs.captions)
