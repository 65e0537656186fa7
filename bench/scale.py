"""Scale benchmark: pool -> match -> balance through the real CLI, local vs Ray, at two sizes.

A synthetic pool of alt-text-like captions (bench/match.py's generator: Zipf draws over a
500k-query list of the real WordNet head words plus synthetic words, bigrams and titles)
is written as several parquet inputs of `--file-rows` rows, so the pool step has parallel
inputs; the query list goes to queries.parquet. Both are cached under `--out`/inputs, so a
rerun only generates what is missing. Then, for every size in `--sizes` (a prefix of the
same input files), each step runs as `python -m pipeline STEP --engine local|ray` in a
fresh output folder per engine, the two engines alternating step by step (taking turns to
go first). Ray runs on a local cluster this script starts (`ray start --head` on loopback,
`--workers` CPUs, as tests/support/raycluster.py does), joined with `--ray-address` as a real one.

Measured per step and engine: wall seconds of the CLI process (startup included), input
rows/s per core (cores = `--workers`, the local pool's processes or the cluster's CPUs),
core-seconds per million pool rows, CPU seconds used by the driver and the workers (apart:
the raylet and its agents), which other load on the machine hardly changes, and peak RSS,
both sampled from /proc every `--interval` (local: the CLI process and its process pool;
Ray: the CLI process plus the cluster's `ray::` worker processes), reported as the largest
worker, the driver and the largest sum at one moment. Across sizes: the peak worker RSS
ratio largest/smallest size (must stay flat: a part's memory does not grow with the pool)
and Ray's overhead ray/local per step. Per size: bytes on disk per row of the curation
outputs and whether Ray's outputs equal the local ones (every parquet part compared as a
table, and byte for byte). A step that keeps nothing, or Ray outputs whose tables differ
from the local ones, fail the bench (exit 1, one line on stderr; `bench/checks.py`). The machine is shared, so only ratios taken in one run mean
much. Prints one JSON object and writes it to `--json` (bench/out/scale.json), with the
marginal rate and fixed cost per step (from the two sizes) and a projection of the
measured core-seconds to `--project-rows` (MetaCLIP's 1.6B) on a `--cluster` of K nodes
x C cores.

    .venv/bin/python bench/scale.py                         # 1M and 10M rows: ~12 min on 2 cores (+5 to generate)
    .venv/bin/python bench/scale.py --sizes 100000,300000   # smoke run, ~2 minutes
    .venv/bin/python bench/scale.py --engines local --sizes 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.checks import fail, produced  # noqa: E402
from pipeline.collect.config import BalanceConfig  # noqa: E402
from pipeline.options import MEMORY_LIMIT  # noqa: E402

STEPS = ("pool", "match", "balance")
ENGINES = ("local", "ray")
SITES = (
    "cdn.shopimg.com",
    "images.example-news.org",
    "static.photoblog.net",
    "media.wikiloc.info",
    "i.pinimg-like.com",
    "upload.stockpics.io",
    "img.travelguide.fr",
    "pics.recipes.de",
)
DUP_SHARE = 0.01  # rows repeating an earlier (url, text) of the same file: dropped by the pool step


def _load_match_bench():
    """bench/match.py's query and caption generators (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_match", ROOT / "bench" / "match.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ inputs


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=100_000)
    tmp.replace(path)


def _pool_file(texts: list[str], rng: random.Random, file_index: int) -> pa.Table:
    """URLs on a few hosts (Zipf-ish over image servers), ~1% exact duplicate rows."""
    n = len(texts)
    urls = [
        f"https://s{rng.randrange(1 + rng.randrange(1, 400))}.{rng.choice(SITES)}/"
        f"{file_index:04d}/{j:07d}-{rng.getrandbits(32):08x}.jpg"
        for j in range(n)
    ]
    for j in range(1, n):
        if rng.random() < DUP_SHARE:
            k = rng.randrange(j)
            urls[j], texts[j] = urls[k], texts[k]
    return pa.table({"url": urls, "caption": texts})


def make_inputs(args, n_files: int) -> tuple[Path, list[Path], dict]:
    """queries.parquet and the first `n_files` pool inputs, generated where missing."""
    inputs = Path(args.out) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    qpath = inputs / f"queries-s{args.seed}.parquet"
    files = [inputs / f"pool-s{args.seed}-r{args.file_rows}-{i:05d}.parquet" for i in range(n_files)]
    missing = [(i, f) for i, f in enumerate(files) if not f.exists()]
    info: dict = {
        "dir": str(inputs),
        "files": n_files,
        "rows_per_file": args.file_rows,
        "generated_files": len(missing),
        "generate_s": 0.0,
    }
    meta_path = inputs / f"queries-s{args.seed}.json"
    if qpath.exists() and not missing:
        info["queries"] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return qpath, files, info
    t = time.perf_counter()
    bm = _load_match_bench()
    queries, pools = bm.build_queries(args.wordnet, random.Random(args.seed))
    meta = pools.pop("meta")
    if not qpath.exists():
        _write_atomic(pa.table({"query": queries}), qpath)
        meta_path.write_text(json.dumps(meta, sort_keys=True))
    info["queries"] = meta
    del queries
    for i, f in missing:
        rng = random.Random(args.seed * 1_000_003 + i + 1)  # file i is the same whatever the sizes
        _write_atomic(_pool_file(bm.build_texts(args.file_rows, pools, rng), rng, i), f)
        log(f"generated {f.name} ({i + 1}/{n_files})")
    info["generate_s"] = round(time.perf_counter() - t, 1)
    return qpath, files, info


# ------------------------------------------------------------------------------ memory


class Sampler(threading.Thread):
    """Peak RSS and CPU seconds per process of one CLI run: its tree, and the Ray cluster's workers."""

    def __init__(self, root_pid: int, raylet: psutil.Process | None, interval: float):
        super().__init__(daemon=True)
        self.root_pid, self.raylet, self.interval = root_pid, raylet, interval
        self.peak: dict[int, int] = {}
        self.role: dict[int, str] = {}
        self.peak_total = 0
        # CPU seconds (user + system) per process during the run: a process already there at
        # the first look (an idle Ray worker) counts from then, a new one from its start
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.cpu_role: dict[int, str] = {}
        self.ticks = 0
        self.stop = threading.Event()

    def _procs(self) -> list[tuple[psutil.Process, str]]:
        out = []
        try:
            root = psutil.Process(self.root_pid)
            out.append((root, "driver"))
            for c in root.children(recursive=True):
                out.append((c, "worker"))
        except psutil.NoSuchProcess:
            pass
        if self.raylet is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                out.append((self.raylet, "ray"))
                for c in self.raylet.children(recursive=True):
                    out.append((c, "ray"))
        return out

    def sample(self) -> None:
        total = 0
        for p, role in self._procs():
            try:
                if role != "driver":
                    cmd = " ".join(p.cmdline())
                    if role == "ray":
                        # the raylet's children: task workers are named ray::IDLE / ray::_ray_call;
                        # the agents (ray::DashboardAgent, ray::RuntimeEnvAgent) are cluster daemons
                        role = "worker" if cmd.startswith("ray::") and "Agent" not in cmd else "daemon"
                    elif "resource_tracker" in cmd:
                        role = "other"
                cpu = sum(p.cpu_times()[:2])
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if p.pid not in self.cpu_last:
                self.cpu_first[p.pid] = cpu if self.ticks == 0 else 0.0
            self.cpu_last[p.pid] = cpu
            self.cpu_role[p.pid] = role
            if role == "daemon":
                continue  # the raylet and its agents: CPU reported apart, memory not a worker's
            total += rss
            if rss > self.peak.get(p.pid, 0):
                self.peak[p.pid] = rss
                self.role[p.pid] = role
        self.peak_total = max(self.peak_total, total)
        self.ticks += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def cpu_seconds(self) -> dict:
        by_role: dict[str, float] = {}
        for pid, last in self.cpu_last.items():
            role = self.cpu_role[pid]
            by_role[role] = by_role.get(role, 0.0) + last - self.cpu_first[pid]
        out = {"workers": round(by_role.get("worker", 0.0), 1), "driver": round(by_role.get("driver", 0.0), 1)}
        out["total"] = round(out["workers"] + out["driver"] + by_role.get("other", 0.0), 1)
        if self.raylet is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                out["ray_daemons"] = round(by_role.get("daemon", 0.0), 1)  # raylet and its agents
        return out

    def figures(self) -> dict:
        mb = 2**20
        workers = [v for pid, v in self.peak.items() if self.role[pid] == "worker"]
        driver = [v for pid, v in self.peak.items() if self.role[pid] == "driver"]
        return {
            "worker_max_mb": round(max(workers, default=0) / mb, 1),
            "driver_mb": round(max(driver, default=0) / mb, 1),
            "total_mb": round(self.peak_total / mb, 1),
            "worker_processes": len(workers),
        }


def find_raylet(address: str) -> psutil.Process | None:
    """The raylet of the cluster whose GCS listens at `address` (other Rays may run here)."""
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd and cmd[0].endswith("/raylet") and f"--gcs-address={address}" in cmd:
            return p
    return None


# ------------------------------------------------------------------------------ steps


def run_step(
    step: str, engine: str, out: Path, args, qpath: Path, files: list[Path], ray_address: str | None, raylet, env: dict
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        step,
        "--out",
        str(out),
        "--engine",
        engine,
        "--workers",
        str(args.workers),
        "--memory-limit",
        args.memory_limit,
        "--quiet",
    ]
    if engine == "ray":
        cmd += ["--ray-address", ray_address]
    if step == "pool":
        for f in files:
            cmd += ["--pool", str(f)]
        cmd += ["--rows-per-part", str(args.file_rows)]
    else:
        cmd += ["--queries", str(qpath)]
    if step == "balance":
        cmd += ["--per-query", str(args.per_query), "--seed", str(args.seed)]
    logf = out.parent / f"{out.name}-{step}.log"
    with open(logf, "w") as lf:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, raylet if engine == "ray" else None, args.interval)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t
        sampler.stop.set()
        sampler.join()
    if rc != 0:
        raise SystemExit(
            f"{' '.join(cmd[:4])} --engine {engine} failed (exit {rc}); see {logf}:\n" + logf.read_text()[-3000:]
        )
    stats = json.loads((out / "curation" / f"{step}_stats.json").read_text())
    produced("scale", f"{step} --engine {engine} ({STEP_OUT[step]})", stats[STEP_OUT[step]])
    return {"wall_s": round(wall, 2), "peak_rss": sampler.figures(), "cpu_s": sampler.cpu_seconds(), "stats": stats}


STEP_ROWS = {"pool": "rows_in", "match": "rows", "balance": "matched"}  # a step's input rows
STEP_OUT = {"pool": "kept", "match": "matched", "balance": "kept"}  # what a step must produce


def step_figures(res: dict, step: str, pool_rows: int, cores: int) -> dict:
    rows = int(res["stats"][STEP_ROWS[step]])
    wall = res["wall_s"]
    cpu = res["cpu_s"]["total"]
    return {
        "wall_s": wall,
        "rows": rows,
        "rows_per_s_per_core": round(rows / wall / cores, 1),
        "core_s_per_million_pool_rows": round(wall * cores / pool_rows * 1e6, 2),
        "cpu_s": res["cpu_s"],
        "rows_per_cpu_s": round(rows / cpu, 1) if cpu else None,
        "cpu_s_per_million_pool_rows": round(cpu / pool_rows * 1e6, 2),
        "peak_rss": res["peak_rss"],
    }


# ------------------------------------------------------------------------------ outputs


def _parts(cur: Path) -> dict[str, list[Path]]:
    return {
        "pool": sorted((cur / "pool").glob("part-*.parquet")),
        "matches": sorted((cur / "matches").glob("part-*.parquet")),
        "match_counts": sorted((cur / "matches" / "_counts").glob("part-*.parquet")),
        "entry_counts": [cur / "entry_counts.parquet"],
        "selected": sorted((cur / "selected").glob("part-*.parquet")),
    }


def compare_outputs(local: Path, ray: Path) -> dict:
    """Every curation parquet of the Ray run against the local run's: tables and bytes."""
    res: dict = {}
    mine, theirs = _parts(local / "curation"), _parts(ray / "curation")
    for kind, paths in mine.items():
        names_ok = [p.name for p in paths] == [p.name for p in theirs[kind]]
        tables = names_ok and all(pq.read_table(a).equals(pq.read_table(b)) for a, b in zip(paths, theirs[kind]))
        same_bytes = names_ok and all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, theirs[kind]))
        res[kind] = {"files": len(paths), "tables_equal": bool(tables), "bytes_identical": bool(same_bytes)}
    res["all_equal"] = all(v["tables_equal"] for v in res.values())
    return res


def disk_figures(out: Path, pool_rows: int, kept: int, matched: int, selected: int) -> dict:
    parts = _parts(out / "curation")

    def size(kind: str) -> int:
        return sum(p.stat().st_size for p in parts[kind])

    pool_b, match_b, counts_b, sel_b = size("pool"), size("matches"), size("match_counts"), size("selected")
    total = pool_b + match_b + counts_b + sel_b + size("entry_counts")
    return {
        "pool_parts": {"bytes": pool_b, "per_kept_row": round(pool_b / max(kept, 1), 1)},
        "matches": {
            "bytes": match_b,
            "per_matched_row": round(match_b / max(matched, 1), 1),
            "per_pool_row": round(match_b / max(kept, 1), 1),
        },
        "match_counts": {"bytes": counts_b},
        "selected": {"bytes": sel_b, "per_selected_row": round(sel_b / max(selected, 1), 1)},
        "curation_total": {"bytes": total, "per_input_row": round(total / max(pool_rows, 1), 1)},
    }


def input_bytes_per_row(files: list[Path], rows: int) -> float:
    return round(sum(f.stat().st_size for f in files) / max(rows, 1), 1)


# ------------------------------------------------------------------------------ main


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def marginal_rates(per_size: dict, sizes: list[int], engines: list[str], cores: int) -> dict:
    """Core-seconds per million pool rows between the smallest and the largest size, and the
    fixed seconds a step costs whatever the size (process start, imports, Ray connection and
    worker start-up, setup): wall = fixed + rows x rate / cores."""
    lo, hi = per_size[str(sizes[0])]["steps"], per_size[str(sizes[-1])]["steps"]
    out: dict = {}
    for s in STEPS:
        out[s] = {}
        for e in engines:
            rate = (hi[s][e]["wall_s"] - lo[s][e]["wall_s"]) * cores / (sizes[-1] - sizes[0]) * 1e6
            cpu = (hi[s][e]["cpu_s"]["total"] - lo[s][e]["cpu_s"]["total"]) / (sizes[-1] - sizes[0]) * 1e6
            out[s][e] = {
                "core_s_per_million_pool_rows": round(rate, 2),
                "pool_rows_per_s_per_core": round(1e6 / rate, 1) if rate > 0 else None,
                "fixed_s": round(lo[s][e]["wall_s"] - rate * sizes[0] / cores / 1e6, 2),
                "cpu_s_per_million_pool_rows": round(cpu, 2),
                "fixed_cpu_s": round(lo[s][e]["cpu_s"]["total"] - cpu * sizes[0] / 1e6, 2),
            }
        if len(engines) == 2:
            out[s]["ray_over_local_rate"] = _ratio(
                out[s]["ray"]["core_s_per_million_pool_rows"], out[s]["local"]["core_s_per_million_pool_rows"]
            )
            out[s]["ray_over_local_cpu_rate"] = _ratio(
                out[s]["ray"]["cpu_s_per_million_pool_rows"], out[s]["local"]["cpu_s_per_million_pool_rows"]
            )
    return out


def projection(per_size: dict, sizes: list[int], rows: float, k: int, c: int) -> dict:
    """The largest size's cost per pool row, scaled to `rows` on k x c cores: wall = core-hours
    / (k c), if the parts spread evenly over the cores. Two bases: `wall` = wall seconds x
    cores (fixed costs and this shared machine's other load included: pessimistic) and `cpu`
    = the CPU seconds our processes used (what a dedicated core would spend, I/O waits aside)."""
    big = per_size[str(sizes[-1])]["steps"]
    out: dict = {"rows": rows, "nodes": k, "cores_per_node": c, "rate_at_size": sizes[-1]}
    for engine in ENGINES:
        if not all(engine in big[s] for s in STEPS):
            continue
        out[engine] = {}
        for basis, key in (("wall", "core_s_per_million_pool_rows"), ("cpu", "cpu_s_per_million_pool_rows")):
            steps = {}
            for s in STEPS:
                core_h = big[s][engine][key] * rows / 1e6 / 3600
                steps[s] = {"core_hours": round(core_h, 2), "wall_minutes": round(core_h * 60 / (k * c), 2)}
            steps["total"] = {m: round(sum(steps[s][m] for s in STEPS), 2) for m in ("core_hours", "wall_minutes")}
            out[engine][basis] = steps
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="largest pool size (used when --sizes is not given)")
    ap.add_argument("--sizes", default=None, help="comma-separated pool sizes (default: 1000000,ROWS)")
    ap.add_argument("--engines", default="local,ray", help="comma-separated: local, ray (default: both)")
    ap.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="local processes = the Ray cluster's CPUs (default: usable cores)",
    )
    ap.add_argument(
        "--file-rows",
        type=int,
        default=None,
        help="rows per input file = per pool part (default: 500000, less for small sizes so "
        "the smallest size has at least --workers files)",
    )
    ap.add_argument(
        "--per-query", type=int, default=BalanceConfig().per_query, help="balance cap t (default: %(default)s, CLIP's)"
    )
    ap.add_argument("--memory-limit", default=MEMORY_LIMIT, help="passed to every step (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--wordnet", default=os.environ.get("WORDNET_DIR", str(ROOT / ".cache/sample/wordnet-base/usr/share/wordnet"))
    )
    ap.add_argument("--out", default=str(ROOT / "bench/out/scale"), help="cache and scratch folder")
    ap.add_argument("--json", default=str(ROOT / "bench/out/scale.json"), help="where the JSON goes too")
    ap.add_argument("--keep-outputs", action="store_true", help="keep each size's step outputs (default: removed)")
    ap.add_argument("--interval", type=float, default=0.2, help="RSS sampling interval, seconds")
    ap.add_argument("--project-rows", type=float, default=1.6e9, help="pool rows to project to (MetaCLIP: 1.6B)")
    ap.add_argument("--cluster", default="16x32", help="K nodes x C cores for the projection (default: 16x32)")
    args = ap.parse_args()

    sizes = sorted({int(s) for s in (args.sizes or f"1000000,{args.rows}").split(",")})
    engines = [e for e in args.engines.split(",") if e]
    if set(engines) - set(ENGINES) or not engines:
        ap.error(f"--engines: choose from {', '.join(ENGINES)}")
    if args.file_rows is None:
        args.file_rows = max(1, min(500_000, sizes[0] // args.workers))
    bad = [s for s in sizes if s % args.file_rows]
    if bad:
        ap.error(f"--sizes {bad}: not a multiple of --file-rows {args.file_rows}")
    k, _, c = args.cluster.partition("x")
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)

    qpath, files, inputs = make_inputs(args, sizes[-1] // args.file_rows)
    env = dict(os.environ)
    ray_ctx: contextlib.AbstractContextManager = contextlib.nullcontext(None)
    if "ray" in engines:
        from tests.support.raycluster import RAY_TEST_ENV, ray_head

        env.update(RAY_TEST_ENV)
        env.pop("RAY_ADDRESS", None)
        ray_ctx = ray_head(num_cpus=args.workers)

    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "mem_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "settings": {
            "sizes": sizes,
            "engines": engines,
            "workers": args.workers,
            "file_rows": args.file_rows,
            "per_query": args.per_query,
            "memory_limit": args.memory_limit,
            "seed": args.seed,
        },
        "inputs": inputs,
    }
    per_size: dict = {}
    t_all = time.perf_counter()
    with ray_ctx as address:
        raylet = None
        if address is not None:
            import ray

            res["machine"]["ray"] = ray.__version__
            raylet = find_raylet(address)
            if raylet is None:
                log(f"raylet of {address} not found: Ray worker RSS will be missing")
        for n in sizes:
            nfiles = n // args.file_rows
            outs = {e: out_root / f"run-{n}-{e}" for e in engines}
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)
                o.mkdir(parents=True)
            raw: dict = {s: {} for s in STEPS}
            for j, step in enumerate(STEPS):
                # the engines take turns going first, so neither always gets the warmer page cache
                for e in engines if (sizes.index(n) + j) % 2 == 0 else engines[::-1]:
                    log(f"{n:,} rows: {step} --engine {e} ...")
                    raw[step][e] = run_step(step, e, outs[e], args, qpath, files[:nfiles], address, raylet, env)
                    log(
                        f"{n:,} rows: {step} --engine {e}: {raw[step][e]['wall_s']} s, "
                        f"peak worker RSS {raw[step][e]['peak_rss']['worker_max_mb']} MB"
                    )
            base = engines[0]
            pool_st, match_st, bal_st = (raw[s][base]["stats"] for s in STEPS)
            steps = {}
            for s in STEPS:
                steps[s] = {e: step_figures(raw[s][e], s, n, args.workers) for e in engines}
                if len(engines) == 2:
                    steps[s]["ray_over_local_wall"] = _ratio(raw[s]["ray"]["wall_s"], raw[s]["local"]["wall_s"])
                    steps[s]["ray_over_local_cpu"] = _ratio(
                        raw[s]["ray"]["cpu_s"]["total"], raw[s]["local"]["cpu_s"]["total"]
                    )
            fig: dict = {
                "input_files": nfiles,
                "counts": {
                    "pool_rows_in": pool_st["rows_in"],
                    "pool_kept": pool_st["kept"],
                    "dropped_duplicate": pool_st.get("dropped_duplicate"),
                    "matched": match_st["matched"],
                    "matches": match_st["matches"],
                    "selected": bal_st["kept"],
                    "queries_over_cap": bal_st["queries_over_cap"],
                },
                "steps": steps,
                "total_wall_s": {e: round(sum(raw[s][e]["wall_s"] for s in STEPS), 2) for e in engines},
                "disk_bytes": {
                    "input_per_row": input_bytes_per_row(files[:nfiles], n),
                    **disk_figures(outs[base], n, pool_st["kept"], match_st["matched"], bal_st["kept"]),
                },
            }
            if len(engines) == 2:
                tw = fig["total_wall_s"]
                fig["ray_over_local_total_wall"] = _ratio(tw["ray"], tw["local"])
                fig["ray_equals_local"] = compare_outputs(outs["local"], outs["ray"])
                if not fig["ray_equals_local"]["all_equal"]:
                    differ = [
                        k for k, v in fig["ray_equals_local"].items() if k != "all_equal" and not v["tables_equal"]
                    ]
                    fail("scale", f"{n:,} rows: the Ray run's {', '.join(differ)} differ from the local run's")
            per_size[str(n)] = fig
            if not args.keep_outputs:
                for o in outs.values():
                    shutil.rmtree(o, ignore_errors=True)

    res["sizes"] = per_size
    if len(sizes) > 1:
        lo, hi = per_size[str(sizes[0])]["steps"], per_size[str(sizes[-1])]["steps"]
        res["memory_flat"] = {
            f"worker_peak_rss_ratio_{sizes[-1]}_over_{sizes[0]}": {
                s: {
                    e: _ratio(hi[s][e]["peak_rss"]["worker_max_mb"], lo[s][e]["peak_rss"]["worker_max_mb"])
                    for e in engines
                }
                for s in STEPS
            },
            f"driver_peak_rss_ratio_{sizes[-1]}_over_{sizes[0]}": {
                s: {e: _ratio(hi[s][e]["peak_rss"]["driver_mb"], lo[s][e]["peak_rss"]["driver_mb"]) for e in engines}
                for s in STEPS
            },
            f"rows_per_s_per_core_ratio_{sizes[-1]}_over_{sizes[0]}": {
                s: {e: _ratio(hi[s][e]["rows_per_s_per_core"], lo[s][e]["rows_per_s_per_core"]) for e in engines}
                for s in STEPS
            },
        }
    marginal = marginal_rates(per_size, sizes, engines, args.workers) if len(sizes) > 1 else None
    if marginal:
        res["marginal"] = marginal
    res["projection"] = projection(per_size, sizes, args.project_rows, int(k), int(c))
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(res, indent=1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
