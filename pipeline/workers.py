"""Worker-count default shared by every stage's CLI."""

import os


def default_workers() -> int:
    """Cores this process may use (respects taskset/cgroup affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
