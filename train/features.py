"""Image features for evaluation: the embedding and the linear probe's features in one pass,
cached on disk per (model weights, dataset).

What the CLIP paper's linear probe reads (App. A.3): "for CLIP-ViT models, the features
before the linear projection to the embedding space" (I_f in its Figure 3). open_clip's
`VisionTransformer` ends with ``pooled @ self.proj``; `encode` sets ``visual.proj`` aside
for the forward pass, so the tower returns the pooled (``ln_post``) features, and applies
the projection itself: one forward pass gives both the probe's features and the embedding
the zero-shot classifier sees (``encode_image``'s, up to float rounding). For ResNets
(open_clip's `ModifiedResNet`, whose attention pool ends in its own output projection) and
any tower without a ``proj`` matrix, the probe reads the tower's output, unnormalised: for
the ResNets that is the attention-pool output, the paper's choice for them too. The
``kind`` string of a `Features` says which was taken.

The cache: a sweep of probes over one checkpoint (`python -m train.evaluate --linear-probe`
again with another seed, the trainer's final evaluation followed by the command on the
same weights) should not encode the images again. `FeatureCache` keys a file by a SHA-256
over the model's weights (names, dtypes, shapes and bytes: the trainer's in-memory model
and the checkpoint it saved give the same key), the dataset (its spec, size, labels and
`info`), the preprocessing and the precision. Files are safetensors (tensors only, no
pickle), written under a temporary name and renamed, so a killed run leaves no half file
and concurrent writers of one key write the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .distributed import unwrap
from .precision import AUTOCAST_DTYPE, autocast_context

FORMAT = 1  # bump when what is cached (or how it is computed) changes
PRE_PROJECTION = "pre-projection (ViT: pooled features before visual.proj, the paper's I_f)"
TOWER_OUTPUT = "image tower output (no visual.proj: e.g. a ResNet's attention pool), unnormalised"


@dataclass
class Features:
    embedding: torch.Tensor  # [n, embed_dim] float32, L2-normalised: what zero-shot compares
    probe: torch.Tensor  # [n, width] float32: what the linear probe fits
    labels: torch.Tensor  # [n] int64
    kind: str  # which features `probe` holds
    cached: bool = False  # read from the cache rather than encoded


@contextlib.contextmanager
def _projection_aside(visual):
    """`visual.proj` set to None for the block; yields the matrix (None if the tower has none)."""
    proj = getattr(visual, "proj", None)
    if not isinstance(proj, torch.Tensor):
        yield None
        return
    visual.proj = None
    try:
        yield proj
    finally:
        visual.proj = proj


def encode(
    model, loader: Iterable, device: str | torch.device = "cpu", autocast: Callable[[], ContextManager] | None = None
) -> Features:
    """`Features` of every (images, labels) batch of `loader`, in one forward pass each."""
    model = unwrap(model)
    visual = getattr(model, "visual", None)
    embs, probes, labels = [], [], []
    kind = TOWER_OUTPUT
    with torch.no_grad(), _projection_aside(visual) if visual is not None else contextlib.nullcontext() as proj:
        for images, target in loader:
            with autocast_context(autocast):
                if proj is not None:
                    assert visual is not None  # proj is visual's projection
                    pooled = visual(images.to(device))
                    if isinstance(pooled, tuple):  # output_tokens towers return (pooled, tokens)
                        pooled = pooled[0]
                    emb = pooled @ proj
                    kind = PRE_PROJECTION
                else:
                    pooled = emb = model.encode_image(images.to(device))
            probes.append(pooled.float().cpu())
            embs.append(F.normalize(emb.float(), dim=-1).cpu())
            labels.append(torch.as_tensor(target).long().cpu())
    if not embs:
        raise ValueError("empty loader: no images to evaluate")
    return Features(torch.cat(embs), torch.cat(probes), torch.cat(labels), kind)


def weights_digest(model) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes), in key order."""
    h = hashlib.sha256()
    for name, tensor in sorted(unwrap(model).state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Encoded features on disk, one safetensors file per (weights, dataset, preprocessing)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def key(self, weights: str, spec: str, dataset, preprocess, precision: str) -> str:
        labels = getattr(dataset, "labels", None)
        ident = {
            "format": FORMAT,
            "weights": weights,
            "spec": spec,
            "n": len(dataset),
            "labels": hashlib.sha256(bytes(memoryview(labels.astype("int64")))).hexdigest()
            if labels is not None
            else None,
            "info": getattr(dataset, "info", None),
            "preprocess": repr(preprocess),
            "precision": AUTOCAST_DTYPE.get(precision, precision),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, spec: str, key: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_.")[:60] or "dataset"
        return self.root / f"{stem}-{key[:20]}.safetensors"

    def load(self, spec: str, key: str) -> Features | None:
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        path = self.path(spec, key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key:
                    return None
                t = {name: f.get_tensor(name) for name in ("embedding", "probe", "labels")}
        except (SafetensorError, OSError, KeyError, ValueError):
            return None  # a damaged file is encoded again (and rewritten)
        return Features(t["embedding"], t["probe"], t["labels"], meta.get("kind", ""), cached=True)

    def save(self, spec: str, key: str, feats: Features) -> Path:
        from safetensors.torch import save_file

        from pipeline.io import atomic_path

        path = self.path(spec, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(
                {
                    "embedding": feats.embedding.contiguous(),
                    "probe": feats.probe.contiguous(),
                    "labels": feats.labels.contiguous(),
                },
                str(tmp),
                metadata={"key": key, "spec": spec, "kind": feats.kind, "format": str(FORMAT)},
            )
        return path


def cached_encode(
    model,
    dataset,
    loader: Iterable,
    spec: str,
    cache: FeatureCache | None,
    weights: str | None,
    preprocess,
    precision: str,
    device: str | torch.device = "cpu",
    autocast: Callable[[], ContextManager] | None = None,
) -> Features:
    """`encode`, through `cache` when one is given (`weights`: `weights_digest(model)`)."""
    if cache is None:
        return encode(model, loader, device, autocast)
    key = cache.key(weights or weights_digest(model), spec, dataset, preprocess, precision)
    hit = cache.load(spec, key)
    if hit is not None:
        return hit
    feats = encode(model, loader, device, autocast)
    cache.save(spec, key, feats)
    return feats
