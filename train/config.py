"""Settings objects the trainer's parts take, importable without torch.

The command line (`train.args`) reads its defaults from these fields, so each default is
written once, and `python -m train --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.imaging import MAX_IMAGE_PIXELS


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
