"""train/metrics.py's SkipTally and train/resume.py's Resumed, without a process group.

The whole resume path (rank 0 deciding, the ranks loading, refusals) runs in the end-to-end
tests (test_train_reliability, test_train_resume_exact); these pin the pieces it is made of.
"""

from __future__ import annotations

import json

import pytest
import torch

from train.config import StreamConfig
from train.metrics import REASONS, SkipTally, trim_metrics
from train.resume import Resumed


def test_skip_tally_sums_batches_and_carries_totals_through_a_checkpoint():
    tally = SkipTally.from_checkpoint({"skipped_samples": 5, "shard_errors": 1, "skipped_by_reason": {"bad_image": 5}})
    tally.add({"skipped": 2, "shard_errors": 0, "reasons": {"bad_image": 1, "missing_text": 1}})
    tally.add({"skipped": 1, "shard_errors": 1, "reasons": {"bad_json": 1, "shard_truncated": 1}})
    assert tally.skipped == 5, "nothing is counted before the ranks reduce"
    loss_sum = tally.reduce(0.25, world=1, device=torch.device("cpu"))
    assert loss_sum == 0.25
    assert tally.state() == {
        "skipped_samples": 8,
        "shard_errors": 2,
        "skipped_by_reason": {"bad_image": 6, "bad_json": 1, "missing_text": 1, "shard_truncated": 1},
    }
    assert not tally.pending, "what was reduced is not counted again"
    tally.reduce(0.5, world=1, device=torch.device("cpu"))
    assert tally.state()["skipped_samples"] == 8
    assert set(tally.state()["skipped_by_reason"]) <= set(REASONS)
    assert SkipTally.from_checkpoint({}).state() == {"skipped_samples": 0, "shard_errors": 0, "skipped_by_reason": {}}


def test_trim_metrics_drops_steps_to_be_run_again_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    trim_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    trim_metrics(tmp_path / "missing.jsonl", 2)  # a first start has none


def test_stream_state_of_a_fresh_run_an_old_checkpoint_and_each_rank():
    assert Resumed().stream_state(0) is None, "fresh: nothing to continue"
    positions = [{"rank": 0}, {"rank": 1}]
    resumed = Resumed(step=10, path="ckpt.pt", streams=positions)
    assert resumed.stream_state(1) == {"rank": 1}
    # a checkpoint without positions, or with fewer ranks: {} is continued by no loader, which says why
    assert Resumed(step=10, path="ckpt.pt").stream_state(0) == {}
    assert resumed.stream_state(2) == {}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"rank": 2, "world_size": 2}, "rank 2 is not in"),
        ({"val_fraction": 1.5}, "val_fraction must be in"),
    ],
)
def test_stream_config_refuses_impossible_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        StreamConfig(**{"batch_size": 4, "image_size": 32, **bad})
