"""Synthetic webdataset shards for the trainer's tests.

Tiny JPEGs (32x48 / 48x32) whose red channel encodes the sample id, so a test can check
that images, captions and uids stay aligned through the shuffle buffer; the caption is
`photo ID`, which `IdTokenizer` turns back into the id.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image


class IdTokenizer:
    """A tokenizer-shaped callable: 'photo 123' -> [123, 0, 0, 0] (module level: picklable)."""

    def __call__(self, texts):
        return torch.tensor([[int(t.split()[-1]), 0, 0, 0] for t in texts], dtype=torch.long)


TOK = IdTokenizer()


def red_of(sample_id: int) -> int:
    return (sample_id * 37) % 200 + 20


def jpeg_bytes(sample_id: int) -> bytes:
    rng = np.random.default_rng(sample_id)
    w, h = (48, 32) if sample_id % 2 else (32, 48)
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[..., 0] = red_of(sample_id)
    arr[..., 1] = rng.integers(0, 256, size=(h, w))  # texture: crops at different offsets differ
    arr[..., 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def sample(sample_id: int, **override) -> dict:
    """One sample's members as the download step writes them; `override` replaces (or, with
    None, drops) members."""
    key = f"{sample_id:09d}"
    uid = f"uid{sample_id:05d}"
    meta = {
        "uid": uid,
        "url": f"http://example.invalid/{key}.png",
        "caption": f"photo {sample_id}",
        "query_ids": [1],
        "queries": ["photo"],
    }
    out = {
        "__key__": key,
        "jpg": jpeg_bytes(sample_id),
        "txt": f"photo {sample_id}".encode(),
        "json": json.dumps(meta).encode(),
    }
    out.update(override)
    return {k: v for k, v in out.items() if v is not None}


def write_tar(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path), encoder=False) as sink:
        for s in samples:
            sink.write(s)
    return path


def write_shards(root: Path, n_shards: int, per_shard: int) -> Path:
    """NNNNN.tar for shard s holding samples s*100 .. s*100 + per_shard - 1."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        write_tar(root / f"{s:05d}.tar", [sample(s * 100 + i) for i in range(per_shard)])
    return root
