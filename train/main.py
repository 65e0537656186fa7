"""`python -m train` / `torchrun --nproc_per_node N -m train`: CLIP's contrastive training.

Read top to bottom, nanoGPT style: arguments (in `train.args`, parsed before torch is
imported), distributed setup, model and optimizer, resume, then one loop of steps
(data -> loss -> step -> log -> checkpoint -> evaluate). Each of those has its own module:
`distributed` (ranks, collectives), `model`, `optim`, `precision`, `resume`, `stream` (the
data), `loss` and `accum` (the step), `metrics` (logging), `checkpoint`, `evaluate`.
Errors are raised where they are found and reported here, once, as one line (exit 2).

The recipe is the paper's (sec. 2.5, tables 18-20): symmetric cross-entropy with a
learnable temperature (logit scale from ln(1/0.07), clamped at ln(100)), similarities
sharded over ranks, AdamW without decay on gains/biases/embeddings, cosine schedule with
warm-up, a random square crop as the only augmentation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.errors import EXIT_INPUT_ERROR, EXIT_RESOURCE_ERROR, InputError, storage_fault

from . import checkpoint, distributed, lifeline, optim, precision
from . import model as models
from .accum import accumulate_step
from .args import parse_args
from .balance import PassRecorder, load_entry_table, make_balance
from .config import EvalConfig, StreamConfig, auto_workers
from .distributed import unwrap
from .loss import clamp_logit_scale_, make_loss
from .metrics import MetricsLog
from .report import refresh_report
from .resume import RankError, StoppedElsewhere, resume
from .run_folder import RunFolder
from .shards import check_remote_shards, expand_urls
from .stream import StreamError, is_held_out, make_train_loader, make_val_loader
from .transforms import normalize


def main(argv: list[str] | None = None) -> int:
    return run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> int:
    """Train with parsed arguments (train/__main__.py parses them before importing this
    module); every error a run can end with becomes one line on stderr here."""
    if lifeline.under_torchrun():  # also armed in train/__main__.py, before the imports
        lifeline.die_with_parent()
    rank = int(os.environ.get("RANK", "0"))
    try:
        with contextlib.ExitStack() as held:  # whatever the run opens, closed however it ends
            return train(args, held)
    except StoppedElsewhere:  # another rank said why
        return EXIT_INPUT_ERROR
    except StreamError as e:  # e.g. every shard unreadable: found by each rank's own stream
        where = f" (rank {rank})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"error: --train-data {' '.join(args.train_data)}: {e}{where}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except InputError as e:  # found alike on every rank, reported by rank 0; a RankError by its rank
        if rank == 0 or isinstance(e, RankError):
            print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as e:  # a full disk or a failing store while writing the run folder
        fault = storage_fault(e)
        if fault is None:
            raise
        path, problem = fault
        print(f"error: {path or args.runs}: {problem}", file=sys.stderr)
        return EXIT_RESOURCE_ERROR


def train(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    quiet_known_noise()
    rank, world, local_rank, device = distributed.init_distributed(args.dist_backend, args.dist_timeout)
    if world > 1:
        held.callback(distributed.teardown)
    master = rank == 0
    cores = max(1, (os.cpu_count() or 1) // max(1, distributed.local_world_size(world)))
    threads = args.threads or cores
    torch.set_num_threads(threads)
    if args.workers is None:  # recorded in config.json as resolved
        args.workers = auto_workers(cores, device.type == "cuda")
    torch.manual_seed(args.seed + rank)

    urls = expand_urls(args.train_data)
    check_remote_shards(args.train_data)
    check_eval_datasets(args.eval_datasets)
    table, balance = load_balance(args, urls, world, rank)
    run = RunFolder(args.runs, args.name)
    held.callback(run.close)

    # --- model and optimizer --------------------------------------------------------
    name, model_cfg = models.resolve(args.model, args.model_config)
    net, tokenizer, image_size = models.create(name, model_cfg, args.precision, str(device))
    if args.grad_checkpointing:
        net.set_grad_checkpointing(True)
    (b1, b2), eps = optim.default_betas_eps(name, model_cfg)
    betas = (args.beta1 or b1, args.beta2 or b2)
    eps = args.eps or eps
    opt = optim.make_optimizer(net, args.lr, args.wd, betas, eps)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler(args.precision) else None

    # --- resume -----------------------------------------------------------------------
    start = resume(args, run, held, net, opt, scaler, name, rank, world, device)
    if start.step >= args.steps:
        if master:
            print(f"{run.url}: already at step {start.step} of {args.steps}; nothing to do", file=sys.stderr)
        return 0

    ranks = distributed.describe_ranks(rank, local_rank, world)
    config = {
        **vars(args),
        "model": name,
        "model_config": model_cfg,
        "world_size": world,
        "image_size": image_size,
        "betas": list(betas),
        "eps": eps,
        "train_urls": len(urls),
        "global_batch": args.batch_size * args.accum_freq * world,
        "nodes": len({r["node"] for r in ranks}),
        "ranks": ranks,
    }
    log = None
    if master:
        run.write_text("config.json", json.dumps(config, indent=2, default=str) + "\n")
        log = MetricsLog(run, args, world, config["global_batch"], start.step, held)

    # the model as the step calls it: DDP-wrapped over several ranks, compiled with --compile, else `net`
    wrapped = distributed.wrap(net, world, compile=args.compile)
    loss_fn = make_loss(rank, world)
    autocast = precision.autocast_factory(args.precision, device)
    backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None else None
    data = StreamConfig(
        batch_size=args.batch_size * args.accum_freq,
        image_size=image_size,
        seed=args.seed,
        workers=args.workers,
        val_fraction=args.val_fraction,
        shuffle_buffer=args.shuffle_buffer,
        max_image_pixels=args.max_image_pixels,
        rank=rank,
        world_size=world,
        pin_memory=device.type == "cuda",
    )
    loader = make_train_loader(  # the patterns: expanding `urls` again would refuse a gap in a brace range
        args.train_data, tokenizer, data, start_step=start.step, resume=start.stream_state(rank), balance=balance
    )
    recorder = None
    if master and table is not None and balance is not None:
        recorder = PassRecorder(run, table, balance, urls, lambda uid: is_held_out(uid, args.val_fraction))
        held.callback(recorder.close)
    if master and loader.resume_note:
        print(
            f"warning: the data stream is reseeded at step {start.step}, not continued exactly: {loader.resume_note}",
            file=sys.stderr,
        )
    batches = iter(loader)
    tally = start.tally

    # --- the loop ---------------------------------------------------------------------
    t_start = time.perf_counter()
    for step in range(start.step, args.steps):
        lr = optim.cosine_lr(step, args.lr, args.warmup, args.steps, args.min_lr)
        optim.set_lr(opt, lr)

        t0 = time.perf_counter()
        images, tokens, info = next(batches)
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        images = normalize(images)  # uint8 from the loader: normalised here, on the device, per batch
        t1 = time.perf_counter()

        wrapped.train()
        loss, _ = accumulate_step(
            wrapped, images, tokens, loss_fn, args.accum_freq, autocast=autocast, backward=backward
        )
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        clamp_logit_scale_(unwrap(wrapped))
        t2 = time.perf_counter()

        tally.add(info)
        if recorder is not None and "pass" in info:
            recorder.reached(info["pass"])
        done = step + 1
        elapsed = start.elapsed + time.perf_counter() - t_start
        if log is not None:
            log.step_done()
        if done % args.log_every == 0 or done == args.steps or step == start.step:
            loss_sum = tally.reduce(float(loss), world, device)  # the one per-step collective besides the gradients'
            if log is not None:
                scale = unwrap(wrapped).logit_scale.detach().exp().item()
                log.write(
                    done,
                    loss_sum / world,
                    lr,
                    scale,
                    (t0, t1, t2),
                    elapsed,
                    tally,
                    recorder.latest if recorder else None,
                )

        if done % args.save_every == 0 or done == args.steps:
            rngs = distributed.all_gather(checkpoint.rng_state(), world)
            streams = distributed.all_gather(loader.state_dict(), world)  # every rank's position in its data stream
            if master:
                run.upload("metrics.jsonl")  # before the checkpoint: a stored checkpoint's steps are in the metrics
                state = {
                    "format": checkpoint.FORMAT,
                    "model": unwrap(wrapped).state_dict(),
                    "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "step": done,
                    "rng": rngs,
                    "data": {
                        "seed": args.seed,
                        "start_step": done,
                        "samples_per_rank": done * args.batch_size * args.accum_freq,
                        **tally.state(),
                        "streams": streams,
                        "elapsed_time": start.elapsed + time.perf_counter() - t_start,
                    },
                    "config": json.loads(json.dumps(config, default=str)),
                }
                checkpoint.save(run.checkpoints, done, state, keep=args.keep_checkpoints)
            distributed.barrier(world)

        if (args.eval_every and done % args.eval_every == 0) or (done == args.steps and args.final_eval):
            if master:
                assert log is not None
                evaluate_during_training(unwrap(wrapped), tokenizer, data, args, urls, run, device, done, log)
            distributed.barrier(world)
    return 0


def load_balance(args: argparse.Namespace, urls: list[str], world: int = 1, rank: int = 0):
    """With --balance-t: the shards' per-entry counts, checked against them, and what each
    pass draws (`train.balance`); InputError before anything else is set up. Read once, by
    rank 0 (every shard's parquet: at web scale that is minutes of reads), and broadcast, a
    refusal included, so every rank stops with the same one-line error."""
    if args.balance_t is None:
        return None, None
    if not args.balance_t > 0:
        raise InputError(f"--balance-t must be > 0, got {args.balance_t:g}")
    if world > 1:
        box: list = [None, None]  # the table, or the refusal's message
        if rank == 0:
            try:
                box[0] = load_entry_table(urls)
            except InputError as e:
                box[1] = str(e)
        torch.distributed.broadcast_object_list(box, src=0)  # between the job's own ranks
        if box[1] is not None:
            raise InputError(box[1])
        table = box[0]
    else:
        table = load_entry_table(urls)
    return table, make_balance(table, args.balance_t, args.seed)


def check_eval_datasets(specs: list[str]) -> None:
    """InputError for an evaluation set no loader knows, before any training."""
    from .eval_data import check_spec

    for spec in specs:
        try:
            check_spec(spec)
        except InputError as e:
            raise InputError(f"--eval-datasets: {e}") from None


def evaluate_during_training(net, tokenizer, data: StreamConfig, args, urls, run: RunFolder, device, step, log) -> None:
    """Rank 0's evaluation at `step`, results into RUN/eval/ and the report. It must not
    move the training's RNG (dropout, ...): a run resumed from this step's checkpoint never
    ran it. A broken evaluation set costs the evaluation, not the training run."""
    from .evaluate import evaluate
    from .evaluate import tensorboard_scalars as eval_scalars

    config = EvalConfig(
        datasets=args.eval_datasets,
        retrieval=(),  # its retrieval set is the held-out shard samples, `val` below
        cache_dir=args.eval_cache,
        precision=args.precision,
        linear_probe=args.linear_probe and step == args.steps,  # the probes' sweep is for the trained model only
        feature_cache=args.feature_cache or None,
        progress=not args.quiet,
    )
    rng = checkpoint.rng_state()
    net.eval()
    try:
        val = None
        if args.val_fraction > 0:
            held_out = replace(data, batch_size=args.batch_size, workers=0)
            val = make_val_loader(urls[: args.val_shards], tokenizer, held_out)
        results = evaluate(
            net, tokenizer, models.eval_transform(net), config, device, run.local, step, retrieval_loader=val
        )
        if log.writer is not None:
            for k, v in eval_scalars(results).items():
                if not math.isnan(v):
                    log.writer.add_scalar(k, v, step)
        run.upload(Path(results["path"]).relative_to(run.local).as_posix())
        if refresh_report(run.local):
            run.upload("report.html")
    except Exception as e:  # noqa: BLE001 - a broken eval set must not cost the training run
        print(f"evaluation at step {step} failed, training goes on: {type(e).__name__}: {e}", file=sys.stderr)
    net.train()
    checkpoint.set_rng_state(rng)


def quiet_known_noise() -> None:
    """Silence two messages that are expected here and would drown the log."""
    warnings.filterwarnings(
        "ignore", message=r".*distributed\.nn\.functional\.all_gather is deprecated.*", category=FutureWarning
    )  # open_clip's ClipLoss; its gradients are verified in tests
    # open_clip logs "No pretrained weights loaded" for every model: random init is the point here.
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("No pretrained weights loaded"))
