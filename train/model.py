"""Models: any open_clip architecture by name, randomly initialised, plus our small configs.

`train/model_configs/*.json` holds configs sized for a CPU (the sample trains in minutes);
they are registered with open_clip under their file names, and a user's own JSON can be
passed with `--model-config`. The config used is saved in every checkpoint, so evaluation
rebuilds the same architecture without the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
from open_clip import factory

CONFIG_DIR = Path(__file__).parent / "model_configs"


def register(name: str, config: dict) -> None:
    factory._MODEL_CONFIGS[name] = config  # open_clip's registry; add_model_config only takes files


def register_builtin() -> None:
    for path in sorted(CONFIG_DIR.glob("*.json")):
        register(path.stem, json.loads(path.read_text()))


def resolve(name: str, config_path: str | None = None) -> tuple[str, dict]:
    """(model name, its config dict), registering a user's JSON config under `name`."""
    register_builtin()
    if config_path:
        cfg = json.loads(Path(config_path).read_text())
        register(name, cfg)
        return name, cfg
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown model {name!r}: not an open_clip architecture nor in {CONFIG_DIR}")
    return name, cfg


def create(name: str, config: dict | None = None, precision: str = "fp32", device: str = "cpu"):
    """(model, tokenizer, image_size) for a randomly initialised model."""
    if config is not None:
        register(name, config)
    else:
        register_builtin()
    model = open_clip.create_model(name, pretrained=None, precision=_model_precision(precision), device=device)
    tokenizer = open_clip.get_tokenizer(name)
    size = model.visual.image_size
    image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return model, tokenizer, image_size


def eval_transform(model):
    """open_clip's validation preprocessing for `model` (its ``visual.preprocess_cfg``), the
    transform ``create_model_and_transforms`` returns: the trainer's evaluation, `train.evaluate`
    and `train.overlap` then see the same pixels, and share cached features (`train.features`)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**getattr(model, "module", model).visual.preprocess_cfg), is_train=False)


def _model_precision(precision: str) -> str:
    """Master weights stay fp32: our bf16 and amp_fp16 are autocast modes, so AdamW's small
    late-schedule updates are not lost to bf16 rounding (open_clip's "bf16" would cast them)."""
    return "fp32"
