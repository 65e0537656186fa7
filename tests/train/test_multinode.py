"""Two nodes on one machine: two separate torchrun agents, one process each, meet in a
c10d rendezvous over loopback and train together with gloo, exactly as two hosts would
(`--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT`); then both resume together
from the checkpoint that rank 0 picked, even when node 1 looks at a run folder of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.support.s3server import free_port
from tests.support.shards import sample, write_tar
from tests.support.trainer import ENV, ROOT, train_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    for s in range(3):
        write_tar(root / f"{s:05d}.tar", [sample(s * 100 + i) for i in range(40)])
    return root


def two_nodes(
    rdzv_id: str, logs: Path, *args: str, node1_args: tuple[str, ...] = (), timeout: float = 150
) -> list[str]:
    """Start both nodes' torchrun (node 1 with `node1_args` appended), wait for both; their
    stderr (the agent's log at INFO and the worker's)."""
    port = free_port()
    env = {**ENV, "LOGLEVEL": "INFO"}  # the agents log their rendezvous result (group_rank=..., global_ranks=[...])
    rendezvous = ("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id)
    cmd = train_command(
        "--no-final-eval",
        *args,
        torchrun=("--nnodes", "2", "--nproc_per_node", "1", *rendezvous, "--rdzv-conf", "join_timeout=60"),
        runs=logs,
        name="mn",
        save_every=2,
    )
    errs = [logs / f"{rdzv_id}-node{i}.err" for i in range(2)]
    procs = []
    try:
        for i, err in enumerate(errs):
            with open(err, "w") as f:
                procs.append(
                    subprocess.Popen(
                        cmd + list(node1_args if i else ()),
                        env=env,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=f,
                        start_new_session=True,
                    )
                )
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    texts = [e.read_text() for e in errs]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)
    return texts


def agent_ranks(stderr: str) -> tuple[int, list[int]]:
    """(node rank, global ranks it started) from the agent's rendezvous log."""
    (group,) = re.findall(r"group_rank=(\d+)", stderr)
    (ranks,) = re.findall(r"global_ranks=\[([\d, ]*)\]", stderr)
    return int(group), [int(r) for r in ranks.split(",")]


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_nodes_train_as_one_world_and_resume_together(tmp_path, shards):
    data = ["--train-data", f"{shards}/{{00000..00002}}.tar"]
    run = tmp_path / "mn"
    errs = two_nodes("mn-a", tmp_path, *data, "--steps", "2")

    # each agent (node) started exactly one worker, one of them rank 0 and the other rank 1
    assert sorted(agent_ranks(e) for e in errs) == [(0, [0]), (1, [1])]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["nodes"] == 2 and cfg["global_batch"] == 8
    ranks = cfg["ranks"]
    assert [(r["rank"], r["node"], r["local_rank"]) for r in ranks] == [(0, 0, 0), (1, 1, 0)]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert steps(run) == [1, 2], "metrics written by global rank 0 only: no line twice"
    state = torch.load(run / "checkpoints" / "step-00000002.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2, "both ranks' RNG states"

    # Both resume from the checkpoint rank 0 chose and go on in step. Node 1 gets a run
    # folder of its own, empty, like a node-local disk: were it to look for checkpoints
    # itself, it would start at step 0 while rank 0 starts at 2, and the ranks would fall
    # out of step (a hang or a crash in the next collective).
    elsewhere = tmp_path / "node1-disk"
    errs = two_nodes(
        "mn-b", tmp_path, *data, "--steps", "4", "--resume", "latest", node1_args=("--runs", str(elsewhere))
    )
    resumed = [line for e in errs for line in e.splitlines() if line.startswith("resumed from")]
    assert resumed == [f"resumed from {run / 'checkpoints' / 'step-00000002.pt'} at step 2"]
    assert steps(run) == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    assert torch.load(run / "checkpoints" / "step-00000004.pt", map_location="cpu", weights_only=True)["step"] == 4
    assert not elsewhere.exists(), "only global rank 0 writes"
