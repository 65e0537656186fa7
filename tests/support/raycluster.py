"""A real local Ray cluster for tests: `ray start --head` on 127.0.0.1, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .s3server import free_port

# For the cluster and every client process of a test. A loopback-only cluster: Ray maps
# 127.0.0.1 to the machine's outward address unless it believes it is on a laptop
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), and the test traffic must stay on loopback.
# Token auth off: a `ray.init()` elsewhere on the machine may have left ~/.ray/auth_token,
# which would make clients and this cluster disagree.
CLUSTER_MARK = "WIT_TEST_RAY_CLUSTER"
RAY_TEST_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _ray_exe() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, env: dict | None = None) -> Iterator[str]:
    """Start a Ray head node on loopback with `num_cpus`; yield its address HOST:PORT.

    The cluster's processes get `env` on top of this environment (e.g. an S3 endpoint), as
    the nodes of a real cluster get theirs from their own configuration.
    """
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-")  # its own session folder: several clusters never mix
    # every process of this cluster inherits the mark, also those whose command line does not
    # name the session folder (the client server, the agents): _stop_cluster finds them by it
    full_env = {**os.environ, **RAY_TEST_ENV, **(env or {}), CLUSTER_MARK: temp}
    full_env.pop("RAY_ADDRESS", None)
    cmd = [
        _ray_exe(),
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        str(num_cpus),
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--temp-dir",
        temp,
    ]
    # every port of its own: two clusters of one test session must not collide (10001, 8265...)
    for flag in (
        "--ray-client-server-port",
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
        "--dashboard-port",
    ):
        cmd += [flag, str(free_port())]
    res = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"ray start failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        # `ray stop` would stop every Ray on the machine; stop only this cluster's processes
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(temp: str) -> None:
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in arg for arg in (p.info["cmdline"] or [])) or p.environ().get(CLUSTER_MARK) == temp:
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=3)  # a test cluster holds nothing worth a graceful stop
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def ray_worker_pids(address: str, function: str = "_ray_call") -> list[int]:
    """Ray worker processes of this machine currently running a task of `function`
    (Ray names a busy worker's process `ray::<function>`)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd.startswith(f"ray::{function}"):
            pids.append(p.pid)
    return pids
