"""Zero-shot classification and image-text retrieval metrics (CLIP paper, section 3.1).

Zero-shot classifier: every class name is put into each prompt template ("a photo of a
{}."), the prompts are encoded by the text tower, each prompt embedding is L2-normalised,
the embeddings of one class are averaged and the mean normalised again. The result is a
[dim, n_classes] matrix: a linear classifier over normalised image embeddings (the
"prompt ensemble" of the paper). open_clip's `build_zero_shot_classifier` does exactly
this and is used when present; `_build_classifier_fallback` is the same computation.

Metrics:
- `zero_shot_accuracy`: top-1 (and top-5 when there are more than 5 classes) accuracy over
  a loader of (images, labels), with per-class top-1, the mean over classes, and chance
  levels (k / n_classes) so that a reader can tell a trained model from a random one.
- `retrieval_recall`: recall@k for paired rows (image i goes with text i), both ways.

Everything runs under `torch.no_grad()` with the model in whatever mode the caller left it
(callers put it in eval mode); an optional `autocast` (a zero-argument callable returning a
context manager, e.g. ``lambda: torch.autocast("cuda", dtype=torch.bfloat16)``) wraps the
forward passes. Features are cast to float32 before any comparison. Ties are broken
deterministically (see `retrieval_recall`); nothing here draws random numbers.

Only `model.encode_image(images)` and `model.encode_text(tokens, normalize=True)` are
called, so any object with those two methods works (the tests use a stub).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager

import torch
import torch.nn.functional as F

from .distributed import unwrap
from .precision import autocast_context

Template = Callable[[str], str] | str


def get_templates(name: str | Sequence[Template]) -> tuple[Template, ...]:
    """Prompt templates by name: "openai" (CLIP's 80 ImageNet prompts) or "simple" (its 7).

    A sequence of format strings ("a photo of a {}.") and/or callables is taken as given.
    """
    if not isinstance(name, str):
        templates = tuple(name)
        if not templates:
            raise ValueError("empty template list")
        # open_clip decides str vs callable by the first one; make them all callables
        return tuple(t if callable(t) else (lambda c, t=t: t.format(c)) for t in templates)
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    table = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if name not in table:
        raise ValueError(f"unknown templates {name!r}; choose from {sorted(table)}")
    return tuple(table[name])


def _prompt(template: Template, classname: str) -> str:
    return template.format(classname) if isinstance(template, str) else template(classname)


def _build_classifier_fallback(model, tokenizer, classnames, templates, device, batch_size):
    columns = []
    for start in range(0, len(classnames), batch_size):
        batch = classnames[start : start + batch_size]
        texts = [_prompt(t, c) for c in batch for t in templates]
        emb = model.encode_text(tokenizer(texts).to(device), normalize=True).float()
        emb = emb.reshape(len(batch), len(templates), -1).mean(dim=1)
        columns.append(F.normalize(emb, dim=-1).T)
    return torch.cat(columns, dim=1)


def build_classifier(
    model,
    tokenizer,
    classnames: Sequence[str],
    templates: str | Sequence[Template] = "openai",
    device: str | torch.device = "cpu",
    batch_size: int = 10,
    autocast: Callable[[], ContextManager] | None = None,
) -> torch.Tensor:
    """Zero-shot classifier weights, a float32 tensor [dim, n_classes] with unit columns.

    `batch_size` is the number of classes encoded per forward pass (times the number of
    templates prompts each): 10 classes x 80 OpenAI templates = 800 prompts.
    """
    classnames = list(classnames)
    if not classnames:
        raise ValueError("no class names")
    templates = get_templates(templates)
    model = unwrap(model)
    with torch.no_grad(), autocast_context(autocast):
        try:
            from open_clip import build_zero_shot_classifier
        except ImportError:  # older open_clip: the same computation, here
            weights = _build_classifier_fallback(model, tokenizer, classnames, templates, device, batch_size)
        else:
            weights = build_zero_shot_classifier(
                model, tokenizer, classnames, list(templates), num_classes_per_batch=batch_size, device=device
            )
    # open_clip normalises in the autocast dtype; renormalise in float32 for exact unit columns
    return F.normalize(weights.float(), dim=0)


def encode_images(
    model, loader: Iterable, device: str | torch.device = "cpu", autocast: Callable[[], ContextManager] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised float32 image features [n, dim], labels [n]) over a loader of (images, labels)."""
    model = unwrap(model)
    feats, labels = [], []
    with torch.no_grad():
        for images, target in loader:
            with autocast_context(autocast):
                f = model.encode_image(images.to(device))
            feats.append(F.normalize(f.float(), dim=-1).cpu())
            labels.append(torch.as_tensor(target).long().cpu())
    if not feats:
        raise ValueError("empty loader: no images to evaluate")
    return torch.cat(feats), torch.cat(labels)


def accuracy_from_features(
    image_features: torch.Tensor,
    labels: torch.Tensor,
    classifier: torch.Tensor,
    topk: Sequence[int] = (1, 5),
    classnames: Sequence[str] | None = None,
) -> dict:
    """Top-k accuracy of `image_features @ classifier` against `labels` (see `zero_shot_accuracy`)."""
    image_features = image_features.float().cpu()
    classifier = classifier.float().cpu()
    labels = labels.long().cpu()
    n, n_classes = image_features.shape[0], classifier.shape[1]
    if n == 0:
        raise ValueError("no images to evaluate")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    logits = image_features @ classifier  # [n, n_classes]
    # rank of the true class: classes scoring strictly higher, plus equal scores at a lower
    # index (the order torch.topk/argmax would give on ties), so results are deterministic
    true = logits.gather(1, labels[:, None])
    idx = torch.arange(n_classes)[None, :]
    rank = (logits > true).sum(1) + ((logits == true) & (idx < labels[:, None])).sum(1)
    out: dict = {"n": n, "n_classes": n_classes}
    for k in sorted(set(topk)):
        if k == 1 or k < n_classes:  # top-k with k >= n_classes is always 1.0: not reported
            out[f"top{k}"] = int((rank < k).sum()) / n  # exact fraction, not a float32 mean
            out[f"chance_top{k}"] = k / n_classes
    per_class = []
    for c in range(n_classes):
        mask = labels == c
        per_class.append(int((rank[mask] < 1).sum()) / int(mask.sum()) if mask.any() else None)
    present = [a for a in per_class if a is not None]
    out["mean_per_class_top1"] = sum(present) / len(present)
    # the same figures under CLIP_benchmark's names (DataComp's too): acc5 from 5 classes on
    # (1.0 at exactly 5, as there), None below; mean_per_class_recall is sklearn's
    # balanced_accuracy_score, the mean recall over the classes that have images
    out["acc1"] = out["top1"]
    out["acc5"] = (int((rank < 5).sum()) / n) if n_classes >= 5 else None
    out["mean_per_class_recall"] = out["mean_per_class_top1"]
    out["f1_macro"] = _f1_macro(logits.argmax(1), labels)
    # what answering the most frequent class for every image scores: on an unbalanced set
    # (openclipart's categories) a top-1 above 1/classes can still be below it
    out["majority_top1"] = int(torch.bincount(labels, minlength=n_classes).max()) / n
    names = list(classnames) if classnames is not None else [str(c) for c in range(n_classes)]
    out["per_class_top1"] = dict(zip(names, per_class))
    return out


def _f1_macro(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean F1 over the classes that have images (WILDS' ``F1-macro_all``, iWildCam's main
    metric in DataComp: sklearn's f1_score, average="macro", labels present in the truth)."""
    size = int(max(pred.max(), labels.max())) + 1
    tp = torch.bincount(labels[pred == labels], minlength=size).double()
    predicted = torch.bincount(pred, minlength=size).double()
    actual = torch.bincount(labels, minlength=size).double()
    present = actual > 0  # F1 = 2 tp / (predicted + actual), over the classes with images
    return float((2 * tp[present] / (predicted[present] + actual[present])).mean())


def zero_shot_accuracy(
    model,
    classifier: torch.Tensor,
    loader: Iterable,
    device: str | torch.device = "cpu",
    topk: Sequence[int] = (1, 5),
    autocast: Callable[[], ContextManager] | None = None,
    classnames: Sequence[str] | None = None,
) -> dict:
    """Top-k zero-shot accuracy over a loader of (images, labels).

    Returns ``n``, ``n_classes``, ``top1`` and ``chance_top1`` = 1/n_classes, and for each
    other k in `topk` below n_classes (top-5 needs at least 6 classes) ``topK`` and
    ``chance_topK`` = k/n_classes; plus ``per_class_top1`` (class name -> accuracy, None for
    a class without images), ``mean_per_class_top1`` (over classes with images) and
    ``majority_top1`` (the top-1 of always answering the most frequent class, the baseline
    that matters on an unbalanced set). The same under CLIP_benchmark's names: ``acc1``,
    ``acc5`` (None below 5 classes), ``mean_per_class_recall``; and ``f1_macro``. On tied
    scores the lower class index ranks first.
    """
    feats, labels = encode_images(model, loader, device, autocast)
    return accuracy_from_features(feats, labels, classifier, topk, classnames)


def _ranks_of_diagonal(query: torch.Tensor, gallery: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each row i, the number of gallery rows j != i scoring at least as high as row i.

    Pessimistic on ties (a tie with a wrong item counts against the model), so identical
    features for every input, as an untrained model may give, score 0 recall rather than
    a recall that depends on the order of the rows.
    """
    ranks = []
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk]
        sims = q @ gallery.T  # [c, n]
        rows = torch.arange(q.shape[0])
        pos = sims[rows, rows + start]
        ge = (sims >= pos[:, None]).sum(1) - 1  # minus the positive itself
        ranks.append(ge)
    return torch.cat(ranks)


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k for paired rows: image i's caption is text i, and the other way round.

    ``image_to_text_R@k``: share of images whose own text is among the k most similar texts
    (cosine similarity; features are normalised here); ``text_to_image_R@k`` likewise.
    ``chance_R@k`` = k/n (min 1). Also ``n`` and the mean and median rank (1 = best) both
    ways, and the recalls under CLIP_benchmark's names. Ties count against the model (see `_ranks_of_diagonal`). A k >= n is still
    reported (recall 1.0, chance 1.0). The median is the lower middle value for even n.
    """
    if image_features.shape != text_features.shape or image_features.ndim != 2:
        raise ValueError(
            f"need paired [n, dim] features, got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    n = image_features.shape[0]
    if n == 0:
        raise ValueError("no pairs to evaluate")
    with torch.no_grad():
        img = F.normalize(image_features.float().cpu(), dim=-1)
        txt = F.normalize(text_features.float().cpu(), dim=-1)
        ranks = {"image_to_text": _ranks_of_diagonal(img, txt), "text_to_image": _ranks_of_diagonal(txt, img)}
    out: dict = {"n": n}
    for direction, rank in ranks.items():
        for k in ks:
            out[f"{direction}_R@{k}"] = int((rank < k).sum()) / n
        out[f"{direction}_mean_rank"] = int(rank.sum()) / n + 1
        out[f"{direction}_median_rank"] = float(rank.float().median()) + 1
    for k in ks:
        out[f"chance_R@{k}"] = min(1.0, k / n)
    return _with_clip_benchmark_names(out, ks)


def encode_pairs(
    model,
    tokenizer,
    loader: Iterable,
    device: str | torch.device = "cpu",
    autocast: Callable[[], ContextManager] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features, text features), normalised float32, over a loader of (images, texts).

    `texts` is a list of strings (tokenised with `tokenizer`) or a tensor of token ids.
    Batches may carry more items after these two (e.g. the trainer's uids); they are ignored.
    """
    model = unwrap(model)
    img_feats, txt_feats = [], []
    with torch.no_grad():
        for batch in loader:
            images, texts = batch[0], batch[1]
            tokens = texts if isinstance(texts, torch.Tensor) else tokenizer(list(texts))
            with autocast_context(autocast):
                fi = model.encode_image(images.to(device))
                ft = model.encode_text(tokens.to(device), normalize=True)
            img_feats.append(F.normalize(fi.float(), dim=-1).cpu())
            txt_feats.append(F.normalize(ft.float(), dim=-1).cpu())
    if not img_feats:
        raise ValueError("empty loader: no pairs to evaluate")
    return torch.cat(img_feats), torch.cat(txt_feats)


def zero_shot_retrieval(
    model,
    tokenizer,
    loader: Iterable,
    device: str | torch.device = "cpu",
    ks: Sequence[int] = (1, 5, 10),
    autocast: Callable[[], ContextManager] | None = None,
) -> dict:
    """`retrieval_recall` over a loader of (images, texts, ...) batches."""
    return retrieval_recall(*encode_pairs(model, tokenizer, loader, device, autocast), ks=ks)


def _with_clip_benchmark_names(out: dict, ks: Sequence[int]) -> dict:
    """`out` with the recalls also under CLIP_benchmark's names (a text is retrieved for an
    image: ``text_retrieval_recall@k``) and DataComp's main retrieval metric, ``mean_recall@1``."""
    for k in ks:
        out[f"text_retrieval_recall@{k}"] = out[f"image_to_text_R@{k}"]
        out[f"image_retrieval_recall@{k}"] = out[f"text_to_image_R@{k}"]
    if 1 in ks:
        out["mean_recall@1"] = (out["image_to_text_R@1"] + out["text_to_image_R@1"]) / 2
    return out


def captioned_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_image: torch.Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict:
    """Recall@k when an image has several captions (COCO's and Flickr's five): text `t`
    describes image ``text_image[t]``.

    ``text_to_image_R@k``: share of captions whose image is among the k most similar images
    (CLIP_benchmark's ``image_retrieval_recall@k``); ``image_to_text_R@k``: share of images
    with at least one of their captions among the k most similar texts (its
    ``text_retrieval_recall@k``); both are also reported under those names. Ties count
    against the model, as in `retrieval_recall`: equal to CLIP_benchmark's figures
    (tests/train/test_clip_benchmark_parity.py) except where two images share a caption
    word for word, an exact tie that its topk gives to whichever comes first. ``chance_R@k`` is text -> image's, k/n.
    Works in blocks of `chunk` rows, so memory stays at chunk x (images + texts) scores.
    """
    text_image = torch.as_tensor(text_image, dtype=torch.long)
    n, n_texts = image_features.shape[0], text_features.shape[0]
    if n == 0 or n_texts != text_image.numel() or int(text_image.min()) < 0 or int(text_image.max()) >= n:
        raise ValueError(f"need captions of {n} images, got {n_texts} texts for images {text_image.unique()[:5]}")
    img = F.normalize(image_features.float().cpu(), dim=-1)
    txt = F.normalize(text_features.float().cpu(), dim=-1)
    t2i, i2t = torch.empty(n_texts, dtype=torch.long), torch.empty(n, dtype=torch.long)
    with torch.no_grad():
        for lo in range(0, n_texts, chunk):
            scores = txt[lo : lo + chunk] @ img.T
            own = scores.gather(1, text_image[lo : lo + chunk, None])
            t2i[lo : lo + chunk] = (scores >= own).sum(1) - 1  # other images at least as similar
        for lo in range(0, n, chunk):
            scores = img[lo : lo + chunk] @ txt.T
            mine = text_image[None, :] == torch.arange(lo, lo + scores.shape[0])[:, None]
            best = scores.masked_fill(~mine, float("-inf")).max(1, keepdim=True).values
            i2t[lo : lo + chunk] = ((scores >= best) & ~mine).sum(1)  # other images' texts at least as similar
    out: dict = {"n": n, "n_texts": n_texts}
    for direction, rank in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{direction}_R@{k}"] = int((rank < k).sum()) / rank.numel()
        out[f"{direction}_mean_rank"] = int(rank.sum()) / rank.numel() + 1
        out[f"{direction}_median_rank"] = float(rank.float().median()) + 1
    for k in ks:
        out[f"chance_R@{k}"] = min(1.0, k / n)
    return _with_clip_benchmark_names(out, ks)


def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    autocast: Callable[[], ContextManager] | None = None,
) -> torch.Tensor:
    """Normalised float32 text features, `batch_size` texts at a time."""
    model = unwrap(model)
    feats = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[lo : lo + batch_size]))
            with autocast_context(autocast):
                feats.append(F.normalize(model.encode_text(tokens.to(device)).float(), dim=-1).cpu())
    return torch.cat(feats)
