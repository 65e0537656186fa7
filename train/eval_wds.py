"""Evaluation sets in the webdataset layout that CLIP_benchmark and DataComp distribute
(``wds:ROOT``), read offline from a folder or an object store; and the export of any
labelled set to that layout, so other evaluators score exactly the images we score.

The layout, as CLIP_benchmark's ``build_wds_dataset`` reads it::

    ROOT/test/nshards.txt        the number of shards, N
    ROOT/test/0.tar ... N-1.tar  a sample per key: an image (webp, png, jpg or jpeg; the first
                                 of these present) and ``cls``, its label as an integer
    ROOT/classnames.txt          one class name per line; line i names label i
    ROOT/zeroshot_classification_templates.txt
                                 one prompt per line, ``{c}`` standing for the class name
    ROOT/dataset_type.txt        absent or ``classification``; ``retrieval``: samples hold an
                                 image and ``txt``, its captions one per line (COCO's and
                                 Flickr's five), read by `wds_retrieval` (``--retrieval
                                 wds:ROOT``); ``multilabel`` (``npy`` labels) is not read yet

The shards are indexed once, reading the tar headers and the small label members only; an
image is read by its offset when the evaluation asks for it, so a set of any size is never
decoded into memory up front, and loader workers each read their own images.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pipeline.errors import EXIT_INPUT_ERROR, InputError, one_line
from pipeline.imaging import to_rgb
from pipeline.shard_format import IMAGE_EXTS, split_member, stream_members
from pipeline.storage import filesystem

from .eval_data import LabelledImages, Transform, load_dataset

SPLIT = "test"
CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
NSHARDS = "nshards.txt"
# CLIP_benchmark's preference among a sample's images (webdataset's first-match order)
IMAGE_PREFERENCE = ("webp", "png", "jpg", "jpeg")
assert set(IMAGE_PREFERENCE) == set(IMAGE_EXTS)
MAX_TARGET_BYTES = 1 << 16  # a label or a sample's captions; more is not a caption file


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _read_text(fs, path: str, shown: str) -> str | None:
    """A small text file's contents; None when it does not exist."""
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"{shown}: cannot read ({one_line(e)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{shown}: not UTF-8 text") from None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class TarImages:
    """Image i of an indexed set, read by its offset (picklable: loader workers open the
    shards themselves). The shard last read stays open, so images read in order (a
    DataLoader hands each worker consecutive batches) come out of one file handle, and on an
    object store out of its read-ahead blocks rather than a request per image."""

    def __init__(self, root: str, shards: list[str], where: np.ndarray):
        self.root, self.shards, self.where = root, shards, where  # where: (shard, offset, size) rows
        self._fs: Any = None  # opened in the process that reads
        self._open: tuple[int, Any] | None = None  # (shard, its file)

    def __getstate__(self):
        return {**self.__dict__, "_fs": None, "_open": None}

    def _file(self, shard: int):
        if self._open is not None and self._open[0] == shard:
            return self._open[1]
        self.close()
        if self._fs is None:
            self._fs, _ = filesystem(self.root)
        self._open = (shard, self._fs.open(self.shards[shard], "rb"))
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit the file may be gone already
            pass

    def __call__(self, i: int) -> Image.Image:
        shard, offset, size = (int(v) for v in self.where[i])
        try:
            f = self._file(shard)
            f.seek(offset)
            data = f.read(size)
        except OSError as e:
            self.close()
            raise InputError(f"{self.shards[shard]}: cannot read the image at byte {offset} ({one_line(e)})") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_rgb(im)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"{self.shards[shard]}: unreadable image at byte {offset} ({e})") from None


def _index_shard(
    fs, path: str, shown: str, n_classes: int, shard: int, rows: list, labels: list, skipped: Counter, target="cls"
):
    """Append each complete sample of one shard: (shard, offset, size) of its image, and its
    label (`target` cls: the class, checked against `n_classes`) or its captions (txt: the
    member's lines, as CLIP_benchmark splits them)."""

    def finish(key: str | None, sample: dict) -> None:
        if key is None:
            return
        image = next((sample[e] for e in IMAGE_PREFERENCE if e in sample), None)
        if image is None:
            skipped["no image"] += 1
            return
        if target not in sample:
            skipped[f"no {target}"] += 1
            return
        if target == "txt":
            captions = [c for c in sample["txt"].decode("utf-8", "replace").splitlines() if c.strip()]
            if not captions:
                skipped["empty txt"] += 1
                return
            rows.append((shard, *image))
            labels.append(captions)
            return
        text = sample["cls"].decode("utf-8", "replace").strip()
        try:
            label = int(text)
        except ValueError:
            raise InputError(f"{shown}: sample {key!r} has a cls that is not an integer ({text[:40]!r})") from None
        if not 0 <= label < n_classes:
            raise InputError(
                f"{shown}: sample {key!r} has label {label}, but {CLASSNAMES} names {n_classes} classes (0..{n_classes - 1})"
            )
        rows.append((shard, *image))
        labels.append(label)

    try:
        with fs.open(path, "rb") as f:
            key: str | None = None
            sample: dict = {}  # extension -> (offset, size) of an image, or the cls member's bytes
            for tf, member in stream_members(f, seekable=True):
                parts = split_member(member.name) if member.isfile() else None
                if parts is None:
                    continue
                if parts[0] != key:
                    finish(key, sample)
                    key, sample = parts[0], {}
                ext = parts[1]
                if ext in IMAGE_PREFERENCE:
                    sample[ext] = (member.offset_data, member.size)
                elif ext == target:
                    sample[target] = tf.extractfile(member).read(MAX_TARGET_BYTES)  # type: ignore[union-attr]
            finish(key, sample)
    except FileNotFoundError:
        raise InputError(f"{shown}: missing (its {NSHARDS} counts it)") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{shown}: not a readable tar ({one_line(e)})") from None


def _open_set(root: str, split: str, want: str):
    """(root, fs, path of ROOT on it, shard paths) of a set of kind `want`, its type and
    shard count checked."""
    root = str(root).rstrip("/") or "/"
    fs, base = filesystem(root)
    kind = (_read_text(fs, _join(base, DATASET_TYPE), _join(root, DATASET_TYPE)) or "classification").strip().lower()
    if kind != want:
        verb = "--datasets" if want == "classification" else "--retrieval"
        raise InputError(f"{_join(root, DATASET_TYPE)}: a {kind} set; wds:ROOT in {verb} reads {want} sets")
    count_text = _read_text(fs, _join(base, split, NSHARDS), _join(root, split, NSHARDS))
    if count_text is None:
        raise InputError(
            f"{_join(root, split, NSHARDS)}: missing (CLIP_benchmark's webdataset layout: "
            f"ROOT/{split}/{NSHARDS}, ROOT/{split}/0.tar ..., ROOT/{CLASSNAMES})"
        )
    try:
        n_shards = int(count_text.strip())
        if n_shards < 1:
            raise ValueError
    except ValueError:
        raise InputError(
            f"{_join(root, split, NSHARDS)}: not a positive number of shards ({count_text[:40]!r})"
        ) from None
    return root, fs, base, [_join(base, split, f"{i}.tar") for i in range(n_shards)]


def _index(root: str, fs, shards: list[str], split: str, n_classes: int, target: str):
    rows: list[tuple[int, int, int]] = []
    labels: list = []
    skipped: Counter = Counter()
    for i, path in enumerate(shards):
        _index_shard(fs, path, _join(root, split, f"{i}.tar"), n_classes, i, rows, labels, skipped, target)
    if not labels:
        raise InputError(f"{_join(root, split)}: no sample with an image and a {target} in {len(shards)} shard(s)")
    where = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    info = {"format": "wds", "split": split, "shards": len(shards), "skipped": dict(sorted(skipped.items()))}
    return TarImages(root, shards, where), labels, info


def check_layout(root: str, kind: str = "classification", split: str = SPLIT) -> None:
    """The cheap checks of a set, before any model loads: its type, its shard count, and for
    classification its class names."""
    _open_set(root, split, kind)
    if kind == "classification":
        wds_classnames(root)


def wds_classnames(root: str) -> list[str]:
    """ROOT/classnames.txt's names, line i naming label i."""
    root = str(root).rstrip("/") or "/"
    fs, base = filesystem(root)
    names_text = _read_text(fs, _join(base, CLASSNAMES), _join(root, CLASSNAMES))
    if names_text is None:
        raise InputError(f"{_join(root, CLASSNAMES)}: missing (zero-shot classification needs the class names)")
    classnames = _lines(names_text)
    if not classnames:
        raise InputError(f"{_join(root, CLASSNAMES)}: no class names")
    return classnames


def wds_classification(root: str, transform: Transform = None, split: str = SPLIT) -> LabelledImages:
    """A CLIP_benchmark/DataComp classification set (the layout in the module docstring) as
    a `LabelledImages`, carrying the set's own prompt templates in ``templates`` when it has
    them. Bad layouts are `InputError`s naming the file."""
    root, fs, base, shards = _open_set(root, split, "classification")
    classnames = wds_classnames(root)
    templates_text = _read_text(fs, _join(base, TEMPLATES), _join(root, TEMPLATES))
    templates = _lines(templates_text) if templates_text is not None else []
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise InputError(f"{_join(root, TEMPLATES)}: a template without {{c}} ({bad[0][:60]!r})")

    images, labels, info = _index(root, fs, shards, split, len(classnames), "cls")
    ds = LabelledImages(f"wds:{root}", classnames, labels, images, transform, info)
    if templates:
        ds.templates = tuple(templates)
    return ds


class CaptionedImages(Dataset):
    """A retrieval set: item i is (transform(image i), i); ``captions[i]`` are image i's
    captions (one or more, as COCO's and Flickr's five)."""

    def __init__(self, name: str, captions: list[list[str]], load, transform: Transform = None, info=None):
        self.name, self.captions, self._load, self.transform = name, captions, load, transform
        self.info = {"n": len(captions), "n_texts": sum(map(len, captions)), **(info or {})}

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        image = self._load(int(i))
        return (self.transform(image) if self.transform is not None else image), int(i)


def wds_retrieval(root: str, transform: Transform = None, split: str = SPLIT) -> CaptionedImages:
    """A CLIP_benchmark/DataComp retrieval set (dataset_type.txt says retrieval; samples hold
    an image and ``txt``, its captions one per line) as `CaptionedImages`."""
    root, fs, base, shards = _open_set(root, split, "retrieval")
    images, captions, info = _index(root, fs, shards, split, 0, "txt")
    return CaptionedImages(f"wds:{root}", captions, images, transform, info)


def export_wds(ds: LabelledImages, out: str | Path, samples_per_shard: int = 1000, templates=None) -> Path:
    """Write a labelled set in the layout above (PNG images, `cls` labels), with its class
    names and, when given, its templates (strings with ``{c}``). Returns ROOT."""
    out = Path(out)
    test = out / SPLIT
    test.mkdir(parents=True, exist_ok=True)
    n = len(ds)
    n_shards = max(1, -(-n // samples_per_shard))
    for s in range(n_shards):
        with tarfile.open(test / f"{s}.tar", "w") as tar:
            for i in range(s * samples_per_shard, min(n, (s + 1) * samples_per_shard)):
                buf = io.BytesIO()
                ds.image(i).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(int(ds.labels[i])).encode())):
                    member = tarfile.TarInfo(f"s{i:07d}.{ext}")
                    member.size, member.mtime, member.mode = len(data), 0, 0o644
                    tar.addfile(member, io.BytesIO(data))
    (test / NSHARDS).write_text(f"{n_shards}\n")
    (out / CLASSNAMES).write_text("".join(f"{c}\n" for c in ds.classnames), encoding="utf-8")
    (out / DATASET_TYPE).write_text("classification\n")
    if templates:
        (out / TEMPLATES).write_text("".join(f"{t}\n" for t in templates), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m train.eval_data export NAME --out DIR`."""
    ap = argparse.ArgumentParser(
        prog="python -m train.eval_data",
        description="Write a labelled evaluation set in CLIP_benchmark's webdataset layout "
        "(ROOT/test/nshards.txt, ROOT/test/0.tar ..., classnames.txt), so that other evaluators "
        "(CLIP_benchmark's --dataset wds/..., DataComp) read exactly the images and labels we score.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="export a set: openclipart, animal-mnist, digits, imagefolder:ROOT, wds:ROOT")
    exp.add_argument("name", help="the set, as --datasets of python -m train.evaluate names it")
    exp.add_argument("--out", required=True, help="the folder to write (ROOT of the layout)")
    exp.add_argument("--cache-dir", default=".cache/sample", help="the sample data (default: %(default)s)")
    exp.add_argument("--samples-per-shard", type=int, default=1000, help="(default: %(default)s)")
    exp.add_argument(
        "--templates",
        default="openai",
        help="the prompts written beside it: openai (CLIP's 80), simple (its 7) or none (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        if args.samples_per_shard < 1:
            raise InputError(f"--samples-per-shard {args.samples_per_shard}: must be at least 1")
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"--out {out}: exists and is not an empty folder")
        ds = load_dataset(args.name, args.cache_dir)
        templates = None if args.templates == "none" else _template_strings(args.templates)
        export_wds(ds, out, args.samples_per_shard, templates)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(f"{args.name}: {len(ds)} images, {len(ds.classnames)} classes -> {out}")
    return 0


def _template_strings(name: str) -> list[str]:
    """open_clip's named prompt set as CLIP_benchmark's ``{c}`` strings."""
    from .zeroshot import get_templates

    if name not in ("openai", "simple"):
        raise InputError(f"--templates {name!r}: choose from openai, simple, none")
    return [t("{c}") if callable(t) else t.format("{c}") for t in get_templates(name)]
