"""Models: any open_clip architecture by name, randomly initialised, plus our small configs.

`train/model_configs/*.json` holds configs sized for a CPU (the sample trains in minutes);
they are registered with open_clip under their file names, and a user's own JSON can be
passed with `--model-config`. The config used is saved in every checkpoint, so evaluation
rebuilds the same architecture without the file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip

from pipeline.errors import InputError, one_line

from .distributed import unwrap
from .precision import model_precision
from .tokens import batch_tokenizer

CONFIG_DIR = Path(__file__).parent / "model_configs"
CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # open_clip skips a config without them


def register(name: str, config: dict) -> None:
    """`config` into open_clip's registry under `name`, through its public `add_model_config`.

    That reads files only (a file's stem is its name), so the dict goes through a temporary
    `name`.json, deleted at once: open_clip keeps the config, and its later rescans skip the
    missing file rather than bring an older config back under `name`. ValueError for a
    config open_clip would skip, or a name that cannot be a file name.
    """
    if not isinstance(config, dict) or not all(k in config for k in CONFIG_KEYS):
        raise ValueError(f"model_config for {name!r} needs embed_dim, vision_cfg and text_cfg")
    if not name or name in (".", "..") or Path(name).name != name:
        raise ValueError(f"model name {name!r} cannot be registered: it must be a file name (no '/')")
    with tempfile.TemporaryDirectory(prefix="train-model-config-") as folder:
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)


def register_builtin() -> None:
    """train/model_configs/*.json into open_clip's registry under their file names, unless
    they are there as in the files (each `add_model_config` adds a path that every later one
    rescans, so the folder is added only when needed)."""
    for path in sorted(CONFIG_DIR.glob("*.json")):
        if open_clip.get_model_config(path.stem) != json.loads(path.read_text()):
            open_clip.add_model_config(CONFIG_DIR)
            return


def resolve(name: str, config_path: str | None = None) -> tuple[str, dict]:
    """(model name, its config dict), registering a user's JSON config under `name`;
    InputError naming the option for an unknown name or a missing or malformed config."""
    register_builtin()
    if config_path:
        try:
            cfg = json.loads(Path(config_path).read_text())
            register(name, cfg)
        except (ValueError, OSError) as e:
            raise InputError(f"--model-config {config_path}: {one_line(e, typed=True)}") from None
        return name, cfg
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise InputError(f"--model: unknown model {name!r}: not an open_clip architecture nor in {CONFIG_DIR}")
    return name, cfg


def create(name: str, config: dict | None = None, precision: str = "fp32", device: str = "cpu"):
    """(model, tokenizer, image_size) for a randomly initialised model."""
    if config is not None:
        register(name, config)
    else:
        register_builtin()
    model = open_clip.create_model(name, pretrained=None, precision=model_precision(precision), device=device)
    tokenizer = batch_tokenizer(open_clip.get_tokenizer(name))
    size = model.visual.image_size
    image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return model, tokenizer, image_size


def eval_transform(model):
    """open_clip's validation preprocessing for `model` (its ``visual.preprocess_cfg``), the
    transform ``create_model_and_transforms`` returns: the trainer's evaluation, `train.evaluate`
    and `train.overlap` then see the same pixels, and share cached features (`train.features`)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**unwrap(model).visual.preprocess_cfg), is_train=False)
