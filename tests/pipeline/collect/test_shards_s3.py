"""Object storage end to end: pool read from S3, curation and shards written to S3 by a Ray
cluster, audited and trained on where they lie; the same dataset as a local-engine run.

Everything is real: moto's S3 server on loopback, a Ray cluster started with `ray start`
whose nodes get the S3 endpoint from their environment (as a real cluster's nodes get
their credentials), a loopback HTTP server for the images.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.sample.server import serve_directory
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.support.raycluster import ray_head
from tests.support.s3server import moto_s3

pytestmark = pytest.mark.slow

QUERIES = ["frog", "cat", "dog", "tree", "car", "red car"]
COLORS = ["red", "green", "blue", "yellow", "purple"]
BUCKET = "wit"


def write_images(folder: Path, n: int) -> list[tuple[str, str]]:
    """n small PNGs and (file name, caption) pairs whose captions hold the queries unevenly."""
    folder.mkdir(parents=True)
    pairs = []
    for i in range(n):
        color = COLORS[i % len(COLORS)]
        buf = io.BytesIO()
        Image.new("RGB", (64 + i % 7, 48), color).save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
        thing = QUERIES[(i * i) % 5]
        pairs.append((f"{i}.png", f"a {color} {thing} number {i}"))
    return pairs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """S3 server + image server + a Ray cluster that reaches the S3 server; inputs on S3."""
    tmp = tmp_path_factory.mktemp("s3world")
    pairs = write_images(tmp / "www", 90)
    with moto_s3() as s3, serve_directory(tmp / "www") as base, ray_head(num_cpus=2, env=s3.env) as address:
        s3.make_bucket(BUCKET)
        fs = s3.filesystem()
        table = pa.table({"url": [f"{base}/{name}" for name, _ in pairs], "caption": [c for _, c in pairs]})
        for k in range(3):  # three pool files: parallel pool inputs
            with fs.open(f"{BUCKET}/in/pool-{k}.parquet", "wb") as f:
                pq.write_table(table.slice(k * 30, 30), f)
        with fs.open(f"{BUCKET}/in/queries.parquet", "wb") as f:
            pq.write_table(pa.table({"query": QUERIES, "source": ["wordnet"] * len(QUERIES)}), f)
        yield {"s3": s3, "fs": fs, "tmp": tmp, "ray": address}


def shards_args(out: str, *extra: str) -> list[str]:
    return [
        "shards",
        "--pool",
        f"s3://{BUCKET}/in/pool-*.parquet",
        "--queries",
        f"s3://{BUCKET}/in/queries.parquet",
        "--out",
        out,
        "--allow-private-hosts",
        "--rows-per-part",
        "20",
        "--per-query",
        "12",
        "--samples-per-shard",
        "15",
        "--processes",
        "1",
        "--threads",
        "4",
        "--quiet",
        *extra,
    ]


def tables(read, listing) -> dict:
    out = {}
    for sub in ("pool", "matches", "matches/_counts", "selected"):
        for name in listing(f"curation/{sub}"):
            out[f"{sub}/{name}"] = read(f"curation/{sub}/{name}")
    out["entry_counts"] = read("curation/entry_counts.parquet")
    return out


@pytest.fixture(scope="module")
def runs(world):
    """The same pool through `--engine local` into a local folder and through `--engine ray`
    into s3://wit/shards."""
    local = world["tmp"] / "local"
    res = run_cli(*shards_args(str(local), "--workers", "2"))
    assert res.returncode == 0, res.stderr
    res = run_cli(*shards_args(f"s3://{BUCKET}/shards", "--engine", "ray", "--ray-address", world["ray"]))
    assert res.returncode == 0, res.stderr
    return local


def test_ray_on_s3_writes_the_same_dataset_as_local(world, runs):
    fs = world["fs"]
    local = tables(
        lambda rel: pq.read_table(runs / rel), lambda sub: sorted(p.name for p in (runs / sub).glob("part-*.parquet"))
    )
    remote = tables(
        lambda rel: pq.read_table(fs.open(f"{BUCKET}/shards/{rel}", "rb")),
        lambda sub: sorted(Path(p).name for p in fs.glob(f"{BUCKET}/shards/{sub}/part-*.parquet")),
    )
    assert sorted(local) == sorted(remote)
    assert len([k for k in local if k.startswith("pool/")]) >= 3  # parts never span the 3 inputs
    for name in local:
        assert local[name].equals(remote[name]), name
    tars = sorted(Path(p).name for p in fs.glob(f"{BUCKET}/shards/*.tar"))
    assert tars == sorted(p.name for p in runs.glob("*.tar")) and len(tars) >= 2

    def status(rows):
        return {(u, s) for t in rows for u, s in zip(t.column("uid").to_pylist(), t.column("status").to_pylist())}

    remote_rows = [pq.read_table(fs.open(p, "rb")) for p in fs.glob(f"{BUCKET}/shards/[0-9]*.parquet")]
    local_rows = [pq.read_table(p) for p in runs.glob("[0-9]*.parquet")]
    assert status(remote_rows) == status(local_rows)
    assert {s for _, s in status(remote_rows)} == {"success"}
    stats = json.loads(fs.cat_file(f"{BUCKET}/shards/curation/download_stats.json"))
    assert (
        stats["successes"]
        == len(status(remote_rows))
        == sum(t.num_rows for k, t in local.items() if k.startswith("selected/"))
    )


def test_audit_and_training_read_the_dataset_on_s3(world, runs, tmp_path):
    res = run_cli(
        "audit", "--queries", f"s3://{BUCKET}/in/queries.parquet", "--shards", f"s3://{BUCKET}/shards", "--quiet"
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(world["fs"].cat_file(f"{BUCKET}/shards/audit/summary.json"))
    n_tars = len(world["fs"].glob(f"{BUCKET}/shards/*.tar"))
    selected = sum(pq.read_metadata(p).num_rows for p in runs.glob("curation/selected/part-*.parquet"))
    assert summary["warnings"] == [] and summary["download"]["shards"] == n_tars
    assert summary["download"]["successes"] == summary["headline"]["kept_after_balancing"] == selected
    assert summary["pool"]["rows_in"] == 90
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "train",
        "--train-data",
        f"s3://{BUCKET}/shards/{{00000..{n_tars - 1:05d}}}.tar",
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
        "--steps",
        "2",
        "--runs",
        f"s3://{BUCKET}/runs",
        "--name",
        "rt",
        "--eval-datasets",
        "--val-fraction",
        "0.1",
        "--quiet",
    ]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = world["fs"].cat_file(f"{BUCKET}/runs/rt/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_missing_bucket_and_missing_credentials_are_one_line_errors(world, tmp_path):
    res = run_cli("pool", "--pool", f"s3://{BUCKET}/in/pool-0.parquet", "--out", "s3://no-such-bucket/x")
    assert_one_line_error(res, "s3://no-such-bucket/x")
    res = run_cli("pool", "--pool", "s3://no-such-bucket/pool.parquet", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, "s3://no-such-bucket/pool.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=world["s3"].endpoint,
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        PYTHONPATH=str(ROOT),
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "pool",
            "--pool",
            str(tmp_path / "x.parquet"),
            "--out",
            f"s3://{BUCKET}/nocreds",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert_one_line_error(res, f"s3://{BUCKET}/nocreds")
