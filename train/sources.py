"""Where a model under evaluation comes from, for every command over a model (`train.evaluate`,
`train.overlap`, `train.export`): its command-line options, its loading, and where its results go.

    --checkpoint runs/NAME                                   # the run's newest checkpoint
    --checkpoint runs/NAME/checkpoints/step-00000400.pt
    --model tiny-ViT-64 --pretrained logs/x/checkpoints/epoch_5.pt   # open_clip_train's
    --model local-dir:runs/NAME/export                       # `python -m train.export`
    --model ViT-B-32 --pretrained laion2b_s34b_b79k          # open_clip's tag: needs the network

The model comes from one of:
- ``--checkpoint FILE``: a checkpoint of this trainer (``model`` weights, ``config`` naming
  the architecture and holding its config, so custom architectures need no file), or
  open_clip_train's ``epoch_N.pt`` (``state_dict``, keys possibly ``module.``-prefixed) or
  a bare state dict, both with ``--model NAME`` for the architecture. Loaded with
  ``torch.load(weights_only=True)`` only: a checkpoint is data, never code.
- ``--checkpoint RUN``: a run folder (or its ``checkpoints/``): its newest checkpoint.
- ``--model NAME --pretrained TAG|FILE``: open_clip's own loader, as ``open_clip.
  create_model_and_transforms(NAME, pretrained=...)``; NAME is an open_clip architecture,
  one of train/model_configs, ``local-dir:DIR`` or ``hf-hub:ORG/NAME`` (no --pretrained).
  Hub weights need the network or the Hugging Face cache: offline (HF_HUB_OFFLINE=1) and
  not cached is a one-line error.

Results go to OUT (``--out``), by default the checkpoint's run folder, or
``runs/models/SOURCE`` for a --model source (`default_out`). Every problem with a source is
an `InputError` of one line: open_clip's own log records of a failed load are held back
(`_held_logs`), and torch's advice to load a file unsafely is never echoed. Torch and
open_clip are imported inside the functions, so a command's ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError

from .precision import PRECISIONS

if TYPE_CHECKING:
    import torch

PRECISION_HELP = "fp32 (default), bf16 / amp_bf16 or amp_fp16 / amp (autocast), as the trainer's --precision"


# ---------------------------------------------------------------------------------------
# Command-line options


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """--checkpoint / --model / --pretrained, as every command over a model takes them."""
    ap.add_argument(
        "--checkpoint",
        help="a checkpoint file (this trainer's, or open_clip_train's epoch_N.pt with "
        "--model), or a run folder: its newest checkpoint",
    )
    ap.add_argument(
        "--model",
        help="an open_clip architecture or one of train/model_configs (with --pretrained, or "
        "for a --checkpoint without its own), local-dir:DIR or hf-hub:ORG/NAME",
    )
    ap.add_argument("--pretrained", help="with --model NAME: one of open_clip's tags for it (downloaded) or a file")


def check_model_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`ap.error` (exit 2) for a model source that is missing or given twice."""
    if not args.checkpoint and not args.model:
        ap.error("pass --checkpoint FILE|RUN, or --model NAME [--pretrained TAG|FILE]")
    if args.checkpoint and args.pretrained:
        ap.error("--pretrained goes with --model, not with --checkpoint")


def add_device_arguments(ap: argparse.ArgumentParser, precision: str = "fp32") -> None:
    """--device and --precision (default `precision`), as every command that runs a model takes them."""
    ap.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    ap.add_argument("--precision", choices=PRECISIONS, default=precision, help=PRECISION_HELP)


def pick_device(given: str | None) -> str:
    """--device, else cuda when torch sees a GPU, else cpu."""
    import torch

    return given or ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------
# Loading what the options name


@dataclass
class Loaded:
    """A model named on the command line, loaded for evaluation (eval mode, on its device)."""

    model: Any
    tokenizer: Any
    preprocess: Any  # open_clip's preprocess_val
    name: str  # the architecture, or the --model source as given (local-dir:DIR, hf-hub:ORG/NAME)
    checkpoint: Path | None = None  # the checkpoint file read; None for an open_clip source
    meta: dict = field(default_factory=dict)  # the checkpoint's fields besides the weights (step, epoch, config)
    pretrained: str | None = None  # --pretrained, for an open_clip source

    @property
    def step(self) -> int | None:
        """The training step the checkpoint was saved at, if it says."""
        step = self.meta.get("step")
        return step if isinstance(step, int) else None

    def out(self, given: str | None) -> Path:
        """--out, else `default_out` of this source."""
        source = self.name + (f" {self.pretrained}" if self.pretrained else "")
        return Path(given) if given else default_out(source, self.checkpoint)


def load(args: argparse.Namespace, device: str | torch.device = "cpu") -> Loaded:
    """The model that `add_model_arguments`' options name. A file given as --pretrained
    (open_clip's way to name an epoch_N.pt) is read like --checkpoint."""
    file = args.checkpoint or (args.pretrained if args.pretrained and Path(args.pretrained).exists() else None)
    if file:
        model, tokenizer, preprocess, meta = load_checkpoint(file, device, args.model)
        return Loaded(model, tokenizer, preprocess, meta["model"], Path(meta["path"]), meta)
    model, tokenizer, preprocess = load_pretrained(args.model, args.pretrained, device)
    return Loaded(model, tokenizer, preprocess, args.model, pretrained=args.pretrained)


def default_out(source: str, checkpoint: Path | None) -> Path:
    """runs/NAME for runs/NAME/checkpoints/X.pt, the checkpoint's folder for another file,
    runs/models/SOURCE (SOURCE made a file name) for a --model source."""
    if checkpoint is None:
        return Path("runs") / "models" / (re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_.") or "model")
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


# ---------------------------------------------------------------------------------------
# Checkpoints: this trainer's, open_clip_train's, a bare state dict


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's (or checkpoints folder's) newest one."""
    from pipeline.storage import is_url

    from . import checkpoint

    if is_url(path):
        raise InputError(f"{path}: a remote checkpoint or run; copy it to a local folder first")
    path = Path(path)
    if not path.is_dir():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    newest = checkpoint.latest(folder)
    if newest is None:
        raise InputError(f"{path}: no checkpoint in it (step-NNNNNNNN.pt in {folder})")
    return Path(newest)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file's dict, loaded with ``weights_only=True``; InputError (one line) otherwise."""
    import torch

    from .checkpoint import load_problem  # never torch's message: it suggests loading unsafely

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{path}: not a readable checkpoint ({load_problem(e)})") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", model_name: str | None = None):
    """(model, tokenizer, preprocess_val, metadata) from a checkpoint file or run folder (see
    the module doc); the weights must fit the architecture exactly."""
    path = resolve_checkpoint(path)
    return model_from_checkpoint(read_checkpoint(path), path, device, model_name)


def model_from_checkpoint(ckpt: dict, path: Path, device: str | torch.device = "cpu", model_name: str | None = None):
    """`load_checkpoint` for a checkpoint dict already read from `path` (by `read_checkpoint`)."""
    import open_clip

    name, model_config, weights, meta = _weights_of(ckpt, path, model_name)
    _register_config(name, model_config)
    with quiet_random_init_warning():  # the weights come from the checkpoint, next
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    try:
        model.load_state_dict(_strip_prefixes(weights))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"{path}: weights do not fit model {name!r} ({' '.join(first[:2])[:300]})") from None
    model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(name)
    meta = {**meta, "path": str(path), "model": name}
    return model, tokenizer, preprocess, meta


def _weights_of(ckpt: dict, path: Path, model_name: str | None) -> tuple[str, dict | None, dict, dict]:
    """(model name, its config or None, weights, metadata) of a loaded checkpoint dict: ours,
    open_clip_train's (``state_dict``; the architecture from `model_name`) or a bare state dict."""
    import torch

    if isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("config"), dict):  # this trainer's
        name = ckpt["config"].get("model")
        if not isinstance(name, str) or not name:
            raise InputError(f"{path}: config has no 'model' name")
        if model_name not in (None, name):
            raise InputError(f"{path}: a checkpoint of {name!r}, not of --model {model_name!r} (leave --model out)")
        meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scaler", "rng")}
        return name, ckpt["config"].get("model_config"), ckpt["model"], meta
    if isinstance(ckpt.get("state_dict"), dict):  # open_clip_train: epoch, name, state_dict, optimizer
        weights, what = ckpt["state_dict"], "an open_clip_train checkpoint"
        meta = {k: ckpt[k] for k in ("epoch", "name") if isinstance(ckpt.get(k), (int, str))}
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        weights, what, meta = ckpt, "a bare state dict", {}
    else:
        raise InputError(
            f"{path}: not a checkpoint (needs 'model' weights and a 'config', open_clip_train's "
            "'state_dict', or a state dict of tensors)"
        )
    if not model_name:
        raise InputError(f"{path}: {what} does not name its architecture: pass --model NAME{_params_hint(path)}")
    return model_name, None, weights, meta


def _params_hint(path: Path) -> str:
    """open_clip_train writes LOGS/NAME/params.txt beside checkpoints/: the model it names, as a hint."""
    try:
        lines = (path.parent.parent / "params.txt").read_text().splitlines()
    except OSError:
        return ""
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model:")]
    return f" (its run's params.txt says model: {names[0]})" if names and names[0] else ""


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------
# open_clip's own sources, and its log records


def load_pretrained(name: str, pretrained: str | None, device: str | torch.device = "cpu"):
    """(model, tokenizer, preprocess_val) through open_clip's own loader:
    ``create_model_and_transforms(name, pretrained=tag)`` with `name` an architecture (plus
    train/model_configs) and `pretrained` one of its tags, or ``local-dir:DIR`` /
    ``hf-hub:ORG/NAME``. InputError (one line) for an unknown name or tag, a folder without
    weights, and weights that cannot be fetched (offline, no network)."""
    import open_clip
    from huggingface_hub import constants as hf_constants
    from open_clip.factory import _find_checkpoint_in_dir, parse_model_name

    from pipeline.errors import one_line

    schema, ident = parse_model_name(name)
    what = f"--model {name}" + (f" --pretrained {pretrained}" if pretrained else "")
    if schema and pretrained:
        raise InputError(f"{what}: a {schema}: model brings its weights; leave --pretrained out")
    if schema == "local-dir":
        folder = Path(ident)
        if not (folder / "open_clip_config.json").is_file():
            raise InputError(f"{what}: no open_clip_config.json in {folder} (write one with python -m train.export)")
        if _find_checkpoint_in_dir(folder) is None:
            raise InputError(f"{what}: no weights (*.safetensors, *.bin, *.pth) in {folder}")
    elif schema is None:
        _register_config(name, None)
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not pretrained:
            hint = f"one of its tags ({', '.join(tags)})" if tags else "a weights file (it has no published tags)"
            raise InputError(f"{what}: pass --pretrained with {hint}, or --checkpoint")
        if not open_clip.is_pretrained_cfg(name, pretrained):
            known = f"its tags: {', '.join(tags)}" if tags else "it has no published tags"
            raise InputError(f"{what}: neither a file nor a tag of {name} ({known})")
    try:
        with _held_logs():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001 - a download refused offline, a hub error, a bad folder: bad input
        if _not_cached(e):
            why = (
                "HF_HUB_OFFLINE=1 forbids downloading them (unset it where the network is reachable)"
                if hf_constants.HF_HUB_OFFLINE
                else "the Hugging Face Hub cannot be reached"
            )
            raise InputError(f"{what}: the weights are not in the Hugging Face cache and {why}") from None
        raise InputError(f"{what}: cannot load it ({one_line(e, typed=True)})") from None
    model.to(device).eval()
    return model, tokenizer, preprocess


def _not_cached(exc: BaseException | None) -> bool:
    """Whether huggingface_hub refused a file it has not cached (offline, or the Hub out of
    reach) somewhere in the chain of `exc` (open_clip wraps its errors in RuntimeError)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _register_config(name: str, model_config) -> None:
    import open_clip

    from . import model as project_models  # open_clip's registry, and our train/model_configs/*.json

    if model_config is not None:
        if isinstance(model_config, (str, Path)):
            model_config = json.loads(Path(model_config).read_text())
        try:
            project_models.register(name, model_config)
        except ValueError as e:
            raise InputError(str(e)) from None
        return
    if open_clip.get_model_config(name) is None:
        project_models.register_builtin()
    if open_clip.get_model_config(name) is None:
        raise InputError(f"unknown model {name!r}: not an open_clip architecture nor one of train/model_configs")


@contextlib.contextmanager
def quiet_random_init_warning():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning."""
    with _root_log_filter(lambda record: "No pretrained weights loaded" not in record.getMessage()):
        yield


@contextlib.contextmanager
def _held_logs() -> Iterator[None]:
    """Hold back the log records of a block: passed on if it succeeds, dropped if it raises,
    so that a failed load is our one line, not open_clip's logged errors before it."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    with _root_log_filter(hold) as root:
        yield
    for record in held:  # only reached without an exception
        if record.levelno >= root.getEffectiveLevel():
            root.handle(record)


@contextlib.contextmanager
def _root_log_filter(keep):
    """The root logger with `keep` as a filter for the block."""
    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield root
    finally:
        root.removeFilter(keep)
