"""Training data and run folders on object storage, against a real S3 API server (moto on
loopback, tests/support/s3server.py) through s3fs, as `--train-data s3://...` and `--runs s3://...`
use them: the stream must be the same samples as from local disk, survive dropped
connections (a real TCP proxy that cuts responses), and checkpoints must resume from S3.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest
import torch

from pipeline.errors import InputError
from tests.conftest import ROOT, assert_one_line_error
from tests.support.s3server import moto_s3
from tests.support.shards import TOK, sample, write_tar
from train import shards
from train.config import StreamConfig
from train.shards import check_remote_shards, expand_urls
from train.stream import make_train_loader, make_val_loader

pytestmark = pytest.mark.slow

BUCKET = "train-data"
N_SHARDS, PER_SHARD = 5, 24  # ~10 kB a sample: ~240 kB a shard, several 64 kB block reads


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    for s in range(N_SHARDS):
        write_tar(root / f"{s:05d}.tar", [sample(s * 100 + i) for i in range(PER_SHARD)])
    return root


@pytest.fixture(scope="module")
def s3(local_shards):
    """The server, with the shards uploaded to s3://BUCKET/shards/; AWS_* set in os.environ."""
    with moto_s3() as server:
        server.make_bucket(BUCKET)
        fs = server.filesystem()
        for p in sorted(local_shards.glob("*.tar")):
            fs.put_file(str(p), f"{BUCKET}/shards/{p.name}")
        yield server


S3_PATTERN = f"s3://{BUCKET}/shards/{{00000..{N_SHARDS - 1:05d}}}.tar"

# the "held-out set" of val_fraction 1: every sample of a shard list, once
EVERY_SAMPLE = StreamConfig(batch_size=8, image_size=32, workers=0, val_fraction=1.0)


def uids_of(loader) -> list[str]:
    return [u for batch in loader for u in (batch[2] if isinstance(batch[2], list) else batch[2]["uids"])]


def test_brace_and_glob_urls_stream_the_same_samples_as_local_disk(s3, local_shards):
    urls = expand_urls(S3_PATTERN)
    assert urls == [f"s3://{BUCKET}/shards/{s:05d}.tar" for s in range(N_SHARDS)]
    assert expand_urls(f"s3://{BUCKET}/shards/*.tar") == urls
    check_remote_shards([S3_PATTERN, f"s3://{BUCKET}/shards/{{00004..00009}}.tar"])  # exist (some of them)
    with pytest.raises(InputError, match=re.escape(f"s3://{BUCKET}/elsewhere/{{00000..00004}}.tar: matches no shard")):
        check_remote_shards(f"s3://{BUCKET}/elsewhere/{{00000..00004}}.tar")
    local = expand_urls(f"{local_shards}/{{00000..{N_SHARDS - 1:05d}}}.tar")

    # held-out part (retrieval evaluation): same samples, same order, same counts
    held_out = StreamConfig(batch_size=8, image_size=32, workers=0, val_fraction=0.3)
    val_s3, val_local = (make_val_loader(u, TOK, held_out) for u in (urls, local))
    got = uids_of(val_s3)
    assert got and got == uids_of(val_local)
    assert val_s3.totals == val_local.totals and val_s3.totals["shard_errors"] == 0

    # training stream, in a DataLoader worker process (s3fs after fork): the same batches
    stream = StreamConfig(batch_size=8, image_size=32, seed=3, val_fraction=0.3, shuffle_buffer=16, workers=1)
    train_s3 = make_train_loader(urls, TOK, stream, num_batches=4)
    train_local = make_train_loader(local, TOK, stream, num_batches=4)
    got = uids_of(train_s3)
    assert len(got) == 32 and got == uids_of(train_local)
    assert not set(got) & set(uids_of(val_local)), "held-out samples are never trained on"
    assert train_s3.totals["shard_errors"] == 0


class CuttingProxy:
    """A TCP proxy in front of the S3 server that drops connections mid-download: after the
    first `skip` GETs of `.tar` keys, the responses to the next `drops` of them are cut after
    `cut_after` bytes and both sockets closed, as a network failure would."""

    def __init__(self, target_port: int, cut_after: int = 4000):
        self.target_port, self.cut_after = target_port, cut_after
        self.lock = threading.Lock()
        self.skip = self.drops = self.gets = self.cuts = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, skip: int, drops: int) -> None:
        with self.lock:
            self.skip, self.drops, self.gets, self.cuts = skip, drops, 0, 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"cut": False, "sent": 0}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, state), daemon=True).start()

    def _up(self, client, upstream, state) -> None:
        try:
            while data := client.recv(65536):
                if re.search(rb"(?m)^GET [^ ]*\.tar[ ?]", data):  # requests are sequential per connection
                    with self.lock:
                        self.gets += 1
                        cut = self.gets > self.skip and self.drops > 0
                        if cut:
                            self.drops -= 1
                            self.cuts += 1
                    state.update(cut=cut, sent=0)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._close(client, upstream)

    def _down(self, client, upstream, state) -> None:
        try:
            while data := upstream.recv(65536):
                if state["cut"] and state["sent"] + len(data) >= self.cut_after:
                    client.sendall(data[: self.cut_after - state["sent"]])
                    return
                state["sent"] += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._close(client, upstream)

    @staticmethod
    def _close(*socks) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture()
def proxied(s3, monkeypatch):
    """s3fs through the cutting proxy, 64 kB reads (a shard takes several GETs), short waits
    between reopenings. fsspec's config is part of its instance-cache key: a fresh client."""
    proxy = CuttingProxy(s3.port)
    monkeypatch.setitem(
        fsspec.config.conf, "s3", {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "default_block_size": 64 * 1024}
    )
    monkeypatch.setattr(shards, "READ_BACKOFF_S", 0.05)
    yield proxy
    proxy.close()


def test_dropped_connections_reopen_at_the_same_byte(proxied, local_shards):
    url = f"s3://{BUCKET}/shards/00001.tar"
    expected = uids_of(make_val_loader(str(local_shards / "00001.tar"), TOK, EVERY_SAMPLE))
    # 7 cuts in a row after 2 good blocks: more than s3fs's own 5 tries per ranged GET, so the
    # read only completes if the reader reopens the object and seeks back to its position
    proxied.arm(skip=2, drops=7)
    loader = make_val_loader(url, TOK, EVERY_SAMPLE)
    assert uids_of(loader) == expected, "every sample, once, in order"
    assert proxied.cuts == 7 and proxied.gets > 9
    assert loader.totals["shard_errors"] == 0 and loader.totals["skipped"] == 0


def test_a_connection_that_keeps_dropping_is_a_counted_reported_shard_error(proxied, capfd):
    url = f"s3://{BUCKET}/shards/00002.tar"
    proxied.arm(skip=1, drops=10**6)
    t0 = time.monotonic()
    loader = make_val_loader(url, TOK, EVERY_SAMPLE)
    got = uids_of(loader)
    assert time.monotonic() - t0 < 60, "bounded retries, no hang"
    assert 0 < len(got) < PER_SHARD, "the samples before the failure are kept"
    assert loader.totals["shard_read_error"] == 1 and loader.totals["shard_errors"] == 1
    assert loader.totals["partial_sample"] <= 1
    err = capfd.readouterr().err
    assert re.search(
        rf"warning: {re.escape(url)}: read failed at byte \d+ after {shards.READ_RETRIES} reopenings", err
    ), err
    assert f"({len(got)} samples read)" in err


def train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "train",
        "--model",
        "tiny-ViT-64",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--log-every",
        "1",
        "--quiet",
        *args,
    ]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_run_folder_on_s3_checkpoints_and_resumes(s3, tmp_path):
    fs = s3.filesystem()
    run = f"{BUCKET}/runs/s3run"
    args = [
        "--train-data",
        S3_PATTERN,
        "--runs",
        f"s3://{BUCKET}/runs",
        "--name",
        "s3run",
        "--save-every",
        "2",
        "--val-fraction",
        "0.2",
        "--eval-datasets",
    ]  # no zero-shot sets: retrieval on the S3 held-out part only
    res = train(*args, "--steps", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    def metrics() -> list[dict]:
        return [json.loads(line) for line in fs.cat_file(f"{run}/metrics.jsonl").decode().splitlines()]

    def names(folder: str) -> list[str]:
        fs.invalidate_cache()
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{run}/{folder}", detail=False))

    cfg = json.loads(fs.cat_file(f"{run}/config.json"))
    assert cfg["train_urls"] == N_SHARDS and cfg["world_size"] == 1 and cfg["runs"] == f"s3://{BUCKET}/runs"
    assert [r["step"] for r in metrics()] == [1, 2, 3]
    assert all(r["shard_errors"] == 0 for r in metrics())
    assert names("checkpoints") == ["step-00000002.pt", "step-00000003.pt"], "only final keys, no temporaries"
    assert names("eval") == ["step-00000003.json"]
    retrieval = json.loads(fs.cat_file(f"{run}/eval/step-00000003.json"))["retrieval"]["val"]
    assert retrieval["n"] > 0 and retrieval["info"]["shard_errors"] == 0, "held-out samples read from S3"
    local = tmp_path / "step-3.pt"
    fs.get_file(f"{run}/checkpoints/step-00000003.pt", str(local))
    state = torch.load(local, map_location="cpu", weights_only=True)
    assert state["step"] == 3 and "optimizer" in state and "model" in state
    assert list((tmp_path / "runs" / "s3run" / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard stays local"

    res = train(*args, "--steps", "5", "--resume", "latest", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from s3://{run}/checkpoints/step-00000003.pt at step 3" in res.stderr
    assert [r["step"] for r in metrics()] == [1, 2, 3, 4, 5], "every step logged once across the resume"
    assert names("checkpoints") == ["step-00000004.pt", "step-00000005.pt"]
    fs.get_file(f"{run}/checkpoints/step-00000005.pt", str(local))
    assert torch.load(local, map_location="cpu", weights_only=True)["step"] == 5


def test_missing_bucket_is_a_one_line_error(s3, local_shards, tmp_path):
    res = train("--train-data", "s3://no-such-bucket/shards/{00000..00004}.tar", "--steps", "1", cwd=tmp_path)
    assert_one_line_error(res, "no such bucket 'no-such-bucket'", "s3://no-such-bucket/shards/{00000..00004}.tar")
    res = train(
        "--train-data",
        str(local_shards / "00000.tar"),
        "--runs",
        "s3://no-such-bucket/runs",
        "--steps",
        "1",
        cwd=tmp_path,
    )
    assert_one_line_error(res, "--runs s3://no-such-bucket/runs", "no such bucket 'no-such-bucket'")
