"""The distributor: same semantics on both engines (order, retries, dead workers, bad input).

The `ray` cases run on a real local cluster (`ray start --head` on 127.0.0.1).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from pipeline.distribute import Engine, PartFailed, run_parts
from pipeline.errors import InputError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers do not have tests/ on their path

_STATE: dict = {}


def _attempt(folder: str, i: int) -> int:
    """Count this task's attempts in a file: the workers share nothing else."""
    path = Path(folder) / f"{i}.attempts"
    n = int(path.read_text()) + 1 if path.exists() else 1
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(str(n))
    os.replace(tmp, path)  # a worker terminated with a broken pool must not leave half a count
    return n


def flaky(task: tuple) -> int:
    folder, i, fail_times, how = task
    if _attempt(folder, i) <= fail_times:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task
        raise OSError(f"transient fault in part {i}")
    return i * i


def slow_or_bad(task: tuple) -> int:
    folder, i = task
    if i == 0:
        raise InputError("row 7 of part 0: not a URL")
    time.sleep(0.5)
    (Path(folder) / f"{i}.ran").write_text("")
    return i


def remember(value: str) -> None:
    _STATE["value"] = value
    _STATE["setups"] = _STATE.get("setups", 0) + 1


def read_state(i: int) -> tuple:
    return i, _STATE["value"], os.getpid(), _STATE["setups"]


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def engine(request) -> Engine:
    if request.param == "ray":
        return Engine("ray", ray_address=request.getfixturevalue("ray_cluster"), max_part_retries=2)
    return Engine("local", workers=2, max_part_retries=2)


def test_results_in_task_order_and_each_completion_reported(engine, tmp_path):
    done = []
    tasks = [(str(tmp_path), i, 0, "raise") for i in range(12)]
    out = run_parts(flaky, iter(tasks), engine, on_done=lambda t, r: done.append((t[1], r)), max_in_flight=3)
    assert out == [i * i for i in range(12)]
    assert sorted(done) == [(i, i * i) for i in range(12)]


def test_a_failing_part_is_retried(engine, tmp_path):
    out = run_parts(flaky, [(str(tmp_path), i, 2 if i == 1 else 0, "raise") for i in range(3)], engine)
    assert out == [0, 1, 4]
    assert (tmp_path / "1.attempts").read_text() == "3" and (tmp_path / "0.attempts").read_text() == "1"


def test_a_part_failing_every_time_fails_the_step_by_name(engine, tmp_path):
    with pytest.raises(PartFailed, match=r"part p1 failed 3 time\(s\).*transient fault in part 1"):
        run_parts(
            flaky,
            [(str(tmp_path), i, 5 if i == 1 else 0, "raise") for i in range(3)],
            engine,
            describe=lambda t: f"p{t[1]}",
        )
    assert (tmp_path / "1.attempts").read_text() == "3"


def test_a_killed_worker_is_replaced_and_its_part_rerun(engine, tmp_path):
    out = run_parts(flaky, [(str(tmp_path), i, 1 if i == 2 else 0, "kill") for i in range(5)], engine)
    assert out == [0, 1, 4, 9, 16]
    assert (tmp_path / "2.attempts").read_text() == "2"


def test_bad_input_is_fatal_at_once(engine, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(InputError, match="row 7 of part 0: not a URL"):
        run_parts(slow_or_bad, [(str(tmp_path), i) for i in range(20)], engine)
    assert time.monotonic() - t0 < 4  # 19 x 0.5 s on 2 workers would take ~5 s
    time.sleep(1.0)
    assert len(list(tmp_path.glob("*.ran"))) < 19  # the rest was cancelled, not run


def test_setup_runs_once_per_worker_process(engine):
    out = run_parts(read_state, list(range(8)), engine, setup=remember, setup_args=("automaton",))
    assert [r[0] for r in out] == list(range(8))
    assert {r[1] for r in out} == {"automaton"}
    assert all(r[3] == 1 for r in out)  # never rebuilt in a process that already has it


def test_serial_engine_retries_too(tmp_path):
    engine = Engine("local", workers=1, max_part_retries=1)
    assert run_parts(flaky, [(str(tmp_path), 0, 1, "raise")], engine) == [0]
    with pytest.raises(PartFailed):
        run_parts(flaky, [(str(tmp_path), 1, 2, "raise")], engine)


def test_unknown_engine_and_unreachable_cluster_are_one_line_errors():
    from tests.support.s3server import free_port

    with pytest.raises(InputError, match="unknown engine"):
        run_parts(abs, [1], Engine("spark"))
    from pipeline.distribute import check_ray_address

    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"--ray-address 127.0.0.1:{port}: no Ray cluster reachable"):
        check_ray_address(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5
    with pytest.raises(InputError, match="expected HOST:PORT"):
        check_ray_address("nonsense")
