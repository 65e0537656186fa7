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


# -- the flat val folder with its ground truth, and the distribution shifts --------------

FLAT_TRUTH = ["n01443537", "n15075141", "n01440764", "n15075141"]  # images 1..4


def flat_val(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(1, len(FLAT_TRUTH) + 1):
        Image.new("RGB", (9, 7), (i * 50, 0, 0)).save(root / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root


def devkit(folder: Path, packed: bool) -> None:
    """A devkit whose ILSVRC2012_IDs are not the label order (as the real one's are not)."""
    import io
    import tarfile

    import numpy as np
    import scipy.io

    ids = {"n15075141": 1, "n01440764": 2, "n01443537": 3}
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array([(i, w, w, "", 0) for w, i in ids.items()], dtype=fields)
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{ids[w]}\n" for w in FLAT_TRUTH).encode()
    files = {"data/meta.mat": meta.getvalue(), "data/ILSVRC2012_validation_ground_truth.txt": truth}
    if packed:
        with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            (folder / "ILSVRC2012_devkit_t12" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "ILSVRC2012_devkit_t12" / name).write_bytes(data)


@pytest.mark.parametrize("truth", ["kaggle csv", "devkit folder", "devkit tar.gz"])
def test_a_flat_val_folder_is_labelled_by_its_ground_truth(tmp_path, truth):
    flat_val(tmp_path / "ILSVRC" / "val")
    beside = tmp_path / "ILSVRC"  # the ground truth one level up, as the archives unpack
    if truth == "kaggle csv":
        (beside / "LOC_val_solution.csv").write_text(
            "ImageId,PredictionString\n"
            + "".join(f"ILSVRC2012_val_{i:08d},{w} 1 2 3 4 {w} 5 6 7 8\n" for i, w in enumerate(FLAT_TRUTH, 1))
        )
    else:
        devkit(beside, packed=truth == "devkit tar.gz")
    ds = load_dataset(f"imagenet:{beside}")
    label = {s: i for i, s in enumerate(imagenet_synsets())}
    assert ds.labels.tolist() == [label[w] for w in FLAT_TRUTH] == [1, 999, 0, 999]
    assert ds.info["format"] == "imagenet flat val" and ds.info["classes_present"] == 3
    assert len(ds.classnames) == 1000 and len(ds.templates) == 80
    assert ds.image(1).size == (9, 7)


def test_a_flat_val_folder_without_or_with_bad_ground_truth_is_an_input_error(tmp_path):
    root = flat_val(tmp_path / "val")
    with pytest.raises(InputError, match="a flat val folder needs its ground truth beside it"):
        load_dataset(f"imagenet:{root}")
    csv_path = root / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n")
    with pytest.raises(InputError, match="ILSVRC2012_val_00000002.JPEG: no ground truth for it in"):
        load_dataset(f"imagenet:{root}")
    csv_path.write_text(
        "ImageId,PredictionString\n" + "".join(f"ILSVRC2012_val_{i:08d},n99999999 1\n" for i in range(1, 5))
    )
    with pytest.raises(InputError, match="image 1: 'n99999999' is not an ImageNet-1k synset id"):
        load_dataset(f"imagenet:{root}")


def synset_tree(root: Path, folders: list[str]) -> Path:
    for j, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (j * 30, 90, 0)).save(root / name / f"{j}.jpg")
    return root


@pytest.mark.parametrize(
    "variant, subset_file", [("imagenet-a", "imagenet_a_synsets.txt"), ("imagenet-r", "imagenet_r_synsets.txt")]
)
def test_imagenet_a_and_r_score_over_their_200_classes(tmp_path, variant, subset_file):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from train.eval_imagenet import _timm_synsets

    subset = _timm_synsets(subset_file)
    assert len(subset) == 200 and subset == sorted(subset)
    root = synset_tree(tmp_path / variant, [subset[0], subset[-1]])
    ds = load_dataset(f"{variant}:{root}")
    full = imagenet_synsets()
    assert ds.classnames == [IMAGENET_CLASSNAMES[full.index(s)] for s in subset]
    assert sorted(ds.labels.tolist()) == [0, 199] and ds.info["classes_present"] == 2
    outside = next(s for s in full if s not in subset)
    (root / outside).mkdir()
    with pytest.raises(InputError, match=rf"{outside}: not one of {variant}'s 200 synset ids"):
        load_dataset(f"{variant}:{root}")


def test_imagenet_v2_and_sketch_folders(tmp_path):
    v2 = synset_tree(tmp_path / "v2" / "imagenetv2-matched-frequency-format-val", ["0", "999", "5"])
    ds = load_dataset(f"imagenet-v2:{tmp_path / 'v2'}")
    assert sorted(ds.labels.tolist()) == [0, 5, 999] and len(ds.classnames) == 1000
    (v2 / "1000").mkdir()
    with pytest.raises(InputError, match=r"1000: not an ImageNetV2 class folder \(0 ... 999\)"):
        load_dataset(f"imagenet-v2:{tmp_path / 'v2'}")
    synset_tree(tmp_path / "sk" / "sketch", ["n01440764", "n15075141"])
    sketch = load_dataset(f"imagenet-sketch:{tmp_path / 'sk'}")
    assert sorted(sketch.labels.tolist()) == [0, 999] and len(sketch.templates) == 80


def test_the_suite_finds_imagenet_and_its_shifts_in_their_own_layouts(tmp_path):
    from train import eval_suite
    from train.eval_imagenet import _timm_synsets

    synset_tree(tmp_path / "imagenet" / "val", ["n01440764"])
    synset_tree(tmp_path / "imagenet-a", [_timm_synsets("imagenet_a_synsets.txt")[0]])
    synset_tree(tmp_path / "imagenetv2", ["3"])
    todo, skipped = eval_suite.plan(eval_suite.read_tasklist(), str(tmp_path))
    assert [(t.key, spec) for t, spec in todo] == [
        ("imagenet1k", f"imagenet:{tmp_path}/imagenet"),
        ("imagenetv2", f"imagenet-v2:{tmp_path}/imagenetv2"),
        ("imagenet-a", f"imagenet-a:{tmp_path}/imagenet-a"),
    ]
    assert skipped["imagenet-r"] == f"missing: no wds_imagenet-r_test or imagenet-r under {tmp_path}"


def test_objectnet_keeps_the_classes_it_shares_with_imagenet(tmp_path):
    import json

    base = tmp_path / "objectnet-1.0"
    (base / "mappings").mkdir(parents=True)
    folder_label = {"air_freshener": "Air freshener", "banana": "Banana", "alarm_clock": "Alarm clock"}
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(folder_label))
    shared = {"Banana": "banana", "Alarm clock": "analog clock; digital clock"}  # no air freshener in ImageNet
    (base / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps(shared))
    synset_tree(base / "images", ["air_freshener", "alarm_clock", "banana"])
    Image.new("RGB", (8, 8)).save(base / "images" / "banana" / "second.png")
    ds = load_dataset(f"objectnet:{tmp_path}")
    assert ds.classnames == ["alarm clock", "banana"]  # by folder name, ObjectNet's labels in lower case
    assert sorted(ds.labels.tolist()) == [0, 1, 1] and len(ds.templates) == 80
    assert ds.info["skipped"] == {"images of classes ImageNet-1k lacks": 1}
    (base / "images" / "spaceship").mkdir()
    with pytest.raises(InputError, match="spaceship: not an ObjectNet class folder"):
        load_dataset(f"objectnet:{tmp_path}")
    with pytest.raises(InputError, match="not ObjectNet as its zip unpacks"):
        load_dataset(f"objectnet:{tmp_path / 'images'}")
