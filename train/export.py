"""A trained model as an open_clip model folder, loadable and publishable as is.

    python -m train.export runs/NAME --out runs/NAME/export        # the run's newest checkpoint
    python -m train.export runs/NAME/checkpoints/step-00000400.pt --out DIR

A training checkpoint holds the optimizer, RNG and data-stream state beside the weights, so
open_clip cannot load it (`pretrained=...` fails on the extra keys). This writes the layout
open_clip's `local-dir:` and `hf-hub:` loaders read, with open_clip's own writers
(`open_clip.push_to_hf_hub`):

- ``open_clip_config.json``: ``model_cfg`` (the architecture, taken from the checkpoint, so
  custom configs such as tiny-ViT-64 need no registration) and ``preprocess_cfg``;
- ``open_clip_model.safetensors``: the weights (tensors only: nothing is unpickled on load);
- ``README.md``: a model card (data, recipe, steps, the run's evaluation at that step).

Then ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads it, and the folder
pushed to the Hugging Face Hub as is (``huggingface-cli upload ORG/NAME DIR``) loads as
``hf-hub:ORG/NAME``. Files already in DIR are replaced, others left alone. Torch and
open_clip are imported only after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import EXIT_INPUT_ERROR, InputError


def _eval_at(run: Path | None, step: int) -> dict | None:
    """The run's evaluation of this step: eval/step-NNNNNNNN.json (or the 7-digit name that
    runs of earlier trainers hold, so their models export with their results), or
    eval/final.json when it was made from this step."""
    if run is None:
        return None
    names = [f"step-{step:08d}.json", f"step-{step:07d}.json", "final.json"]
    for name in names:
        path = run / "eval" / name
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if name != "final.json" or result.get("checkpoint_step") == step:
            return result
    return None


def _results_lines(result: dict) -> dict[str, str]:
    out = {}
    for name, m in result.get("datasets", {}).items():
        top5 = f", top-5 {m['top5']:.4f} (chance {m['chance_top5']:.4f})" if "top5" in m else ""
        out[f"{name} ({m['n']} images, {m['n_classes']} classes)"] = (
            f"top-1 {m['top1']:.4f} (chance {m['chance_top1']:.4f}){top5}"
        )
    for name, m in result.get("retrieval", {}).items():
        out[f"retrieval on {name} ({m['n']} pairs)"] = (
            f"image->text R@1/5/10 {m['image_to_text_R@1']:.4f}/{m['image_to_text_R@5']:.4f}/"
            f"{m['image_to_text_R@10']:.4f}, text->image {m['text_to_image_R@1']:.4f}/"
            f"{m['text_to_image_R@5']:.4f}/{m['text_to_image_R@10']:.4f} (chance R@1 {m['chance_R@1']:.4f})"
        )
    return out


def model_card(
    config: dict, step: int, checkpoint: Path, n_params: int, result: dict | None, license: str = "other"
) -> dict:
    """The card for open_clip's `generate_readme`: what a reader needs to judge the weights."""
    gb = config.get("global_batch")
    recipe = {
        "Steps": f"{step:,} of {config.get('steps', step):,} (checkpoint {checkpoint.name})",
        "Samples seen": f"{step * gb:,}" if isinstance(gb, int) else "unknown",
        "Batch": f"{gb} pairs a step ({config.get('batch_size')} per rank x {config.get('world_size')} ranks"
        f" x --accum-freq {config.get('accum_freq')}), the contrastive batch",
        "Optimizer": f"AdamW, peak lr {config.get('lr')} after {config.get('warmup')} warm-up steps, cosine to "
        f"{config.get('min_lr')}, betas {config.get('betas')}, eps {config.get('eps')}, "
        f"weight decay {config.get('wd')} (not on gains, biases, embeddings, logit scale)",
        "Loss": "symmetric InfoNCE with a learnable temperature (open_clip's ClipLoss)",
        "Precision": str(config.get("precision")),
        "Seed": str(config.get("seed")),
    }
    card: dict[str, Any] = {
        "license": license,
        "description": f"A CLIP model ({config.get('model')}, {n_params / 1e6:.1f}M parameters) trained from scratch "
        "with this repository's trainer (`python -m train`: open_clip's models and loss on "
        "WIT-style webdataset shards), exported by `python -m train.export`. Check the image "
        "licenses of the training data before choosing one for these weights.",
        "details": {
            "Model type": "contrastive image-text model (CLIP): zero-shot image classification, retrieval",
            "Architecture": f"{config.get('model')}, {config.get('image_size')}px images",
            "Training data": {
                "Shards": " ".join(config.get("train_data") or []),
                "Shard files": config.get("train_urls"),
                "Held out for evaluation": f"{config.get('val_fraction')} of the samples (by uid hash)",
            },
            "Recipe": recipe,
        },
        "usage": (
            "```python\nimport open_clip\n\n"
            'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH")'
            '  # or "hf-hub:ORG/NAME" once pushed\n'
            'tokenizer = open_clip.get_tokenizer("local-dir:PATH")\n```\n\n'
            "Zero-shot evaluation on this repository's sets: "
            "`python -m train.evaluate --model local-dir:PATH --datasets openclipart animal-mnist digits`.\n"
        ),
    }
    if result:
        templates = f"{result.get('n_templates')} prompt templates ({result.get('templates')})"
        card["details"][f"Evaluation at step {step:,}, {templates}"] = _results_lines(result)
    else:
        card["details"]["Evaluation"] = "none recorded for this step (run python -m train.evaluate)"
    return card


def _readable_as_umask_allows(path: Path) -> None:
    """safetensors creates its file 0600: give it the mode any other file here gets."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export(source: str | Path, out: str | Path, license: str = "other") -> dict:
    """Write the model of `source` (a checkpoint file, or a run folder: its newest
    checkpoint) into `out` as an open_clip model folder; returns what was written."""
    import safetensors.torch
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
    from open_clip.push_to_hf_hub import generate_readme, save_config_for_hf

    from pipeline.io import atomic_path

    from . import sources

    path = sources.resolve_checkpoint(source)
    ckpt = sources.read_checkpoint(path)
    config = ckpt.get("config")
    if not (isinstance(config, dict) and isinstance(ckpt.get("model"), dict)):
        raise InputError(
            f"{path}: not a checkpoint of this trainer (no 'model' and 'config'); an open_clip_train "
            "checkpoint loads in open_clip itself (pretrained=FILE)"
        )
    model, tokenizer, _, meta = sources.model_from_checkpoint(ckpt, path)
    name = meta["model"]
    model_cfg = config.get("model_config")
    if not isinstance(model_cfg, dict):
        import open_clip

        model_cfg = open_clip.get_model_config(name)  # registered by model_from_checkpoint
    saved_step = ckpt.get("step")
    step = saved_step if isinstance(saved_step, int) else 0

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / HF_SAFE_WEIGHTS_NAME) as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        _readable_as_umask_allows(tmp)
    with atomic_path(out / HF_CONFIG_NAME) as tmp:
        save_config_for_hf(model, tmp, model_config=model_cfg)  # {"model_cfg", "preprocess_cfg"}
    if hasattr(tokenizer, "save_pretrained"):  # a Hugging Face tokenizer: local-dir: reads it from the folder
        tokenizer.save_pretrained(str(out))
    run = path.parent.parent if path.parent.name == "checkpoints" else None
    result = _eval_at(run, step)
    card = model_card(
        {**config, "model": name}, step, path, sum(p.numel() for p in model.parameters()), result, license
    )
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(generate_readme(card, str(config.get("name") or out.name)))
    return {
        "out": str(out),
        "checkpoint": str(path),
        "step": step,
        "model": name,
        "files": [HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, "README.md"],
        "evaluation": bool(result),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "source",
        metavar="CHECKPOINT_OR_RUN",
        help="a checkpoint of this trainer, or a run folder (runs/NAME): its newest checkpoint",
    )
    ap.add_argument("--out", required=True, help="the model folder to write (created if needed)")
    ap.add_argument(
        "--license",
        default="other",
        help="the license in the model card's metadata, a Hugging Face license id (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        written = export(args.source, args.out, args.license)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(json.dumps(written, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
