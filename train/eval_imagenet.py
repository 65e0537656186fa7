"""ImageNet-1k validation and its distribution shifts as people keep them on disk, scored
the way papers report them: with the standard class names and CLIP's 80 prompts that
open_clip ships (`open_clip.zero_shot_metadata`), whatever ``--templates`` says for the
other sets.

``imagenet:ROOT``           ImageNet-1k validation, over all 1,000 classes, in either layout:
                            synset folders (ROOT/n01440764/ILSVRC2012_val_00000293.JPEG, or
                            under ROOT/val/), or the flat folder of ILSVRC2012_val_*.JPEG with
                            its ground truth beside it: Kaggle's ``LOC_val_solution.csv`` or
                            the devkit (``ILSVRC2012_devkit_t12/`` or its ``.tar.gz``), in
                            ROOT or its parent
``imagenet-sketch:ROOT``    ImageNet-Sketch: synset folders (ROOT/sketch/n01440764/...), 1,000
``imagenet-v2:ROOT``        ImageNetV2: folders named by class index (ROOT/0 ... ROOT/999, or
                            under ROOT/imagenetv2-matched-frequency-format-val/), 1,000
``imagenet-a:ROOT``,        ImageNet-A / -R: synset folders, scored over their 200-class
``imagenet-r:ROOT``         subsets (the synset lists timm ships), as CLIP_benchmark does
``objectnet:ROOT``          ObjectNet as its zip unpacks (ROOT/objectnet-1.0/images/<folder>/,
                            ROOT/objectnet-1.0/mappings/ or ROOT/mappings/): its 113 classes
                            that ImageNet-1k shares (objectnet_to_imagenet_1k.json), named by
                            ObjectNet's labels (folder_to_objectnet_label.json), lower case, as
                            CLIP_benchmark scores it; images of its other classes are skipped
                            and counted

A synset's label is its position in ImageNet-1k's sorted synset list (timm's copy,
installed with open_clip), or in the variant's subset. A folder that is not one of the
set's synsets is an error: its images' label would be a guess. Classes whose folder is
absent still compete in the classifier (a partial copy scores against the same prompts),
and ``info`` counts the classes present.
"""

from __future__ import annotations

import csv
import io
import pkgutil
import re
import tarfile
from pathlib import Path

from pipeline.errors import InputError, one_line

from .eval_data import LabelledImages, Transform, open_rgb

VARIANTS = ("imagenet", "imagenet-sketch", "imagenet-v2", "imagenet-a", "imagenet-r", "objectnet")
SUBSET_FILES = {"imagenet-a": "imagenet_a_synsets.txt", "imagenet-r": "imagenet_r_synsets.txt"}
FLAT_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
DEVKIT = "ILSVRC2012_devkit_t12"
SOLUTION = "LOC_val_solution.csv"
SUBFOLDER = {"imagenet": "val", "imagenet-sketch": "sketch", "imagenet-v2": "imagenetv2-matched-frequency-format-val"}


def _timm_synsets(filename: str) -> list[str]:
    data = pkgutil.get_data("timm.data", f"_info/{filename}")
    if data is None:  # pragma: no cover - timm's package data
        raise RuntimeError(f"timm ships no {filename}")
    return data.decode("utf-8").split()


def imagenet_synsets() -> list[str]:
    """ImageNet-1k's 1,000 synset ids in label order."""
    return _timm_synsets("imagenet_synsets.txt")


def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompts as ``{c}`` format strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES)


def imagenet_folder(root: str | Path, transform: Transform = None, variant: str = "imagenet") -> LabelledImages:
    """The images of `variant` under ROOT (see the module docstring) as a `LabelledImages`."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if variant not in VARIANTS:
        raise ValueError(f"unknown ImageNet variant {variant!r}")
    if variant == "objectnet":
        return objectnet_folder(root, transform)
    base = Path(root)
    sub = SUBFOLDER.get(variant)
    if sub and (base / sub).is_dir():
        base = base / sub
    if not base.is_dir():
        raise InputError(f"{root}: folder not found ({variant}:ROOT; see python -m train.evaluate --help)")
    synsets = imagenet_synsets()
    names = list(IMAGENET_CLASSNAMES)
    if variant in SUBSET_FILES:  # the 200-class subsets: their names, in ImageNet's order
        subset = _timm_synsets(SUBSET_FILES[variant])
        index = {s: i for i, s in enumerate(synsets)}
        names, synsets = [names[index[s]] for s in subset], subset
    folders = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name != DEVKIT)
    if variant == "imagenet-v2":
        label_of = {str(i): i for i in range(1000)}
        what = "an ImageNetV2 class folder (0 ... 999)"
    else:
        label_of = {s: i for i, s in enumerate(synsets)}
        what = (
            f"one of {variant}'s {len(synsets)} synset ids" if variant in SUBSET_FILES else "an ImageNet-1k synset id"
        )
    if not folders and variant == "imagenet":
        return _flat_val(root, base, names, synsets, transform)
    if not folders:
        raise InputError(f"{base}: no class folders ({variant}:ROOT reads ROOT/<class>/<images>)")
    unknown = [f for f in folders if f not in label_of]
    if unknown:
        raise InputError(f"{base / unknown[0]}: not {what} ({len(unknown)} such folder(s) under {base})")
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = make_dataset(str(base), {f: label_of[f] for f in folders}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        kind = "class" if variant == "imagenet-v2" else "synset"
        raise InputError(f"{base}: no images in its {len(folders)} {kind} folders")
    info = {"format": f"{variant} class folders", "root": str(base), "classes_present": len(folders)}
    return _labelled(f"{variant}:{root}", names, [p for p, _ in samples], [lab for _, lab in samples], transform, info)


def _labelled(name, classnames, paths, labels, transform, info) -> LabelledImages:
    ds = LabelledImages(name, classnames, labels, lambda i: open_rgb(paths[i]), transform, info)
    ds.paths = paths
    ds.templates = imagenet_templates()
    return ds


def _flat_val(root, base: Path, names, synsets, transform) -> LabelledImages:
    """ILSVRC2012_val_NNNNNNNN.JPEG in one folder, labelled by the ground truth beside it."""
    images = sorted(p for p in base.iterdir() if p.is_file() and FLAT_NAME.match(p.name))
    if not images:
        raise InputError(f"{base}: no synset folders and no ILSVRC2012_val_*.JPEG (imagenet:ROOT)")
    truth, source = _ground_truth(base)
    label_of = {s: i for i, s in enumerate(synsets)}
    labels = []
    for p in images:
        number = int(FLAT_NAME.match(p.name).group(1))  # type: ignore[union-attr]
        synset = truth.get(number)
        if synset is None:
            raise InputError(f"{p}: no ground truth for it in {source}")
        if synset not in label_of:
            raise InputError(f"{source}: image {number}: {synset!r} is not an ImageNet-1k synset id")
        labels.append(label_of[synset])
    info = {
        "format": "imagenet flat val",
        "root": str(base),
        "ground_truth": str(source),
        "classes_present": len(set(labels)),
    }
    return _labelled(f"imagenet:{root}", names, [str(p) for p in images], labels, transform, info)


def _ground_truth(base: Path) -> tuple[dict[int, str], Path]:
    """{image number: synset} from LOC_val_solution.csv or the devkit, in ROOT or its parent."""
    for folder in (base, base.parent):
        if (folder / SOLUTION).is_file():
            return _solution_csv(folder / SOLUTION), folder / SOLUTION
        if (folder / DEVKIT / "data").is_dir():
            data = folder / DEVKIT / "data"
            return _devkit(
                (data / "meta.mat").read_bytes(),
                (data / "ILSVRC2012_validation_ground_truth.txt").read_text(),
                data,
            ), data
        if (folder / f"{DEVKIT}.tar.gz").is_file():
            path = folder / f"{DEVKIT}.tar.gz"
            try:
                with tarfile.open(path) as tar:
                    meta = tar.extractfile(f"{DEVKIT}/data/meta.mat")
                    gt = tar.extractfile(f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt")
                    if meta is None or gt is None:
                        raise KeyError("meta.mat or the ground truth")
                    return _devkit(meta.read(), gt.read().decode(), path), path
            except (tarfile.TarError, KeyError, OSError) as e:
                raise InputError(f"{path}: not a readable devkit ({one_line(e)})") from None
    raise InputError(
        f"{base}: a flat val folder needs its ground truth beside it ({SOLUTION}, {DEVKIT}/ or "
        f"{DEVKIT}.tar.gz, in it or its parent)"
    )


def _solution_csv(path: Path) -> dict[int, str]:
    """Kaggle's LOC_val_solution.csv: ImageId, PredictionString (its first word the synset)."""
    truth = {}
    with path.open(newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=2):
            m = FLAT_NAME.match(f"{row.get('ImageId', '')}.JPEG")
            words = (row.get("PredictionString") or "").split()
            if not m or not words:
                raise InputError(f"{path}: row {row_no}: expected ImageId ILSVRC2012_val_NNNNNNNN and a synset")
            truth[int(m.group(1))] = words[0]
    return truth


def _devkit(meta_mat: bytes, ground_truth: str, shown: Path) -> dict[int, str]:
    """The devkit's ground truth (one ILSVRC2012_ID a line, image 1 first) through meta.mat's
    synsets (ILSVRC2012_ID -> WNID), read with scipy as torchvision's ImageNet does."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
        wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in ground_truth.split()]
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"{shown}: not a readable devkit ({one_line(e)})") from None
    unknown = [i for i in ids if i not in wnid]
    if unknown:
        raise InputError(f"{shown}: ground truth names ILSVRC2012_ID {unknown[0]}, not in meta.mat")
    return {number: wnid[i] for number, i in enumerate(ids, start=1)}


def objectnet_folder(root: str | Path, transform: Transform = None) -> LabelledImages:
    """ObjectNet's images in the classes it shares with ImageNet-1k (see the module docstring)."""
    import json

    base = Path(root)
    if (base / "objectnet-1.0").is_dir():
        base = base / "objectnet-1.0"
    mappings = next(
        (m for m in (base / "mappings", base, Path(root)) if (m / "folder_to_objectnet_label.json").is_file()), None
    )
    images = base / "images"
    if mappings is None or not images.is_dir():
        raise InputError(
            f"{root}: not ObjectNet as its zip unpacks (objectnet-1.0/images/ and mappings/folder_to_objectnet_label.json)"
        )
    try:
        folder_label = json.loads((mappings / "folder_to_objectnet_label.json").read_text())
        shared = json.loads((mappings / "objectnet_to_imagenet_1k.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{mappings}: unreadable ObjectNet mappings ({one_line(e)})") from None
    folders = sorted(f for f, label in folder_label.items() if label in shared)
    if not folders:
        raise InputError(f"{mappings}: no ObjectNet class is mapped to ImageNet-1k")
    label_of = {f: i for i, f in enumerate(folders)}
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    paths, labels, other = [], [], 0
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        if d.name not in folder_label:
            raise InputError(f"{d}: not an ObjectNet class folder (not in folder_to_objectnet_label.json)")
        found = sorted(str(p) for p in d.iterdir() if has_file_allowed_extension(p.name, IMG_EXTENSIONS))
        if d.name not in label_of:
            other += len(found)
            continue
        paths += found
        labels += [label_of[d.name]] * len(found)
    if not paths:
        raise InputError(f"{images}: no images in ObjectNet's {len(folders)} classes shared with ImageNet-1k")
    names = [folder_label[f].lower() for f in folders]
    info = {
        "format": "objectnet",
        "root": str(base),
        "classes_present": len(set(labels)),
        "skipped": {"images of classes ImageNet-1k lacks": other},
    }
    return _labelled(f"objectnet:{root}", names, paths, labels, transform, info)
