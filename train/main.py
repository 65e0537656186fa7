"""`python -m train` / `torchrun --nproc_per_node N -m train`: CLIP's contrastive training.

Read top to bottom, nanoGPT style: arguments, distributed setup, model and optimizer,
resume, then one loop of steps (data -> loss -> step -> log -> checkpoint -> evaluate).
The recipe is the paper's (sec. 2.5, tables 18-20): symmetric cross-entropy with a
learnable temperature (logit scale from ln(1/0.07), clamped at ln(100)), similarities
sharded over ranks, AdamW without decay on gains/biases/embeddings, cosine schedule with
warm-up, a random square crop as the only augmentation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import logging
import socket
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint, data, model as models, optim, store
from .accum import accumulate_step
from .loss import clamp_logit_scale_, make_loss

PRECISIONS = ("fp32", "bf16", "amp_fp16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-data", nargs="+", required=True,
                   help="webdataset shards: brace patterns, globs or fsspec URLs (e.g. 'shards/{00000..00009}.tar')")
    p.add_argument("--name", default="run", help="run name; outputs go to RUNS/NAME (default: %(default)s)")
    p.add_argument("--runs", default="runs",
                   help="folder of runs, or an fsspec URL such as s3://bucket/runs (credentials and "
                        "AWS_ENDPOINT_URL from the environment); TensorBoard logs stay local, in "
                        "runs/NAME/tensorboard, when it is a URL (default: %(default)s)")
    # "--logs" (open_clip's name) is ambiguous under torchrun (it prefixes --logs-specs): hidden alias.
    p.add_argument("--logs", dest="runs", help=argparse.SUPPRESS)
    p.add_argument("--model", default="tiny-ViT-64",
                   help="open_clip architecture (RN50, ViT-B-32, ...) or one of train/model_configs (default: %(default)s)")
    p.add_argument("--model-config", default=None, help="a JSON model config to register under --model")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per rank per step (default: %(default)s)")
    p.add_argument("--accum-freq", type=int, default=1,
                   help="k: contrastive batch of k x batch-size x world by feature caching (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: %(default)s)")
    p.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine (default: 0)")
    p.add_argument("--warmup", type=int, default=2000, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--wd", type=float, default=0.2, help="weight decay on weights only (default: %(default)s)")
    p.add_argument("--beta1", type=float, default=None, help="default: 0.9")
    p.add_argument("--beta2", type=float, default=None, help="default: 0.98 for ViT, 0.999 for ResNet")
    p.add_argument("--eps", type=float, default=None, help="default: 1e-6 for ViT, 1e-8 for ResNet")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32, bf16 (autocast) or amp_fp16 (autocast + grad scaler) (default: %(default)s)")
    p.add_argument("--grad-checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=int, default=1, help="data loader processes per rank (default: %(default)s)")
    p.add_argument("--shuffle-buffer", type=int, default=2000, help="samples in the shuffle buffer (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="share of samples (by uid hash) held out for retrieval evaluation (default: %(default)s)")
    p.add_argument("--val-shards", type=int, default=8,
                   help="retrieval evaluation reads the held-out samples of the first N shards only, so rank 0 "
                        "does not scan the whole dataset while the others wait (default: %(default)s)")
    p.add_argument("--dist-timeout", type=int, default=120,
                   help="minutes a collective may wait (evaluation runs on rank 0) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps, and at the end (default: %(default)s)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (default: %(default)s)")
    p.add_argument("--resume", default=None, help="'latest' (this run's newest checkpoint) or a checkpoint path")
    p.add_argument("--eval-every", type=int, default=0, help="zero-shot evaluation every N steps (0: at the end only)")
    p.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate after the last step (default: yes)")
    p.add_argument("--eval-datasets", nargs="*", default=["openclipart", "animal-mnist", "digits"],
                   help="zero-shot datasets: openclipart, animal-mnist, digits, imagefolder:PATH (default: %(default)s)")
    p.add_argument("--eval-cache", default=".cache/sample", help="where the evaluation data lives (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=10, help="metrics line every N steps (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per rank (default: cores / ranks)")
    p.add_argument("--dist-backend", default=None, help="nccl on GPU, gloo on CPU (default: by device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for name in ("accum_freq", "batch_size", "steps", "save_every", "log_every", "val_shards", "dist_timeout"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.val_fraction < 1:
        p.error("--val-fraction must be in [0, 1)")
    return args


def init_distributed(backend: str | None, timeout_min: int = 120) -> tuple[int, int, int, torch.device]:
    """(rank, world, local rank, device) from torchrun's environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), timeout=timedelta(minutes=timeout_min))
    return rank, world, local, device


def autocast_factory(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def unwrap(m: torch.nn.Module) -> torch.nn.Module:
    m = getattr(m, "_orig_mod", m)  # torch.compile
    return getattr(m, "module", m)  # DDP


def all_reduce_sum(values: list[float], world: int, device: torch.device) -> list[float]:
    """Sum over ranks; the tensor lives on `device` because NCCL refuses CPU tensors."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def trim_metrics(path: Path, start_step: int) -> None:
    """On resume, drop lines of steps that will be run again: nothing is logged twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start_step:  # the checkpoint's own step is done: keep its line
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut by a kill
    path.write_text("".join(line + "\n" for line in kept))


def quiet_known_noise() -> None:
    """Silence two messages that are expected here and would drown the log."""
    warnings.filterwarnings("ignore", message=r".*distributed\.nn\.functional\.all_gather is deprecated.*",
                            category=FutureWarning)  # open_clip's ClipLoss; its gradients are verified in tests
    # open_clip logs "No pretrained weights loaded" for every model: random init is the point here.
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("No pretrained weights loaded"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_known_noise()
    rank, world, local_rank, device = init_distributed(args.dist_backend, args.dist_timeout)
    master = rank == 0
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed + rank)

    try:
        urls = data.expand_urls(args.train_data)
        data.check_remote_shards(args.train_data)
        run = store.RunFolder(args.runs, args.name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt_dir = run.checkpoints

    # --- model and optimizer --------------------------------------------------------
    name, model_cfg = models.resolve(args.model, args.model_config)
    net, tokenizer, image_size = models.create(name, model_cfg, args.precision, str(device))
    if args.grad_checkpointing:
        net.set_grad_checkpointing(True)
    (b1, b2), eps = optim.default_betas_eps(name, model_cfg)
    betas = (args.beta1 or b1, args.beta2 or b2)
    eps = args.eps or eps
    opt = optim.make_optimizer(net, args.lr, args.wd, betas, eps)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "amp_fp16" else None

    # --- resume -----------------------------------------------------------------------
    # Rank 0 decides and the others follow: ranks that looked at the run folder on their
    # own could disagree (a checkpoint written while they listed, a node that does not
    # see the folder), and ranks at different steps hang in the first all-reduce.
    start_step = 0
    skipped_total = 0
    shard_errors_total = 0
    refuse, resume_path, ckpt = False, None, None
    if master:
        if not args.resume:
            refuse = bool(checkpoint.list_checkpoints(ckpt_dir))
        elif args.resume == "latest":
            resume_path, ckpt = checkpoint.load_latest(ckpt_dir, log=lambda m: print(m, file=sys.stderr))
        else:
            resume_path = args.resume
    refuse, resume_path = broadcast_from_rank0([refuse, resume_path and str(resume_path)], world)
    if refuse:
        if master:
            print(f"error: {ckpt_dir} holds checkpoints of an earlier run: pass --resume latest to continue it, "
                  "or choose another --name", file=sys.stderr)
        return 2
    load_error = None
    if resume_path and ckpt is None:
        try:
            ckpt = checkpoint.load(resume_path)
        except Exception as e:  # noqa: BLE001 - a missing or damaged file: one line, on every rank alike
            load_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    if all_reduce_sum([float(load_error is not None)], world, device)[0]:
        if load_error:
            where = f" on rank {rank} ({socket.gethostname()})" if world > 1 else ""
            shared = "; every node must see the run folder (a shared filesystem or s3://)" if world > 1 else ""
            print(f"error: --resume: cannot load {resume_path}{where}: {load_error}{shared}", file=sys.stderr)
        return 2
    if args.resume and resume_path is None:
        if master:
            print(f"no checkpoint in {ckpt_dir}: starting from step 0", file=sys.stderr)
    elif resume_path:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        checkpoint.set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        start_step = int(ckpt["step"])
        skipped_total = int(ckpt.get("data", {}).get("skipped_samples", 0))
        shard_errors_total = int(ckpt.get("data", {}).get("shard_errors", 0))
        if master:
            print(f"resumed from {resume_path} at step {start_step}", file=sys.stderr)

    if start_step >= args.steps:
        if master:
            print(f"{run.url}: already at step {start_step} of {args.steps}; nothing to do", file=sys.stderr)
        if world > 1:
            dist.destroy_process_group()
        return 0

    from .eval_data import check_spec

    for spec in args.eval_datasets:
        try:
            check_spec(spec)
        except Exception as e:  # noqa: BLE001 - InputError: one line, before any training
            print(f"error: --eval-datasets: {e}", file=sys.stderr)
            return 2

    ranks = describe_ranks(rank, local_rank, world)
    config = {**vars(args), "model": name, "model_config": model_cfg, "world_size": world, "image_size": image_size,
              "betas": list(betas), "eps": eps, "train_urls": len(urls), "global_batch": args.batch_size * args.accum_freq * world,
              "nodes": len({r["node"] for r in ranks}), "ranks": ranks}
    if master:
        run.write_text("config.json", json.dumps(config, indent=2, default=str) + "\n")
        run.download("metrics.jsonl")  # a remote run's metrics so far, to append to
        trim_metrics(run.local / "metrics.jsonl", start_step)

    ddp = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    if args.compile:
        ddp = torch.compile(ddp)
    loss_fn = make_loss(rank, world)
    autocast = autocast_factory(args.precision, device)
    loader = data.make_train_loader(
        urls, tokenizer, batch_size=args.batch_size * args.accum_freq, image_size=image_size, rank=rank,
        world_size=world, seed=args.seed, workers=args.workers, val_fraction=args.val_fraction,
        shuffle_buffer=args.shuffle_buffer, start_step=start_step, pin_memory=device.type == "cuda")
    batches = iter(loader)

    writer = None
    if master:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run.tensorboard))
        except ImportError:
            pass
    bar = None
    if master and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                   dynamic_ncols=True, disable=None)  # no bar when stderr is not a terminal

    # --- the loop ---------------------------------------------------------------------
    metrics_file = open(run.local / "metrics.jsonl", "a") if master else None
    skipped_local = shard_errors_local = 0
    t_last = time.perf_counter()
    for step in range(start_step, args.steps):
        lr = optim.cosine_lr(step, args.lr, args.warmup, args.steps, args.min_lr)
        optim.set_lr(opt, lr)

        t0 = time.perf_counter()
        images, tokens, info = next(batches)
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        t1 = time.perf_counter()

        ddp.train()
        backward = (lambda l: scaler.scale(l).backward()) if scaler is not None else None
        loss, _ = accumulate_step(ddp, images, tokens, loss_fn, args.accum_freq, autocast=autocast, backward=backward)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        clamp_logit_scale_(unwrap(ddp))
        t2 = time.perf_counter()

        skipped_local += int(info.get("skipped", 0))
        shard_errors_local += int(info.get("shard_errors", 0))
        done = step + 1
        if bar is not None:
            bar.update(1)
        log_now = done % args.log_every == 0 or done == args.steps or step == start_step
        if log_now:  # the only per-step collective besides the gradients', and only when logging
            skipped, shard_errors, loss_sum = all_reduce_sum(
                [float(skipped_local), float(shard_errors_local), float(loss)], world, device)
            skipped_local = shard_errors_local = 0
            skipped_total += int(skipped)
            shard_errors_total += int(shard_errors)
        if master and log_now:
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / world:.3f}", lr=f"{lr:.2e}", refresh=False)
            now = time.perf_counter()
            row = {
                "step": done, "loss": round(loss_sum / world, 5), "lr": lr,
                "logit_scale": round(unwrap(ddp).logit_scale.detach().exp().item(), 4),
                "samples_per_s": round(config["global_batch"] / max(1e-9, t2 - t0), 2),
                "data_time": round(t1 - t0, 4), "batch_time": round(t2 - t0, 4),
                "wall_time": round(now - t_last, 3), "skipped_samples": skipped_total,
                "shard_errors": shard_errors_total,
            }
            t_last = now
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            run.upload("metrics.jsonl", min_interval=60)  # remote: the whole file, at most once a minute
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, done)

        if done % args.save_every == 0 or done == args.steps:
            rngs = _gather_rng(world)
            if master:
                run.upload("metrics.jsonl")  # before the checkpoint: a stored checkpoint's steps are in the metrics
                checkpoint.save(ckpt_dir, done, {
                    "model": unwrap(ddp).state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {}, "step": done, "rng": rngs,
                    "data": {"seed": args.seed, "start_step": done, "samples_per_rank": done * args.batch_size * args.accum_freq,
                             "skipped_samples": skipped_total, "shard_errors": shard_errors_total},
                    "config": json.loads(json.dumps(config, default=str)),
                }, keep=args.keep_checkpoints)
            if world > 1:
                dist.barrier()

        if (args.eval_every and done % args.eval_every == 0) or (done == args.steps and args.final_eval):
            if master:
                try:
                    results = run_evaluation(unwrap(ddp), tokenizer, image_size, args, urls, run.local, device, done,
                                             autocast, writer)
                    run.upload(Path(results["path"]).relative_to(run.local).as_posix())
                except Exception as e:  # noqa: BLE001 - a broken eval set must not cost the training run
                    print(f"evaluation at step {done} failed, training goes on: {type(e).__name__}: {e}",
                          file=sys.stderr)
                    unwrap(ddp).train()
            if world > 1:
                dist.barrier()

    if bar is not None:
        bar.close()
    if metrics_file is not None:
        metrics_file.close()
        run.upload("metrics.jsonl")
    run.close()
    if writer is not None:
        writer.close()
    if world > 1:
        dist.destroy_process_group()
    return 0


def broadcast_from_rank0(values: list, world: int) -> list:
    """Rank 0's values (picklable) on every rank."""
    if world > 1:
        dist.broadcast_object_list(values, src=0)
    return values


def describe_ranks(rank: int, local_rank: int, world: int) -> list[dict]:
    """Where every rank runs ({rank, local_rank, node, host, pid}; node is torchrun's
    GROUP_RANK), for config.json: shows which nodes joined a multi-node run."""
    me = {"rank": rank, "local_rank": local_rank, "node": int(os.environ.get("GROUP_RANK", "0")),
          "host": socket.gethostname(), "pid": os.getpid()}
    if world == 1:
        return [me]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, me)
    return gathered


def _gather_rng(world: int) -> list[dict]:
    """Every rank's RNG state, so each continues its own stream after a resume."""
    state = checkpoint.rng_state()
    if world == 1:
        return [state]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def run_evaluation(net, tokenizer, image_size, args, urls, run_dir, device, step, autocast, writer) -> dict:
    from .evaluate import evaluate, scalars

    net.eval()
    val = None
    if args.val_fraction > 0:
        val = data.make_val_loader(urls[: args.val_shards], tokenizer, batch_size=args.batch_size,
                                   image_size=image_size, val_fraction=args.val_fraction, workers=0)
    results = evaluate(net, tokenizer, data.val_transform(image_size), args.eval_datasets, args.eval_cache, device,
                       run_dir, step=step, retrieval_loader=val, autocast=autocast)
    if writer is not None:
        for k, v in scalars(results).items():
            if not math.isnan(v):
                writer.add_scalar(f"eval/{k}", v, step)
    net.train()
    return results
