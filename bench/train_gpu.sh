#!/usr/bin/env bash
# Training throughput of `python -m train` on GPUs: ViT-B-32, bf16, global batch 256, data
# read and decoded from the webdataset shards on the fly (the loader is part of what is timed).
#
#   bash bench/train_gpu.sh                      # 1 GPU, 200 steps
#   GPUS=8 STEPS=500 bash bench/train_gpu.sh     # global batch stays 256 (32 per GPU)
#   PY=/opt/venv/bin/python SHARDS='/data/shards/{00000..00099}.tar' bash bench/train_gpu.sh
#   PARSE_ONLY=runs/NAME bash bench/train_gpu.sh # only summarise an existing run folder
#
# Assumes this repository with the pinned stack in a venv (.venv, made by `make setup`, which
# is run when PY is the default and .venv is missing), or PY=... pointing at such a python,
# and shards (`make shards`, or SHARDS=...). Settings come from the environment:
#   GPUS (1)  GLOBAL_BATCH (256)  STEPS (200)  WORKERS (8, per rank)  SKIP (50: steps left
#   out of the medians)  MODEL (ViT-B-32)  PRECISION (bf16)  SHARDS ('shards/[0-9]*.tar')
#   LOGS (bench/out/train_gpu)  NAME (gpu-DATE)  KEEP (1: keep the checkpoint)
#   DIST_BACKEND (default with GPUS > 1: cuda:nccl,cpu:gloo, see below)
#   ALLOW_CPU (1: run without a GPU, to smoke-test this script, e.g. ALLOW_CPU=1 MODEL=tiny-ViT-64
#   PRECISION=fp32 GLOBAL_BATCH=32 STEPS=30 WORKERS=1 SKIP=10 bash bench/train_gpu.sh)
# Extra arguments are passed to `python -m train`.
#
# Prints one JSON object (also written to LOGS/NAME/bench.json): the GPU (nvidia-smi), the
# settings, and from LOGS/NAME/metrics.jsonl (one line every 10 steps):
#   wall_samples_per_s   median over the lines after SKIP of global batch x steps covered /
#                        `interval_time` (wall clock between consecutive metrics lines: every
#                        step's data wait, compute and logging). The figure to quote.
#   mean_wall_samples_per_s  samples / seconds summed over the same lines.
#   samples_per_s        median of the trainer's own per-step figure (global batch /
#                        `batch_time`, the last step of each line). `batch_time` ends right
#                        after `opt.step()`, with no CUDA synchronisation after it (the last
#                        one is `float(loss)` in train/accum.py, after the backward), so the
#                        optimizer step's GPU time can fall outside it: a slight upper bound.
#   data_time, batch_time  medians of the per-step fields (data_time: waiting for the loader).
#   setup_s, tail_s      process start to config.json (imports, process group, model built);
#                        last metrics line to exit (final checkpoint + end-of-run evaluation).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

PY=${PY:-.venv/bin/python}
GPUS=${GPUS:-1}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}
STEPS=${STEPS:-200}
WORKERS=${WORKERS:-8}
SKIP=${SKIP:-50}
MODEL=${MODEL:-ViT-B-32}
PRECISION=${PRECISION:-bf16}
SHARDS=${SHARDS:-shards/[0-9]*.tar}
LOGS=${LOGS:-bench/out/train_gpu}
NAME=${NAME:-gpu-$(date +%Y%m%d-%H%M%S)}
KEEP=${KEEP:-0}

# report RUN_DIR [SETUP_S TAIL_S [WRITE]]: the JSON summary of a run folder (its metrics.jsonl),
# also written to RUN_DIR/bench.json when WRITE is given.
report() {
    local run_dir=$1 setup=${2:-} tail=${3:-} gpu=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true)
    fi
    GPU_INFO="$gpu" WRITE_JSON="${4:-}" SKIP="$SKIP" SETUP_S="$setup" TAIL_S="$tail" "$PY" - "$run_dir" <<'EOF'
import json, os, platform, statistics, sys
from pathlib import Path

run = Path(sys.argv[1])
config = json.loads((run / "config.json").read_text())
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
if not rows:
    sys.exit(f"{run}/metrics.jsonl: no metrics lines")
gb = int(config["global_batch"])
skip = int(os.environ.get("SKIP") or 0)
prev, lines = 0, []
for r in rows:
    lines.append({**r, "covered": r["step"] - prev})
    prev = r["step"]
kept = [r for r in lines if r["step"] - r["covered"] >= skip] or lines  # lines wholly after SKIP

def med(vals, nd):
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), nd) if vals else None

wall = [gb * r["covered"] / r["interval_time"] for r in kept if r.get("interval_time")]
secs = sum(r["interval_time"] for r in kept if r.get("interval_time"))
gpus = [g.strip() for g in os.environ.get("GPU_INFO", "").splitlines() if g.strip()]
try:
    import torch
    torch_v, cuda_v = torch.__version__, torch.version.cuda
except Exception:
    torch_v = cuda_v = None
num = lambda k: float(os.environ[k]) if os.environ.get(k) else None
result = {
    "bench": "train_gpu",
    "wall_samples_per_s": med(wall, 1),
    "mean_wall_samples_per_s": round(gb * sum(r["covered"] for r in kept if r.get("interval_time")) / secs, 1) if secs else None,
    "samples_per_s": med([r.get("samples_per_s") for r in kept], 1),
    "data_time": med([r.get("data_time") for r in kept], 4),
    "batch_time": med([r.get("batch_time") for r in kept], 4),
    "steps": rows[-1]["step"], "lines_measured": len(kept), "skip": skip,
    "setup_s": num("SETUP_S"), "tail_s": num("TAIL_S"),
    "gpu": gpus[0].split(",")[0].strip() if gpus else None, "gpu_info": gpus,
    "settings": {k: config.get(k) for k in ("model", "precision", "batch_size", "global_batch", "world_size",
                                            "workers", "steps", "accum_freq", "compile", "grad_checkpointing",
                                            "train_urls", "log_every")},
    "versions": {"python": platform.python_version(), "torch": torch_v, "cuda": cuda_v},
    "last_loss": rows[-1].get("loss"),
    "run": str(run),
}
text = json.dumps(result, indent=2)
if os.environ.get("WRITE_JSON"):
    (run / "bench.json").write_text(text + "\n")
print(text)
EOF
}

if [[ -n "${PARSE_ONLY:-}" ]]; then
    report "$PARSE_ONLY"
    exit 0
fi

# --- set up ---------------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    if [[ "$PY" == ".venv/bin/python" ]]; then
        make setup
    else
        echo "error: PY=$PY is not an executable python" >&2
        exit 2
    fi
fi
if (( GLOBAL_BATCH % GPUS != 0 )); then
    echo "error: GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of GPUS=$GPUS" >&2
    exit 2
fi
BATCH=$(( GLOBAL_BATCH / GPUS ))
# the shards must exist (brace patterns and globs are expanded by the trainer itself)
if ! "$PY" -c 'import sys; from train.shards import expand_urls; expand_urls(sys.argv[1])' "$SHARDS" 2>/dev/null; then
    echo "error: no shard matches SHARDS=$SHARDS (run \`make shards\` or set SHARDS=...)" >&2
    exit 2
fi
CUDA=1
"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print(f"torch {torch.__version__}, cuda {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)", file=sys.stderr); sys.exit(0 if ok else 1)' \
    || CUDA=0
if [[ "$CUDA" == 0 && "${ALLOW_CPU:-0}" != 1 ]]; then
    echo "error: torch sees no CUDA device (ALLOW_CPU=1 runs anyway)" >&2
    exit 2
fi
# With several GPUs the trainer all-reduces a CPU tensor every step (loss and skip counts,
# train/main.py all_reduce_sum), which a plain "nccl" process group refuses ("No backend
# type associated with device type cpu"): give CPU tensors a gloo backend beside NCCL.
DIST_BACKEND=${DIST_BACKEND:-}
if [[ -z "$DIST_BACKEND" && "$CUDA" == 1 && "$GPUS" -gt 1 ]]; then
    DIST_BACKEND="cuda:nccl,cpu:gloo"
fi
DIST_ARGS=()
if [[ -n "$DIST_BACKEND" ]]; then
    DIST_ARGS=(--dist-backend "$DIST_BACKEND")
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=index,name,memory.total,utilization.gpu --format=csv >&2 || true

# --- run ------------------------------------------------------------------------------------
RUN_DIR="$LOGS/$NAME"
if [[ -e "$RUN_DIR/metrics.jsonl" ]]; then
    echo "error: $RUN_DIR already has a run; set NAME=..." >&2
    exit 2
fi
mkdir -p "$RUN_DIR"
echo "run: $RUN_DIR (log: $RUN_DIR.log)" >&2
t_start=$(date +%s.%N)
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m train \
    --train-data "$SHARDS" --model "$MODEL" --precision "$PRECISION" \
    --batch-size "$BATCH" --steps "$STEPS" --workers "$WORKERS" \
    --warmup 10 --log-every 10 --eval-every 0 --no-final-eval \
    --save-every 1000000 --keep-checkpoints 1 \
    --runs "$LOGS" --name "$NAME" --quiet ${DIST_ARGS[@]+"${DIST_ARGS[@]}"} "$@" >"$RUN_DIR.log" 2>&1 \
    || { echo "error: training failed; the end of $RUN_DIR.log:" >&2; tail -n 40 "$RUN_DIR.log" >&2; exit 1; }
t_end=$(date +%s.%N)

# config.json is written once the model and optimizer exist (before the data loader starts);
# metrics.jsonl is flushed after every line, so its modification time is the last line's
mtime() { stat -c %.9Y "$1" 2>/dev/null || stat -c %Y "$1"; }
elapsed() { "$PY" -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$1" "$2"; }
setup_s=$(elapsed "$t_start" "$(mtime "$RUN_DIR/config.json")")
tail_s=$(elapsed "$(mtime "$RUN_DIR/metrics.jsonl")" "$t_end")
[[ "$KEEP" == 1 ]] || rm -rf "$RUN_DIR/checkpoints"
report "$RUN_DIR" "$setup_s" "$tail_s" 1
