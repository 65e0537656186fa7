"""Labelled image sets for zero-shot evaluation, all real and all offline.

Each set is a `LabelledImages` torch Dataset: item i is ``(transform(image), label)``
(the PIL image itself when no transform is given), with ``classnames`` (the text put into
the prompt templates, index = label), ``labels`` and an ``info`` dict (sizes and what was
left out, copied into the evaluation JSON). Images are RGB; transparency is composited onto
white first. The transform is the model's validation preprocessing (open_clip's
``preprocess_val``).

Sets (names as given to `load_dataset` / ``python -m train.evaluate --datasets``):

``imagefolder:ROOT`` or ``imagefolder:ROOT::CLASSNAMES_FILE``
    torchvision's ImageFolder layout (ROOT/<class folder>/<image>), classes in sorted folder
    order. Class names from CLASSNAMES_FILE, else from ROOT/classnames.txt if present, else
    the folder names with ``_`` read as a space. The file has one of two forms (blank lines
    ignored; UTF-8): one name per line, in sorted folder order, exactly one line per folder;
    or ``folder<TAB>name`` lines naming every folder once (order free). Mixing the forms, a
    count that does not match, or an unknown or missing folder is an error (`InputError`).
    A ROOT holding ``train/`` and ``test/`` folders (each in that layout, with the same class
    folders; class names from ROOT/classnames.txt or CLASSNAMES_FILE) is a set with its own
    split: the images are test/'s (zero-shot is scored there) and ``probe_train`` holds
    train/'s, on which the linear probe fits (`train.linear_probe.probe_given_split`).

``wds:ROOT``
    A set in the webdataset layout that CLIP_benchmark and DataComp distribute
    (ROOT/test/nshards.txt, ROOT/test/0.tar ..., ROOT/classnames.txt and, when present,
    ROOT/zeroshot_classification_templates.txt, whose prompts replace ``--templates`` for
    it), from a folder or s3://: `train.eval_wds`. ``python -m train.eval_data export NAME
    --out DIR`` writes any of these sets in that layout.

``imagenet:ROOT``
    ImageNet-1k validation in synset folders (ROOT/n01440764/..., or under ROOT/val/),
    scored over the 1,000 standard class names with CLIP's 80 prompts: `train.eval_imagenet`.

``openclipart``
    The openclipart images that `make shards` keeps out of the training pool
    (`pipeline.sample.stage`: `is_held_out_image(path, 0.1, seed 0)`, ~10% by path hash),
    labelled by category (the top folder). Left out, and counted in ``info``: the
    categories that name no subject (``unsorted``, ``special``); images that a symbolic
    link also files under another kept class (their label would be ambiguous); categories
    with fewer than 5 held-out images (repeated until stable). On the Debian package, of the
    705 held-out images 18 are unsorted/special, 51 ambiguous, 4 in small categories
    (decorations 3, electronics 1), leaving 14 classes, 632 images: animals, buildings,
    computer, education, food, geography, office, people, plants, recreation, shapes,
    signs and symbols, tools, transportation. Class names are the folder names with ``_``
    read as a space. A few drawings are huge (two are 169 Mpx), so each image is shrunk to
    a short side of at most 512 px when first read and kept in memory as PNG bytes (~16 MB
    for the set): the first pass decodes for ~10 s, later ones (evaluation every N steps)
    read from memory (~1 s).
    `openclipart_pairs` gives the same held-out images (every category, captioned ones) as
    (image, caption) pairs for retrieval: 705 pairs.

``animal-mnist``
    The 10,000 28x28 grayscale silhouettes (white animal on black, 1,000 per class) shipped
    in the ``animal-mnist`` wheel (`python -m pipeline.sample.fetch animal-mnist` puts its
    two files in CACHE/animal-mnist/). Class names, by label: bear, bird, cat, cow, dog,
    elephant, giraffe, horse, sheep, zebra (the package's README lists them; its loader
    gives no names, so the label order was checked by looking at the images: labels are
    alphabetical). The files are numpy arrays pickled by the package author; they are read
    with an unpickler that accepts only numpy's array reconstruction (anything else is
    refused), never with plain `pickle.load`.

``digits``
    scikit-learn's 1,797 8x8 handwritten digits (`load_digits`, shipped with the package),
    0..16 scaled to 0..255, upscaled 8x with nearest-neighbour to 64x64 so the model's
    resize sees blocky digits, not a blur of 64 pixels. Class names are the digits "0".."9":
    CLIP's own MNIST evaluation names the classes this way, and the training captions here
    (openclipart) write numbers as digits about 5 times as often as words (265 vs 50
    captions), while "one" is also a pronoun. ``sklearn_digits(names="words")`` gives
    "zero".."nine" instead.

Raw data (arrays, file lists) is read once per process and cached, so evaluating every N
training steps does not re-read files.
"""

from __future__ import annotations

import copy
import functools
import gzip
import io
import pickle
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pipeline.errors import InputError
from pipeline.imaging import to_rgb

Transform = Callable[[Image.Image], object] | None

OPENCLIPART_EXCLUDED = ("special", "unsorted")  # categories that name no subject
OPENCLIPART_MIN_IMAGES = 5
HELD_OUT_FRACTION = 0.1  # as pipeline.sample.stage.HELD_OUT_IMAGES
HELD_OUT_SEED = 0  # as pipeline.sample.stage.HELD_OUT_SEED
OPENCLIPART_MAX_SHORT_SIDE = 512  # images are shrunk to this and cached in memory (see open_rgb)

ANIMAL_MNIST_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ANIMAL_MNIST_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_SCALE = 8


def open_rgb(path: str | Path, max_short_side: int | None = None) -> Image.Image:
    """An image file as RGB (see `to_rgb`), shrunk so its short side is at most `max_short_side`.

    Shrinking first (Lanczos, before compositing; Pillow resizes RGBA with premultiplied
    alpha) bounds the memory and time of the few huge drawings; a model's preprocessing
    resizes the short side to its image size anyway.
    """
    try:
        with warnings.catch_warnings():
            # two trusted openclipart drawings are 169 Mpx (Pillow warns above 89 Mpx)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as file:
                file.load()
                im: Image.Image = file
                if max_short_side and min(im.size) > max_short_side:
                    if im.mode not in ("RGB", "RGBA", "L", "LA") or "transparency" in im.info:
                        im = im.convert("RGBA")
                    scale = max_short_side / min(im.size)
                    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                    im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
                return to_rgb(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: unreadable image ({e})") from None


@functools.lru_cache(maxsize=16384)
def _cached_png(path: str, max_short_side: int) -> bytes:
    """`open_rgb(path, max_short_side)` kept in memory as PNG bytes (fast, ~10x smaller than pixels)."""
    buf = io.BytesIO()
    open_rgb(path, max_short_side).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def open_rgb_cached(path: str | Path, max_short_side: int) -> Image.Image:
    with Image.open(io.BytesIO(_cached_png(str(path), max_short_side))) as im:
        im.load()
        return im


class LabelledImages(Dataset):
    """(image, label) items; see the module docstring."""

    # Set only by some sets (absent on the others):
    paths: list[str]  # each image's file (ImageFolder, openclipart: relative to the PNG root)
    also_in: list[list[str]]  # openclipart: the other categories that link to each image
    probe_train: LabelledImages  # imagefolder with train/ and test/: the train split
    templates: tuple[str, ...]  # wds sets that ship prompts: format strings with {c}

    def __init__(
        self,
        name: str,
        classnames: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        load: Callable[[int], Image.Image],
        transform: Transform = None,
        info: dict | None = None,
    ):
        self.name = name
        self.classnames = list(classnames)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._load = load
        self.transform = transform
        self.info = {"n": len(self.labels), "n_classes": len(self.classnames), **(info or {})}
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classnames)):
            raise ValueError(f"{name}: labels outside [0, {len(self.classnames)})")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Item i's RGB image, untransformed."""
        return self._load(int(i))

    def __getitem__(self, i: int):
        image = self.image(i)
        return (self.transform(image) if self.transform is not None else image), int(self.labels[i])

    def with_transform(self, transform: Transform) -> LabelledImages:
        other = copy.copy(self)
        other.transform = transform
        return other

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classnames))
        return {name: int(c) for name, c in zip(self.classnames, counts)}


class PairedImages(Dataset):
    """(image, caption) items for retrieval; image i goes with caption i."""

    paths: list[str]  # set only by openclipart_pairs: each image's file, relative to the PNG root

    def __init__(
        self,
        name: str,
        captions: Sequence[str],
        load: Callable[[int], Image.Image],
        transform: Transform = None,
        info: dict | None = None,
    ):
        self.name = name
        self.captions = list(captions)
        self._load = load
        self.transform = transform
        self.info = {"n": len(self.captions), **(info or {})}

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        image = self._load(int(i))
        return (self.transform(image) if self.transform is not None else image), self.captions[i]


# ---------------------------------------------------------------------------------------
# ImageFolder


def _read_classnames(path: Path, folders: list[str]) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read class names ({e})") from None
    entries = [(no, line.rstrip("\r\n")) for no, line in enumerate(lines, 1) if line.strip()]
    tabbed = [("\t" in line) for _, line in entries]
    if entries and all(tabbed):
        names: dict[str, str] = {}
        for no, line in entries:
            folder, name = (part.strip() for part in line.split("\t", 1))
            if folder not in folders:
                raise InputError(f"{path}:{no}: no class folder named {folder!r}")
            if folder in names:
                raise InputError(f"{path}:{no}: folder {folder!r} named twice")
            if not name:
                raise InputError(f"{path}:{no}: empty class name for folder {folder!r}")
            names[folder] = name
        missing = [f for f in folders if f not in names]
        if missing:
            raise InputError(f"{path}: no name for class folder(s) {', '.join(missing[:5])}")
        return [names[f] for f in folders]
    if any(tabbed):
        no = entries[tabbed.index(not tabbed[0])][0]
        raise InputError(f"{path}:{no}: mixes 'folder<TAB>name' lines with plain name lines")
    if len(entries) != len(folders):
        raise InputError(
            f"{path}: {len(entries)} class names for {len(folders)} class folders "
            "(one name per line, in sorted folder order)"
        )
    return [line.strip() for _, line in entries]


class ImageFolderDataset(LabelledImages):
    """torchvision's ImageFolder layout with readable class names (see the module docstring)."""

    def __init__(self, root: str | Path, classnames_file: str | Path | None = None, transform: Transform = None):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: image folder not found")
        try:
            folders, class_to_idx = find_classes(str(root))
        except FileNotFoundError as e:
            raise InputError(f"{root}: {e}") from None
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not samples:
            raise InputError(f"{root}: no images (extensions {', '.join(IMG_EXTENSIONS)}) in its class folders")
        if classnames_file is None and (root / "classnames.txt").is_file():
            classnames_file = root / "classnames.txt"
        if classnames_file is not None:
            classnames = _read_classnames(Path(classnames_file), folders)
        else:
            classnames = [" ".join(f.replace("_", " ").split()) for f in folders]
        paths = [p for p, _ in samples]
        super().__init__(
            f"imagefolder:{root}",
            classnames,
            [c for _, c in samples],
            lambda i: open_rgb(paths[i]),
            transform,
            {
                "root": str(root),
                "classnames_file": str(classnames_file) if classnames_file else None,
                "folders": folders,
            },
        )
        self.paths = paths


# ---------------------------------------------------------------------------------------
# animal-mnist


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are allowed)")


def _load_pickled_array(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            value = _NumpyOnlyUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise InputError(f"{path}: not a gzipped numpy array pickle ({e})") from None
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path}: expected a numpy array, got {type(value).__name__}")
    return value


def _animal_dir(cache_dir: str | Path) -> Path:
    cache_dir = Path(cache_dir)
    for d in (cache_dir, cache_dir / "animal-mnist"):
        if (d / ANIMAL_MNIST_FILES[0]).is_file():
            return d
    raise InputError(
        f"{cache_dir}: animal-mnist files ({', '.join(ANIMAL_MNIST_FILES)}) not found here nor in "
        "animal-mnist/; fetch them with `python -m pipeline.sample.fetch animal-mnist`"
    )


@functools.lru_cache(maxsize=4)
def _animal_arrays(directory: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(directory)
    images = _load_pickled_array(d / ANIMAL_MNIST_FILES[0])
    labels = _load_pickled_array(d / ANIMAL_MNIST_FILES[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise InputError(
            f"{d / ANIMAL_MNIST_FILES[0]}: expected uint8 [n, 28, 28] images, got {images.dtype} {list(images.shape)}"
        )
    if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
        raise InputError(
            f"{d / ANIMAL_MNIST_FILES[1]}: expected {images.shape[0]} integer labels, "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= len(ANIMAL_MNIST_CLASSES):
        raise InputError(f"{d / ANIMAL_MNIST_FILES[1]}: labels outside 0..{len(ANIMAL_MNIST_CLASSES) - 1}")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def animal_mnist(cache_dir: str | Path = ".cache/sample", transform: Transform = None) -> LabelledImages:
    """animal-mnist from CACHE/animal-mnist/ (or a folder holding its two files directly)."""
    d = _animal_dir(cache_dir)
    images, labels = _animal_arrays(str(d.resolve()))
    return LabelledImages(
        "animal-mnist",
        ANIMAL_MNIST_CLASSES,
        labels,
        lambda i: Image.fromarray(images[i]).convert("RGB"),
        transform,
        {"source": str(d), "image_size": [28, 28]},
    )


# ---------------------------------------------------------------------------------------
# scikit-learn digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the digits set needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = images.repeat(DIGITS_SCALE, axis=1).repeat(DIGITS_SCALE, axis=2)  # nearest-neighbour upscale
    images.setflags(write=False)
    return images, bunch.target.astype(np.int64)


def sklearn_digits(transform: Transform = None, names: str = "digits") -> LabelledImages:
    """scikit-learn's 1,797 digits as 64x64 RGB; class names "0".."9" (or words: names="words")."""
    if names not in ("digits", "words"):
        raise ValueError(f"names must be 'digits' or 'words', got {names!r}")
    images, labels = _digits_arrays()
    classnames = [str(d) for d in range(10)] if names == "digits" else list(DIGIT_WORDS)
    return LabelledImages(
        "digits",
        classnames,
        labels,
        lambda i: Image.fromarray(images[i]).convert("RGB"),
        transform,
        {"source": "sklearn.datasets.load_digits", "image_size": list(images.shape[1:])},
    )


# ---------------------------------------------------------------------------------------
# openclipart held-out images


def readable_category(category: str) -> str:
    return " ".join(category.replace("_", " ").split())


@functools.lru_cache(maxsize=4)
def _openclipart_held_rows(cache_dir: str, fraction: float, seed: int) -> tuple[str, tuple[dict, ...]]:
    from pipeline.sample.openclipart import is_held_out_image, roots_from_cache, sample_rows

    png_root, svg_root = roots_from_cache(cache_dir)
    rows = tuple(r for r in sample_rows(png_root, svg_root) if is_held_out_image(r["path"], fraction, seed))
    return str(png_root), rows


def _png_loader(png_root: str, paths: list[str]) -> Callable[[int], Image.Image]:
    return lambda i: open_rgb_cached(Path(png_root) / paths[i], OPENCLIPART_MAX_SHORT_SIDE)


def openclipart_heldout(
    cache_dir: str | Path = ".cache/sample",
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = HELD_OUT_SEED,
    min_images: int = OPENCLIPART_MIN_IMAGES,
    exclude: Sequence[str] = OPENCLIPART_EXCLUDED,
    transform: Transform = None,
) -> LabelledImages:
    """The held-out openclipart images labelled by category (see the module docstring)."""
    png_root, rows = _openclipart_held_rows(str(cache_dir), held_out_fraction, seed)
    excluded = Counter(r["category"] for r in rows if r["category"] in exclude)
    classes = sorted({r["category"] for r in rows} - set(exclude))
    while True:  # drop small classes until stable (dropping one can un-ambiguate images of another)
        kept = [r for r in rows if r["category"] in classes and not set(r["also_in"]) & set(classes)]
        counts = Counter(r["category"] for r in kept)
        stable = [c for c in classes if counts[c] >= min_images]
        if stable == classes:
            break
        classes = stable
    if not classes:
        raise InputError(f"{cache_dir}: no openclipart category has {min_images} held-out images")
    index = {c: i for i, c in enumerate(classes)}
    kept = [r for r in kept if r["category"] in index]
    candidates = [r for r in rows if r["category"] not in exclude]
    small = Counter(r["category"] for r in candidates if r["category"] not in index)
    ambiguous = sum(1 for r in candidates if r["category"] in index and set(r["also_in"]) & set(classes))
    paths = [r["path"] for r in kept]
    info = {
        "source": str(png_root),
        "held_out_fraction": held_out_fraction,
        "seed": seed,
        "held_out_images": len(rows),
        "excluded_categories": dict(sorted(excluded.items())),
        "small_categories": dict(sorted(small.items())),
        "min_images": min_images,
        "ambiguous_images": ambiguous,
        "categories": classes,
    }
    ds = LabelledImages(
        "openclipart",
        [readable_category(c) for c in classes],
        [index[r["category"]] for r in kept],
        _png_loader(png_root, paths),
        transform,
        info,
    )
    ds.paths = paths
    ds.also_in = [r["also_in"] for r in kept]  # other categories linking to each image (none is a class)
    return ds


def openclipart_pairs(
    cache_dir: str | Path = ".cache/sample",
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = HELD_OUT_SEED,
    transform: Transform = None,
) -> PairedImages:
    """Every held-out openclipart image with a caption, as (image, caption), for retrieval."""
    png_root, rows = _openclipart_held_rows(str(cache_dir), held_out_fraction, seed)
    kept = [r for r in rows if r["text"]]
    paths = [r["path"] for r in kept]
    ds = PairedImages(
        "openclipart",
        [r["text"] for r in kept],
        _png_loader(png_root, paths),
        transform,
        {
            "source": str(png_root),
            "held_out_fraction": held_out_fraction,
            "seed": seed,
            "held_out_images": len(rows),
            "without_caption": len(rows) - len(kept),
        },
    )
    ds.paths = paths
    return ds


# ---------------------------------------------------------------------------------------
# Registry


def _imagefolder(cache_dir, preprocess, arg: str | None = None) -> LabelledImages:
    if not arg:
        raise InputError("imagefolder needs a folder: imagefolder:ROOT or imagefolder:ROOT::CLASSNAMES_FILE")
    root, _, names = arg.partition("::")
    base = Path(root)
    if not ((base / "train").is_dir() and (base / "test").is_dir()):
        return ImageFolderDataset(root, names or None, transform=preprocess)
    train_folders, test_folders = (
        {d.name for d in (base / part).iterdir() if d.is_dir()} for part in ("train", "test")
    )
    if train_folders != test_folders:
        only = sorted(train_folders ^ test_folders)
        raise InputError(f"{base}: train/ and test/ have different class folders ({', '.join(only[:5])})")
    names_file = names or (str(base / "classnames.txt") if (base / "classnames.txt").is_file() else None)
    test = ImageFolderDataset(base / "test", names_file, transform=preprocess)
    train = ImageFolderDataset(base / "train", names_file, transform=preprocess)
    test.name = f"imagefolder:{base}"
    test.info.update({"split": "test", "n_train": len(train)})
    test.probe_train = train  # the linear probe fits on it (train.evaluate.probe_given_split)
    return test


DATASETS: dict[str, Callable[..., LabelledImages]] = {
    "imagefolder": _imagefolder,  # used as imagefolder:ROOT[::CLASSNAMES_FILE]
    "openclipart": lambda cache_dir, preprocess, arg=None: openclipart_heldout(cache_dir, transform=preprocess),
    "animal-mnist": lambda cache_dir, preprocess, arg=None: animal_mnist(cache_dir, transform=preprocess),
    "digits": lambda cache_dir, preprocess, arg=None: sklearn_digits(transform=preprocess),
    "wds": lambda cache_dir, preprocess, arg: _wds(arg, preprocess),  # used as wds:ROOT
    # imagenet:ROOT and its shifts, imagenet-a:ROOT ... (`train.eval_imagenet.VARIANTS`)
    **{
        v: (lambda cache_dir, preprocess, arg, v=v: _imagenet(arg, preprocess, v))
        for v in ("imagenet", "imagenet-sketch", "imagenet-v2", "imagenet-a", "imagenet-r", "objectnet")
    },
}
WITH_ARGUMENT = (
    "imagefolder",
    "wds",
    "imagenet",
    "imagenet-sketch",
    "imagenet-v2",
    "imagenet-a",
    "imagenet-r",
    "objectnet",
)


def _wds(root: str, preprocess) -> LabelledImages:
    from .eval_wds import wds_classification  # it builds on this module's LabelledImages

    return wds_classification(root, transform=preprocess)


def _imagenet(root: str, preprocess, variant: str) -> LabelledImages:
    from .eval_imagenet import imagenet_folder

    return imagenet_folder(root, transform=preprocess, variant=variant)


RETRIEVAL_DATASETS: dict[str, Callable[..., PairedImages]] = {
    "openclipart": lambda cache_dir, preprocess: openclipart_pairs(cache_dir, transform=preprocess),
}


def check_spec(spec: str, retrieval: bool = False) -> None:
    """Raise `InputError` for a name that no loader knows (without reading any data)."""
    if retrieval:
        if spec not in RETRIEVAL_DATASETS and not (spec.startswith("wds:") and len(spec) > 4):
            raise InputError(f"unknown retrieval set {spec!r}; choose from {', '.join(RETRIEVAL_DATASETS)}, wds:ROOT")
        return
    name, _, arg = spec.partition(":")
    if name not in DATASETS or bool(arg) != (name in WITH_ARGUMENT):
        raise InputError(
            f"unknown dataset {spec!r}; choose from openclipart, animal-mnist, digits, "
            "imagefolder:ROOT[::CLASSNAMES_FILE], wds:ROOT, imagenet:ROOT, imagenet-sketch:ROOT, "
            "imagenet-v2:ROOT, imagenet-a:ROOT, imagenet-r:ROOT, objectnet:ROOT"
        )


def load_dataset(spec: str, cache_dir: str | Path = ".cache/sample", preprocess: Transform = None) -> LabelledImages:
    """A labelled set by name: ``openclipart``, ``animal-mnist``, ``digits``, ``imagefolder:ROOT``,
    ``wds:ROOT`` (CLIP_benchmark's webdataset layout: `train.eval_wds`) or ``imagenet:ROOT``
    and its shifts (``imagenet-sketch:``, ``-v2:``, ``-a:``, ``-r:``, ``objectnet:``; `train.eval_imagenet`)."""
    check_spec(spec)
    name, _, arg = spec.partition(":")
    return DATASETS[name](cache_dir, preprocess, arg or None)


def load_retrieval_dataset(
    name: str, cache_dir: str | Path = ".cache/sample", preprocess: Transform = None
) -> PairedImages:
    check_spec(name, retrieval=True)
    return RETRIEVAL_DATASETS[name](cache_dir, preprocess)


if __name__ == "__main__":
    from train.eval_wds import main

    raise SystemExit(main())
