"""train/eval_wds.py: evaluation sets in CLIP_benchmark's webdataset layout (wds:ROOT), and
the export of our sets to it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError
from tests.conftest import assert_one_line_error
from tests.support.s3server import moto_s3
from tests.support.trainer import ENV, ROOT
from train.eval_data import LabelledImages, load_dataset, sklearn_digits
from train.eval_wds import export_wds, wds_classification


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_set(root: Path, shards: list[list[tuple[str, dict[str, bytes]]]], classnames=None, templates=None) -> Path:
    """A set in the layout, member by member: shards[i] = [(key, {ext: bytes}), ...]."""
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
    return root


def digits_subset(n: int = 300) -> LabelledImages:
    d = sklearn_digits()
    return LabelledImages("digits", d.classnames, d.labels[:n], d.image)


def test_an_exported_set_reads_back_the_same_images_labels_and_names(tmp_path):
    ds = digits_subset()
    export_wds(ds, tmp_path / "wds", samples_per_shard=128, templates=["a photo of the digit {c}.", "{c}"])
    assert (tmp_path / "wds" / "test" / "nshards.txt").read_text() == "3\n"
    back = load_dataset(f"wds:{tmp_path / 'wds'}")
    assert back.classnames == ds.classnames and back.labels.tolist() == ds.labels.tolist()
    assert back.templates == ("a photo of the digit {c}.", "{c}")
    assert back.info["shards"] == 3 and back.info["skipped"] == {}
    for i in (0, 127, 128, 299):
        assert np.array_equal(np.asarray(back.image(i)), np.asarray(ds.image(i))), i


def test_samples_are_grouped_by_key_and_incomplete_ones_counted(tmp_path):
    root = write_set(
        tmp_path / "s",
        [
            [
                ("a", {"jpg": png("red"), "webp": png("blue"), "cls": b"1"}),  # webp first, as CLIP_benchmark
                ("b", {"png": png("green")}),  # no label
                ("c", {"cls": b"0"}),  # no image
                ("d", {"png": png("white"), "cls": b" 2\n"}),
            ],
            [("e", {"jpeg": png("black"), "cls": b"0", "json": b"{}"})],
        ],
        classnames=["zero", "one", "two"],
    )
    ds = wds_classification(str(root))
    assert ds.labels.tolist() == [1, 2, 0]
    assert ds.info["skipped"] == {"no cls": 1, "no image": 1}
    assert ds.image(0).getpixel((0, 0)) == (0, 0, 255)
    assert ds.image(2).getpixel((0, 0)) == (0, 0, 0)
    assert not hasattr(ds, "templates") or not ds.templates


@pytest.mark.parametrize(
    "breakage, message",
    [
        (
            lambda r: (r / "test" / "nshards.txt").unlink(),
            "test/nshards.txt: missing (CLIP_benchmark's webdataset layout",
        ),
        (lambda r: (r / "test" / "nshards.txt").write_text("two"), "nshards.txt: not a positive number of shards"),
        (lambda r: (r / "test" / "nshards.txt").write_text("2"), "test/1.tar: missing (its nshards.txt counts it)"),
        (lambda r: (r / "classnames.txt").unlink(), "classnames.txt: missing"),
        (lambda r: (r / "classnames.txt").write_text("zero\none\n"), "has label 2, but classnames.txt names 2 classes"),
        (
            lambda r: (r / "dataset_type.txt").write_text("retrieval\n"),
            "a retrieval set; wds:ROOT reads classification",
        ),
        (lambda r: (r / "zeroshot_classification_templates.txt").write_text("a {}\n"), "a template without {c}"),
        (lambda r: (r / "test" / "0.tar").write_bytes(b"not a tar" * 100), "test/0.tar: not a readable tar"),
    ],
    ids=[
        "no-nshards",
        "bad-nshards",
        "missing-shard",
        "no-classnames",
        "label-out-of-range",
        "retrieval",
        "template",
        "tar",
    ],
)
def test_bad_layouts_are_one_line_input_errors(tmp_path, breakage, message):
    root = write_set(tmp_path / "s", [[("a", {"png": png("red"), "cls": b"2"})]], classnames=["zero", "one", "two"])
    breakage(root)
    with pytest.raises(InputError) as err:
        wds_classification(str(root))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_cls_that_is_not_a_number_names_the_shard_and_sample(tmp_path):
    root = write_set(tmp_path / "s", [[("k7", {"png": png("red"), "cls": b"cat"})]], classnames=["cat"])
    with pytest.raises(InputError, match=r"test/0.tar: sample 'k7' has a cls that is not an integer"):
        wds_classification(str(root))


def test_the_set_reads_the_same_from_s3(tmp_path):
    local = export_wds(digits_subset(60), tmp_path / "wds", samples_per_shard=25, templates=["{c}"])
    with moto_s3() as s3:
        s3.make_bucket("evalsets")
        fs = s3.filesystem()
        for p in sorted(local.rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"evalsets/digits/{p.relative_to(local)}")
        remote = load_dataset("wds:s3://evalsets/digits")
        ref = load_dataset(f"wds:{local}")
        assert remote.labels.tolist() == ref.labels.tolist() and remote.templates == ref.templates
        assert all(np.array_equal(np.asarray(remote.image(i)), np.asarray(ref.image(i))) for i in (0, 24, 25, 59))
        with pytest.raises(InputError, match="s3://evalsets/missing/test/nshards.txt: missing"):
            load_dataset("wds:s3://evalsets/missing")


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.eval_data", *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_export_cli_writes_the_layout_and_refuses_a_used_folder(tmp_path):
    res = export_cli("export", "digits", "--out", str(tmp_path / "d"), "--samples-per-shard", "1000")
    assert res.returncode == 0, res.stderr
    assert "digits: 1797 images, 10 classes" in res.stdout
    assert (tmp_path / "d" / "test" / "nshards.txt").read_text() == "2\n"
    templates = (tmp_path / "d" / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {c}."
    assert (tmp_path / "d" / "classnames.txt").read_text().splitlines() == [str(i) for i in range(10)]
    assert_one_line_error(
        export_cli("export", "digits", "--out", str(tmp_path / "d")), "exists and is not an empty folder"
    )
    assert_one_line_error(export_cli("export", "no-such-set", "--out", str(tmp_path / "e")), "unknown dataset")


@pytest.mark.slow
def test_evaluate_scores_an_exported_set_as_the_set_itself(trained_run, tmp_path):
    """digits and its export hold the same pixels, labels, names and prompts: the same scores."""
    assert export_cli("export", "digits", "--out", str(tmp_path / "d")).returncode == 0
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.evaluate",
            "--checkpoint",
            str(trained_run.run),
            "--datasets",
            "digits",
            f"wds:{tmp_path / 'd'}",
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "eval" / "final.json").read_text())["datasets"]
    ours, theirs = result["digits"], result[f"wds:{tmp_path / 'd'}"]
    assert theirs["templates"] == "the set's own" and theirs["n_templates"] == 80
    for key in ("top1", "top5", "mean_per_class_top1", "per_class_top1", "n", "classnames"):
        assert ours[key] == theirs[key], key
