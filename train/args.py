"""The trainer's command line, parsed before torch and open_clip are imported.

`python -m train --help` and a mistyped flag answer in a fraction of a second instead of
after the minute those imports can take on a loaded machine; train/__main__.py parses
here first and imports `train.main` only for a run. Nothing heavy may be imported here.
"""

from __future__ import annotations

import argparse

from .config import EvalConfig, StreamConfig
from .precision import PRECISIONS

DESCRIPTION = """\
`python -m train` / `torchrun --nproc_per_node N -m train`: CLIP's contrastive training.

The recipe is the paper's (sec. 2.5, tables 18-20): symmetric cross-entropy with a
learnable temperature (logit scale from ln(1/0.07), clamped at ln(100)), similarities
sharded over ranks, AdamW without decay on gains/biases/embeddings, cosine schedule with
warm-up, a random square crop as the only augmentation.
"""


EVAL = EvalConfig()  # the evaluation options' defaults


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _run_args(p.add_argument_group("the run: data, where it goes, how long"))
    _model_args(p.add_argument_group("the model and its precision"))
    _optim_args(p.add_argument_group("optimisation (the CLIP paper's recipe)"))
    _data_args(p.add_argument_group("the data stream"))
    _eval_args(p.add_argument_group("evaluation"))
    _system_args(p.add_argument_group("processes"))
    args = p.parse_args(argv)
    for name in (
        "accum_freq",
        "batch_size",
        "steps",
        "save_every",
        "log_every",
        "val_shards",
        "dist_timeout",
        "max_image_pixels",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.val_fraction < 1:
        p.error("--val-fraction must be in [0, 1)")
    return args


def _run_args(g) -> None:
    g.add_argument(
        "--train-data",
        nargs="+",
        required=True,
        help="webdataset shards: brace patterns, globs or fsspec URLs (e.g. 'shards/{00000..00009}.tar')",
    )
    g.add_argument("--name", default="run", help="run name; outputs go to RUNS/NAME (default: %(default)s)")
    g.add_argument(
        "--runs",
        default="runs",
        help="folder of runs, or an fsspec URL such as s3://bucket/runs (credentials and "
        "AWS_ENDPOINT_URL from the environment); TensorBoard logs stay local, in "
        "runs/NAME/tensorboard, when it is a URL (default: %(default)s)",
    )
    # "--logs" (open_clip's name) is ambiguous under torchrun (it prefixes --logs-specs): hidden alias.
    g.add_argument("--logs", dest="runs", help=argparse.SUPPRESS)
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default: %(default)s)")
    g.add_argument(
        "--save-every", type=int, default=200, help="checkpoint every N steps, and at the end (default: %(default)s)"
    )
    g.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (default: %(default)s)")
    g.add_argument(
        "--resume",
        default=None,
        help="'latest' (this run's newest checkpoint) or a checkpoint path; the run continues at "
        "that step with the same learning rate, RNG and data stream: the same samples, in the "
        "same order, as if it had not stopped (with the same ranks, --workers, --seed and shards)",
    )
    g.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="a metrics.jsonl line and TensorBoard scalars every N steps, and a line on stderr when it "
        "is not a terminal (where the progress bar is) (default: %(default)s)",
    )
    g.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar on a terminal, and no line per --log-every steps without one",
    )


def _model_args(g) -> None:
    g.add_argument(
        "--model",
        default="tiny-ViT-64",
        help="open_clip architecture (RN50, ViT-B-32, ...) or one of train/model_configs (default: %(default)s)",
    )
    g.add_argument("--model-config", default=None, help="a JSON model config to register under --model")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, bf16 (autocast) or amp_fp16 (autocast + grad scaler); amp_bf16 and amp are "
        "open_clip_train's names for bf16 and amp_fp16 (default: %(default)s)",
    )
    g.add_argument("--grad-checkpointing", action="store_true", help="trade compute for activation memory")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")


def _optim_args(g) -> None:
    g.add_argument("--batch-size", type=int, default=64, help="samples per rank per step (default: %(default)s)")
    g.add_argument(
        "--accum-freq",
        type=int,
        default=1,
        help="k: contrastive batch of k x batch-size x world by feature caching (default: %(default)s)",
    )
    g.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: %(default)s)")
    g.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine (default: 0)")
    g.add_argument("--warmup", type=int, default=2000, help="linear warm-up steps (default: %(default)s)")
    g.add_argument("--wd", type=float, default=0.2, help="weight decay on weights only (default: %(default)s)")
    g.add_argument("--beta1", type=float, default=None, help="default: 0.9")
    g.add_argument("--beta2", type=float, default=None, help="default: 0.98 for ViT, 0.999 for ResNet")
    g.add_argument("--eps", type=float, default=None, help="default: 1e-6 for ViT, 1e-8 for ResNet")
    g.add_argument("--seed", type=int, default=StreamConfig.seed, help="default: %(default)s")


def _data_args(g) -> None:
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader processes per rank (default: on a GPU, the ones that keep it fed at "
        "ViT-B/32's rate, at most the rank's cores less one: `train.config.auto_workers`; on a "
        f"CPU, {StreamConfig.workers}). Resume is step-exact with the same --workers: give it "
        "explicitly to resume on another kind of machine",
    )
    g.add_argument(
        "--shuffle-buffer",
        type=int,
        default=StreamConfig.shuffle_buffer,
        help="samples in the shuffle buffer (default: %(default)s)",
    )
    g.add_argument(
        "--max-image-pixels",
        type=int,
        default=StreamConfig.max_image_pixels,
        help="skip larger images without decoding them (decompression bombs: a 420 kB PNG can "
        "declare 12000x12000 pixels), counted in skipped_samples as image_too_large; the "
        "download stage's default, Pillow's threshold (default: %(default)s)",
    )
    g.add_argument(
        "--balance-t",
        type=float,
        default=None,
        metavar="T",
        help="balance while training, on shards built with `pipeline shards --balance online`: each "
        "pass keeps a sample with 1 - prod(1 - min(1, T / count)) over its matched entries (MetaCLIP's "
        "rule), a fresh draw per pass; what each pass drew goes to RUNS/NAME/balance/ (default: off)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=StreamConfig.val_fraction,
        help="share of samples (by uid hash) held out for retrieval evaluation (default: %(default)s)",
    )


def _eval_args(g) -> None:
    g.add_argument("--eval-every", type=int, default=0, help="zero-shot evaluation every N steps (0: at the end only)")
    g.add_argument(
        "--final-eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate after the last step (default: yes)",
    )
    g.add_argument(
        "--eval-datasets",
        nargs="*",
        default=list(EVAL.datasets),
        help="zero-shot datasets: openclipart, animal-mnist, digits, imagefolder:PATH (default: %(default)s)",
    )
    g.add_argument(
        "--eval-cache", default=EVAL.cache_dir, help="where the evaluation data lives (default: %(default)s)"
    )
    g.add_argument(
        "--linear-probe",
        action="store_true",
        help="the final evaluation also fits the CLIP paper's linear probe and 1/2/4/8/16-shot probes on "
        "each labelled set (as python -m train.evaluate --linear-probe)",
    )
    g.add_argument(
        "--feature-cache",
        default=EVAL.feature_cache,
        help="with --linear-probe: the final evaluation's features are kept here, so train.evaluate "
        "--linear-probe on the saved checkpoint reads them; '' for none (default: %(default)s)",
    )
    g.add_argument(
        "--val-shards",
        type=int,
        default=8,
        help="retrieval evaluation reads the held-out samples of the first N shards only, so rank 0 "
        "does not scan the whole dataset while the others wait (default: %(default)s)",
    )


def _system_args(g) -> None:
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads per rank (default: cores / ranks)")
    g.add_argument("--dist-backend", default=None, help="nccl on GPU, gloo on CPU (default: by device)")
    g.add_argument(
        "--dist-timeout",
        type=int,
        default=120,
        help="minutes a collective may wait (evaluation runs on rank 0) (default: %(default)s)",
    )
