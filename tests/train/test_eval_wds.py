"""train/eval_wds.py: evaluation sets in CLIP_benchmark's webdataset layout (wds:ROOT), and
the export of our sets to it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError
from tests.conftest import assert_one_line_error
from tests.support.evalsets import to_png, write_set
from tests.support.s3server import moto_s3
from tests.support.trainer import ENV, ROOT
from train.eval_data import LabelledImages, load_dataset, sklearn_digits
from train.eval_wds import export_wds, wds_classification, wds_retrieval
from train.zeroshot import captioned_recall, retrieval_recall


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


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
            "a retrieval set; wds:ROOT in --datasets reads classification",
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
        # images read in order come out of one open shard (and its read-ahead blocks), not a
        # request each: a 2,000-image set read from moto took 45.6 s opened per image, 0.41 s so
        reader = remote._load
        remote.image(0)
        first = reader._open[1]
        assert all(remote.image(i) is not None and reader._open[1] is first for i in range(1, 25))
        remote.image(25)
        assert reader._open[0] == 1 and first.closed
        with pytest.raises(InputError, match="s3://evalsets/missing/test/nshards.txt: missing"):
            load_dataset("wds:s3://evalsets/missing")


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.eval_data", *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # the export CLI end to end: out of `make test-fast`
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
    """A set and its export hold the same pixels, labels, names and prompts: the same scores
    (the trained run's 6-image imagefolder here; digits' export is compared image by image in
    test_an_exported_set_reads_back_the_same_images_labels_and_names)."""
    folder = f"imagefolder:{trained_run.imagefolder}"
    assert export_cli("export", folder, "--out", str(tmp_path / "d")).returncode == 0
    digits = digits_subset(40)
    captioned = [
        (
            f"s{i}",
            {"png": to_png(digits.image(i)), "txt": f"the digit {digits.labels[i]}\na {digits.labels[i]}\n".encode()},
        )
        for i in range(40)
    ]
    write_set(tmp_path / "r", [captioned[:25], captioned[25:]])
    (tmp_path / "r" / "dataset_type.txt").write_text("retrieval\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.evaluate",
            "--checkpoint",
            str(trained_run.run),
            "--datasets",
            folder,
            f"wds:{tmp_path / 'd'}",
            "--retrieval",
            f"wds:{tmp_path / 'r'}",
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
    full = json.loads((tmp_path / "eval" / "eval" / "final.json").read_text())
    rec = full["retrieval"][f"wds:{tmp_path / 'r'}"]
    assert rec["n"] == 40 and rec["n_texts"] == 80 and rec["info"]["shards"] == 2
    assert all(
        0 <= rec[f"{name}@{k}"] <= 1 for name in ("image_retrieval_recall", "text_retrieval_recall") for k in (1, 5, 10)
    )
    assert f"retrieval wds:{tmp_path / 'r'}: image->text R@1/5/10" in res.stderr
    result = full["datasets"]
    ours, theirs = result[folder], result[f"wds:{tmp_path / 'd'}"]
    assert theirs["templates"] == "the set's own" and theirs["n_templates"] == 80
    assert theirs["n"] == 6 and theirs["classnames"] == ["cat", "dog"]
    for key in ("top1", "acc1", "mean_per_class_top1", "per_class_top1", "n", "classnames"):
        assert ours[key] == theirs[key], key


def test_a_retrieval_set_keeps_every_caption_of_an_image(tmp_path):
    root = write_set(
        tmp_path / "r",
        [
            [("a", {"png": png("red"), "txt": b"a red square\na red thing\n"}), ("b", {"png": png("blue")})],
            [("c", {"jpg": png("green"), "txt": b"green\n\n"}), ("d", {"png": png("white"), "txt": b"\n"})],
        ],
    )
    (root / "dataset_type.txt").write_text("retrieval\n")
    ds = wds_retrieval(str(root))
    assert ds.captions == [["a red square", "a red thing"], ["green"]]
    assert ds.info["n"] == 2 and ds.info["n_texts"] == 3 and ds.info["skipped"] == {"empty txt": 1, "no txt": 1}
    image, index = ds[1]
    assert index == 1 and image.getpixel((0, 0)) == (0, 128, 0)
    with pytest.raises(InputError, match="a retrieval set; wds:ROOT in --datasets reads classification sets"):
        wds_classification(str(root))


def brute_force_recall(img, txt, owner, k):
    """Per caption / per image, straight from the similarity matrix (ties against the model)."""
    s = img @ txt.T  # [images, texts]
    t2i = [int((s[:, t] >= s[owner[t], t]).sum()) - 1 < k for t in range(len(owner))]
    i2t = []
    for i in range(len(img)):
        mine = [t for t in range(len(owner)) if owner[t] == i]
        best = max(s[i, t] for t in mine)
        i2t.append(sum(1 for t in range(len(owner)) if owner[t] != i and s[i, t] >= best) < k)
    return float(np.mean(i2t)), float(np.mean(t2i))


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_captioned_recall_equals_the_brute_force_count(chunk):
    import torch

    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen), dim=-1)
    owner = [0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 6]
    txt = torch.nn.functional.normalize(img[owner] + 0.8 * torch.randn(len(owner), 4, generator=gen), dim=-1)
    txt[1] = txt[0]  # a tie between an image's own captions does not count against it
    got = captioned_recall(img, txt, owner, ks=(1, 2, 5), chunk=chunk)
    for k in (1, 2, 5):
        i2t, t2i = brute_force_recall(img.numpy(), txt.numpy(), owner, k)
        assert (
            got[f"image_to_text_R@{k}"] == pytest.approx(i2t)
            and got[f"text_retrieval_recall@{k}"] == got[f"image_to_text_R@{k}"]
        )
        assert (
            got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
            and got[f"image_retrieval_recall@{k}"] == got[f"text_to_image_R@{k}"]
        )
    assert got["n"] == 7 and got["n_texts"] == 11 and got["chance_R@1"] == pytest.approx(1 / 7)


def test_with_one_caption_each_it_is_the_paired_recall():
    import torch

    gen = torch.Generator().manual_seed(1)
    img, txt = torch.randn(20, 8, generator=gen), torch.randn(20, 8, generator=gen)
    paired = retrieval_recall(img, txt)
    got = captioned_recall(img, txt, list(range(20)))
    assert {k: v for k, v in got.items() if k in paired} == paired
