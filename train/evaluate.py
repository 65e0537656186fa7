"""Zero-shot evaluation of a CLIP model: classification accuracy and image-text retrieval.

    python -m train.evaluate --checkpoint runs/NAME [--datasets openclipart animal-mnist digits]
    python -m train.evaluate --checkpoint runs/NAME/checkpoints/step-00000400.pt --out runs/NAME
    python -m train.evaluate --model local-dir:runs/NAME/export          # `python -m train.export`
    python -m train.evaluate --model tiny-ViT-64 --pretrained logs/x/checkpoints/epoch_5.pt
    python -m train.evaluate --model ViT-B-32 --pretrained laion2b_s34b_b79k   # needs the network

The model: ``--checkpoint FILE|RUN`` (a checkpoint of this trainer, or its run folder's
newest; open_clip_train's ``epoch_N.pt`` with ``--model NAME``) or ``--model NAME
[--pretrained TAG|FILE]`` (open_clip's loader: its architectures and tags, train/model_configs,
``local-dir:DIR``, ``hf-hub:ORG/NAME``); `train.sources` says how each is read.

For each labelled set (`train.eval_data`: ``openclipart``, ``animal-mnist``, ``digits``,
``imagefolder:ROOT``) the class names go through a prompt ensemble (CLIP's 80 ImageNet
templates, or its 7 "simple" ones) into a zero-shot classifier (`train.zeroshot`), and the
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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import EXIT_INPUT_ERROR, InputError

from . import sources
from .precision import autocast_factory

if TYPE_CHECKING:
    import torch


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def result_path(out_dir: str | Path, step: int | None) -> Path:
    """OUT/eval/step-NNNNNNNN.json (the checkpoints' 8 digits) or OUT/eval/final.json."""
    name = "final.json" if step is None else f"step-{int(step):08d}.json"
    return Path(out_dir) / "eval" / name


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


def _encode(
    model,
    ds,
    spec: str,
    cache,
    weights,
    preprocess,
    precision: str,
    batch_size: int,
    num_workers: int,
    device,
    autocast,
    log: Callable[[str], None] | None,
):
    """`train.features` of a labelled set: from `cache` if it has them, else encoded (a bar
    or a line per set through `log`)."""
    from . import features

    batches = _loader(ds, batch_size, num_workers)
    if log is not None:
        batches = _progress(batches, f"eval {spec}", log, f"{len(ds)} images, {len(ds.classnames)} classes")
    return features.cached_encode(model, ds, batches, spec, cache, weights, preprocess, precision, device, autocast)


def evaluate(
    model,
    tokenizer,
    preprocess,
    datasets: Sequence[str],
    cache_dir: str | Path = ".cache/sample",
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    step: int | None = None,
    retrieval_loader=None,
    templates: str | Sequence = "openai",
    retrieval: Sequence[str] = (),
    batch_size: int = 64,
    num_workers: int = 0,
    autocast: Callable[[], ContextManager] | None = None,
    log: Callable[[str], None] | None = _log,
    extra: dict | None = None,
    retrieval_loader_name: str = "val",
    progress: bool = True,
    linear_probe: bool = False,
    probe_seed: int = 0,
    probe_shots: Sequence[int] = (1, 2, 4, 8, 16),
    probe_seeds: Sequence[int] = (0, 1, 2),
    feature_cache: str | Path | None = None,
    precision: str = "fp32",
) -> dict:
    """Zero-shot accuracy on `datasets` and retrieval recall; returns (and writes) the results.

    datasets: names for `train.eval_data.load_dataset`. retrieval: names of retrieval sets
    (``openclipart``: its held-out captioned images); `retrieval_loader`: any loader of
    (images, texts, ...) batches (the trainer's (images, tokens, uids) fit), texts as
    strings or token ids, reported under `retrieval_loader_name` (its ``totals``, if it
    has them, as ``info``).
    templates: ``"openai"`` (80 prompts), ``"simple"`` (7) or a list of templates.
    `out_dir` given: the JSON goes to `result_path(out_dir, step)`. `extra` is merged into
    the top level of the result (e.g. the checkpoint it came from). `progress`: a bar per
    set on a terminal, a line as each set starts otherwise (through `log`).

    Result: ``{"step", "templates", "n_templates", "datasets": {name: {top1, chance_top1,
    top5, chance_top5 (more than 5 classes), n, n_classes, mean_per_class_top1,
    per_class_top1, classnames, info, seconds}}, "retrieval": {name: {image_to_text_R@k,
    text_to_image_R@k, chance_R@k, ..., info}}, "seconds"}``; `scalars` flattens it.

    `linear_probe`: also fit linear probes on each labelled set's image features (encoded
    once with the embeddings, `train.features`): ``datasets[name]["linear_probe"]``, see
    `train.linear_probe.probe_dataset`; an ``imagefolder:ROOT`` with ``train/`` and ``test/``
    folders is scored zero-shot on test and probed by `probe_given_split`. `feature_cache` (a folder) keeps
    those features per (weights, dataset, preprocessing, `precision`), so another probe over
    the same weights reads them instead of encoding the images again.
    """
    from pipeline.io import write_json

    from . import eval_data, features
    from .linear_probe import probe_dataset, probe_given_split, probe_line
    from .zeroshot import accuracy_from_features, build_classifier, get_templates, zero_shot_retrieval

    start = time.perf_counter()
    template_list = get_templates(templates)
    results: dict = {
        "step": step,
        "templates": templates if isinstance(templates, str) else "custom",
        "n_templates": len(template_list),
        "datasets": {},
        "retrieval": {},
    }
    if extra:
        results.update(extra)
    was_training = model.training if hasattr(model, "training") else False
    if hasattr(model, "eval"):
        model.eval()
    try:
        cache = features.FeatureCache(feature_cache) if (feature_cache and linear_probe) else None
        weights = features.weights_digest(model) if cache is not None else None
        for spec in datasets:
            t0 = time.perf_counter()
            ds = eval_data.load_dataset(spec, cache_dir, preprocess)
            classifier = build_classifier(model, tokenizer, ds.classnames, template_list, device, autocast=autocast)
            feats = _encode(
                model,
                ds,
                spec,
                cache,
                weights,
                preprocess,
                precision,
                batch_size,
                num_workers,
                device,
                autocast,
                log if progress else None,
            )
            acc = accuracy_from_features(feats.embedding, feats.labels, classifier, classnames=ds.classnames)
            acc.update({"classnames": ds.classnames, "info": ds.info, "seconds": round(time.perf_counter() - t0, 3)})
            results["datasets"][spec] = acc
            if log:
                top5 = f" top5 {acc['top5']:.4f} (chance {acc['chance_top5']:.4f})" if "top5" in acc else ""
                log(
                    f"eval {spec}: top1 {acc['top1']:.4f} (chance {acc['chance_top1']:.4f}){top5} "
                    f"n={acc['n']} classes={acc['n_classes']} {acc['seconds']:.1f}s"
                )
            if linear_probe:
                train_ds = getattr(ds, "probe_train", None)
                if train_ds is not None:  # imagefolder ROOT/train + ROOT/test: the probe fits on train
                    fit = _encode(
                        model,
                        train_ds,
                        f"{spec}#train",
                        cache,
                        weights,
                        preprocess,
                        precision,
                        batch_size,
                        num_workers,
                        device,
                        autocast,
                        log if progress else None,
                    )
                    probe = probe_given_split(
                        fit, feats, classifier, seed=probe_seed, shots=probe_shots, seeds=probe_seeds
                    )
                else:
                    probe = probe_dataset(
                        feats.embedding,
                        feats.labels,
                        classifier,
                        seed=probe_seed,
                        shots=probe_shots,
                        seeds=probe_seeds,
                        probe_features=feats.probe,
                        kind=feats.kind,
                    )
                probe["cached_features"] = feats.cached
                acc["linear_probe"] = probe
                if log:
                    log(probe_line(spec, probe))
        named = [(name, None) for name in retrieval]
        if retrieval_loader is not None:
            named.append((retrieval_loader_name, retrieval_loader))
        for name, loader in named:
            t0 = time.perf_counter()
            info = {}
            if loader is None:
                pairs = eval_data.load_retrieval_dataset(name, cache_dir, preprocess)
                loader, info = _loader(pairs, batch_size, num_workers), pairs.info
            batches = _progress(loader, f"retrieval {name}", log, "image-text pairs") if progress else loader
            rec = zero_shot_retrieval(model, tokenizer, batches, device, autocast=autocast)
            if not info and isinstance(getattr(loader, "totals", None), dict):  # the trainer's ValLoader counts
                info = {k: int(v) for k, v in sorted(loader.totals.items())}
            rec.update({"info": info, "seconds": round(time.perf_counter() - t0, 3)})
            results["retrieval"][name] = rec
            if log:
                log(
                    f"retrieval {name}: image->text R@1/5/10 {rec['image_to_text_R@1']:.4f}/"
                    f"{rec['image_to_text_R@5']:.4f}/{rec['image_to_text_R@10']:.4f}, text->image "
                    f"{rec['text_to_image_R@1']:.4f}/{rec['text_to_image_R@5']:.4f}/{rec['text_to_image_R@10']:.4f}"
                    f" (chance R@1 {rec['chance_R@1']:.4f}) n={rec['n']}"
                )
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    results["seconds"] = round(time.perf_counter() - start, 3)
    if out_dir is not None:
        path = result_path(out_dir, step)
        write_json(path, results)
        results["path"] = str(path)
    return results


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
        if name == "val":
            out.update({f"val/{k}": v for k, v in metrics.items() if _OPEN_CLIP_RETRIEVAL.match(k)})
    for key, value in scalars(results).items():
        group, rest = key.split("/", 1)
        name, metric = rest.rsplit("/", 1)
        taken = (group == "zeroshot" and metric in ("top1", "top5")) or (
            group == "retrieval" and name == "val" and _OPEN_CLIP_RETRIEVAL.match(metric)
        )
        if not taken:
            out[f"eval/{key}"] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sources.add_model_arguments(ap)
    ap.add_argument(
        "--datasets",
        nargs="+",
        default=["openclipart", "animal-mnist", "digits"],
        help="labelled sets: openclipart, animal-mnist, digits, imagefolder:ROOT[::CLASSNAMES_FILE] "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--retrieval",
        nargs="*",
        default=None,
        help="retrieval sets (openclipart); default: openclipart if it is among --datasets; "
        "give the flag alone for none",
    )
    ap.add_argument("--cache", default=".cache/sample", help="sample cache (default: %(default)s)")
    ap.add_argument(
        "--out",
        help="results go to OUT/eval/ (default: the checkpoint's run folder, or runs/models/SOURCE for --model)",
    )
    ap.add_argument("--step", type=int, help="write eval/step-NNNNNNNN.json instead of eval/final.json")
    ap.add_argument(
        "--templates",
        choices=["openai", "simple"],
        default="openai",
        help="prompt templates: CLIP's 80 ImageNet prompts or its 7 simple ones (default: %(default)s)",
    )
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: %(default)s)")
    sources.add_device_arguments(ap)
    ap.add_argument(
        "--linear-probe",
        action="store_true",
        help="also fit the CLIP paper's linear probe and 1/2/4/8/16-shot probes (seeds 0-2) on each "
        "labelled set's image embeddings, split 60/20/20 per class; zero-shot top-1 on the same "
        "test split beside them",
    )
    ap.add_argument(
        "--probe-seed",
        type=int,
        default=0,
        help="seed of the probe's train/validation/test split (default: %(default)s)",
    )
    ap.add_argument(
        "--feature-cache",
        default=".cache/features",
        help="with --linear-probe: keep the encoded features here per (weights, dataset), so another "
        "probe over the same weights does not encode the images again; '' for none "
        "(default: %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        ap.error("--batch-size must be >= 1 and --workers >= 0")
    sources.check_model_arguments(ap, args)
    retrieval = (
        args.retrieval if args.retrieval is not None else [name for name in ("openclipart",) if name in args.datasets]
    )
    try:
        from . import eval_data

        for spec in args.datasets:
            eval_data.check_spec(spec)
        for name in retrieval:
            eval_data.check_spec(name, retrieval=True)
        device = sources.pick_device(args.device)
        autocast = autocast_factory(args.precision, device)
        loaded = sources.load(args, device)
        if loaded.checkpoint is not None:
            extra = {"checkpoint": str(loaded.checkpoint), "model": loaded.name, "checkpoint_step": loaded.step}
            if "epoch" in loaded.meta:
                extra["checkpoint_epoch"] = loaded.meta["epoch"]
        else:
            extra = {"checkpoint": None, "model": loaded.name, "pretrained": loaded.pretrained, "checkpoint_step": None}
        out = loaded.out(args.out)
        results = evaluate(
            loaded.model,
            loaded.tokenizer,
            loaded.preprocess,
            args.datasets,
            args.cache,
            device,
            out,
            args.step,
            templates=args.templates,
            retrieval=retrieval,
            batch_size=args.batch_size,
            num_workers=args.workers,
            autocast=autocast,
            extra=extra,
            linear_probe=args.linear_probe,
            probe_seed=args.probe_seed,
            feature_cache=args.feature_cache or None,
            precision=args.precision,
        )
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
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
    from .report import refresh_report

    refresh_report(out)  # OUT/report.html shows these results beside any earlier ones
    print(json.dumps({"out": results["path"], **summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
