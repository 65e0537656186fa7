"""train/eval_suite.py: DataComp's task list over the sets under --data-root, through
python -m train.evaluate --suite datacomp on a randomly initialised model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import InputError
from tests.conftest import assert_one_line_error
from tests.support.evalsets import classification_samples, retrieval_samples, split, write_set
from tests.support.trained_run import random_checkpoint
from tests.support.trainer import ENV, ROOT
from train import eval_suite
from train.eval_data import sklearn_digits
from train.evaluate import main as evaluate_main


def test_the_shipped_task_list_is_datacomps():
    tasks = eval_suite.read_tasklist()
    keys = [t.key for t in tasks]
    assert len(tasks) == 40 == len(set(keys))
    assert len([k for k in keys if k not in eval_suite.NO_MAIN_METRIC]) == 38
    by_key = {t.key: t for t in tasks}
    assert by_key["imagenet1k"].name == "ImageNet 1k" and by_key["imagenet1k"].main_metric == "acc1"
    assert by_key["imagenet1k"].random_score == 0.001 and by_key["imagenet1k"].size == 50000
    assert by_key["vtab/pets"].main_metric == "mean_per_class_recall"
    assert by_key["retrieval/flickr30k"].main_metric == "mean_recall@1"
    assert by_key["retrieval/flickr30k"].random_score is None
    # DataComp's aggregate groups name tasks of the list: 6 shifts, 13 VTAB, 3 retrieval
    assert [len(g) for g in eval_suite.GROUPS.values()] == [6, 13, 3]
    assert {k for g in eval_suite.GROUPS.values() for k in g} <= set(keys)
    # the VTAB group is the list's vtab_* tags, as DataComp tags them
    assert set(eval_suite.GROUPS["VTAB"]) == {
        k for k, line in _tags().items() if any(t.startswith("vtab_") for t in line)
    }


def _tags() -> dict[str, list[str]]:
    import yaml

    return {k: v.get("tags", []) for k, v in yaml.safe_load(eval_suite.TASKLIST.read_text()).items()}


def test_aggregates_are_datacomps_means_with_their_counts():
    """Every main metric given: DataComp's aggregate_scores.py, by display name; a partial
    set of scores: means over what is there, with the count."""
    tasks = eval_suite.read_tasklist()
    scored = [t for t in tasks if t.key not in eval_suite.NO_MAIN_METRIC]
    rows = {t.key: {"score": (i + 1) / 100} for i, t in enumerate(scored)}
    by_name = {t.name: rows[t.key]["score"] for t in scored}
    groups = {  # aggregate_scores.py's DATASET_GROUPS, written out by display name
        "ImageNet dist. shifts": [
            "ImageNet Sketch",
            "ImageNet v2",
            "ImageNet-A",
            "ImageNet-O",
            "ImageNet-R",
            "ObjectNet",
        ],
        "VTAB": [
            "Caltech-101",
            "CIFAR-100",
            "CLEVR Counts",
            "CLEVR Distance",
            "Describable Textures",
            "EuroSAT",
            "KITTI Vehicle Distance",
            "Oxford Flowers-102",
            "Oxford-IIIT Pet",
            "PatchCamelyon",
            "RESISC45",
            "SVHN",
            "SUN397",
        ],  # fmt: skip
        "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
    }
    agg = eval_suite.aggregates(tasks, rows)
    assert agg["ImageNet"] == {"score": by_name["ImageNet 1k"], "tasks": 1, "of": 1}
    for group, names in groups.items():
        assert agg[group]["score"] == pytest.approx(sum(by_name[n] for n in names) / len(names), abs=1e-15)
        assert agg[group]["tasks"] == agg[group]["of"] == len(names)
    assert agg["Average"]["score"] == pytest.approx(sum(by_name.values()) / 38, abs=1e-15)
    assert agg["Average"]["tasks"] == 38
    partial = eval_suite.aggregates(tasks, {"imagenet-a": {"score": 0.2}, "imagenetv2": {"score": 0.4}})
    assert partial["ImageNet dist. shifts"] == {"score": pytest.approx(0.3), "tasks": 2, "of": 6}
    assert partial["ImageNet"] == {"score": None, "tasks": 0, "of": 1}
    assert partial["Average"] == {"score": pytest.approx(0.3), "tasks": 2, "of": 38}


def test_a_broken_task_list_or_root_is_an_input_error(tmp_path):
    (tmp_path / "t.yml").write_text("imagenet1k: {name: ImageNet 1k, size: many}\n")
    with pytest.raises(InputError, match=r"t.yml: task 'imagenet1k': invalid literal"):
        eval_suite.read_tasklist(tmp_path / "t.yml")
    (tmp_path / "t.yml").write_text("- a list\n")
    with pytest.raises(InputError, match="not a task list"):
        eval_suite.read_tasklist(tmp_path / "t.yml")
    with pytest.raises(InputError, match="--data-root is not a folder"):
        eval_suite.plan(eval_suite.read_tasklist(), str(tmp_path / "nowhere"))


# -- a data root as DataComp's download_evalsets.py leaves it, a few tasks present --------

PETS = [f"pet breed {i}" for i in range(37)]


def _digits(n: int, offset: int = 0) -> list[Image.Image]:
    d = sklearn_digits()
    return [d.image(offset + i).resize((16, 16)) for i in range(n)]


def datacomp_root(root: Path) -> Path:
    """Five scorable tasks (ImageNet-1k with real labels, Pets, CIFAR-10, iWildCam, Flickr
    with two captions an image) and FairFace, which DataComp gives no main metric."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    two = ["a photo of a {c}.", "itap of a {c}."]  # the sets' own prompts, few so the test stays quick
    # ImageNet-1k: tench (0), goldfish (1), toilet tissue (999), of all 1,000 names
    write_set(
        root / "wds_imagenet1k_test",
        split(classification_samples(_digits(9), [0, 0, 1, 1, 999, 999, 999, 1, 0]), 2),
        IMAGENET_CLASSNAMES,
        two,
    )
    pets = [0] * 8 + [1] * 4 + [2] * 3 + [3, 4, 5]  # unbalanced: mean per-class recall is the main metric
    write_set(root / "wds_vtab-pets_test", [classification_samples(_digits(18, 20), pets)], PETS, two)
    write_set(
        root / "wds_cifar10_test",
        split(classification_samples(_digits(12, 40), [i % 10 for i in range(12)]), 3),
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        two,
    )
    write_set(
        root / "wds_wilds-iwildcam_test",
        [classification_samples(_digits(10, 60), [0, 0, 0, 5, 5, 7, 7, 7, 7, 181])],
        [f"species {i}" for i in range(182)],
        ["a camera trap photo of a {c}."],
    )
    captions = [[f"the digit {i % 10}", f"a drawing of {i % 10}"] for i in range(12)]
    write_set(
        root / "wds_flickr30k_test",
        split(retrieval_samples(_digits(12, 80), captions), 2),
        dataset_type="retrieval",
    )
    write_set(root / "wds_fairface_test", [classification_samples(_digits(2), [0, 1])], ["a", "b"], two)
    return root


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.evaluate", *args, "--device", "cpu"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("suite") / "run"
    random_checkpoint(run, 1)
    return run


SCORED = {  # in the task list's order
    "cifar10": ("wds_cifar10_test", "acc1", 12),
    "imagenet1k": ("wds_imagenet1k_test", "acc1", 9),
    "vtab/pets": ("wds_vtab-pets_test", "mean_per_class_recall", 18),
    "retrieval/flickr30k": ("wds_flickr30k_test", "mean_recall@1", 12),
    "wilds/iwildcam": ("wds_wilds-iwildcam_test", "f1_macro", 10),
}


@pytest.mark.slow  # a model over every task present: out of `make test-fast`
def test_the_suite_scores_the_tasks_present_and_lists_the_rest(model_run, tmp_path):
    root = datacomp_root(tmp_path / "evalsets")
    res = evaluate_cli("--checkpoint", str(model_run), "--suite", "datacomp", "--data-root", str(root))
    assert res.returncode == 0, res.stderr[-3000:]
    full = json.loads((model_run / "eval" / "final.json").read_text())
    suite = full["suite"]
    tasks = {row["key"]: row for row in suite["tasks"]}
    assert list(full["datasets"]) == [f"wds:{root}/{SCORED[k][0]}" for k in SCORED if "retrieval" not in k]
    assert list(tasks) == list(SCORED)  # in the task list's order
    for key, (folder, ours, n) in SCORED.items():
        row = tasks[key]
        group = "retrieval" if key.startswith("retrieval/") else "datasets"
        result = full[group][f"wds:{root}/{folder}"]
        assert row["spec"] == f"wds:{root}/{folder}" and row["n"] == result["n"] == n
        assert row["score"] == result[ours] is not None, key
        assert row["partial"] == f"{n} of DataComp's {row['size']} test images"
    imagenet = full["datasets"][f"wds:{root}/wds_imagenet1k_test"]
    assert imagenet["n_classes"] == 1000 and imagenet["n_templates"] == 2
    assert tasks["imagenet1k"]["random_score"] == 0.001
    assert tasks["vtab/pets"]["main_metric"] == "mean_per_class_recall"
    flickr = full["retrieval"][f"wds:{root}/wds_flickr30k_test"]
    assert flickr["mean_recall@1"] == (flickr["image_retrieval_recall@1"] + flickr["text_retrieval_recall@1"]) / 2
    assert flickr["n_texts"] == 24

    agg, scores = suite["aggregates"], {k: r["score"] for k, r in tasks.items()}
    assert agg["ImageNet"] == {"score": scores["imagenet1k"], "tasks": 1, "of": 1}
    assert agg["VTAB"] == {"score": scores["vtab/pets"], "tasks": 1, "of": 13}
    assert agg["Retrieval"] == {"score": scores["retrieval/flickr30k"], "tasks": 1, "of": 3}
    assert agg["ImageNet dist. shifts"] == {"score": None, "tasks": 0, "of": 6}
    assert agg["Average"]["tasks"] == 5 and agg["Average"]["of"] == 38
    assert math.isclose(agg["Average"]["score"], sum(scores.values()) / 5, abs_tol=1e-12)

    skipped = suite["not_scored"]
    assert len(skipped) == 35 and not set(skipped) & set(SCORED)
    assert skipped["fairness/fairface"].startswith("no main metric in DataComp")
    assert "jaccard_score_10-12 needs the task's own evaluator" in skipped["misc/winogavil"]
    assert skipped["sun397"] == f"missing: no wds_sun397_test under {root}"
    assert skipped["retrieval/mscoco_2014_5k_test_image_text_retrieval"].startswith(
        "missing: no wds_mscoco_captions_test or wds_retrieval-mscoco_2014_5k_test_image_text_retrieval_test"
    )
    assert f"suite datacomp: 5 of 40 tasks present under {root}" in res.stderr
    assert any(line.startswith("Average") and line.endswith("5 of 38 tasks") for line in res.stderr.splitlines())
    printed = json.loads(res.stdout)["suite:datacomp"]
    assert printed["aggregates"]["ImageNet"] == scores["imagenet1k"] and printed["not_scored"] == 35
    report = (model_run / "report.html").read_text()
    assert "DataComp suite" in report and "Oxford-IIIT Pet" in report and "5 of 38" in report

    # run again, as after a kill: each set's result was kept as it was scored, so nothing is
    # read from the shards (garbage now, of the same size) and the table is the same
    for tar in (root / "wds_cifar10_test" / "test").glob("*.tar"):
        tar.write_bytes(b"\0" * tar.stat().st_size)
    again = evaluate_cli("--checkpoint", str(model_run), "--suite", "datacomp", "--data-root", str(root))
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((model_run / "eval" / "final.json").read_text())["suite"]
    assert [(r["key"], r["score"], r.get("cached")) for r in rerun["tasks"]] == [(k, scores[k], True) for k in SCORED]
    assert rerun["aggregates"] == agg
    assert f"suite: wds:{root}/wds_cifar10_test read back from" in again.stderr
    # a set changed since (here its prompts) is scored again; the others are read back
    (root / "wds_vtab-pets_test" / "zeroshot_classification_templates.txt").write_text("a pet: {c}.\n")
    third = evaluate_cli("--checkpoint", str(model_run), "--suite", "datacomp", "--data-root", str(root))
    assert third.returncode == 0, third.stderr[-3000:]
    cached = {
        r["key"]: r.get("cached", False)
        for r in json.loads((model_run / "eval" / "final.json").read_text())["suite"]["tasks"]
    }
    assert cached == {k: k != "vtab/pets" for k in SCORED}


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("classnames", "wds_cifar10_test/classnames.txt: 9 class names, DataComp's CIFAR-10 (cifar10) has 10"),
        ("nshards", "wds_cifar10_test/test/nshards.txt: missing"),
        ("type", "wds_flickr30k_test/dataset_type.txt: a classification set"),
        ("root", "nowhere: --data-root is not a folder"),
        ("synset", "imagenet/n99999999: not an ImageNet-1k synset id (1 such folder(s)"),
    ],
)
def test_bad_layouts_fail_before_the_model_loads(tmp_path, capsys, breakage, message):
    root = tmp_path / "evalsets"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_set(root / "wds_cifar10_test", [classification_samples(_digits(2), [0, 1])], names, ["{c}"])
    write_set(root / "wds_flickr30k_test", [retrieval_samples(_digits(2), [["a"], ["b"]])], dataset_type="retrieval")
    if breakage == "classnames":
        (root / "wds_cifar10_test" / "classnames.txt").write_text("".join(f"{c}\n" for c in names[:9]))
    elif breakage == "nshards":
        (root / "wds_cifar10_test" / "test" / "nshards.txt").unlink()
    elif breakage == "type":
        (root / "wds_flickr30k_test" / "dataset_type.txt").unlink()
    elif breakage == "root":
        root = tmp_path / "nowhere"
    elif breakage == "synset":
        for synset in ("n01440764", "n99999999"):
            (root / "imagenet" / synset).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / "imagenet" / synset / "a.JPEG")
    # no such checkpoint: the layout is refused before any model is looked for. One case
    # goes through a new process as a user runs it; the others call the same main() here,
    # which saves an interpreter and torch start each
    argv = [
        "--checkpoint",
        str(tmp_path / "no-run"),
        "--suite",
        "datacomp",
        "--data-root",
        str(root),
        "--device",
        "cpu",
    ]
    if breakage == "classnames":
        assert_one_line_error(evaluate_cli(*argv[:-2]), message)
        return
    code = evaluate_main(argv)
    err = capsys.readouterr().err
    assert_one_line_error(subprocess.CompletedProcess(argv, code, "", err), message)
