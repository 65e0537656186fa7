"""Evaluation sets in CLIP_benchmark's webdataset layout, built member by member for the
tests of `train.eval_wds`, `train.eval_suite` and the parity with CLIP_benchmark."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

Sample = tuple[str, dict[str, bytes]]  # (key, {extension: bytes})


def to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_set(
    root: Path,
    shards: list[list[Sample]],
    classnames=None,
    templates=None,
    dataset_type: str | None = None,
) -> Path:
    """ROOT/test/nshards.txt and N tars (shards[i] = [(key, {ext: bytes}), ...]), with
    classnames.txt, zeroshot_classification_templates.txt and dataset_type.txt when given."""
    (root / "test").mkdir(parents=True)
    for i, samples in enumerate(shards):
        with tarfile.open(root / "test" / f"{i}.tar", "w") as tar:
            for key, members in samples:
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
    if classnames is not None:
        (root / "classnames.txt").write_text("".join(f"{c}\n" for c in classnames))
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("".join(f"{t}\n" for t in templates))
    if dataset_type is not None:
        (root / "dataset_type.txt").write_text(f"{dataset_type}\n")
    return root


def classification_samples(images: list[Image.Image], labels: list[int]) -> list[Sample]:
    return [
        (f"s{i:05d}", {"png": to_png(im), "cls": f"{label}".encode()})
        for i, (im, label) in enumerate(zip(images, labels))
    ]


def retrieval_samples(images: list[Image.Image], captions: list[list[str]]) -> list[Sample]:
    return [
        (f"s{i:05d}", {"png": to_png(im), "txt": "".join(f"{c}\n" for c in caps).encode()})
        for i, (im, caps) in enumerate(zip(images, captions))
    ]


def split(samples: list[Sample], shards: int) -> list[list[Sample]]:
    """`samples` over `shards` tars, in order."""
    per = -(-len(samples) // shards)
    return [samples[i * per : (i + 1) * per] for i in range(shards)]
