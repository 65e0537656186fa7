"""Shared fixtures. Real sample inputs come from `make sample-data` (run by `make test`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Ray reads its settings once, when first imported (img2dataset imports it): the whole test
# session, and every process it starts, uses the loopback-only, token-free settings of the
# test clusters (see tests/support/raycluster.py), whatever ~/.ray holds.
from .support.raycluster import RAY_TEST_ENV  # noqa: E402

os.environ.update(RAY_TEST_ENV)


def required_path(env: str) -> Path:
    """A sample-data path from the environment; a missing one fails the test (never skips it)."""
    value = os.environ.get(env)
    if not value or not Path(value).exists():
        pytest.fail(
            f"{env} is unset or missing ({value!r}); run the tests with `make test`, "
            "which fetches the sample data and sets it"
        )
    return Path(value)


# fixture -> the mark its users get, so `make test-fast` (-m "not slow and not sample and not
# browser and not ray") leaves them out: no sample download, no cluster start (tests that call
# `required_path` themselves carry `sample` explicitly)
FIXTURE_MARKS = {
    "wiki_sample_dump": "sample",
    "sample_articles": "sample",
    "wordnet_dir": "sample",
    "openclipart_dir": "sample",
    "ray_cluster": "ray",
    "trained_run": "sample",
}


# `make test` runs on two pytest-xdist workers. A test file is one unit of work, so its module
# fixtures are built once; the files that use the Ray cluster form one unit, and so do those
# that read the trained run, so each session fixture is built on one worker only.
# xdist's own `--dist loadgroup` cannot do this under pytest 9: it renames each test by
# setting `item._nodeid`, which pytest 9 no longer reads (a node's id is `_id`), so every
# test became its own unit and the fixtures were built on both workers. Here each worker
# writes the group of every file as it collects, and the controller's scheduler
# (`pytest_xdist_make_scheduler`) hands out whole groups.
SHARED_SESSION_GROUPS = {"ray_cluster": "ray", "trained_run": "trained_run"}
GROUPS_FILE = "TESTS_XDIST_GROUPS_FILE"  # set by the controller, inherited by its workers


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    group_of_file: dict[str, str] = {}
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for name in sorted(used & FIXTURE_MARKS.keys()):
            item.add_marker(FIXTURE_MARKS[name])
        if item.get_closest_marker("ray"):
            used.add("ray_cluster")
        path = item.nodeid.split("::", 1)[0]
        shared = [group for fixture, group in SHARED_SESSION_GROUPS.items() if fixture in used]
        group_of_file.setdefault(path, path)
        if shared and group_of_file[path] == path:
            group_of_file[path] = shared[0]
    where = os.environ.get(GROUPS_FILE)
    if where and hasattr(config, "workerinput"):  # every worker collects the same tests
        tmp = f"{where}.{config.workerinput['workerid']}"
        Path(tmp).write_text(json.dumps(group_of_file))
        os.replace(tmp, where)


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        fd, where = tempfile.mkstemp(prefix="xdist-groups-", suffix=".json")
        os.close(fd)
        os.environ[GROUPS_FILE] = where  # before the workers start: they inherit it


def pytest_unconfigure(config):
    where = os.environ.get(GROUPS_FILE)
    if where and not hasattr(config, "workerinput"):
        Path(where).unlink(missing_ok=True)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole groups (`pytest_collection_modifyitems`) to each worker, the biggest first."""
    from xdist.scheduler import LoadScopeScheduling

    class FileGroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once the workers have collected
                self.groups = json.loads(Path(os.environ[GROUPS_FILE]).read_text() or "{}")
            path = nodeid.split("::", 1)[0]
            return self.groups.get(path, path)

    return FileGroupScheduling(config, log)


@pytest.fixture(scope="session")
def wiki_sample_dump() -> Path:
    return required_path("WIKI_SAMPLE_DUMP")


@pytest.fixture(scope="session")
def sample_articles(wiki_sample_dump) -> list[str]:
    """The sample dump's article texts with the markup removed, as the counters see them."""
    from pipeline.wiki import dump as wd
    from pipeline.wiki.markup import clean_wikitext

    return [clean_wikitext(p.text) for p in wd.iter_pages(str(wiki_sample_dump)) if p.is_article]


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    return required_path("WORDNET_DIR")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` as a user would, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    """Bad input: exit code 2 and exactly one `error: ...` line naming what is wrong."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs) for the session;
    this process and its children get the environment that reaches it."""
    from .support.raycluster import ray_head

    try:
        with ray_head(num_cpus=2) as address:
            yield address
    finally:
        import ray

        ray.shutdown()  # a test that ran Ray tasks in this process joined the cluster


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str):
    """A real filesystem of `size` at `where` (root only: `.ci/run` runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny-ViT-64 run trained by `python -m train` for the session (3 steps, checkpoints
    at 2 and 3, evaluated at 3: tests/support/trained_run.py), for every test that reads a
    trained model or run folder. Read it, never write into it."""
    from .support.trained_run import train_run

    return train_run(tmp_path_factory.mktemp("trained_run"), required_path("OPENCLIPART_DIR"))
