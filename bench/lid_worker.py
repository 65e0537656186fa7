"""One language identifier in a fresh process, as a pipeline worker would run it (bench/lid.py).

Reads a JSON list of texts on stdin, loads the candidate named on the command line, labels
the texts and prints one JSON object: the load time (import and model build, wall and CPU),
the first call, the resident memory after loading (and its peak), and the labels, so that
bench/lid.py can tell what a spawned worker pays to start and whether labels are the same
in every process.

    .venv/bin/python bench/lid_worker.py py3langid < texts.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lid_candidates import BY_NAME  # noqa: E402


def memory_mb() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process, in MiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def main() -> None:
    candidate = BY_NAME[sys.argv[1]]
    texts = json.load(sys.stdin)
    before = memory_mb()["rss_mb"]
    wall, cpu = time.perf_counter(), time.process_time()
    detector = candidate.load()
    load_s, load_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    loaded = memory_mb()
    wall = time.perf_counter()
    first = detector.detect(texts[0])
    first_call_s = time.perf_counter() - wall
    labels = [first] + [detector.detect(t) for t in texts[1:]]
    out = {
        "load_s": round(load_s, 3),
        "load_cpu_s": round(load_cpu_s, 3),
        "first_call_s": round(first_call_s, 4),
        "rss_before_load_mb": before,
        **loaded,
        "labels": labels,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
