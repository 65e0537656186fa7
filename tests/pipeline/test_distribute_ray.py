"""`--engine ray` on a real local Ray cluster gives the same dataset as `--engine local`.

The cluster is started by the `ray_cluster` fixture (`ray start --head` on 127.0.0.1,
2 CPUs); the CLI joins it with `--ray-address`. Faults: a Ray worker SIGKILLed while it
matches (Ray reruns the part), the driver SIGKILLed mid-step (a rerun resumes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sample.openclipart import roots_from_cache, write_sample_pool
from pipeline.sample.server import serve_directory
from tests.conftest import ROOT, assert_one_line_error, required_path, run_cli
from tests.support.multiwiki import sample_dir, worldwide_queries
from tests.support.raycluster import ray_worker_pids
from tests.support.s3server import free_port

pytestmark = pytest.mark.slow

SAMPLE_QUERY_ARGS = ["--min-count", "20", "--min-bigram-count", "5", "--min-pmi", "10"]
CURATION = ("pool", "matches", "matches/_counts", "selected")


@pytest.fixture(scope="module")
def query_lists(tmp_path_factory, wiki_sample_dump, wordnet_dir, ray_cluster) -> dict:
    """The sample query list built once per engine."""
    out = {}
    for engine, extra in (("local", ["--workers", "1"]), ("ray", ["--ray-address", ray_cluster])):
        folder = tmp_path_factory.mktemp(f"queries-{engine}")
        res = run_cli(
            "queries",
            "--wiki-dump",
            str(wiki_sample_dump),
            "--wordnet",
            str(wordnet_dir),
            "--out",
            str(folder),
            *SAMPLE_QUERY_ARGS,
            "--engine",
            engine,
            *extra,
            "--quiet",
        )
        assert res.returncode == 0, res.stderr
        out[engine] = folder
    return out


def test_queries_are_byte_identical_on_ray(query_lists):
    for name in ("queries.parquet", "queries.txt"):
        assert (query_lists["ray"] / name).read_bytes() == (query_lists["local"] / name).read_bytes()
    assert pq.read_metadata(query_lists["ray"] / "queries.parquet").num_rows > 80_000


def test_worldwide_queries_are_byte_identical_on_ray(tmp_path, ray_cluster):
    """Every language's dump chunks, counted with its segmenter in Ray workers, give the
    list the local engine gives (the multilingual sample: de, ja, ru, th, zh)."""
    sample = sample_dir()
    lists = {}
    for engine, extra in (("local", ["--workers", "2"]), ("ray", ["--ray-address", ray_cluster])):
        out = tmp_path / engine
        res = worldwide_queries(sample, out, "--chunk-mb", "0.05", "--engine", engine, *extra)
        assert res.returncode == 0, res.stderr
        lists[engine] = out
    for name in ("queries.parquet", "queries.txt"):
        assert (lists["ray"] / name).read_bytes() == (lists["local"] / name).read_bytes(), name
    build = json.loads((lists["ray"] / "build.json").read_text())
    assert sorted(build["languages"]) == ["de", "ja", "ru", "th", "zh"]
    assert sum(lang["dump"]["articles"] for lang in build["languages"].values()) > 900


def curation_tables(out: Path) -> dict:
    tables = {}
    for sub in CURATION:
        for f in sorted((out / "curation" / sub).glob("part-*.parquet")):
            tables[f"{sub}/{f.name}"] = pq.read_table(f)
    tables["entry_counts"] = pq.read_table(out / "curation" / "entry_counts.parquet")
    return tables


def shard_status(out: Path) -> set:
    rows = set()
    for f in sorted(out.glob("[0-9]*.parquet")):
        t = pq.read_table(f, columns=["uid", "status"])
        rows |= set(zip(t.column("uid").to_pylist(), t.column("status").to_pylist()))
    return rows


@pytest.fixture(scope="module")
def sample_pool(tmp_path_factory):
    """The openclipart sample pool file and a loopback server for its images."""
    png_root, svg_root = roots_from_cache(required_path("OPENCLIPART_DIR"))
    folder = tmp_path_factory.mktemp("pool")
    with serve_directory(png_root) as base_url:
        write_sample_pool(png_root, svg_root, base_url, folder / "pool.parquet")
        yield folder / "pool.parquet"


def test_shards_on_ray_equal_local(tmp_path, sample_pool, query_lists, ray_cluster):
    outs = {}
    for engine, extra in (("local", ["--workers", "2"]), ("ray", ["--ray-address", ray_cluster])):
        outs[engine] = tmp_path / engine
        res = run_cli(
            "shards",
            "--pool",
            str(sample_pool),
            "--keep-col",
            "category",
            "--allow-private-hosts",
            "--queries",
            str(query_lists["local"] / "queries.parquet"),
            "--out",
            str(outs[engine]),
            "--rows-per-part",
            "1500",
            "--per-query",
            "2",
            "--samples-per-shard",
            "200",
            "--processes",
            "2",
            "--threads",
            "8",
            "--engine",
            engine,
            *extra,
            "--quiet",
        )
        assert res.returncode == 0, res.stderr
    local, ray = curation_tables(outs["local"]), curation_tables(outs["ray"])
    assert sorted(local) == sorted(ray) and len([k for k in local if k.startswith("pool/")]) == 5
    for name in local:
        assert local[name].equals(ray[name]), name
    assert sum(t.num_rows for k, t in local.items() if k.startswith("selected/")) > 300
    status = shard_status(outs["local"])
    assert status == shard_status(outs["ray"])
    assert len(status) == sum(t.num_rows for k, t in local.items() if k.startswith("selected/"))
    assert {s for _, s in status} == {"success"} or len([1 for _, s in status if s == "success"]) > 0.95 * len(status)
    for step in ("pool", "match", "balance"):
        a = json.loads((outs["local"] / "curation" / f"{step}_stats.json").read_text())
        b = json.loads((outs["ray"] / "curation" / f"{step}_stats.json").read_text())
        drop = {"seconds", "run", "inputs", "parts_skipped"}
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory, sample_pool, query_lists) -> Path:
    """~75k rows (the sample's captions under many URLs) in 10 pool parts: matching takes
    seconds, long enough to kill things mid-step."""
    base = pq.read_table(sample_pool)
    n = base.num_rows
    reps = 12
    table = pa.table(
        {
            "url": [f"http://img{r}.example.com/{i}.png" for r in range(reps) for i in range(n)],
            "caption": base.column("caption").to_pylist() * reps,
        }
    )
    folder = tmp_path_factory.mktemp("big")
    pq.write_table(table, folder / "pool.parquet")
    out = folder / "ref"
    res = run_cli(
        "pool",
        "--pool",
        str(folder / "pool.parquet"),
        "--out",
        str(out),
        "--rows-per-part",
        str(-(-n * reps // 10)),
        "--workers",
        "1",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    res = run_cli(
        "match",
        "--out",
        str(out),
        "--queries",
        str(query_lists["local"] / "queries.parquet"),
        "--workers",
        "2",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    return out


def copy_pool(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "curation" / "pool", dst / "curation" / "pool")
    shutil.copytree(src / "curation" / "keys", dst / "curation" / "keys")
    for f in (dst / "curation" / "keys").glob("match*"):
        f.unlink()
    return dst


def match_outputs(out: Path) -> dict:
    folder = out / "curation" / "matches"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def match_cli(out: Path, queries: Path, ray_address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "match",
        "--out",
        str(out),
        "--queries",
        str(queries),
        "--engine",
        "ray",
        "--ray-address",
        ray_address,
        "--quiet",
    ]


def test_a_killed_ray_worker_is_retried_and_the_step_finishes_identical(tmp_path, big_pool, query_lists, ray_cluster):
    out = copy_pool(big_pool, tmp_path / "out")
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        while not stop.is_set() and not killed:
            for pid in ray_worker_pids(ray_cluster):
                if (out / "curation" / "matches").exists():  # the step is under way
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        res = subprocess.run(
            match_cli(out, query_lists["local"] / "queries.parquet", ray_cluster),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop.set()
        thread.join()
    assert killed, "no Ray worker was seen running a part"
    assert res.returncode == 0, res.stderr
    assert match_outputs(out) == match_outputs(big_pool)


def test_a_killed_driver_resumes_identical(tmp_path, big_pool, query_lists, ray_cluster):
    out = copy_pool(big_pool, tmp_path / "out")
    cmd = match_cli(out, query_lists["local"] / "queries.parquet", ray_cluster)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((out / "curation" / "matches" / "_stats").glob("part-*.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "curation" / "matches" / "_stats").glob("part-*.json")))
    assert 0 < done_before < 10, "the driver was not killed mid-step"
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert match_outputs(out) == match_outputs(big_pool)
    stats = json.loads((out / "curation" / "match_stats.json").read_text())
    assert stats["parts_skipped"] >= done_before  # finished parts were not redone


def test_unreachable_ray_address_is_a_one_line_error(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    res = run_cli(
        "pool",
        "--pool",
        str(tmp_path / "x.parquet"),
        "--out",
        str(tmp_path / "o"),
        "--engine",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
        timeout=60,
    )
    # the pool input is checked first: make it exist so the address is what fails
    pq.write_table(pa.table({"url": ["http://a.example.com/1.png"], "caption": ["a frog"]}), tmp_path / "x.parquet")
    res = run_cli(
        "pool",
        "--pool",
        str(tmp_path / "x.parquet"),
        "--out",
        str(tmp_path / "o"),
        "--engine",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
        timeout=60,
    )
    assert_one_line_error(res, f"127.0.0.1:{port}", "no Ray cluster reachable")
    assert time.monotonic() - t0 < 30


def test_ray_address_from_the_environment_or_a_ray_of_its_own(tmp_path, ray_cluster):
    """No --ray-address: $RAY_ADDRESS is joined; without it a Ray is started on this machine."""
    pool = tmp_path / "pool.parquet"
    pq.write_table(
        pa.table(
            {
                "url": [f"http://a{i % 5}.example.com/{i % 25}.png" for i in range(40)],
                "caption": [f"a frog number {i % 25}" for i in range(40)],
            }
        ),
        pool,
    )
    outs = {}
    for name, extra_env in (("local", None), ("env", {"RAY_ADDRESS": ray_cluster}), ("own", {})):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        env.update(extra_env or {})
        engine = ["--engine", "local"] if extra_env is None else ["--engine", "ray", "--workers", "1"]
        out = tmp_path / name
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "pool",
                "--pool",
                str(pool),
                "--out",
                str(out),
                "--rows-per-part",
                "8",
                "--quiet",
                *engine,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, (name, res.stderr)
        outs[name] = {p.name: p.read_bytes() for p in sorted((out / "curation" / "pool").glob("part-*.parquet"))}
    assert len(outs["local"]) == 4  # 40 rows, 25 distinct (url, text) pairs, 8 a part
    assert outs["env"] == outs["local"] == outs["own"]
