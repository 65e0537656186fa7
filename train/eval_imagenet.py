"""ImageNet-1k validation as people keep it on disk (``imagenet:ROOT``), scored the way
papers report it: over all 1,000 classes, with the standard class names and CLIP's 80
prompts that open_clip ships (`open_clip.zero_shot_metadata`), whatever ``--templates``
says for the other sets.

The layout is the synset-folder one (ROOT/n01440764/ILSVRC2012_val_00000293.JPEG, or the
same under ROOT/val/): a folder's synset id gives the label, its position in ImageNet-1k's
sorted synset list (timm's copy of it, `timm.data.ImageNetInfo`, installed with open_clip).
A folder that is not an ImageNet-1k synset is an error: the label of its images would be a
guess. Classes whose folder is absent still compete in the zero-shot classifier (a partial
copy scores against the same 1,000 prompts), and the set's ``info`` counts them.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError

from .eval_data import LabelledImages, Transform, open_rgb


def imagenet_synsets() -> list[str]:
    """ImageNet-1k's 1,000 synset ids in label order."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompts as ``{c}`` format strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES)


def imagenet_folder(root: str | Path, transform: Transform = None) -> LabelledImages:
    """The validation images under ROOT (see the module docstring) as a `LabelledImages`."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    base = Path(root)
    if (base / "val").is_dir():
        base = base / "val"
    if not base.is_dir():
        raise InputError(f"{root}: folder not found (imagenet:ROOT reads ROOT/n01440764/*.JPEG ...)")
    folders = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not folders:
        raise InputError(f"{base}: no synset folders (imagenet:ROOT reads ROOT/n01440764/*.JPEG ...)")
    label_of = {s: i for i, s in enumerate(imagenet_synsets())}
    unknown = [f for f in folders if f not in label_of]
    if unknown:
        raise InputError(
            f"{base / unknown[0]}: not an ImageNet-1k synset id ({len(unknown)} such folder(s) under {base})"
        )
    samples = make_dataset(str(base), {f: label_of[f] for f in folders}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise InputError(f"{base}: no images in its {len(folders)} synset folders")
    paths = [p for p, _ in samples]
    ds = LabelledImages(
        f"imagenet:{root}",
        list(IMAGENET_CLASSNAMES),
        [label for _, label in samples],
        lambda i: open_rgb(paths[i]),
        transform,
        {"format": "imagenet synset folders", "root": str(base), "classes_present": len(folders)},
    )
    ds.paths = paths
    ds.templates = imagenet_templates()
    return ds
