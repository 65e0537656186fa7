"""train/eval_imagenet.py: ImageNet-1k validation in synset folders (imagenet:ROOT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import InputError
from train.eval_data import load_dataset
from train.eval_imagenet import imagenet_synsets, imagenet_templates

# real synset ids: the first two labels (tench, goldfish) and the last (toilet tissue)
PRESENT = {"n01440764": 2, "n01443537": 1, "n15075141": 3}


def imagenet_tree(root: Path) -> Path:
    for synset, n in PRESENT.items():
        (root / synset).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (10 + i, 8), (i * 40, 0, 0)).save(root / synset / f"ILSVRC2012_val_{synset}_{i}.JPEG")
    return root


def test_synset_list_names_and_prompts_are_the_standard_ones():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 == len(set(synsets)) and synsets == sorted(synsets)
    templates = imagenet_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {c}." and all("{c}" in t for t in templates)


@pytest.mark.parametrize("under_val", [False, True])
def test_folders_are_labelled_by_their_synset(tmp_path, under_val):
    imagenet_tree(tmp_path / "in" / "val" if under_val else tmp_path / "in")
    ds = load_dataset(f"imagenet:{tmp_path / 'in'}")
    assert len(ds.classnames) == 1000 and ds.classnames[:2] == ["tench", "goldfish"]
    assert ds.classnames[999] == "toilet paper"
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 999, 999, 999]
    assert ds.info["classes_present"] == 3 and len(ds.templates) == 80
    assert ds.image(0).size in {(10, 8), (11, 8)}


def test_an_unknown_synset_or_no_images_is_an_input_error(tmp_path):
    root = imagenet_tree(tmp_path / "in")
    (root / "n99999999").mkdir()
    with pytest.raises(InputError, match=r"n99999999: not an ImageNet-1k synset id \(1 such folder"):
        load_dataset(f"imagenet:{root}")
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    with pytest.raises(InputError, match="no images in its 1 synset folders"):
        load_dataset(f"imagenet:{tmp_path / 'empty'}")
    with pytest.raises(InputError, match="folder not found"):
        load_dataset(f"imagenet:{tmp_path / 'nowhere'}")
