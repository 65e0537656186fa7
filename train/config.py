"""Settings objects the trainer's parts take, importable without torch.

The command line (`train.args`) reads its defaults from these fields, so each default is
written once, and `python -m train --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.imaging import MAX_IMAGE_PIXELS

# What sizes the loader (`bench/loader.py`, README "Feeding a GPU"): a ViT-B/32 step on one
# H100/H200 consumes 2,000-3,000 samples/s at 224 px; one loader core gives LOADER_PER_CORE.
GPU_SAMPLES_PER_S = 2500
LOADER_PER_CORE = 700  # samples/s per core at 224 px, `make bench-loader` on the sample shards


def auto_workers(cores_per_rank: int, gpu: bool) -> int:
    """`--workers` when it is not given. On a GPU: the loader processes that keep it fed at
    B/32's rate (GPU_SAMPLES_PER_S / LOADER_PER_CORE, rounded up), at most the rank's cores
    less the one its training process needs. On a CPU: 1, as the model's step needs the
    cores (`--threads`) and one loader process keeps up with a CPU step."""
    if not gpu:
        return 1
    need = -(-GPU_SAMPLES_PER_S // LOADER_PER_CORE)
    return max(1, min(need, cores_per_rank - 1))


@dataclass(frozen=True)
class StreamConfig:
    """What one rank's data stream is made of. The training stream is a pure function of
    these, the shard list, the step it starts at and its position (`train.stream`)."""

    batch_size: int
    image_size: int
    seed: int = 0
    workers: int = 1  # DataLoader processes per rank; 0 reads in the training process
    val_fraction: float = 0.05  # share of samples (by uid hash) held out, never trained on
    shuffle_buffer: int = 2000  # raw samples
    max_image_pixels: int | None = MAX_IMAGE_PIXELS  # larger ones are skipped unread, as the download step refuses them
    rank: int = 0
    world_size: int = 1
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {self.val_fraction}")


DEFAULT_DATASETS = ("openclipart", "animal-mnist", "digits")  # the embedded sample's labelled sets


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` measures, and how. ``python -m train.evaluate``'s options are these
    fields with these defaults; the trainer fills them from its own flags."""

    datasets: Sequence[str] = DEFAULT_DATASETS  # labelled sets, names for `train.eval_data.load_dataset`
    retrieval: Sequence[str] | None = None  # retrieval sets (openclipart); None: openclipart if among datasets
    cache_dir: str | Path = ".cache/sample"  # where the sets' files are
    templates: str | Sequence = "openai"  # CLIP's 80 ImageNet prompts, its 7 "simple" ones, or a list
    batch_size: int = 64  # images per forward pass
    num_workers: int = 0  # data loader worker processes
    precision: str = "fp32"  # the autocast (`train.precision`); part of the feature cache's key
    linear_probe: bool = False  # also the linear and few-shot probes (`train.linear_probe.probe_dataset`)
    probe_seed: int = 0  # the probe split's seed
    probe_shots: Sequence[int] = (1, 2, 4, 8, 16)
    probe_seeds: Sequence[int] = (0, 1, 2)  # a few-shot draw per seed
    feature_cache: str | Path | None = ".cache/features"  # with linear_probe: features kept per weights; None: none
    progress: bool = True  # a bar per set on a terminal, else a line as each set starts
    suite: str | None = None  # "datacomp": every task of DataComp's list found under data_root (`train.eval_suite`)
    data_root: str | None = None  # the suite's sets, as DataComp's download_evalsets.py leaves them
    tasklist: str | None = None  # the suite's task list; None: DATA_ROOT/tasklist.yml, else DataComp's (shipped)

    def retrieval_sets(self) -> list[str]:
        """`retrieval`, or openclipart's held-out captioned images when it is among `datasets`."""
        if self.retrieval is not None:
            return list(self.retrieval)
        return [name for name in ("openclipart",) if name in self.datasets]
