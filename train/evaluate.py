"""Zero-shot evaluation of a CLIP model: classification accuracy and image-text retrieval.

    python -m train.evaluate --checkpoint runs/NAME/checkpoints/latest.pt \\
        --datasets openclipart animal-mnist digits [--cache .cache/sample] [--out runs/NAME]

For each labelled set (`train.eval_data`: ``openclipart``, ``animal-mnist``, ``digits``,
``imagefolder:ROOT``) the class names go through a prompt ensemble (CLIP's 80 ImageNet
templates, or its 7 "simple" ones) into a zero-shot classifier (`train.zeroshot`), and the
images are classified with it: top-1 / top-5 accuracy next to their chance levels. On the
held-out openclipart images with captions it also measures image->text and text->image
recall@1/5/10. Results go to ``OUT/eval/step-NNNNNNN.json`` (from the trainer, every
``--eval-every`` steps) or ``OUT/eval/final.json`` (this command without ``--step``),
written under a temporary name and renamed.

The trainer calls `evaluate` directly (on rank 0 only): it switches the model to eval mode
and back, and reads each set's files once per process.

The checkpoint is a dict with ``model`` (state dict; ``module.`` and ``_orig_mod.``
prefixes are stripped) and ``config`` (``model``: open_clip model name; optional
``model_config``: the architecture dict, registered with open_clip under that name before
the model is created, so a checkpoint of a custom architecture needs no config file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch

from pipeline.errors import EXIT_INPUT_ERROR, InputError
from pipeline.io import atomic_path

from . import eval_data
from .zeroshot import build_classifier, get_templates, zero_shot_accuracy, zero_shot_retrieval


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def result_path(out_dir: str | Path, step: int | None) -> Path:
    name = "final.json" if step is None else f"step-{int(step):07d}.json"
    return Path(out_dir) / "eval" / name


def _loader(dataset, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      persistent_workers=False)


def evaluate(model, tokenizer, preprocess, datasets: Sequence[str], cache_dir: str | Path = ".cache/sample",
             device: str | torch.device = "cpu", out_dir: str | Path | None = None, step: int | None = None,
             retrieval_loader=None, templates: str | Sequence = "openai", retrieval: Sequence[str] = (),
             batch_size: int = 64, num_workers: int = 0, autocast: Callable[[], ContextManager] | None = None,
             log: Callable[[str], None] | None = _log, extra: dict | None = None,
             retrieval_loader_name: str = "val") -> dict:
    """Zero-shot accuracy on `datasets` and retrieval recall; returns (and writes) the results.

    datasets: names for `train.eval_data.load_dataset`. retrieval: names of retrieval sets
    (``openclipart``: its held-out captioned images); `retrieval_loader`: any loader of
    (images, texts, ...) batches (the trainer's (images, tokens, uids) fit), texts as
    strings or token ids, reported under `retrieval_loader_name` (its ``totals``, if it
    has them, as ``info``).
    templates: ``"openai"`` (80 prompts), ``"simple"`` (7) or a list of templates.
    `out_dir` given: the JSON goes to `result_path(out_dir, step)`. `extra` is merged into
    the top level of the result (e.g. the checkpoint it came from).

    Result: ``{"step", "templates", "n_templates", "datasets": {name: {top1, chance_top1,
    top5, chance_top5 (more than 5 classes), n, n_classes, mean_per_class_top1,
    per_class_top1, classnames, info, seconds}}, "retrieval": {name: {image_to_text_R@k,
    text_to_image_R@k, chance_R@k, ..., info}}, "seconds"}``; `scalars` flattens it.
    """
    start = time.perf_counter()
    template_list = get_templates(templates)
    results: dict = {"step": step, "templates": templates if isinstance(templates, str) else "custom",
                     "n_templates": len(template_list), "datasets": {}, "retrieval": {}}
    if extra:
        results.update(extra)
    was_training = model.training if hasattr(model, "training") else False
    if hasattr(model, "eval"):
        model.eval()
    try:
        for spec in datasets:
            t0 = time.perf_counter()
            ds = eval_data.load_dataset(spec, cache_dir, preprocess)
            classifier = build_classifier(model, tokenizer, ds.classnames, template_list, device, autocast=autocast)
            acc = zero_shot_accuracy(model, classifier, _loader(ds, batch_size, num_workers), device,
                                     autocast=autocast, classnames=ds.classnames)
            acc.update({"classnames": ds.classnames, "info": ds.info, "seconds": round(time.perf_counter() - t0, 3)})
            results["datasets"][spec] = acc
            if log:
                top5 = f" top5 {acc['top5']:.4f} (chance {acc['chance_top5']:.4f})" if "top5" in acc else ""
                log(f"eval {spec}: top1 {acc['top1']:.4f} (chance {acc['chance_top1']:.4f}){top5} "
                    f"n={acc['n']} classes={acc['n_classes']} {acc['seconds']:.1f}s")
        named = [(name, None) for name in retrieval]
        if retrieval_loader is not None:
            named.append((retrieval_loader_name, retrieval_loader))
        for name, loader in named:
            t0 = time.perf_counter()
            info = {}
            if loader is None:
                pairs = eval_data.load_retrieval_dataset(name, cache_dir, preprocess)
                loader, info = _loader(pairs, batch_size, num_workers), pairs.info
            rec = zero_shot_retrieval(model, tokenizer, loader, device, autocast=autocast)
            if not info and isinstance(getattr(loader, "totals", None), dict):  # the trainer's ValLoader counts
                info = {k: int(v) for k, v in sorted(loader.totals.items())}
            rec.update({"info": info, "seconds": round(time.perf_counter() - t0, 3)})
            results["retrieval"][name] = rec
            if log:
                log(f"retrieval {name}: image->text R@1/5/10 {rec['image_to_text_R@1']:.4f}/"
                    f"{rec['image_to_text_R@5']:.4f}/{rec['image_to_text_R@10']:.4f}, text->image "
                    f"{rec['text_to_image_R@1']:.4f}/{rec['text_to_image_R@5']:.4f}/{rec['text_to_image_R@10']:.4f}"
                    f" (chance R@1 {rec['chance_R@1']:.4f}) n={rec['n']}")
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    results["seconds"] = round(time.perf_counter() - start, 3)
    if out_dir is not None:
        path = result_path(out_dir, step)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
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


# ---------------------------------------------------------------------------------------
# Checkpoints


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _register_config(name: str, model_config) -> None:
    import open_clip
    from open_clip import factory

    if model_config is not None:
        if isinstance(model_config, (str, os.PathLike)):
            model_config = json.loads(Path(model_config).read_text())
        needed = ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(model_config, dict) or not all(k in model_config for k in needed):
            raise InputError(f"model_config for {name!r} needs embed_dim, vision_cfg and text_cfg")
        factory._MODEL_CONFIGS[name] = model_config  # open_clip's registry; add_model_config takes files only
        return
    if open_clip.get_model_config(name) is None:
        try:  # the project's own small configs (train/model_configs/*.json), if that module is there
            from . import model as project_models
            project_models.register_builtin()
        except (ImportError, AttributeError):
            pass
    if open_clip.get_model_config(name) is None:
        raise InputError(f"unknown model {name!r} (not an open_clip architecture, "
                         "and the checkpoint has no model_config)")


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning."""
    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, preprocess_val, checkpoint dict without the weights) from a checkpoint."""
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        from .checkpoint import load_problem  # never torch's message: it suggests loading unsafely

        raise InputError(f"{path}: not a readable checkpoint ({load_problem(e)})") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("config"), dict)):
        raise InputError(f"{path}: not a checkpoint (needs a dict with 'model' weights and a 'config' dict)")
    name = ckpt["config"].get("model")
    if not isinstance(name, str) or not name:
        raise InputError(f"{path}: config has no 'model' name")
    _register_config(name, ckpt["config"].get("model_config"))
    with _quiet_random_init_warning():  # the weights come from the checkpoint, next
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    try:
        model.load_state_dict(_strip_prefixes(ckpt["model"]))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"{path}: weights do not fit model {name!r} ({' '.join(first[:2])[:300]})") from None
    model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(name)
    meta = {k: v for k, v in ckpt.items() if k != "model" and k not in ("optimizer", "scaler")}
    return model, tokenizer, preprocess, meta


def _default_out(checkpoint: Path) -> Path:
    """runs/NAME for runs/NAME/checkpoints/X.pt, else the checkpoint's folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _autocast_for(precision: str, device: str):
    dtypes = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16, "amp": torch.float16}
    if precision == "fp32":
        return None
    if precision not in dtypes:
        raise InputError(f"--precision {precision!r}: choose fp32, amp, amp_bf16 or amp_fp16")
    device_type = torch.device(device).type
    return lambda: torch.autocast(device_type, dtype=dtypes[precision])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) written by the trainer")
    ap.add_argument("--datasets", nargs="+", default=["openclipart", "animal-mnist", "digits"],
                    help="labelled sets: openclipart, animal-mnist, digits, imagefolder:ROOT[::CLASSNAMES_FILE] "
                         "(default: %(default)s)")
    ap.add_argument("--retrieval", nargs="*", default=None,
                    help="retrieval sets (openclipart); default: openclipart if it is among --datasets; "
                         "give the flag alone for none")
    ap.add_argument("--cache", default=".cache/sample", help="sample cache (default: %(default)s)")
    ap.add_argument("--out", help="run folder; results go to OUT/eval/ (default: the run folder of the checkpoint)")
    ap.add_argument("--step", type=int, help="write eval/step-NNNNNNN.json instead of eval/final.json")
    ap.add_argument("--templates", choices=["openai", "simple"], default="openai",
                    help="prompt templates: CLIP's 80 ImageNet prompts or its 7 simple ones (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: %(default)s)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="device (default: %(default)s)")
    ap.add_argument("--precision", default="fp32", help="fp32 (default), amp / amp_fp16 or amp_bf16 (autocast)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.batch_size < 1 or args.workers < 0:
        ap.error("--batch-size must be >= 1 and --workers >= 0")
    checkpoint = Path(args.checkpoint)
    retrieval = args.retrieval if args.retrieval is not None else \
        [name for name in ("openclipart",) if name in args.datasets]
    try:
        for spec in args.datasets:
            eval_data.check_spec(spec)
        for name in retrieval:
            eval_data.check_spec(name, retrieval=True)
        autocast = _autocast_for(args.precision, args.device)
        model, tokenizer, preprocess, meta = load_checkpoint(checkpoint, args.device)
        out = Path(args.out) if args.out else _default_out(checkpoint)
        extra = {"checkpoint": str(checkpoint), "model": meta["config"].get("model"),
                 "checkpoint_step": meta.get("step") if isinstance(meta.get("step"), int) else None}
        results = evaluate(model, tokenizer, preprocess, args.datasets, args.cache, args.device, out, args.step,
                           templates=args.templates, retrieval=retrieval, batch_size=args.batch_size,
                           num_workers=args.workers, autocast=autocast, extra=extra)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    summary = {name: {k: v for k, v in r.items() if k.startswith(("top", "chance", "n"))}
               for name, r in results["datasets"].items()}
    summary.update({f"retrieval:{name}": {k: v for k, v in r.items() if "R@" in k or k == "n"}
                    for name, r in results["retrieval"].items()})
    print(json.dumps({"out": results["path"], **summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
