"""Run a stage's independent part tasks on an engine: local processes or a Ray cluster.

Modelled on img2dataset's distributor: a stage hands over a function and its part tasks,
the engine decides where they run, and every stage gets the same semantics:

* retries: a part that fails for any reason but bad input (a dead worker, a dropped
  connection, a full disk that was freed) is run again, up to `max_part_retries` times;
  a part that still fails ends the stage with `PartFailed` naming it;
* bad input (`InputError`) is fatal at once: pending parts are cancelled and the error
  reaches the CLI as the usual one-line message;
* `on_done(task, result)` runs in the driver as parts complete (progress bars, stats);
* at most `max_in_flight` tasks are submitted at a time, so a generator of heavy tasks
  (chunks of article text) never piles up in memory;
* results come back in task order, so nothing downstream depends on completion order.

Skipping finished parts stays with each stage (its done markers); this module only runs
what is left. `setup(*setup_args)` runs once per worker process before its first task, for
state that is costly to build or ship per task (an automaton over 500k queries).

Engines: `local` runs on a spawn-context process pool (or in this process with one
worker); `ray` submits Ray tasks to the cluster at `ray_address`, or to `RAY_ADDRESS`, or
to a Ray started on this machine. The `pipeline` package travels to the workers with the
job (Ray's `py_modules`), so a cluster needs only the pinned packages installed.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .errors import InputError, one_line

ENGINES = ("local", "ray")


class PartFailed(RuntimeError):
    """A part failed on every attempt: a resource fault, not bad input (exit code 1)."""


@dataclass(frozen=True)
class Engine:
    name: str = "local"
    workers: int = 1
    ray_address: str | None = None
    max_part_retries: int = 2
    env: tuple = field(default=())  # (name, value) pairs every Ray worker needs in its environment

    @property
    def parallel(self) -> int:
        """How many parts may run at once (Ray: the cluster's CPUs)."""
        if self.name == "ray":
            import ray

            return max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self.workers


def run_parts(
    fn: Callable[[Any], Any],
    tasks: Iterable,
    engine: Engine,
    *,
    setup: Callable | None = None,
    setup_args: tuple = (),
    on_done: Callable[[Any, Any], None] | None = None,
    describe: Callable[[Any], str] = str,
    max_in_flight: int | None = None,
) -> list:
    """Run `fn(task)` for every task on `engine`; return the results in task order."""
    if engine.name == "ray":
        return _run_ray(fn, tasks, engine, setup, setup_args, on_done, describe, max_in_flight)
    if engine.name != "local":
        raise InputError(f"--engine {engine.name}: unknown engine (choose from {', '.join(ENGINES)})")
    return _run_local(fn, tasks, engine, setup, setup_args, on_done, describe, max_in_flight)


def _failure(task, describe, attempts: int, cause: BaseException) -> PartFailed:
    return PartFailed(f"part {describe(task)} failed {attempts} time(s), giving up: {one_line(cause, typed=True)}")


class _Book:
    """The parts of one run, whatever the engine: fed lazily from `tasks` (at most `limit`
    in flight), attempts counted against `max_part_retries`, results kept by task index."""

    def __init__(self, tasks: Iterable, engine: Engine, limit: int, describe, on_done):
        self._it = enumerate(tasks)
        self._exhausted = False
        self.limit, self.retries, self.describe, self.on_done = limit, engine.max_part_retries, describe, on_done
        self.tasks: dict[int, Any] = {}
        self.attempts: dict[int, int] = {}
        self.results: dict[int, Any] = {}

    def fill(self, in_flight: int, submit: Callable[[int], None]) -> None:
        """Start new tasks while fewer than `limit` are in flight; `submit(index)` starts one."""
        while not self._exhausted and in_flight < self.limit:
            try:
                i, task = next(self._it)
            except StopIteration:
                self._exhausted = True
                return
            self.tasks[i] = task
            self.start(i, submit)
            in_flight += 1

    def start(self, i: int, submit: Callable[[int], None]) -> None:
        self.attempts[i] = self.attempts.get(i, 0) + 1
        submit(i)

    def retry(self, i: int, cause: BaseException, submit: Callable[[int], None]) -> None:
        """Run part i again, or fail the run if it has used up its attempts."""
        if self.attempts[i] > self.retries:
            raise _failure(self.tasks[i], self.describe, self.attempts[i], cause) from None
        self.start(i, submit)

    def finish(self, i: int, result) -> None:
        self.results[i] = result
        task = self.tasks.pop(i)
        if self.on_done is not None:
            self.on_done(task, result)

    def ordered(self) -> list:
        return [self.results[i] for i in range(len(self.results))]


# ------------------------------------------------------------------------------ local


def _run_local(fn, tasks, engine, setup, setup_args, on_done, describe, max_in_flight) -> list:
    known = len(tasks) if isinstance(tasks, (list, tuple)) else None
    if engine.workers <= 1 or (known is not None and known <= 1):  # no pool to start for one part
        return _run_serial(fn, tasks, engine, setup, setup_args, on_done, describe)
    book = _Book(tasks, engine, max_in_flight or 2 * engine.workers, describe, on_done)
    pending: dict = {}  # future -> task index

    def new_pool() -> ProcessPoolExecutor:
        kw = {"initializer": setup, "initargs": setup_args} if setup is not None else {}
        return ProcessPoolExecutor(min(engine.workers, known or engine.workers), mp_context=get_context("spawn"), **kw)

    ex = new_pool()

    def submit(i: int) -> None:
        pending[ex.submit(fn, book.tasks[i])] = i

    try:
        while True:
            book.fill(len(pending), submit)
            if not pending:
                break
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                i = pending.pop(fut)
                try:
                    result = fut.result()
                except InputError:
                    raise
                except BrokenProcessPool:
                    broken = True  # a worker died: every task in flight was lost with the pool
                    pending[fut] = i
                    continue
                except Exception as e:  # noqa: BLE001 - any fault but bad input is retried
                    book.retry(i, e, submit)
                    continue
                book.finish(i, result)
            if broken:
                lost = sorted(pending.values())
                pending.clear()
                ex.shutdown(wait=True, cancel_futures=True)
                ex = new_pool()
                for i in lost:
                    book.retry(i, RuntimeError("a worker process died (killed, or out of memory)"), submit)
    except BaseException:
        _kill_pool(ex)
        raise
    ex.shutdown(wait=True)
    return book.ordered()


def _run_serial(fn, tasks, engine, setup, setup_args, on_done, describe) -> list:
    """One worker: the parts run in this process, one after another, with the same retries."""
    if setup is not None:
        setup(*setup_args)
    book = _Book(tasks, engine, 1, describe, on_done)
    queue: list[int] = []
    book.fill(0, queue.append)
    while queue:
        i = queue.pop()
        try:
            result = fn(book.tasks[i])
        except (InputError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - any fault but bad input is retried
            book.retry(i, e, queue.append)
            continue
        book.finish(i, result)
        book.fill(0, queue.append)
    return book.ordered()


def _kill_pool(ex: ProcessPoolExecutor) -> None:
    """Stop at once on a fatal error or Ctrl-C: running parts are abandoned, not awaited."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)


# ------------------------------------------------------------------------------ ray

# Per worker process: the runs whose setup already ran here. A run's state (a matcher, say)
# may be replaced by a later run's setup; that is safe because one driver runs its runs one
# after another, and Ray never lends a worker process of one job (driver) to another.
_SETUP_DONE: set = set()


def _ray_call(fn, setup, setup_args, token: str, task):
    """Runs in a Ray worker: the run's setup once per process, then the task."""
    if setup is not None and token not in _SETUP_DONE:
        setup(*setup_args)
        _SETUP_DONE.add(token)
    return fn(task)


def _package_dir() -> str:
    return str(Path(__file__).resolve().parent)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, on a cluster address nothing answers at (Ray would wait long)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--ray-address {address}: expected HOST:PORT of a Ray head node (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except OSError as e:
        raise InputError(f"--ray-address {address}: no Ray cluster reachable there ({e.strerror or e})") from None


def connect_ray(engine: Engine) -> None:
    """Join the cluster (once per process): --ray-address, else RAY_ADDRESS, else a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = engine.ray_address or os.environ.get("RAY_ADDRESS") or None
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", **dict(engine.env)}
    kwargs: dict = {
        "runtime_env": {"py_modules": [_package_dir()], "env_vars": env},
        "logging_level": "ERROR",
        "log_to_driver": False,
        "include_dashboard": False,
        "configure_logging": True,
    }
    if address:
        check_ray_address(address)
        kwargs["address"] = address
    else:  # a Ray of our own on this machine: loopback only, nothing listens for other hosts
        kwargs.update(num_cpus=engine.workers, _node_ip_address="127.0.0.1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's C++ core writes each failed connection attempt to stderr (~20 lines before it
    # gives up, e.g. on an auth-token mismatch): kept aside, and the last one is named in
    # the one-line error.
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            ray.init(**kwargs)
            failure = None
        except (ConnectionError, RuntimeError, ValueError) as e:
            failure = one_line(e)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if failure is not None:
            log.seek(0)
            lines = [line for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
            last = lines[-1].split("] ", 1)[-1][:200] if lines else ""
            where = address or "a local Ray"
            raise InputError(f"--ray-address {where}: cannot connect: {failure}" + (f" ({last})" if last else ""))


def _ray_cause(e: BaseException) -> BaseException:
    """The exception a task raised, unwrapped from Ray's RayTaskError."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _run_ray(fn, tasks, engine, setup, setup_args, on_done, describe, max_in_flight) -> list:
    import ray

    connect_ray(engine)
    remote = ray.remote(max_retries=engine.max_part_retries)(_ray_call)  # dead workers: Ray retries
    token = uuid.uuid4().hex
    args_ref = ray.put(setup_args) if setup is not None else None
    book = _Book(tasks, engine, max_in_flight or 2 * engine.parallel, describe, on_done)
    pending: dict = {}  # ObjectRef -> task index

    def submit(i: int) -> None:
        ref = remote.remote(fn, setup, args_ref if args_ref is not None else (), token, book.tasks[i])
        pending[ref] = i

    try:
        while True:
            book.fill(len(pending), submit)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = _ray_cause(e)
                    if isinstance(cause, InputError):
                        raise InputError(str(cause)) from None
                    book.retry(i, cause, submit)
                    continue
                except ray.exceptions.RayError as e:  # worker/node lost beyond Ray's own retries
                    raise _failure(book.tasks[i], describe, book.attempts[i] + engine.max_part_retries, e) from None
                book.finish(i, result)
    except BaseException:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort: the error being raised matters more
                traceback.print_exc(limit=0)
        raise
    return book.ordered()
