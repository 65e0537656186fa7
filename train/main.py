"""`python -m train` / `torchrun --nproc_per_node N -m train`: CLIP's contrastive training.

Read top to bottom, nanoGPT style: arguments (in `train.args`, parsed before torch is
imported), distributed setup, model and optimizer, resume, then one loop of steps
(data -> loss -> step -> log -> checkpoint -> evaluate). Ranks and collectives are in
`train.distributed`, the precision modes in `train.precision`.
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
import socket
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch

from pipeline.errors import one_line

from . import checkpoint, data, distributed, lifeline, optim, precision, store
from . import model as models
from .accum import accumulate_step
from .args import parse_args
from .distributed import all_reduce_sum, unwrap
from .loss import clamp_logit_scale_, make_loss
from .report import refresh_report


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
    warnings.filterwarnings(
        "ignore", message=r".*distributed\.nn\.functional\.all_gather is deprecated.*", category=FutureWarning
    )  # open_clip's ClipLoss; its gradients are verified in tests
    # open_clip logs "No pretrained weights loaded" for every model: random init is the point here.
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("No pretrained weights loaded"))


def main(argv: list[str] | None = None) -> int:
    return run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> int:
    """Train with parsed arguments (train/__main__.py parses them before importing this module)."""
    if lifeline.under_torchrun():  # also armed in train/__main__.py, before the imports
        lifeline.die_with_parent()
    with contextlib.ExitStack() as held:  # the run folder's lock, for the whole run
        return train(args, held)


def train(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    quiet_known_noise()
    rank, world, local_rank, device = distributed.init_distributed(args.dist_backend, args.dist_timeout)
    if world > 1:  # `held` closes what the run opened, however it ends (an error, an exception)
        held.callback(distributed.teardown)
    master = rank == 0
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, distributed.local_world_size(world)))
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed + rank)

    try:
        urls = data.expand_urls(args.train_data)
        data.check_remote_shards(args.train_data)
        run = store.RunFolder(args.runs, args.name)
        held.callback(run.close)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt_dir = run.checkpoints

    # --- model and optimizer --------------------------------------------------------
    try:
        name, model_cfg = models.resolve(args.model, args.model_config)
    except (ValueError, OSError) as e:  # an unknown name, a missing or malformed --model-config
        what = (
            f"--model-config {args.model_config}: {one_line(e, typed=True)}" if args.model_config else f"--model: {e}"
        )
        print(f"error: {what}", file=sys.stderr)
        return 2
    net, tokenizer, image_size = models.create(name, model_cfg, args.precision, str(device))
    if args.grad_checkpointing:
        net.set_grad_checkpointing(True)
    (b1, b2), eps = optim.default_betas_eps(name, model_cfg)
    betas = (args.beta1 or b1, args.beta2 or b2)
    eps = args.eps or eps
    opt = optim.make_optimizer(net, args.lr, args.wd, betas, eps)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler(args.precision) else None

    # --- resume -----------------------------------------------------------------------
    # Rank 0 takes the run folder and decides, the others follow: ranks that looked at the
    # run folder on their own could disagree (a checkpoint written while they listed, a node
    # that does not see the folder), and ranks at different steps hang in the first all-reduce.
    start_step = 0
    elapsed_before = 0.0  # training seconds of the steps before a resume
    skipped_total = 0
    shard_errors_total = 0
    reasons_total: dict[str, int] = {}
    refuse, resume_path, ckpt, early_error = False, None, None, None
    if master:
        early_error = hold_run_folder(run, held)
        try:
            if early_error:
                pass
            elif not args.resume:
                refuse = bool(checkpoint.list_checkpoints(ckpt_dir))
            elif args.resume == "latest":
                resume_path, ckpt = checkpoint.load_latest(ckpt_dir, log=lambda m: print(m, file=sys.stderr))
            else:
                resume_path = args.resume
        except checkpoint.CheckpointError as e:
            early_error = f"--resume latest: {e}"
        except Exception as e:  # noqa: BLE001 - a remote run folder that cannot be listed
            early_error = f"{ckpt_dir}: cannot list the checkpoints ({one_line(e, typed=True)})"
    refuse, resume_path, early_error = distributed.broadcast_from_rank0(
        [refuse, resume_path and str(resume_path), early_error], world
    )
    if early_error:
        if master:
            print(f"error: {early_error}", file=sys.stderr)
        return 2
    if refuse:
        if master:
            print(
                f"error: {ckpt_dir} holds checkpoints of an earlier run: pass --resume latest to continue it, "
                "or choose another --name",
                file=sys.stderr,
            )
        return 2
    load_error = None
    if resume_path:
        try:
            if ckpt is None:
                ckpt = checkpoint.load(resume_path)
            restore(ckpt, resume_path, net, opt, scaler, name, rank)
        except checkpoint.CheckpointError as e:  # one line, on every rank alike
            load_error = str(e)
        except Exception as e:  # noqa: BLE001 - e.g. RNG or optimizer state of the wrong shape
            load_error = f"{resume_path}: not a usable checkpoint ({one_line(e, typed=True)})"
    if all_reduce_sum([float(load_error is not None)], world, device)[0]:
        if load_error:
            where = f" on rank {rank} ({socket.gethostname()})" if world > 1 else ""
            shared = "; every node must see the run folder (a shared filesystem or s3://)" if world > 1 else ""
            print(f"error: --resume: {load_error}{where}{shared}", file=sys.stderr)
        return 2
    stream_state, stream_note = None, None
    if args.resume and resume_path is None:
        if master:
            print(f"no checkpoint in {ckpt_dir}: starting from step 0", file=sys.stderr)
    elif resume_path:
        assert ckpt is not None  # loaded above (a failed load returned)
        start_step = int(ckpt["step"])
        saved = ckpt.get("data")
        saved_data = saved if isinstance(saved, dict) else {}
        skipped_total = int(saved_data.get("skipped_samples", 0))
        elapsed_before = float(saved_data.get("elapsed_time", 0.0))
        shard_errors_total = int(saved_data.get("shard_errors", 0))
        reasons_total = {str(k): int(v) for k, v in (saved_data.get("skipped_by_reason") or {}).items()}
        streams = saved_data.get("streams")
        if not isinstance(streams, list):
            stream_note = "the checkpoint holds no stream position (written before step-exact resume)"
        elif len(streams) != world:
            stream_note = f"ranks changed ({len(streams)} then, {world} now)"
        elif not isinstance(streams[rank], dict) or streams[rank].get("step") != start_step:
            stream_note = "the checkpoint's stream position is not the one of its step"
        else:
            stream_state = streams[rank]
        if master:
            print(f"resumed from {resume_path} at step {start_step}", file=sys.stderr)

    if start_step >= args.steps:
        if master:
            print(f"{run.url}: already at step {start_step} of {args.steps}; nothing to do", file=sys.stderr)
        if world > 1:
            distributed.teardown()
        return 0

    from .eval_data import check_spec

    for spec in args.eval_datasets:
        try:
            check_spec(spec)
        except Exception as e:  # noqa: BLE001 - InputError: one line, before any training
            print(f"error: --eval-datasets: {e}", file=sys.stderr)
            return 2

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
    if master:
        run.write_text("config.json", json.dumps(config, indent=2, default=str) + "\n")
        run.download("metrics.jsonl")  # a remote run's metrics so far, to append to
        trim_metrics(run.local / "metrics.jsonl", start_step)

    # the model as the step calls it: DDP-wrapped over several ranks, compiled with --compile, else `net`
    wrapped = distributed.wrap(net, world, compile=args.compile)
    loss_fn = make_loss(rank, world)
    autocast = precision.autocast_factory(args.precision, device)
    loader = data.make_train_loader(  # the patterns: expanding `urls` again would refuse a gap in a brace range
        args.train_data,
        tokenizer,
        batch_size=args.batch_size * args.accum_freq,
        image_size=image_size,
        rank=rank,
        world_size=world,
        seed=args.seed,
        workers=args.workers,
        val_fraction=args.val_fraction,
        shuffle_buffer=args.shuffle_buffer,
        start_step=start_step,
        pin_memory=device.type == "cuda",
        resume=stream_state,
        max_image_pixels=args.max_image_pixels,
    )
    stream_note = stream_note or loader.resume_note
    if master and start_step and stream_note:
        print(
            f"warning: the data stream is reseeded at step {start_step}, not continued exactly: {stream_note}",
            file=sys.stderr,
        )
    batches = iter(loader)

    writer = None
    if master:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run.tensorboard))
            held.callback(writer.close)
        except ImportError:
            pass
    bar = None
    if master and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(
            total=args.steps,
            initial=start_step,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        )  # no bar when stderr is not a terminal
        held.callback(bar.close)
    # Without a terminal (stderr to a file, a batch job) a line per logged step says the run is alive.
    log_lines = bar is not None and bar.disable  # a bar exists when master and not --quiet

    # --- the loop ---------------------------------------------------------------------
    metrics_file = held.enter_context(open(run.local / "metrics.jsonl", "a")) if master else None
    skipped_local = shard_errors_local = 0
    reasons = data.SAMPLE_REASONS + data.SHARD_REASONS
    reasons_local = dict.fromkeys(reasons, 0)
    exit_code = 0
    t_start = t_last = time.perf_counter()
    for step in range(start_step, args.steps):
        lr = optim.cosine_lr(step, args.lr, args.warmup, args.steps, args.min_lr)
        optim.set_lr(opt, lr)

        t0 = time.perf_counter()
        try:
            images, tokens, info = next(batches)
        except data.StreamError as e:  # e.g. every shard unreadable: a configuration error, one line
            where = f" (rank {rank})" if world > 1 else ""
            print(f"error: --train-data {' '.join(args.train_data)}: {e}{where}", file=sys.stderr)
            exit_code = 2
            break
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        t1 = time.perf_counter()

        wrapped.train()
        backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None else None
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

        skipped_local += int(info.get("skipped", 0))
        shard_errors_local += int(info.get("shard_errors", 0))
        for k, v in info.get("reasons", {}).items():
            reasons_local[k] = reasons_local.get(k, 0) + int(v)
        done = step + 1
        if bar is not None:
            bar.update(1)
        log_now = done % args.log_every == 0 or done == args.steps or step == start_step
        if log_now:  # the only per-step collective besides the gradients', and only when logging
            skipped, shard_errors, loss_sum, *by_reason = all_reduce_sum(
                [float(skipped_local), float(shard_errors_local), float(loss)]
                + [float(reasons_local.get(r, 0)) for r in reasons],
                world,
                device,
            )
            skipped_local = shard_errors_local = 0
            reasons_local = dict.fromkeys(reasons, 0)
            skipped_total += int(skipped)
            shard_errors_total += int(shard_errors)
            for r, n in zip(reasons, by_reason):
                if n:
                    reasons_total[r] = reasons_total.get(r, 0) + int(n)
        if master and log_now:
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / world:.3f}", lr=f"{lr:.2e}", refresh=False)
            now = time.perf_counter()
            row = {
                "step": done,
                "loss": loss_sum / world,
                "lr": lr,
                "logit_scale": round(unwrap(wrapped).logit_scale.detach().exp().item(), 4),
                "samples_per_s": round(config["global_batch"] / max(1e-9, t2 - t0), 2),
                "data_time": round(t1 - t0, 4),
                "batch_time": round(t2 - t0, 4),
                "interval_time": round(now - t_last, 3),
                "elapsed_time": round(elapsed_before + now - t_start, 3),
                "skipped_samples": skipped_total,
                "shard_errors": shard_errors_total,
                "skipped_by_reason": dict(sorted(reasons_total.items())),
            }
            t_last = now
            assert metrics_file is not None  # opened on the master
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            run.upload("metrics.jsonl", min_interval=60)  # remote: the whole file, at most once a minute
            if writer is not None:
                for tag, v in tensorboard_scalars(row, world).items():
                    writer.add_scalar(tag, v, done)
            if log_lines:
                print(
                    f"step {done}/{args.steps}: loss {row['loss']:.4f}, lr {lr:.3g}, scale {row['logit_scale']:.2f}, "
                    f"{row['samples_per_s']:.1f} samples/s, {timedelta(seconds=round(row['elapsed_time']))} elapsed"
                    + (f", {skipped_total} samples skipped" if skipped_total else ""),
                    file=sys.stderr,
                    flush=True,
                )

        if done % args.save_every == 0 or done == args.steps:
            rngs = distributed.all_gather(checkpoint.rng_state(), world)
            streams = distributed.all_gather(loader.state_dict(), world)  # every rank's position in its data stream
            if master:
                run.upload("metrics.jsonl")  # before the checkpoint: a stored checkpoint's steps are in the metrics
                checkpoint.save(
                    ckpt_dir,
                    done,
                    {
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
                            "skipped_samples": skipped_total,
                            "shard_errors": shard_errors_total,
                            "skipped_by_reason": dict(reasons_total),
                            "streams": streams,
                            "elapsed_time": elapsed_before + time.perf_counter() - t_start,
                        },
                        "config": json.loads(json.dumps(config, default=str)),
                    },
                    keep=args.keep_checkpoints,
                )
            distributed.barrier(world)

        if (args.eval_every and done % args.eval_every == 0) or (done == args.steps and args.final_eval):
            if master:
                rng = checkpoint.rng_state()  # evaluation must not move the training's RNG (dropout, ...):
                try:  # a run resumed from this step's checkpoint never ran it
                    results = run_evaluation(
                        unwrap(wrapped), tokenizer, image_size, args, urls, run.local, device, done, autocast, writer
                    )
                    run.upload(Path(results["path"]).relative_to(run.local).as_posix())
                    if refresh_report(run.local):
                        run.upload("report.html")
                except Exception as e:  # noqa: BLE001 - a broken eval set must not cost the training run
                    print(
                        f"evaluation at step {done} failed, training goes on: {type(e).__name__}: {e}", file=sys.stderr
                    )
                    unwrap(wrapped).train()
                checkpoint.set_rng_state(rng)
            distributed.barrier(world)

    if bar is not None:
        bar.close()
    if metrics_file is not None:
        metrics_file.close()
        run.upload("metrics.jsonl")
    return exit_code  # `held` closes the rest: the run folder, TensorBoard, the process group


# open_clip_train's TensorBoard names (its train.py: "train/" + data_time, batch_time,
# samples_per_second, samples_per_second_per_gpu, scale, lr and its losses), so runs of both
# trainers overlay; ours where it has none.
TENSORBOARD_TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "logit_scale": "train/scale",
    "data_time": "train/data_time",
    "batch_time": "train/batch_time",
    "samples_per_s": "train/samples_per_second",
    "skipped_samples": "train/skipped_samples",
    "shard_errors": "train/shard_errors",
}


def tensorboard_scalars(row: dict, world: int) -> dict[str, float]:
    """A metrics.jsonl row as TensorBoard scalars under open_clip_train's names."""
    out = {tag: row[k] for k, tag in TENSORBOARD_TAGS.items()}
    out["train/contrastive_loss"] = row["loss"]  # open_clip's ClipLoss term; the only term here
    out["train/samples_per_second_per_gpu"] = row["samples_per_s"] / world
    out.update({f"skipped/{r}": n for r, n in row["skipped_by_reason"].items()})
    return out


def restore(ckpt: dict, path, net: torch.nn.Module, opt, scaler, model_name: str, rank: int) -> None:
    """Model, optimizer, scaler and RNG state from a loaded checkpoint; CheckpointError (one
    line) when they do not fit this model."""
    own = net.state_dict()
    saved = ckpt["model"]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [
        k for k in own if k in saved and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != own[k].shape)
    ]
    if missing or unexpected or shapes:
        saved_config = ckpt.get("config")
        config = saved_config if isinstance(saved_config, dict) else {}
        was = f" (it was saved from {config['model']})" if config.get("model") not in (None, model_name) else ""
        parts = [
            f"{len(missing)} weights missing" if missing else "",
            f"{len(unexpected)} unexpected" if unexpected else "",
            f"{len(shapes)} of another shape" if shapes else "",
        ]
        example = (missing or unexpected or shapes)[0]
        raise checkpoint.CheckpointError(
            f"{path}: its weights do not fit --model {model_name}{was}: "
            f"{', '.join(x for x in parts if x)} (e.g. {example})"
        )
    net.load_state_dict(saved)
    try:
        opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(
            f"{path}: its optimizer state does not fit this model ({one_line(e, typed=True)})"
        ) from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt["rng"]
    checkpoint.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])


def hold_run_folder(run: store.RunFolder, held: contextlib.ExitStack) -> str | None:
    """Rank 0 holds the run folder for the whole run (pipeline.outlock: a flock on
    RUNS/NAME/.lock, dropped by the kernel however the process ends), so a second run of the
    same name, or a resumed run beside ranks of an earlier one, stops at once. The error
    (one line) when another process holds it; None when taken.

    Only global rank 0 writes into the run folder, so only it takes the lock: on a shared
    filesystem every node sees the same folder (flock holds across NFS clients), and a lock
    per node would shut the other nodes out. A remote (s3://) run folder is not locked:
    object storage has no locks (outlock says so on stderr).
    """
    from pipeline.errors import InputError
    from pipeline.outlock import hold

    target = run.url if run.remote else run.local
    try:
        held.enter_context(hold(target, "train", log=lambda m: print(m, file=sys.stderr)))
    except InputError as e:
        return str(e)
    except OSError as e:
        return f"{target}: cannot lock the run folder ({one_line(e, typed=True)})"
    return None


def run_evaluation(net, tokenizer, image_size, args, urls, run_dir, device, step, autocast, writer) -> dict:
    from .evaluate import evaluate
    from .evaluate import tensorboard_scalars as eval_scalars

    net.eval()
    val = None
    if args.val_fraction > 0:
        val = data.make_val_loader(
            urls[: args.val_shards],
            tokenizer,
            batch_size=args.batch_size,
            image_size=image_size,
            val_fraction=args.val_fraction,
            workers=0,
        )
    probe = args.linear_probe and step == args.steps  # the probes' sweep is for the trained model only
    results = evaluate(
        net,
        tokenizer,
        models.eval_transform(net),
        args.eval_datasets,
        args.eval_cache,
        device,
        run_dir,
        step=step,
        retrieval_loader=val,
        autocast=autocast,
        progress=not args.quiet,
        linear_probe=probe,
        feature_cache=args.feature_cache or None,
        precision=args.precision,
    )
    if writer is not None:
        for k, v in eval_scalars(results).items():
            if not math.isnan(v):
                writer.add_scalar(k, v, step)
    net.train()
    return results
