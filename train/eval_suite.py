"""DataComp's evaluation suite over the sets a researcher already keeps on disk:
``python -m train.evaluate --suite datacomp --data-root DIR``.

DIR is what DataComp's ``download_evalsets.py`` leaves: a folder per task,
``wds_<key>_test`` (the task key with ``/`` as ``-``, ``fairness/`` dropped:
``wds_vtab-cifar100_test``, ``wds_imagenet1k_test``), each in CLIP_benchmark's webdataset
layout (`train.eval_wds`), scored with its own class names and prompts. Two tasks have
other homes: DataComp reads Flickr and MSCOCO from Hugging Face's arrow cache, which is not
read here; their webdataset versions are (``wds_flickr30k_test`` and
``wds_mscoco_captions_test``, CLIP_benchmark's names, or ``wds_retrieval-<name>_test``).
ImageNet-1k and its shifts may also be in their own layouts (`train.eval_imagenet`):
``DIR/imagenet``, ``DIR/imagenet-sketch``, ``DIR/imagenetv2``, ``DIR/imagenet-a``,
``DIR/imagenet-r``, ``DIR/objectnet``.

The task list is DataComp's ``tasklist.yml`` (a copy ships as `datacomp_tasklist.yml`;
``--tasklist`` or ``DIR/tasklist.yml`` wins): display names, sizes, main metric (``acc1``
where none is named), random scores. Main metrics scored: ``acc1``,
``mean_per_class_recall``, ``mean_recall@1`` (retrieval) and ``F1-macro_all`` (iWildCam);
the others need a task's own metadata and evaluator (WinoGAViL's Jaccard, FMoW's worst
region, Dollar Street's and GeoDE's worst group), and FairFace and UTKFace have no main
metric in DataComp (they are not among its 38): such tasks are listed with the reason, as
are the tasks whose folder is absent. A folder that is present but broken is an error.

The aggregates are DataComp's (``aggregate_scores.py``): ImageNet, the mean over the
ImageNet distribution shifts, over VTAB, over retrieval, and the average over every main
metric; here each is over the tasks scored, with the count beside it, since a partial root
gives a partial mean that must say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, one_line
from pipeline.storage import filesystem

TASKLIST = Path(__file__).with_name("datacomp_tasklist.yml")
SUITES = ("datacomp",)
DEFAULT_METRIC = "acc1"
# main metric -> the key of our result that holds it
SCORED = {
    "acc1": "acc1",
    "mean_per_class_recall": "mean_per_class_recall",
    "mean_recall@1": "mean_recall@1",
    "F1-macro_all": "f1_macro",
}
NO_MAIN_METRIC = {"fairness/fairface", "fairness/utkface"}  # DataComp's 40 tasks less these are its 38
# DataComp's aggregate_scores.py groups, by task key
GROUPS = {
    "ImageNet dist. shifts": (
        "imagenet_sketch",
        "imagenetv2",
        "imagenet-a",
        "imagenet-o",
        "imagenet-r",
        "objectnet",
    ),
    "VTAB": (
        "vtab/caltech101",
        "vtab/cifar100",
        "vtab/clevr_count_all",
        "vtab/clevr_closest_object_distance",
        "vtab/dtd",
        "vtab/eurosat",
        "vtab/kitti_closest_vehicle_distance",
        "vtab/flowers",
        "vtab/pets",
        "vtab/pcam",
        "vtab/resisc45",
        "vtab/svhn",
        "sun397",
    ),
    "Retrieval": ("retrieval/flickr30k", "retrieval/mscoco_2014_5k_test_image_text_retrieval", "misc/winogavil"),
}
IMAGENET = "imagenet1k"
# retrieval sets: the names CLIP_benchmark's webdataset versions go by
RETRIEVAL_FOLDERS = {
    "retrieval/flickr30k": ("wds_flickr30k_test",),
    "retrieval/mscoco_2014_5k_test_image_text_retrieval": ("wds_mscoco_captions_test",),
}


# ImageNet and its shifts may also be kept in their own folder layouts (`train.eval_imagenet`;
# local roots): (folder under DIR, the spec's prefix)
FOLDER_LAYOUTS = {
    "imagenet1k": (("imagenet", "imagenet"), ("imagenet1k", "imagenet")),
    "imagenet_sketch": (("imagenet-sketch", "imagenet-sketch"), ("imagenet_sketch", "imagenet-sketch")),
    "imagenetv2": (("imagenetv2", "imagenet-v2"), ("imagenet-v2", "imagenet-v2")),
    "imagenet-a": (("imagenet-a", "imagenet-a"),),
    "imagenet-r": (("imagenet-r", "imagenet-r"),),
    "objectnet": (("objectnet", "objectnet"),),
}


@dataclass(frozen=True)
class Task:
    key: str
    name: str
    size: int | None
    main_metric: str
    random_score: float | None
    num_classes: int | None

    @property
    def retrieval(self) -> bool:
        return self.key.startswith("retrieval/")


def read_tasklist(path: str | Path = TASKLIST) -> list[Task]:
    """The tasks of a DataComp ``tasklist.yml``, in its order."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read the task list ({one_line(e)})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not YAML ({one_line(e)})") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{path}: not a task list (a mapping of task key -> name, size, main_metric, ...)")
    tasks = []
    for key, fields in raw.items():
        if not isinstance(fields, dict):
            raise InputError(f"{path}: task {key!r}: not a mapping of name, size, main_metric, ...")
        try:
            tasks.append(
                Task(
                    key=str(key),
                    name=str(fields.get("name", key)),
                    size=None if fields.get("size") is None else int(fields["size"]),
                    main_metric=str(fields.get("main_metric", DEFAULT_METRIC)),
                    random_score=None if fields.get("random_score") is None else float(fields["random_score"]),
                    num_classes=None if fields.get("num_classes") is None else int(fields["num_classes"]),
                )
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"{path}: task {key!r}: {one_line(e)}") from None
    return tasks


def tasklist_for(data_root: str, given: str | None) -> Path:
    """--tasklist, else DATA_ROOT/tasklist.yml when there is one (local roots), else ours."""
    if given:
        return Path(given)
    local = Path(data_root) / "tasklist.yml"
    return local if "://" not in data_root and local.is_file() else TASKLIST


def wds_folders(task: Task) -> tuple[str, ...]:
    key = task.key.removeprefix("fairness/")
    return (*RETRIEVAL_FOLDERS.get(task.key, ()), f"wds_{key.replace('/', '-')}_test")


def folder_names(task: Task) -> tuple[str, ...]:
    """The folders DIR may hold the task's set in, first found wins."""
    return (*wds_folders(task), *(name for name, _ in FOLDER_LAYOUTS.get(task.key, ())))


def why_not_scored(task: Task) -> str | None:
    if task.key in NO_MAIN_METRIC:
        return "no main metric in DataComp (not among its 38 tasks)"
    if task.main_metric not in SCORED:
        return f"main metric {task.main_metric} needs the task's own evaluator and metadata, not built yet"
    return None


def locate(task: Task, data_root: str) -> str | None:
    """The evaluation spec of the task's set under `data_root` (``wds:PATH`` or
    ``imagenet:PATH``); None when it is absent."""
    fs, root = filesystem(data_root)
    for name in wds_folders(task):
        path = f"{root.rstrip('/')}/{name}"
        if fs.isdir(path):
            return f"wds:{data_root.rstrip('/')}/{name}"
    for name, variant in FOLDER_LAYOUTS.get(task.key, ()):
        if "://" not in data_root and fs.isdir(f"{root.rstrip('/')}/{name}"):
            return f"{variant}:{data_root.rstrip('/')}/{name}"
    return None


def plan(tasks: list[Task], data_root: str) -> tuple[list[tuple[Task, str]], dict[str, str]]:
    """(the tasks to score with their specs, {key: why not} for the rest)."""
    fs, root = filesystem(data_root)
    if not fs.isdir(root):
        raise InputError(f"{data_root}: --data-root is not a folder")
    run, skipped = [], {}
    for task in tasks:
        reason = why_not_scored(task)
        spec = None if reason else locate(task, data_root)
        if reason:
            skipped[task.key] = reason
        elif spec is None:
            skipped[task.key] = "missing: no " + " or ".join(folder_names(task)) + f" under {data_root}"
        else:
            check_set(task, spec)
            run.append((task, spec))
    return run, skipped


def check_set(task: Task, spec: str) -> None:
    """A set's layout (`train.eval_wds.check_layout`; a folder layout is listed), and for a
    wds classification set that its class names number the task's classes: another count is another task, whose score
    DataComp's would not compare with."""
    if not spec.startswith("wds:"):  # a folder layout: listing it finds an unknown class folder, or no images
        from .eval_data import load_dataset

        load_dataset(spec)
        return
    from .eval_wds import CLASSNAMES, check_layout, wds_classnames

    root = spec.removeprefix("wds:")
    check_layout(root, "retrieval" if task.retrieval else "classification")
    if task.retrieval or task.num_classes is None:
        return
    found = len(wds_classnames(root))
    if found != task.num_classes:
        raise InputError(
            f"{root}/{CLASSNAMES}: {found} class names, DataComp's {task.name} ({task.key}) has {task.num_classes}"
        )


def set_fingerprint(spec: str) -> str:
    """What a kept result of `spec` must still match to be reused: a wds set's shard count,
    shard sizes, class names and prompts; a folder layout's files and their sizes. A set
    completed or replaced since (more images, other names) is scored again."""
    import hashlib

    h = hashlib.sha256(spec.encode())
    kind, _, root = spec.partition(":")
    fs, base = filesystem(root)
    if kind == "wds":
        from .eval_wds import CLASSNAMES, DATASET_TYPE, NSHARDS, SPLIT, TEMPLATES

        for name in (f"{SPLIT}/{NSHARDS}", CLASSNAMES, TEMPLATES, DATASET_TYPE):
            path = f"{base.rstrip('/')}/{name}"
            h.update(f"{name}\n".encode() + (fs.cat_file(path) if fs.exists(path) else b"-"))
        for info in sorted(fs.ls(f"{base.rstrip('/')}/{SPLIT}", detail=True), key=lambda i: i["name"]):
            h.update(f"{info['name'].rsplit('/', 1)[-1]}|{info.get('size')}\n".encode())
    else:
        for file in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            h.update(f"{file.relative_to(root)}|{file.stat().st_size}\n".encode())
    return h.hexdigest()


def task_row(task: Task, spec: str, result: dict) -> dict:
    """A scored task's line of the suite table."""
    score = result.get(SCORED[task.main_metric])
    names: tuple[str, ...] = ("mean_recall@1", "image_retrieval_recall@1", "text_retrieval_recall@1")
    if not task.retrieval:
        names = ("acc1", "acc5", "mean_per_class_recall", "f1_macro")
    row: dict[str, Any] = {
        "key": task.key,
        "name": task.name,
        "spec": spec,
        "main_metric": task.main_metric,
        "score": score,
        "random_score": task.random_score,
        "metrics": {k: result.get(k) for k in names},
        "n": result.get("n"),
        "size": task.size,
    }
    if result.get("cached"):
        row["cached"] = True
    if task.size is not None and result.get("n") != task.size:
        row["partial"] = f"{result.get('n')} of DataComp's {task.size} test images"
    return row


def aggregates(tasks: list[Task], rows: dict[str, dict]) -> dict[str, dict]:
    """DataComp's aggregates over the tasks scored: {name: {score, tasks, of}}."""
    known = {t.key for t in tasks if t.key not in NO_MAIN_METRIC}

    def mean(keys) -> dict:
        scores = [rows[k]["score"] for k in keys if k in rows and rows[k]["score"] is not None]
        return {
            "score": math.fsum(scores) / len(scores) if scores else None,
            "tasks": len(scores),
            "of": len([k for k in keys if k in known]),
        }

    out = {"ImageNet": mean([IMAGENET])}
    out.update({group: mean(keys) for group, keys in GROUPS.items()})
    out["Average"] = mean([t.key for t in tasks if t.key in known])
    return out


def check(
    name: str, data_root: str, tasklist: str | None
) -> tuple[list[Task], list[tuple[Task, str]], dict[str, str], Path]:
    """The suite's task list read and its sets' layouts checked, before any model loads:
    (tasks, [(task, spec) to score], {key: why not scored}, the task list's path)."""
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r} (known: {', '.join(SUITES)})")
    path = tasklist_for(data_root, tasklist)
    tasks = read_tasklist(path)
    return (tasks, *plan(tasks, data_root), path)


def run_suite(name: str, data_root: str, tasklist: str | None, score_set, score_retrieval, log) -> dict:
    """Score every task of suite `name` present under `data_root`: `score_set(spec)` and
    `score_retrieval(spec)` return a set's results. The suite's part of the results:
    ``{"name", "data_root", "tasklist", "tasks": [row, ...], "not_scored": {key: why},
    "aggregates": {...}}``."""
    tasks, todo, skipped, path = check(name, data_root, tasklist)
    if log:
        log(f"suite {name}: {len(todo)} of {len(tasks)} tasks present under {data_root} (task list {path})")
    rows = {}
    for task, spec in todo:
        result = score_retrieval(spec) if task.retrieval else score_set(spec)
        rows[task.key] = task_row(task, spec, result)
    suite = {
        "name": name,
        "data_root": data_root,
        "tasklist": str(path),
        "tasks": list(rows.values()),  # a list: the task list's order survives a sorted JSON
        "not_scored": skipped,
        "aggregates": aggregates(tasks, rows),
    }
    if log:
        for line in table_lines(suite):
            log(line)
    return suite


def table_lines(suite: dict) -> list[str]:
    """The suite as text: a line per task scored, the aggregates, then what was not scored."""

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [f"{'task':<28} {'metric':<22} {'score':>7} {'random':>7}  n"]
    for row in suite["tasks"]:
        note = f"  ({row['partial']})" if "partial" in row else ""
        lines.append(
            f"{row['name']:<28} {row['main_metric']:<22} {fmt(row['score']):>7} "
            f"{fmt(row['random_score']):>7}  {row['n']}{note}"
        )
    for group, agg in suite["aggregates"].items():
        lines.append(
            f"{group:<28} {'mean of main metrics':<22} {fmt(agg['score']):>7} {'':>7}  {agg['tasks']} of {agg['of']} tasks"
        )
    for key, why in suite["not_scored"].items():
        lines.append(f"not scored: {key}: {why}")
    return lines
