"""Benchmark the download stage: `pipeline download` against a plain img2dataset run.

Both download the same images from the same loopback HTTP server (`serve_directory`, in a
thread of this process) with the same settings: webdataset output, resize keep_ratio to
`--image-size` never upscaling, JPEG quality 95, sha256, the same processes, threads,
samples per shard and timeout. They run alternately (ours, plain, ours, plain, ...)
`--repeats` times, each as a fresh subprocess into an empty folder, timed wall-clock from
start to exit (interpreter start and imports included, as a user sees them):

  ours:  `python -m pipeline download --out RUN` over a curation folder made once (not
         timed) by `python -m pipeline pool`, `match` and `balance`: it adds the curation
         columns to every sample and sums the shard statistics;
  plain: the `img2dataset` CLI over the same `curation/selected/` parquet (url, text).

Input: `--images` (default 2,000) Pillow images of 300-1200 px a side, three JPEG to one
PNG, cached under the work folder; or, with `--openclipart CACHE` (`.cache/sample` after
`make sample-data`), up to `--images` of the embedded openclipart PNGs, spread evenly over
the sorted list. Files are read, and img2dataset imported, once before timing so that
neither contender starts alone with a cold disk cache.

Prints one JSON object: per run wall seconds, CPU seconds, attempted/successful images and
images/s, the median images/s of each, the median of the per-repeat ratios ours/plain (and
the ratio of the medians, and the CPU-time ratio). Ours runs with `--allow-private-hosts`, as a
user with a local mirror would: the loopback server is a private host, which the download
step's connect-time guard refuses otherwise. The bench fails (exit 1, one line on stderr) when a
run downloads no image or the runs keep different images (`bench/checks.py`). Working files
live under `bench/out/download/` (git-ignored); run folders are removed after counting unless `--keep`.

    .venv/bin/python bench/download.py [--images 2000] [--repeats 2] [--openclipart .cache/sample]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.checks import produced, same  # noqa: E402
from pipeline.sample.server import serve_directory  # noqa: E402
from pipeline.workers import default_workers  # noqa: E402

WORDS = ("cat", "dog", "tree", "house", "car", "flower", "bird", "boat", "mountain", "river")
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}


def log(msg: str) -> None:
    print(f"[bench/download] {msg}", file=sys.stderr, flush=True)


# -- input images -------------------------------------------------------------------------
def make_images(folder: Path, n: int, seed: int) -> list[str]:
    """`n` images of 300-1200 px a side (gradients and shapes), cached; relative paths."""
    from PIL import Image, ImageDraw

    done = folder / ".complete"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    base = Image.linear_gradient("L")
    names = []
    for i in range(n):
        w, h = rng.randint(300, 1200), rng.randint(300, 1200)
        channels = [base.rotate(rng.choice((0, 90, 180, 270))).resize((w, h)) for _ in range(3)]
        img = Image.merge("RGB", channels)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(3, 12)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            x1, y1 = x0 + rng.randint(10, w // 2), y0 + rng.randint(10, h // 2)
            colour = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        sub = f"{i // 1000:03d}"
        (folder / sub).mkdir(exist_ok=True)
        if i % 4 == 3:
            name = f"{sub}/img{i:06d}.png"
            img.save(folder / name, format="PNG", compress_level=6)
        else:
            name = f"{sub}/img{i:06d}.jpg"
            img.save(folder / name, format="JPEG", quality=90)
        names.append(name)
    done.write_text(json.dumps(names))
    return names


def openclipart_images(cache: str, n: int) -> tuple[Path, list[str]]:
    from pipeline.sample.openclipart import roots_from_cache

    png_root, _ = roots_from_cache(cache)
    if not png_root.is_dir():
        sys.exit(f"error: {png_root}: openclipart sample not found; run `make sample-data`")
    files = sorted(
        p.relative_to(png_root).as_posix() for p in png_root.rglob("*.png") if p.is_file() and not p.is_symlink()
    )
    if n < len(files):  # spread over every category rather than the first few
        files = [files[i * len(files) // n] for i in range(n)]
    return png_root, files


# -- the two runs ---------------------------------------------------------------------------
def run_ours(curation_src: Path, run_dir: Path, a: argparse.Namespace) -> list[str]:
    shutil.copytree(curation_src, run_dir / "curation")
    return [
        sys.executable,
        "-m",
        "pipeline",
        "download",
        "--out",
        str(run_dir),
        "--quiet",
        "--image-size",
        str(a.image_size),
        "--processes",
        str(a.processes),
        "--threads",
        str(a.threads),
        "--samples-per-shard",
        str(a.samples_per_shard),
        "--timeout",
        str(a.timeout),
        # the loopback server is a private host: lifted here as a user serving a local
        # mirror would, or the connect-time guard refuses every image (and the bench times refusals)
        "--allow-private-hosts",
    ]


def run_plain(curation_src: Path, run_dir: Path, a: argparse.Namespace) -> list[str]:
    exe = Path(sys.executable).with_name("img2dataset")
    return [
        str(exe),
        f"--url_list={curation_src / 'selected'}",
        "--input_format=parquet",
        "--url_col=url",
        "--caption_col=text",
        "--output_format=webdataset",
        f"--output_folder={run_dir}",
        f"--image_size={a.image_size}",
        "--resize_mode=keep_ratio",
        "--resize_only_if_bigger=True",
        "--encode_format=jpg",
        "--encode_quality=95",
        f"--processes_count={a.processes}",
        f"--thread_count={a.threads}",
        f"--number_sample_per_shard={a.samples_per_shard}",
        f"--timeout={a.timeout}",
        "--retries=0",
        "--compute_hash=sha256",
        "--enable_wandb=False",
    ]


def count_run(run_dir: Path) -> dict:
    stats = [json.loads(p.read_text()) for p in sorted(run_dir.glob("[0-9]*_stats.json"))]
    ok_urls = set()
    for part in sorted(run_dir.glob("[0-9]*.parquet")):
        t = pq.read_table(part, columns=["url", "status"]).to_pylist()
        ok_urls.update(r["url"] for r in t if r["status"] == "success")
    return {
        "shards": len(stats),
        "count": sum(s["count"] for s in stats),
        "successes": sum(s["successes"] for s in stats),
        "shard_seconds_sum": round(sum(s.get("duration", 0.0) for s in stats), 3),
        "tar_mb": round(sum(p.stat().st_size for p in run_dir.glob("[0-9]*.tar")) / 2**20, 1),
        "ok_urls": ok_urls,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="images to download (default: %(default)s)")
    ap.add_argument("--openclipart", metavar="CACHE", help="use the openclipart sample PNGs in CACHE")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, alternated (default: %(default)s)")
    ap.add_argument("--processes", type=int, default=default_workers(), help="default: %(default)s")
    ap.add_argument("--threads", type=int, default=32, help="default: %(default)s")
    ap.add_argument("--samples-per-shard", type=int, default=500, help="default: %(default)s")
    ap.add_argument("--image-size", type=int, default=256, help="default: %(default)s")
    ap.add_argument("--timeout", type=int, default=10, help="default: %(default)s")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic images (default: %(default)s)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "download"), help="default: %(default)s")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    a = ap.parse_args()
    os.environ.update(ENV)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.openclipart:
        site, files = openclipart_images(a.openclipart, a.images)
        source = f"openclipart ({a.openclipart})"
    else:
        site = work / f"images-{a.images}-seed{a.seed}"
        files = make_images(site, a.images, a.seed)
        source = "synthetic (Pillow, 300-1200 px, 3 JPEG : 1 PNG)"
    gen_s = time.perf_counter() - t0
    input_bytes = 0
    for f in files:  # warm the page cache for both contenders
        input_bytes += len((site / f).read_bytes())
    log(f"{len(files)} images ({input_bytes / 2**20:.1f} MiB) from {source}")

    runs_dir = work / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    with serve_directory(site) as base:
        # The curation folder, made once by the real steps (not timed in the comparison).
        setup = work / "setup"
        shutil.rmtree(setup, ignore_errors=True)
        setup.mkdir(parents=True)
        rng = random.Random(a.seed)
        urls = [f"{base}/{quote(f)}" for f in files]
        captions = [f"a picture of a {rng.choice(WORDS)} ({Path(f).stem})" for f in files]
        pq.write_table(pa.table({"url": urls, "caption": captions}), setup / "pool.parquet")
        pq.write_table(pa.table({"query": list(WORDS)}), setup / "queries.parquet")
        t0 = time.perf_counter()
        for step, extra in (
            ("pool", ["--pool", str(setup / "pool.parquet"), "--allow-private-hosts"]),
            ("match", ["--queries", str(setup / "queries.parquet")]),
            ("balance", ["--queries", str(setup / "queries.parquet"), "--per-query", "1000000000"]),
        ):
            r = subprocess.run(
                [sys.executable, "-m", "pipeline", step, "--out", str(setup), "--quiet", *extra],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                sys.exit(f"error: setup step {step} failed:\n{r.stderr[-3000:]}")
        setup_s = time.perf_counter() - t0
        curation = setup / "curation"
        selected_rows = sum(pq.read_metadata(p).num_rows for p in (curation / "selected").glob("part-*.parquet"))
        if selected_rows != len(files):
            sys.exit(f"error: the selection has {selected_rows} rows, expected {len(files)}")

        # Untimed: load img2dataset's imports (torch via webdataset, cv2, albumentations) once,
        # so that the first timed run does not pay for a cold disk cache alone.
        subprocess.run([sys.executable, "-c", "import img2dataset"], cwd=ROOT, env=env, check=True, capture_output=True)
        runs = []
        for rep in range(a.repeats):
            for which, make_cmd in (("ours", run_ours), ("plain", run_plain)):
                run_dir = runs_dir / f"{which}-{rep}"
                run_dir.mkdir(parents=True)
                cmd = make_cmd(curation, run_dir, a)
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
                if r.returncode != 0:
                    sys.exit(f"error: {which} run {rep} exited {r.returncode}:\n{r.stderr[-3000:]}")
                c = count_run(run_dir)
                produced("download", f"{which} run {rep} (images downloaded of {c['count']} attempted)", c["successes"])
                runs.append(
                    {
                        "run": which,
                        "repeat": rep,
                        "seconds": round(seconds, 3),
                        "cpu_seconds": round(cpu, 2),
                        "images_per_s": round(c["successes"] / seconds, 1),
                        **c,
                    }
                )
                log(
                    f"{which} #{rep}: {c['successes']}/{c['count']} images in {seconds:.1f} s "
                    f"({c['successes'] / seconds:.0f}/s)"
                )
                if not a.keep:
                    shutil.rmtree(run_dir)

    ok_sets = [r.pop("ok_urls") for r in runs]
    for r, ok in zip(runs[1:], ok_sets[1:]):
        same("download", f"images kept by {runs[0]['run']} run 0 and {r['run']} run {r['repeat']}", ok_sets[0], ok)
    ours = [r for r in runs if r["run"] == "ours"]
    plain = [r for r in runs if r["run"] == "plain"]
    med = {k: statistics.median(r["images_per_s"] for r in rs) for k, rs in (("ours", ours), ("plain", plain))}
    ratios = [o["images_per_s"] / p["images_per_s"] for o, p in zip(ours, plain)]
    result = {
        "bench": "download",
        "source": source,
        "images": len(files),
        "input_mib": round(input_bytes / 2**20, 1),
        "settings": {
            "processes": a.processes,
            "threads": a.threads,
            "samples_per_shard": a.samples_per_shard,
            "image_size": a.image_size,
            "resize_mode": "keep_ratio",
            "resize_only_if_bigger": True,
            "encode": "jpg q95",
            "timeout": a.timeout,
            "repeats": a.repeats,
        },
        "runs": runs,
        "ours_images_per_s_median": round(med["ours"], 1),
        "plain_images_per_s_median": round(med["plain"], 1),
        "ratio_ours_over_plain_median": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(med["ours"] / med["plain"], 3),
        "cpu_ratio_ours_over_plain_median": round(
            statistics.median(o["cpu_seconds"] / p["cpu_seconds"] for o, p in zip(ours, plain)), 3
        ),
        "successes": {"ours": [r["successes"] for r in ours], "plain": [r["successes"] for r in plain]},
        "same_images_kept_by_every_run": len(ok_sets[0]),  # checked above: the bench fails otherwise
        "setup_seconds": {"generate_images": round(gen_s, 1), "pool_match_balance": round(setup_s, 1)},
        "machine": {
            "cores": default_workers(),
            "python": sys.version.split()[0],
            "img2dataset": version("img2dataset"),
        },
        "note": "seconds: wall-clock per subprocess, interpreter start and imports included; cpu_seconds: "
        "user+sys of the subprocess and its waited-for workers (steadier than wall time on a shared "
        "machine); the loopback server (Python http.server, a thread of the bench process, not "
        "counted in cpu_seconds) serves both alike",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
