"""Zero-shot evaluation of a CLIP model: classification accuracy and image-text retrieval.

    python -m train.evaluate --checkpoint runs/NAME [--datasets openclipart animal-mnist digits]
    python -m train.evaluate --checkpoint runs/NAME/checkpoints/step-00000400.pt --out runs/NAME
    python -m train.evaluate --model local-dir:runs/NAME/export          # `python -m train.export`
    python -m train.evaluate --model tiny-ViT-64 --pretrained logs/x/checkpoints/epoch_5.pt
    python -m train.evaluate --model ViT-B-32 --pretrained laion2b_s34b_b79k   # needs the network
    python -m train.evaluate --checkpoint runs/NAME --suite datacomp --data-root /data/datacomp_evalsets

The model: ``--checkpoint FILE|RUN`` (a checkpoint of this trainer, or its run folder's
newest; open_clip_train's ``epoch_N.pt`` with ``--model NAME``) or ``--model NAME
[--pretrained TAG|FILE]`` (open_clip's loader: its architectures and tags, train/model_configs,
``local-dir:DIR``, ``hf-hub:ORG/NAME``); `train.sources` says how each is read.

With ``--suite datacomp --data-root DIR`` it scores every task of DataComp's 38 whose set
is under DIR (as DataComp's download_evalsets.py leaves them), with each task's main metric
beside its random score and DataComp's aggregates, and lists the tasks it did not score and
why (`train.eval_suite`).

For each labelled set (`train.eval_data`: ``openclipart``, ``animal-mnist``, ``digits``,
``imagefolder:ROOT``, ``wds:ROOT`` in CLIP_benchmark's webdataset layout, ``imagenet:ROOT`` and
its shifts) the class names go
through a prompt ensemble (CLIP's 80 ImageNet templates, its 7 "simple" ones, or a wds set's
own templates, as CLIP_benchmark uses them) into a zero-shot classifier (`train.zeroshot`), and the
images are classified with it: top-1 / top-5 accuracy next to their chance levels. On the
held-out openclipart images with captions it also measures image->text and text->image
recall@1/5/10. With ``--linear-probe`` each labelled set's image features (encoded once,
with the embeddings) are also split 60/20/20 per class and fit with the CLIP paper's linear
probe and 1/2/4/8/16-shot probes (`train.linear_probe`), next to the zero-shot top-1 on the
same test split (its ``linear_probe`` entry; see `train.linear_probe.probe_dataset`). The probes read a ViT's
features before its final projection, as the paper does (`train.features`), kept in
``--feature-cache`` for the next probe over the same weights. Results go to
``OUT/eval/step-NNNNNNNN.json`` (from the trainer, every
``--eval-every`` steps; 8 digits, as the checkpoints) or ``OUT/eval/final.json`` (this
command without ``--step``), written under a temporary name and renamed. OUT defaults to
the checkpoint's run folder, or ``runs/models/SOURCE`` for a --model source.

The trainer calls `evaluate` directly (on rank 0 only): it switches the model to eval mode
and back, and reads each set's files once per process. Torch and open_clip are imported
only after the arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import EXIT_INPUT_ERROR, InputError

from . import sources
from .config import EvalConfig
from .precision import autocast_factory

if TYPE_CHECKING:
    import torch

HELD_OUT = "val"  # the trainer's held-out shard samples, under open_clip_train's name for its validation set


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate(
    model,
    tokenizer,
    preprocess,
    config: EvalConfig,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    step: int | None = None,
    retrieval_loader=None,
    extra: dict | None = None,
    log: Callable[[str], None] | None = _log,
) -> dict:
    """Zero-shot accuracy on `config.datasets` and retrieval recall; returns (and writes) the results.

    `retrieval_loader`: any loader of (images, texts, ...) batches (the trainer's (images,
    tokens, uids) fit), texts as strings or token ids, reported as ``"val"`` (its ``totals``,
    if it has them, as ``info``), after `config`'s retrieval sets. `out_dir` given: the JSON
    goes to `result_path(out_dir, step)`. `extra` is merged into the top level of the
    result (e.g. the checkpoint it came from). `log` gets a line per set (None: quiet).

    Result: ``{"step", "templates", "n_templates", "datasets": {name: {top1, chance_top1,
    top5, chance_top5 (more than 5 classes), n, n_classes, mean_per_class_top1,
    per_class_top1, classnames, info, seconds[, linear_probe]}}, "retrieval": {name:
    {image_to_text_R@k, text_to_image_R@k, chance_R@k, ..., info}}, "seconds"}``, the
    accuracies and recalls also under CLIP_benchmark's names (``acc1``, ``acc5``,
    ``mean_per_class_recall``, ``image_retrieval_recall@k``, ``text_retrieval_recall@k``);
    with `config.suite`, ``"suite"``: the suite's table (`train.eval_suite.run_suite`), its
    sets' results among the others. `scalars` flattens it.

    With `config.linear_probe` each labelled set's image features (encoded once with the
    embeddings, `train.features`) are also probed: ``datasets[name]["linear_probe"]``, see
    `train.linear_probe.probe_dataset`; an ``imagefolder:ROOT`` with ``train/`` and
    ``test/`` folders is scored zero-shot on test and probed by `probe_given_split`.
    `config.feature_cache` (a folder) keeps those features per (weights, dataset,
    preprocessing, precision), so another probe over the same weights reads them instead of
    encoding the images again.
    """
    from pipeline.io import write_json

    from .zeroshot import get_templates

    start = time.perf_counter()
    templates = get_templates(config.templates)
    results: dict = {
        "step": step,
        "templates": config.templates if isinstance(config.templates, str) else "custom",
        "n_templates": len(templates),
        "datasets": {},
        "retrieval": {},
        **(extra or {}),
    }
    was_training = model.training if hasattr(model, "training") else False
    if hasattr(model, "eval"):
        model.eval()
    try:
        run = _Evaluation(model, tokenizer, preprocess, config, templates, device, log)
        for spec in config.datasets:
            results["datasets"][spec] = run.labelled_set(spec)
        for name in config.retrieval_sets():
            results["retrieval"][name] = run.retrieval(name)
        if retrieval_loader is not None:
            results["retrieval"][HELD_OUT] = run.retrieval(HELD_OUT, retrieval_loader)
        if config.suite:
            results["suite"] = run.suite(results, None if out_dir is None else Path(out_dir) / "eval" / "suite")
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    results["seconds"] = round(time.perf_counter() - start, 3)
    if out_dir is not None:
        path = result_path(out_dir, step)
        write_json(path, results)
        results["path"] = str(path)
    return results


class _Evaluation:
    """One `evaluate` call's model and settings, and its steps: a labelled set (zero-shot,
    then the probes), a retrieval set."""

    def __init__(self, model, tokenizer, preprocess, config: EvalConfig, templates, device, log) -> None:
        from . import features

        self.model, self.tokenizer, self.preprocess = model, tokenizer, preprocess
        self.config, self.templates, self.device, self.log = config, templates, device, log
        self.autocast = autocast_factory(config.precision, device)
        keep = config.feature_cache if config.linear_probe else None  # only the probes need features kept
        self.cache = features.FeatureCache(keep) if keep else None
        self.weights = features.weights_digest(model) if self.cache is not None else None

    def labelled_set(self, spec: str) -> dict:
        """Zero-shot accuracy on one labelled set, with its probes under ``linear_probe``."""
        from . import eval_data
        from .zeroshot import accuracy_from_features, build_classifier

        t0 = time.perf_counter()
        ds = eval_data.load_dataset(spec, self.config.cache_dir, self.preprocess)
        templates = self.templates
        if getattr(ds, "templates", None):  # the set's own prompts, as CLIP_benchmark uses them
            templates = tuple((lambda c, t=t: t.format(c=c)) for t in ds.templates)
        classifier = build_classifier(
            self.model, self.tokenizer, ds.classnames, templates, self.device, autocast=self.autocast
        )
        feats = self.encode(ds, spec)
        acc = accuracy_from_features(feats.embedding, feats.labels, classifier, classnames=ds.classnames)
        acc.update({"classnames": ds.classnames, "info": ds.info, "seconds": round(time.perf_counter() - t0, 3)})
        if templates is not self.templates:
            acc.update({"templates": "the set's own", "n_templates": len(templates)})
        if self.log:
            top5 = f" top5 {acc['top5']:.4f} (chance {acc['chance_top5']:.4f})" if "top5" in acc else ""
            self.log(
                f"eval {spec}: top1 {acc['top1']:.4f} (chance {acc['chance_top1']:.4f}){top5} "
                f"n={acc['n']} classes={acc['n_classes']} {acc['seconds']:.1f}s"
            )
        if self.config.linear_probe:
            acc["linear_probe"] = self.probes(spec, ds, feats, classifier)
        return acc

    def probes(self, spec: str, ds, feats, classifier) -> dict:
        """The linear and few-shot probes on a set's features: on its own train/ part when it
        has one (imagefolder ROOT/train + ROOT/test), else on a split of the set."""
        from .linear_probe import probe_dataset, probe_given_split, probe_line

        c = self.config
        train_part = getattr(ds, "probe_train", None)
        if train_part is not None:
            fit = self.encode(train_part, f"{spec}#train")
            probe = probe_given_split(
                fit, feats, classifier, seed=c.probe_seed, shots=c.probe_shots, seeds=c.probe_seeds
            )
        else:
            probe = probe_dataset(
                feats.embedding,
                feats.labels,
                classifier,
                seed=c.probe_seed,
                shots=c.probe_shots,
                seeds=c.probe_seeds,
                probe_features=feats.probe,
                kind=feats.kind,
            )
        probe["cached_features"] = feats.cached
        if self.log:
            self.log(probe_line(spec, probe))
        return probe

    def encode(self, ds, spec: str):
        """`train.features` of a labelled set: from the cache if it has them, else encoded."""
        from . import features

        batches = _loader(ds, self.config.batch_size, self.config.num_workers)
        if self.config.progress and self.log is not None:
            batches = _progress(batches, f"eval {spec}", self.log, f"{len(ds)} images, {len(ds.classnames)} classes")
        return features.cached_encode(
            self.model,
            ds,
            batches,
            spec,
            self.cache,
            self.weights,
            self.preprocess,
            self.config.precision,
            self.device,
            self.autocast,
        )

    def retrieval(self, name: str, loader=None) -> dict:
        """Image->text and text->image recall on a retrieval set by name, or on `loader`'s pairs."""
        from . import eval_data
        from .zeroshot import zero_shot_retrieval

        t0 = time.perf_counter()
        info = {}
        if loader is None and name.startswith("wds:"):
            return self.captioned_retrieval(name, t0)
        if loader is None:
            pairs = eval_data.load_retrieval_dataset(name, self.config.cache_dir, self.preprocess)
            loader, info = _loader(pairs, self.config.batch_size, self.config.num_workers), pairs.info
        batches = (
            _progress(loader, f"retrieval {name}", self.log, "image-text pairs") if self.config.progress else loader
        )
        rec = zero_shot_retrieval(self.model, self.tokenizer, batches, self.device, autocast=self.autocast)
        if not info and isinstance(getattr(loader, "totals", None), dict):  # the trainer's ValLoader counts
            info = {k: int(v) for k, v in sorted(loader.totals.items())}
        rec.update({"info": info, "seconds": round(time.perf_counter() - t0, 3)})
        self.log_retrieval(name, rec)
        return rec

    def captioned_retrieval(self, name: str, t0: float) -> dict:
        """Recall on a wds retrieval set, where an image may have several captions."""
        from .eval_wds import wds_retrieval
        from .zeroshot import captioned_recall, encode_images, encode_texts

        ds = wds_retrieval(name.removeprefix("wds:"), self.preprocess)
        loader = _loader(ds, self.config.batch_size, self.config.num_workers)
        if self.config.progress:
            loader = _progress(loader, f"retrieval {name}", self.log, "images")
        images, order = encode_images(self.model, loader, self.device, self.autocast)
        assert order.tolist() == list(range(len(ds))), "the loader keeps the set's order"
        texts = [c for captions in ds.captions for c in captions]
        owner = [i for i, captions in enumerate(ds.captions) for _ in captions]
        text_feats = encode_texts(self.model, self.tokenizer, texts, self.device, self.config.batch_size, self.autocast)
        rec = captioned_recall(images, text_feats, owner)
        rec.update({"info": ds.info, "seconds": round(time.perf_counter() - t0, 3)})
        self.log_retrieval(name, rec)
        return rec

    def suite(self, results: dict, keep: Path | None) -> dict:
        """Every task of `config.suite` found under `config.data_root`: its sets' results go
        into `results`' ``datasets`` and ``retrieval`` as any other set's; returns the table.
        With `keep` (OUT/eval/suite), each set's result is kept there per (weights,
        precision, set and its files' sizes: `set_fingerprint`) as it is scored, so a suite
        killed part way and run again scores only the sets it had not finished (``cached``
        says which were read back)."""
        from pipeline.io import write_json

        from . import features
        from .eval_suite import run_suite, set_fingerprint

        c = self.config
        folder = None
        if keep is not None:
            folder = keep / f"{features.weights_digest(self.model)[:16]}-{c.precision}"

        def scored(group: str, spec: str, score) -> dict:
            path = None if folder is None else folder / f"{set_fingerprint(spec)[:24]}.json"
            if path is not None and path.is_file():
                result = {**json.loads(path.read_text()), "cached": True}
                if self.log:
                    self.log(f"suite: {spec} read back from {path}")
            else:
                result = score(spec)
                if path is not None:
                    write_json(path, result)
            results[group][spec] = result
            return result

        return run_suite(
            str(c.suite),
            str(c.data_root),
            c.tasklist,
            lambda spec: scored("datasets", spec, self.labelled_set),
            lambda spec: scored("retrieval", spec, self.retrieval),
            self.log,
        )

    def log_retrieval(self, name: str, rec: dict) -> None:
        if self.log:
            self.log(
                f"retrieval {name}: image->text R@1/5/10 {rec['image_to_text_R@1']:.4f}/"
                f"{rec['image_to_text_R@5']:.4f}/{rec['image_to_text_R@10']:.4f}, text->image "
                f"{rec['text_to_image_R@1']:.4f}/{rec['text_to_image_R@5']:.4f}/{rec['text_to_image_R@10']:.4f}"
                f" (chance R@1 {rec['chance_R@1']:.4f}) n={rec['n']}"
            )


def _loader(dataset, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, persistent_workers=False)


def _progress(loader, desc: str, log: Callable[[str], None] | None, what: str):
    """`loader` under a tqdm bar when stderr is a terminal; otherwise one line saying what
    starts (a redirected log shows which set a long evaluation is on)."""
    from tqdm import tqdm

    bar = tqdm(loader, desc=desc, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False, disable=None)
    if bar.disable and log:
        log(f"{desc}: {what}")
    return bar


def result_path(out_dir: str | Path, step: int | None) -> Path:
    """OUT/eval/step-NNNNNNNN.json (the checkpoints' 8 digits) or OUT/eval/final.json."""
    name = "final.json" if step is None else f"step-{int(step):08d}.json"
    return Path(out_dir) / "eval" / name


def scalars(results: dict) -> dict[str, float]:
    """The numbers of an `evaluate` result, flat: ``{"zeroshot/digits/top1": 0.31,
    "retrieval/val/image_to_text_R@1": 0.02, ...}`` (per-class figures left out), for
    TensorBoard or a metrics line."""
    out: dict[str, float] = {}
    for group, prefix in (("datasets", "zeroshot"), ("retrieval", "retrieval")):
        for name, metrics in results.get(group, {}).items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seconds":
                    out[f"{prefix}/{name}/{key}"] = value
    return out


_OPEN_CLIP_RETRIEVAL = re.compile(r"^(image_to_text|text_to_image)_(R@\d+|mean_rank|median_rank)$")


def tensorboard_scalars(results: dict) -> dict[str, float]:
    """`scalars` as TensorBoard tags, under open_clip_train's names where it has them, so
    runs of both trainers overlay: zero-shot top-k as ``val/NAME-zeroshot-val-topK`` (its
    ``val/imagenet-zeroshot-val-top1``), recall on the held-out shards (``val``) as
    ``val/image_to_text_R@1`` etc.; the rest (chance levels, per-class means, other sets)
    as ``eval/`` + the `scalars` name."""
    out: dict[str, float] = {}
    for name, metrics in results.get("datasets", {}).items():
        for key in ("top1", "top5"):
            if key in metrics:
                out[f"val/{name}-zeroshot-val-{key}"] = metrics[key]
    for name, metrics in results.get("retrieval", {}).items():
        if name == HELD_OUT:
            out.update({f"val/{k}": v for k, v in metrics.items() if _OPEN_CLIP_RETRIEVAL.match(k)})
    for key, value in scalars(results).items():
        group, rest = key.split("/", 1)
        name, metric = rest.rsplit("/", 1)
        taken = (group == "zeroshot" and metric in ("top1", "top5")) or (
            group == "retrieval" and name == HELD_OUT and _OPEN_CLIP_RETRIEVAL.match(metric)
        )
        if not taken:
            out[f"eval/{key}"] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's options: the model's (`train.sources`), then `EvalConfig`'s, defaults from its fields."""
    from .eval_suite import SUITES

    default = EvalConfig()
    ap = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sources.add_model_arguments(ap)
    ap.add_argument(
        "--datasets",
        nargs="+",
        help="labelled sets: openclipart, animal-mnist, digits, imagefolder:ROOT[::CLASSNAMES_FILE], "
        "wds:ROOT (CLIP_benchmark's webdataset layout, a folder or s3://), imagenet:ROOT (synset folders, or the flat val "
        "folder with LOC_val_solution.csv or the devkit), imagenet-sketch:ROOT, imagenet-v2:ROOT, imagenet-a:ROOT, "
        "imagenet-r:ROOT, objectnet:ROOT "
        f"(default: {' '.join(default.datasets)}; none with --suite)",
    )
    ap.add_argument(
        "--retrieval",
        nargs="*",
        default=default.retrieval,
        help="retrieval sets: openclipart, wds:ROOT (CLIP_benchmark's webdataset layout, several captions "
        "per image); default: openclipart if it is among --datasets; "
        "give the flag alone for none",
    )
    ap.add_argument(
        "--suite",
        choices=SUITES,
        help="also every task of DataComp's list found under --data-root (its wds_<task>_test folders), "
        "with its main metric, random score and DataComp's aggregates; the tasks absent or not scorable "
        "are listed (train/eval_suite.py)",
    )
    ap.add_argument("--data-root", help="with --suite: the folder (or s3://) holding the suite's sets")
    ap.add_argument(
        "--tasklist",
        help="with --suite: a DataComp tasklist.yml (default: DATA_ROOT/tasklist.yml if present, "
        "else the copy in train/datacomp_tasklist.yml)",
    )
    ap.add_argument("--cache", default=str(default.cache_dir), help="sample cache (default: %(default)s)")
    ap.add_argument(
        "--out",
        help="results go to OUT/eval/ (default: the checkpoint's run folder, or runs/models/SOURCE for --model)",
    )
    ap.add_argument("--step", type=int, help="write eval/step-NNNNNNNN.json instead of eval/final.json")
    ap.add_argument(
        "--templates",
        choices=["openai", "simple"],
        default=default.templates,
        help="prompt templates: CLIP's 80 ImageNet prompts or its 7 simple ones (default: %(default)s)",
    )
    ap.add_argument(
        "--batch-size", type=int, default=default.batch_size, help="images per forward pass (default: %(default)s)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=default.num_workers,
        help="data loader worker processes (default: %(default)s)",
    )
    sources.add_device_arguments(ap, precision=default.precision)
    shots, seeds = "/".join(map(str, default.probe_shots)), f"{default.probe_seeds[0]}-{default.probe_seeds[-1]}"
    ap.add_argument(
        "--linear-probe",
        action="store_true",
        default=default.linear_probe,
        help=f"also fit the CLIP paper's linear probe and {shots}-shot probes (seeds {seeds}) on each "
        "labelled set's image embeddings, split 60/20/20 per class; zero-shot top-1 on the same "
        "test split beside them",
    )
    ap.add_argument(
        "--probe-seed",
        type=int,
        default=default.probe_seed,
        help="seed of the probe's train/validation/test split (default: %(default)s)",
    )
    ap.add_argument(
        "--feature-cache",
        default=str(default.feature_cache),
        help="with --linear-probe: keep the encoded features here per (weights, dataset), so another "
        "probe over the same weights does not encode the images again; '' for none "
        "(default: %(default)s)",
    )
    return ap


def config_from(args: argparse.Namespace) -> EvalConfig:
    """The `EvalConfig` that parsed options ask for."""
    datasets = args.datasets if args.datasets is not None else ([] if args.suite else EvalConfig().datasets)
    return EvalConfig(
        datasets=tuple(datasets),
        suite=args.suite,
        data_root=args.data_root,
        tasklist=args.tasklist,
        retrieval=None if args.retrieval is None else tuple(args.retrieval),
        cache_dir=args.cache,
        templates=args.templates,
        batch_size=args.batch_size,
        num_workers=args.workers,
        precision=args.precision,
        linear_probe=args.linear_probe,
        probe_seed=args.probe_seed,
        feature_cache=args.feature_cache or None,
    )


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        ap.error("--batch-size must be >= 1 and --workers >= 0")
    sources.check_model_arguments(ap, args)
    if bool(args.suite) != bool(args.data_root) or (args.tasklist and not args.suite):
        ap.error("--suite and --data-root go together (--tasklist with them)")
    config = config_from(args)
    try:
        from . import eval_data

        for spec in config.datasets:
            eval_data.check_spec(spec)
        for name in config.retrieval_sets():
            eval_data.check_spec(name, retrieval=True)
        if config.suite:  # a missing root or a broken task list fails before the model loads
            from . import eval_suite

            eval_suite.check(config.suite, str(config.data_root), config.tasklist)
        device = sources.pick_device(args.device)
        loaded = sources.load(args, device)
        out = loaded.out(args.out)
        results = evaluate(
            loaded.model,
            loaded.tokenizer,
            loaded.preprocess,
            config,
            device,
            out,
            args.step,
            extra=_source_fields(loaded),
        )
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    from .report import refresh_report

    refresh_report(out)  # OUT/report.html shows these results beside any earlier ones
    print(json.dumps({"out": results["path"], **_summary(results)}, indent=2))
    return 0


def _source_fields(loaded: sources.Loaded) -> dict:
    """What the results say about the model: its checkpoint and step, or its open_clip source."""
    if loaded.checkpoint is None:
        return {"checkpoint": None, "model": loaded.name, "pretrained": loaded.pretrained, "checkpoint_step": None}
    fields = {"checkpoint": str(loaded.checkpoint), "model": loaded.name, "checkpoint_step": loaded.step}
    if "epoch" in loaded.meta:
        fields["checkpoint_epoch"] = loaded.meta["epoch"]
    return fields


def _summary(results: dict) -> dict:
    """The headline numbers the command prints: accuracies, probes and recalls per set."""
    summary = {
        name: {k: v for k, v in r.items() if k.startswith(("top", "chance", "n"))}
        for name, r in results["datasets"].items()
    }
    for name, r in results["datasets"].items():
        probe = r.get("linear_probe")
        if probe and "test_acc" in probe:
            shots = probe.get("few_shot", {}).get("shots", {})
            summary[name]["linear_probe"] = {
                "test_acc": probe["test_acc"],
                "zero_shot_top1": probe["zero_shot_top1"],
                **{f"{k}_shot": v["mean"] for k, v in shots.items()},
            }
    summary.update(
        {
            f"retrieval:{name}": {k: v for k, v in r.items() if "R@" in k or k == "n"}
            for name, r in results["retrieval"].items()
        }
    )
    if "suite" in results:
        suite = results["suite"]
        summary[f"suite:{suite['name']}"] = {
            "tasks": {row["name"]: row["score"] for row in suite["tasks"]},
            "aggregates": {k: v["score"] for k, v in suite["aggregates"].items()},
            "not_scored": len(suite["not_scored"]),
        }
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
