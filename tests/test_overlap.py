"""Train-test overlap (`train.overlap`) and `pipeline decontaminate`, on real images.

Planted duplicates: a webdataset shard holding copies of held-in digits and openclipart
images (a lossless PNG, a JPEG at quality 75, scaled 0.5x and 2x, cropped by 2% and 3% a
side) and non-duplicates (other images of the same classes, animal-mnist silhouettes);
the scan with a randomly initialised tiny-ViT-64 at the default thresholds must find the
copies (recall) and nothing else (precision). Also: the multi-index hash against a brute
force search, the statistics against hand-computed numbers, the CLI's one-line errors and
its output, and the decontaminated shards (exactly the matched keys gone, byte-identical on
rerun, readable by webdataset)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT, assert_one_line_error, required_path, run_cli

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
COPIES = ("png", "jpeg75", "half", "double", "crop2", "crop3")


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.Resampling.BICUBIC
    )


def copy_bytes(image: Image.Image, how: str) -> tuple[str, bytes]:
    """(extension, encoded bytes) of a copy of `image` made `how`."""
    from train.overlap import cropped

    if how == "png":
        return "png", _png(image)
    if how == "jpeg75":
        return "jpg", _jpeg(image, 75)
    if how in ("half", "double"):
        return "jpg", _jpeg(_scaled(image, 0.5 if how == "half" else 2.0))
    return "jpg", _jpeg(cropped(image, {"crop2": 0.02, "crop3": 0.03}[how]))


def write_shard(path: Path, samples: list[tuple[str, str, bytes]], extra: list[tuple[str, bytes]] = ()) -> None:
    """A webdataset tar: KEY.EXT image, KEY.txt, KEY.json (uid) per sample, then `extra` members."""
    with tarfile.open(path, "w") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o444
            tf.addfile(info, io.BytesIO(data))

        for key, ext, data in samples:
            add(f"{key}.{ext}", data)
            add(f"{key}.txt", f"caption {key}".encode())
            add(f"{key}.json", json.dumps({"uid": f"uid-{key}"}).encode())
        for name, data in extra:
            add(name, data)


# ---------------------------------------------------------------------------------------
# Planted duplicates


@pytest.fixture(scope="module")
def tiny_model():
    """A randomly initialised tiny-ViT-64: (model, tokenizer, preprocess)."""
    import open_clip
    import torch

    from train import model as models

    torch.manual_seed(0)
    models.register_builtin()
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-ViT-64", pretrained=None)
    return model.eval(), open_clip.get_tokenizer("tiny-ViT-64"), preprocess


def _pick(labels: np.ndarray, n_held: int, n_other: int, seed: int, keep=lambda i: True):
    """(held-in indices, other indices of the same classes), disjoint, drawn with `seed`."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(labels)) if keep(int(i))]
    held = order[:n_held]
    classes = set(labels[held].tolist())
    others = [i for i in order[n_held:] if labels[i] in classes][:n_other]
    return held, others


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model):
    """The shard, the evaluation subsets (EvalSets with a random model) and the truth per key."""
    from train import eval_data
    from train.overlap import build_eval_set, fingerprint

    model, tokenizer, preprocess = tiny_model
    digits = eval_data.sklearn_digits()
    clipart = eval_data.openclipart_heldout(required_path("OPENCLIPART_DIR"))
    animals = eval_data.animal_mnist(required_path("ANIMAL_MNIST_DIR"))
    d_held, d_other = _pick(digits.labels, 30, 20, seed=1)
    # openclipart images with a stable phash only: the others are left to the exact and embedding
    # detectors by design (test_unstable_hashes_match_nothing)
    c_held, c_other = _pick(clipart.labels, 20, 20, seed=2, keep=lambda i: fingerprint(clipart.image(i)).phash_ok)
    sets = {
        name: build_eval_set(
            name,
            (ds.image(i) for i in held),
            ds.labels[held],
            ds.classnames,
            model,
            tokenizer,
            preprocess,
            batch_size=64,
        )
        for name, ds, held in (("digits", digits, d_held), ("openclipart", clipart, c_held))
    }
    samples, truth = [], {}
    for name, ds, held, others in (("digits", digits, d_held, d_other), ("openclipart", clipart, c_held, c_other)):
        for j, i in enumerate(held):
            for how in COPIES:
                key = f"{len(samples):08d}"
                samples.append((key, *copy_bytes(ds.image(i), how)))
                truth[key] = (name, j, how)
        for i in others:
            key = f"{len(samples):08d}"
            samples.append((key, "jpg", _jpeg(ds.image(i))))
            truth[key] = None
    for i in range(10):  # another set's images
        key = f"{len(samples):08d}"
        samples.append((key, "jpg", _jpeg(animals.image(i * 997))))
        truth[key] = None
    shard = tmp_path_factory.mktemp("planted") / "00000.tar"
    write_shard(shard, samples, extra=[("99999998.jpg", b"\xff\xd8 not a jpeg"), ("99999999.txt", b"no image")])
    return shard, sets, truth


@pytest.mark.sample
def test_planted_duplicates_found_and_nothing_else(planted, tiny_model):
    from train.overlap import MIN_COSINE, PHASH_MAX_DISTANCE, Matcher, dataset_result, scan_shards

    shard, sets, truth = planted
    model, _, preprocess = tiny_model
    matchers = {name: Matcher(s, PHASH_MAX_DISTANCE[name], MIN_COSINE[name]) for name, s in sets.items()}
    scan = scan_shards([str(shard)], matchers, model, preprocess, batch_size=64, progress=False)
    assert scan.n_images == len(truth) and dict(scan.skipped) == {"bad_image": 1, "missing_image": 1}
    found = {(p["key"], p["dataset"], p["eval_index"]) for p in scan.pairs}
    correct = {f for f in found if truth[f[0]] is not None and truth[f[0]][:2] == f[1:]}
    precision = len(correct) / len(found)
    false_on_non_duplicates = [f for f in found if truth[f[0]] is None]
    print(f"\nplanted: {len(truth)} shard images, {len(found)} pairs found, precision {precision:.3f}")
    for name in sets:
        planted_keys = {k: t for k, t in truth.items() if t is not None and t[0] == name}
        recall = {
            how: np.mean([(k, name, t[1]) in correct for k, t in planted_keys.items() if t[2] == how]) for how in COPIES
        }
        overall = np.mean([(k, name, t[1]) in correct for k, t in planted_keys.items()])
        print(f"  {name}: recall {overall:.3f} ({', '.join(f'{h} {r:.2f}' for h, r in recall.items())})")
        assert overall >= 0.9, (name, recall)
        assert recall["png"] == 1.0 and recall["jpeg75"] >= 0.9
    assert precision == 1.0 and not false_on_non_duplicates, false_on_non_duplicates
    kinds = {p["kind"] for p in scan.pairs if truth[p["key"]][2] == "png"}
    assert kinds == {"exact"}, "a lossless copy is an exact match"
    assert all(p["uid"] == f"uid-{p['key']}" and p["cosine"] is not None for p in scan.pairs)
    digits = dataset_result(sets["digits"], [p for p in scan.pairs if p["dataset"] == "digits"])
    assert digits["all"] == 30 and digits["overlap"] == len(
        {p["eval_index"] for p in scan.pairs if p["dataset"] == "digits"}
    )
    assert digits["by_kind"]["exact"] == 30 and sum(digits["by_kind"].values()) == digits["overlap"]


def test_embedding_detector_keeps_the_best_match_above_the_threshold():
    import torch

    from train.overlap import EvalSet, Fingerprint, Matcher

    emb = torch.eye(3, 4)  # three unit evaluation embeddings
    eval_set = EvalSet(
        "x",
        np.array([0, 1, 1]),
        ["a", "b", "c"],
        np.array([[0, 0], [2**63, 2**63], [7, 7]], dtype=np.uint64),
        np.ones((3, 2), dtype=bool),
        0.5,
        emb,
    )
    shard = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1]]), dim=1)
    fps = [Fingerprint("a", 0, True), Fingerprint("z", 2**62, True), Fingerprint("y", 2**61, True)]
    matches = Matcher(eval_set, 0, 0.7).match(fps, shard)
    got = [(m.pos, m.eval_index, m.kind, m.phash_distance) for m in matches]
    assert got == [(0, 0, "exact", 0), (1, 2, "embedding", int(bin(2**62 ^ 7).count("1")))]
    assert matches[1].cosine == pytest.approx(0.8, abs=1e-6)
    assert [m.kind for m in Matcher(eval_set, 0, None).match(fps, shard)] == ["exact"], "off: no embedding"


def test_unstable_hashes_match_nothing():
    """A blank image and a symmetric line drawing hash to a phash decided by noise: they are
    flagged and never matched by phash, however close their hashes."""
    from PIL import ImageDraw

    from train.overlap import EvalSet, Matcher, fingerprint

    blank = Image.new("RGB", (120, 90), "white")
    star = blank.copy()
    ImageDraw.Draw(star).ellipse((30, 15, 90, 75), outline="black")
    for image in (blank, star):
        fp = fingerprint(image)
        assert not fp.phash_ok
        eval_set = EvalSet(
            "x", np.array([0]), ["-"], np.array([[fp.phash] * 2], dtype=np.uint64), np.array([[False, False]]), 1.0
        )
        other = fingerprint(Image.new("RGB", (60, 60), (250, 250, 250)))
        assert Matcher(eval_set, 8, None).match([other]) == []


def test_fingerprint_is_imagehash_and_pixel_exact():
    import imagehash

    from train import eval_data
    from train.overlap import fingerprint

    ds = eval_data.sklearn_digits()
    image = ds.image(5)
    fp = fingerprint(image)
    assert fp.phash == int(str(imagehash.phash(image)), 16)
    assert fingerprint(Image.open(io.BytesIO(_png(image)))).sha256 == fp.sha256, "same pixels, another file"
    assert fingerprint(image.resize((65, 64))).sha256 != fp.sha256
    rgba = image.convert("RGBA")
    rgba.putpixel((0, 0), (9, 9, 9, 0))  # transparent: white once composited, as the loaders do
    white = image.copy()
    white.putpixel((0, 0), (255, 255, 255))
    assert fingerprint(rgba).sha256 == fingerprint(white).sha256


# ---------------------------------------------------------------------------------------
# Multi-index hashing


def _brute_force(queries, hashes, t):
    d = np.bitwise_count(queries[:, None] ^ hashes[None, :])
    q, h = np.nonzero(d <= t)
    return q, h, d[q, h]


@pytest.mark.parametrize("t", [0, 1, 3, 6, 10, 20])
def test_near_index_equals_brute_force(t):
    from train.overlap import NearIndex

    rng = np.random.default_rng(t)
    hashes = rng.integers(0, 2**64, 3000, dtype=np.uint64, endpoint=False)
    hashes[:500] &= np.uint64(0xFF)  # a crowded corner: many hashes share most blocks
    hashes[500:510] = hashes[0]  # duplicates
    flips = np.zeros(600, dtype=np.uint64)
    for i in range(600):  # near copies: k random bits flipped, k up to 2t+2
        for bit in rng.choice(64, size=rng.integers(0, 2 * t + 3), replace=False):
            flips[i] |= np.uint64(1) << np.uint64(bit)
    queries = np.concatenate(
        [hashes[rng.integers(0, 3000, 600)] ^ flips, rng.integers(0, 2**64, 400, dtype=np.uint64, endpoint=False)]
    )
    got = NearIndex(hashes, t, chunk=97).search(queries)
    want = _brute_force(queries, hashes, t)
    assert len(want[0]) > 250, "the test exercises matches"
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_near_index_bounds():
    from train.overlap import NearIndex

    with pytest.raises(ValueError):
        NearIndex([1, 2], 64)
    q, h, d = NearIndex([], 3).search([5])
    assert len(q) == len(h) == len(d) == 0


# ---------------------------------------------------------------------------------------
# Statistics


def test_overlap_stats_against_hand_computed_numbers():
    from scipy.stats import beta

    from train.overlap import overlap_stats

    # Overlap: 10 images, 9 right; Clean: 10 images, 5 right (accuracy 0.5)
    correct = [1] * 9 + [0] + [1] * 5 + [0] * 5
    is_overlap = [1] * 10 + [0] * 10
    r = overlap_stats(correct, is_overlap, chance=0.1)
    assert (r["all"], r["overlap"], r["clean"], r["overlap_rate"]) == (20, 10, 10, 0.5)
    assert (r["top1_all"], r["top1_overlap"], r["top1_clean"]) == (0.7, 0.9, 0.5)
    assert r["all_minus_clean"] == pytest.approx(0.2) and r["chance_top1"] == 0.1
    tail = sum(math.comb(10, k) for k in (9, 10)) / 2**10  # P(X >= 9), X ~ Binomial(10, 0.5)
    assert r["binomial_p"] == pytest.approx(tail, rel=1e-12) and tail == 11 / 1024
    lo, hi = r["overlap_top1_ci995"]  # Clopper-Pearson, alpha = 0.005
    assert lo == pytest.approx(beta.ppf(0.0025, 9, 2), rel=1e-9)
    assert hi == pytest.approx(beta.ppf(0.9975, 10, 1), rel=1e-9)

    none = overlap_stats([1, 0, 1], [0, 0, 0], chance=0.5)
    assert none["overlap"] == 0 and none["top1_overlap"] is None and none["binomial_p"] is None
    assert none["overlap_top1_ci995"] is None and none["all_minus_clean"] == 0
    every = overlap_stats([0, 0, 1], [1, 1, 1], chance=0.5)
    assert every["clean"] == 0 and every["top1_clean"] is None and every["all_minus_clean"] is None
    assert every["binomial_p"] is None and every["overlap_top1_ci995"][0] == pytest.approx(beta.ppf(0.0025, 1, 3))
    zero = overlap_stats([0, 0, 1, 1], [1, 1, 0, 0], chance=0.5)
    assert zero["overlap_top1_ci995"][0] == 0.0 and zero["binomial_p"] == 1.0


# ---------------------------------------------------------------------------------------
# The CLI


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A randomly initialised tiny-ViT-64 saved as this trainer's checkpoint, trained on nothing."""
    import torch

    from train import checkpoint
    from train import model as models

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "overlap"
    config = json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    net, _, _ = models.create("tiny-ViT-64", config)
    checkpoint.save(
        run / "checkpoints",
        3,
        {
            "format": checkpoint.FORMAT,
            "model": net.state_dict(),
            "optimizer": {},
            "step": 3,
            "rng": [checkpoint.rng_state()],
            "config": {"model": "tiny-ViT-64", "model_config": config, "train_data": [str(run / "missing-*.tar")]},
        },
    )
    return run


def test_help_answers_before_torch_is_imported():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "train.overlap", "--help"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m train.overlap"), res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert len(imported) > 10 and not {"torch", "open_clip", "numpy", "imagehash"} & imported


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--datasets", "nope"], "unknown dataset 'nope'"),
        (["--shards", "/nonexistent/*.tar"], "matches no shard"),
        ([], "missing-*.tar: matches no shard"),  # the checkpoint's own --train-data
        (["--phash-distance", "cifar=3"], "'cifar' is not among --datasets"),
        (["--phash-distance", "64"], "between 0 and 63"),
        (["--min-cosine", "digits=2"], "between -1 and 1"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_run, capsys, args, needle):
    from train.overlap import main

    given = ["--checkpoint", str(tiny_run)] + ([] if "--datasets" in args else ["--datasets", "digits"])
    assert main(given + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_cli_bad_checkpoint_and_unreadable_shards(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = subprocess.run(
        [sys.executable, "-m", "train.overlap", "--checkpoint", str(bad), "--shards", str(bad)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(res, "not a readable checkpoint")


@pytest.mark.sample
def test_cli_writes_the_report(tiny_run, planted, tmp_path, capsys):
    import pyarrow.parquet as pq

    from train.overlap import PAIR_COLUMNS, main

    shard, _, truth = planted
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--checkpoint",
                str(tiny_run),
                "--shards",
                str(shard),
                str(empty),
                "--datasets",
                "digits",
                "--out",
                str(out),
                "--min-cosine",
                "off",
                "--phash-distance",
                "digits=1",
                "--batch-size",
                "128",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "overlap digits: " in err and "p " in err
    result = json.loads((out / "eval" / "overlap.json").read_text())
    assert set(result) >= {
        "checkpoint",
        "model",
        "step",
        "shards",
        "n_shard_images",
        "shard_errors",
        "seconds",
        "thresholds",
        "datasets",
    }
    assert result["step"] == 3 and result["model"] == "tiny-ViT-64" and result["checkpoint"].endswith(".pt")
    assert result["shards"] == sorted([str(shard), str(empty)]) and result["n_shard_images"] == len(truth)
    assert result["shard_errors"] == 3 and result["skipped"] == {
        "bad_image": 1,
        "missing_image": 1,
        "shard_unreadable": 1,
    }
    assert result["thresholds"] == {"phash_max_distance": {"digits": 1}, "min_cosine": {"digits": None}}
    d = result["datasets"]["digits"]
    assert d["all"] == 1797 and d["overlap"] + d["clean"] == 1797 and d["overlap"] >= 30
    # here every digit is an evaluation image: the PNG copies, and the "others" whose JPEG decodes to the
    # very pixels (8x8 blocks survive quality 95), match exactly
    assert d["by_kind"]["exact"] >= 30 and d["chance_top1"] == 0.1
    assert set(d) >= {
        "overlap_rate",
        "top1_all",
        "top1_overlap",
        "top1_clean",
        "all_minus_clean",
        "binomial_p",
        "overlap_top1_ci995",
    }
    pairs = pq.read_table(out / "eval" / "overlap_pairs.parquet")
    assert pairs.column_names == list(PAIR_COLUMNS)
    rows = pairs.to_pylist()
    assert rows == sorted(rows, key=lambda r: (r["dataset"], r["eval_index"], r["shard"], r["key"]))
    assert len({r["eval_index"] for r in rows}) == d["overlap"]


# ---------------------------------------------------------------------------------------
# pipeline decontaminate


@pytest.fixture()
def shard_folder(tmp_path):
    """shards/00000.tar (6 samples) + .parquet (and a failed download's row), 00001.tar (4) +
    .parquet, 00000_stats.json; and the matches naming 3 of their keys, a missing key and a
    missing shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.overlap import write_pairs

    src = tmp_path / "shards"
    src.mkdir()
    rgb = Image.new("RGB", (8, 8), (10, 200, 30))
    for s, n in ((0, 6), (1, 4)):
        keys = [f"{s:04d}{i:04d}" for i in range(n)]
        write_shard(src / f"{s:05d}.tar", [(k, "jpg", _jpeg(rgb)) for k in keys])
        pq.write_table(
            pa.table(
                {
                    "key": keys + ([f"{s:04d}9999"] if s == 0 else []),
                    "status": ["success"] * n + (["failed_to_download"] if s == 0 else []),
                }
            ),
            src / f"{s:05d}.parquet",
        )
    (src / "00000_stats.json").write_text("{}")
    pair = {"eval_index": 0, "label": 0, "uid": None, "kind": "phash", "phash_distance": 0, "cosine": None}
    pairs = [
        {**pair, "dataset": "digits", "shard": f"{src}/00000.tar", "key": "00000001"},
        {**pair, "dataset": "openclipart", "shard": f"{src}/00000.tar", "key": "00000001"},
        {**pair, "dataset": "digits", "shard": f"{src}/00000.tar", "key": "00000004"},
        {**pair, "dataset": "digits", "shard": "s3://elsewhere/00001.tar", "key": "00010003", "kind": "embedding"},
        {**pair, "dataset": "digits", "shard": f"{src}/00001.tar", "key": "00017777"},
        {**pair, "dataset": "digits", "shard": f"{src}/00042.tar", "key": "00420000"},
    ]
    matches = tmp_path / "overlap_pairs.parquet"
    write_pairs(pairs, matches)
    return src, matches


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        return tf.getnames()


def test_decontaminate_removes_exactly_the_matched_keys(shard_folder, tmp_path):
    import pyarrow.parquet as pq
    import webdataset as wds

    src, matches = shard_folder
    out = tmp_path / "clean"
    res = run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    removed = {"00000001", "00000004", "00010003"}
    for name in ("00000.tar", "00001.tar"):
        want = [m for m in _members(src / name) if m.split(".")[0] not in removed]
        assert _members(out / name) == want
        with tarfile.open(src / name) as a, tarfile.open(out / name) as b:
            assert [(m.name, m.mtime, m.mode, m.size) for m in b] == [
                (m.name, m.mtime, m.mode, m.size) for m in a if m.name.split(".")[0] not in removed
            ]
    assert pq.read_table(out / "00000.parquet")["key"].to_pylist() == [
        "00000000",
        "00000002",
        "00000003",
        "00000005",
        "00009999",
    ]
    assert sorted(_contents(out)) == ["00000.parquet", "00000.tar", "00001.parquet", "00001.tar", "decontaminate.json"]
    stats = json.loads((out / "decontaminate.json").read_text())
    assert stats["complete"] and (stats["n_shards"], stats["samples_in"], stats["samples_out"]) == (2, 10, 7)
    assert stats["removed"] == 3 and stats["removed_by_dataset"] == {"digits": 3, "openclipart": 1}
    assert stats["matched_not_found"] == 1 and stats["matched_shards_absent"] == ["00042.tar"]
    assert stats["left_out"] == ["00000_stats.json"]
    keys = [s["__key__"] for s in wds.WebDataset(str(out / "00000.tar"), shardshuffle=False)]
    assert keys == ["00000000", "00000002", "00000003", "00000005"]

    before = _contents(out)
    (out / "00001.tar").unlink()  # as if interrupted before its rename
    again = run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert _contents(out) == before, "a rerun writes the same bytes, and skips what is done"
    fresh = tmp_path / "fresh"
    assert (
        run_cli(
            "decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(fresh), "--quiet"
        ).returncode
        == 0
    )
    assert all((fresh / n).read_bytes() == b for n, b in before.items() if n != "decontaminate.json")


def test_decontaminate_bad_input_is_one_line(shard_folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, matches = shard_folder
    out = str(tmp_path / "o")
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(tmp_path / "none.parquet"), "--out", out),
        "not found",
    )
    lacking = tmp_path / "lacking.parquet"
    pq.write_table(pa.table({"shard": ["00000.tar"], "key": ["00000001"]}), lacking)
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(lacking), "--out", out), "no column dataset"
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", str(src) + "/"),
        "the same folder as --shards",
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(tmp_path), "--matches", str(matches), "--out", out), "no *.tar"
    )
    assert (
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", out, "--quiet").returncode
        == 0
    )
    assert_one_line_error(
        run_cli("decontaminate", "--shards", str(src), "--matches", str(matches), "--out", out, "--kinds", "embedding"),
        "other inputs",
    )


def test_decontaminate_does_not_import_torch():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", "decontaminate", "--help"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "--matches" in res.stdout, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.decontaminate" in imported and not {"torch", "train", "open_clip"} & imported
