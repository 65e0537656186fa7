"""Tests for the test clusters (tests.support.raycluster)."""

from __future__ import annotations

import os

import psutil
import pytest

from tests.support.raycluster import ray_head

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def processes_of_this_test() -> list[psutil.Process]:
    """Processes other than this one that inherited this test's environment: those the
    cluster started, whatever their command line says."""
    mine = os.environ["PYTEST_CURRENT_TEST"]
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("PYTEST_CURRENT_TEST") == mine:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_a_stopped_cluster_leaves_no_process_behind():
    with ray_head(num_cpus=1):
        started = processes_of_this_test()
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "gcs_server" in names and "raylet" in names and "ray.util.client.server" in names, names
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
