"""The data stream: webdataset shards (`train.shards`) to batches, for training and for the
held-out set, both through one sample chain (`accept`, then `to_pixels`).

Train stream (`make_train_loader`), per rank and per DataLoader worker:

    shard sampler --> tar reader --> member check --> held-out filter --> shuffle buffer
    (with replacement,  (streaming,     (.jpg + .txt,    (uid hash,          (raw bytes,
     hashed)             errors counted) json -> uid)     never trained on)   hashed)
        --> size check + decode + random square crop --> batch of exactly `batch_size` --> tokenise

* Shards are drawn with replacement from the whole list, forever: draw i of a worker is a
  hash of (seed, rank, world_size, worker, number of workers, start_step, epoch, i), so
  every rank always has a next batch: the trainer runs a fixed number of steps and no
  rank can run dry while another waits in an all-reduce (no DDP hang). The shuffle
  buffer's k-th pick and that sample's crop are hashes of the same and k: no RNG state.
* Bad input never raises: what `train.shards` cannot read is skipped and counted, and so
  is an image whose header declares more than `max_image_pixels` pixels (a decompression
  bomb: refused before decoding, `image_too_large`). Each batch carries, in `info`, what
  its worker skipped since that worker's previous batch; every count travels with exactly
  one batch, so summing `info` over the batches received sums correctly across workers
  (no shared counters). Only a stream that can never produce a sample raises StreamError
  (every shard tried and none had a usable sample, or 10,000 undecodable images in a
  row): that is a configuration error, not bad input, and otherwise it would be a silent hang.
* The held-out part is `is_held_out(uid, val_fraction)`: a salted blake2b hash of the uid
  alone, so it is the same for every seed, rank, worker count and run.

Resume is step-exact. A worker's stream is a pure function of its parameters and of its
position: the shard draw it is in, the raw samples of that draw consumed, the samples
taken out of the shuffle buffer, and the buffer itself as (draw, raw index) references.
Every batch carries its worker's position; `TrainLoader.state_dict()` keeps, per worker,
the position as of the last batch taken (prefetched batches do not count), and the
trainer stores every rank's in its checkpoints. `load_state_dict()` (or
`make_train_loader(resume=...)`) continues each worker there, so the batches after a
resume are exactly those the uninterrupted run would have had, in the same order, with
the same crops and skip counts. The cost, once per worker at start-up: the shards that
still have samples in the shuffle buffer are read again up to the last one needed (with
a buffer smaller than a shard, mostly the current shard and the one before; with a buffer
of B samples, shards older than ~B*ln(B) samples back are rarely needed), and the current
shard is read again up to the position, its headers only except for buffered samples.
A position only fits the same shard list, ranks, `workers` and seed; otherwise (or for a
checkpoint without one) the stream is reseeded from `start_step` instead: a deterministic
function of the step, not the samples the interrupted run would have seen next.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.shard_format import sample_uid
from pipeline.storage import scheme

from .balance import OnlineBalance, pass_of, uid_keys
from .config import StreamConfig
from .shards import (
    SAMPLE_REASONS,
    SHARD_REASONS,
    ShardIndex,
    check_readable,
    check_sample,
    decode_image,
    decode_text,
    expand_urls,
    iter_shard,
    iter_shard_indexed,
    iter_shard_rows,
    read_index,
)
from .transforms import normalize, stack, train_transform, val_transform

Tokenizer = Callable[[list[str]], torch.Tensor]

STREAM_FORMAT = 2  # layout of `TrainLoader.state_dict()`; checkpoints without one are reseeded
MAX_BAD_IMAGES_IN_A_ROW = 10_000
INDEX_CACHE = 64  # shard indexes a worker keeps (balancing while training)


class StreamError(RuntimeError):
    """The stream can never produce a batch: every shard unreadable, empty or held out, or
    nothing but undecodable images. A configuration error, not bad input (that is skipped
    and counted); raised where the loader is iterated, also when a DataLoader worker found it."""


def is_held_out(uid: str, val_fraction: float) -> bool:
    """Whether a sample belongs to the held-out (validation) part.

    A salted blake2b-64 hash of the uid mapped to [0, 1): independent of the seed, the rank,
    the worker count and the shard layout, so the held-out part never changes between runs.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    if val_fraction <= 0.0:
        return False
    digest = hashlib.blake2b(b"wit-val-split\0" + str(uid).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < val_fraction


# --------------------------------------------------------------------------- the sample chain


def accept(
    raw: dict, counts: Counter, val_fraction: float, held_out: bool, drawn: Callable[[dict], bool] | None = None
) -> dict | None:
    """A raw sample of `iter_shard` -> {"uid", "text", "image": bytes, "__url__"} when it is
    usable and in the part asked for (`held_out` or not), and `drawn` (balancing while
    training: the pass keeps it), else None, counted: the reason it cannot be used,
    `held_out` / `not_held_out` for a sample of the other part, or `not_drawn`. The
    training stream and the held-out set both start here."""
    sample = check_sample(raw, counts)
    if sample is None:
        return None
    if is_held_out(sample["uid"], val_fraction) != held_out:
        counts["not_held_out" if held_out else "held_out"] += 1
        return None
    if drawn is not None and not drawn(sample):
        counts["not_drawn"] += 1
        return None
    text = decode_text(sample, counts)
    if text is None:
        return None
    sample["text"] = text
    return sample


def to_pixels(
    sample: dict, counts: Counter, transform: Callable, max_pixels: int | None, image_size: int
) -> np.ndarray | None:
    """The sample's image decoded (its size checked first, a large JPEG at a reduced size)
    and transformed to uint8 [S, S, 3], or None counted as `bad_image` / `image_too_large`."""
    img = decode_image(sample["image"], counts, max_pixels, reduce_for=image_size)
    if img is None:
        return None
    try:
        return transform(img, source=img.info["source_size"])
    except Exception:  # e.g. a mode PIL cannot convert to RGB
        counts["bad_image"] += 1
        return None


def _skip_info(delta: Counter) -> dict:
    reasons = {r: delta[r] for r in SAMPLE_REASONS + SHARD_REASONS if delta[r]}
    return {
        "skipped": sum(delta[r] for r in SAMPLE_REASONS),
        "shard_errors": sum(delta[r] for r in SHARD_REASONS),
        "held_out": delta["held_out"],
        "not_drawn": delta["not_drawn"],
        "shards": delta["shards"],
        "reasons": reasons,
    }


def _seed(*parts: Any) -> int:
    text = "/".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _tokenize(tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    tokens = tokenizer(texts)
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    return tokens.long()


# --------------------------------------------------------------------------- train stream


def urls_fingerprint(urls: Sequence[str]) -> str:
    """A short hash of the expanded shard list: a stream position is only valid for it."""
    return hashlib.blake2b("\n".join(urls).encode("utf-8"), digest_size=8).hexdigest()


def _worker_init(_worker_id: int) -> None:
    """DataLoader workers die with the rank that started them (not up to 5 s later, when
    PyTorch's own watchdog would notice)."""
    from .lifeline import die_with_parent

    info = get_worker_info()
    die_with_parent(getattr(info.dataset, "parent_pid", None) if info is not None else None)


class _Position:
    """Where one (rank, worker) stream stands. With the stream's parameters, these numbers
    determine everything that follows: there is no RNG state, every random choice is a hash.

    `draw`: index of the shard draw being read; `raw`: raw samples of it consumed; `out`:
    samples taken out of the shuffle buffer; `bad_in_a_row`: undecodable images in a row;
    the shuffle buffer is kept as `(draw, raw index)` references, in buffer order.
    """

    __slots__ = ("draw", "raw", "out", "bad_in_a_row")

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.draw = int(state.get("draw", 0))
        self.raw = int(state.get("raw", 0))
        self.out = int(state.get("out", 0))
        self.bad_in_a_row = int(state.get("bad_in_a_row", 0))

    def state(self, buf: list[dict]) -> dict:
        refs = torch.tensor([s["ref"] for s in buf], dtype=torch.int64).reshape(-1, 2)
        return {"draw": self.draw, "raw": self.raw, "out": self.out, "bad_in_a_row": self.bad_in_a_row, "buffer": refs}


def _valid_position(state: Any) -> bool:
    """A worker position as `_Position.state()` writes it (checked before a worker trusts it)."""
    if not isinstance(state, dict):
        return False
    if not all(isinstance(state.get(k), int) and state[k] >= 0 for k in ("draw", "raw", "out", "bad_in_a_row")):
        return False
    buf = state.get("buffer")
    return (
        isinstance(buf, torch.Tensor)
        and buf.dtype == torch.int64
        and buf.dim() == 2
        and buf.shape[1] == 2
        and bool((buf >= 0).all())
        and bool((buf[:, 0] <= state["draw"]).all())
    )


class TrainStream(IterableDataset):
    """Infinite stream of `(images, tokens, info)` batches for one rank (see module doc).

    Iterated inside each DataLoader worker (or in the main process with 0 workers). Each
    worker's stream is a pure function of (seed, rank, world_size, worker, number of
    workers, start_step, epoch) and its position: shard draw i is a hash of those and i,
    the shuffle buffer's choice for its k-th output and that sample's crop are hashes of
    those and k. `epoch` counts how often the owning TrainLoader was iterated, so iterating
    it again continues with fresh data instead of replaying. `resume` (one position per
    worker, from `TrainLoader.state_dict()`) continues each worker exactly where it was.
    """

    def __init__(
        self,
        urls: Sequence[str],
        tokenizer: Tokenizer,
        config: StreamConfig,
        start_step: int = 0,
        balance: OnlineBalance | None = None,
    ):
        super().__init__()
        if not urls:
            raise ValueError("no training shards")
        self.urls = list(urls)
        self.tokenizer = tokenizer
        self.config = config
        self.transform = train_transform(config.image_size)
        self.start_step = int(start_step)
        self.epoch = 0
        self.resume: list[dict | None] | None = None  # per worker, set by TrainLoader
        self.worker_shift = 0  # DataLoader worker w plays stream (w + shift) % workers
        self.parent_pid: int | None = None  # the process that started the DataLoader workers
        self.balance = balance  # balancing while training: what each pass draws (`train.balance`)
        self._streams = config.world_size  # streams over all ranks (x workers, set in __iter__)
        self._indexes: OrderedDict[str, ShardIndex | None] = OrderedDict()
        self._pending: dict[str, Future] = {}  # the next draw's index being fetched
        self._pool: ThreadPoolExecutor | None = None  # its thread, started where the stream is read

    def __getstate__(self) -> dict:
        """What a DataLoader worker gets: not this process's prefetch thread."""
        return {**self.__dict__, "_pool": None, "_pending": {}}

    def _base(self, worker: int, num_workers: int) -> tuple:
        c = self.config
        return ("train", c.seed, c.rank, c.world_size, worker, num_workers, self.start_step, self.epoch)

    def _shard(self, base: tuple, draw: int) -> str:
        """Draw `draw` of a worker: shards with replacement, so no rank ever runs dry."""
        return self.urls[_seed(*base, "shard", draw) % len(self.urls)]

    def _accept(self, raw: dict, counts: Counter, ref: tuple[int, int]) -> dict | None:
        """`accept` for training, the sample tagged with `ref` (draw, raw index); balancing,
        only what the draw's pass keeps."""
        drawn = None
        if self.balance is not None and not raw.get("__drawn__"):  # (read by index: drawn already)
            b, e = self.balance, self._pass(ref[0])
            drawn = lambda sample: b.keeps(sample["uid"], sample["query_ids"], e)  # noqa: E731
        sample = accept(raw, counts, self.config.val_fraction, held_out=False, drawn=drawn)
        if sample is not None:
            sample["ref"] = ref
        return sample

    def _pass(self, draw: int) -> int:
        return pass_of(draw, self._streams, len(self.urls))

    def _index(self, url: str, then: str | None = None) -> ShardIndex | None:
        """The shard's index, kept for the last INDEX_CACHE shards this worker read; `then`:
        the shard of the next draw, whose index a thread fetches meanwhile (on an object
        store, two requests a shard that would otherwise stall the stream)."""
        pending = self._pending.pop(url, None)
        if url in self._indexes:
            self._indexes.move_to_end(url)
            index = self._indexes[url]
        else:
            index = self._indexes[url] = pending.result() if pending is not None else read_index(url)
            if len(self._indexes) > INDEX_CACHE:
                self._indexes.popitem(last=False)
        if (
            then is not None
            and then not in self._indexes
            and then not in self._pending
            and scheme(then) not in ("", "file")
        ):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-index")
            self._pending = {then: self._pool.submit(read_index, then)}
        return index

    def _read(
        self,
        base: tuple,
        draw: int,
        counts: Counter,
        start: int = 0,
        wanted: frozenset | set = frozenset(),
        stop: int | None = None,
    ) -> Generator[tuple[int, dict | None], None, None]:
        """`(raw index, raw sample)` of a shard draw from `start` on (to `stop`), plus the
        earlier ones in `wanted`. Balancing, on a shard with an index: only the samples the
        pass keeps are read (by byte range); the others come as `(index, None)`, counted
        `held_out` or `not_drawn` as `accept` would, so positions and counts mean the same."""
        url = self._shard(base, draw)
        index = self._index(url, then=self._shard(base, draw + 1)) if self.balance is not None else None
        if index is None:
            return iter_shard_indexed(url, counts, start, wanted)
        return self._read_indexed(url, index, self._pass(draw), counts, start, wanted, stop)

    def _read_indexed(self, url, index: ShardIndex, pass_: int, counts: Counter, start, wanted, stop):
        assert self.balance is not None
        end = len(index) if stop is None else min(stop, len(index))
        uids = [sample_uid({"uid": u}, k, url) for u, k in zip(index.uids, index.keys)]  # as `check_sample` names them
        held = [is_held_out(u, self.config.val_fraction) for u in uids]
        drawn = self.balance.drawn(uid_keys(uids), index.query_ids, pass_)
        read = {j for j in wanted if j < start} | {j for j in range(start, end) if drawn[j] and not held[j]}
        nxt = start
        for j, raw in iter_shard_rows(url, index, sorted(read), counts):
            raw["__drawn__"] = True
            if j >= start:
                yield from self._unread(range(nxt, j), read, held, counts)
                nxt = j + 1
            yield j, raw
        yield from self._unread(range(nxt, end), read, held, counts)

    @staticmethod
    def _unread(rows, read: set, held: list, counts: Counter) -> Iterator[tuple[int, None]]:
        """Rows passed over: those not read counted as `accept` would have; those read but
        lost (a partial sample, a failed read) were counted by the reader."""
        for k in rows:
            if k not in read:
                counts["held_out" if held[k] else "not_drawn"] += 1
            yield k, None

    def _restore(self, base: tuple, refs: list[tuple[int, int]], current: int) -> tuple[list, dict]:
        """A saved shuffle buffer: placeholders in buffer order, those of earlier draws filled
        by re-reading them now (up to the last sample needed); `_inputs` fills the current
        draw's as it passes them. Their skips were counted before the checkpoint: not again."""
        buf: list[dict | None] = [None] * len(refs)
        slots = {ref: i for i, ref in enumerate(refs)}
        by_draw: dict[int, set[int]] = defaultdict(set)
        for d, j in refs:
            by_draw[d].add(j)
        for d in sorted(by_draw):
            if d == current:
                continue
            wanted, last = by_draw[d], max(by_draw[d])
            with contextlib.closing(self._read(base, d, Counter(), last + 1, wanted, stop=last + 1)) as raws:
                for j, raw in raws:
                    if j > last:
                        break
                    if raw is not None:
                        buf[slots[(d, j)]] = self._accept(raw, Counter(), ref=(d, j))
        return buf, slots

    def _inputs(
        self, base: tuple, pos: _Position, counts: Counter, resumed: bool, buf: list, slots: dict
    ) -> Iterator[dict]:
        """Checked, non-held-out raw samples from the shard draws, from `pos` on, forever;
        `pos` advances as they are taken. Each carries `ref` = (draw, raw index)."""
        distinct = set(self.urls)
        barren: set[str] = set()
        ever_yielded = resumed
        restoring = {j for d, j in slots if d == pos.draw}  # buffered samples of the draw it resumes in
        while True:
            draw = pos.draw
            url = self._shard(base, draw)
            wanted, restoring = restoring, set()
            n = 0
            with contextlib.closing(self._read(base, draw, counts, pos.raw, wanted)) as raws:
                for j, raw in raws:
                    if j < pos.raw:  # a sample of the restored shuffle buffer
                        if raw is not None:
                            buf[slots[(draw, j)]] = self._accept(raw, Counter(), ref=(draw, j))
                        continue
                    pos.raw = j + 1
                    if raw is None:  # not read: held out, or not drawn in this pass (counted)
                        continue
                    sample = self._accept(raw, counts, ref=(draw, j))
                    if sample is None:
                        continue
                    n += 1
                    yield sample
            if n:
                ever_yielded = True
            elif not ever_yielded:
                barren.add(url)
                if barren >= distinct:
                    skipped = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v and k != "shards")
                    raise StreamError(
                        f"no trainable sample in any of the {len(distinct)} training shards "
                        f"({skipped or 'no samples'}; val_fraction {self.config.val_fraction})"
                    )
            pos.draw, pos.raw = draw + 1, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict] | tuple[None, None, dict]]:
        """Batches; a StreamError comes as `(None, None, {"error", "worker"})` (see the except below)."""
        worker, num_workers = _worker()
        worker = (worker + self.worker_shift) % num_workers
        base = self._base(worker, num_workers)
        self._streams = self.config.world_size * num_workers
        state = self.resume[worker] if self.resume is not None else None
        pos = _Position(state)
        refs = [(int(d), int(j)) for d, j in state["buffer"].tolist()] if state else []
        buf, slots = self._restore(base, refs, pos.draw) if refs else ([], {})
        counts: Counter = Counter()
        reported: Counter = Counter()
        inputs = self._inputs(base, pos, counts, state is not None, buf, slots)
        placeholders = bool(refs)
        images: list[np.ndarray] = []
        texts: list[str] = []
        uids: list[str] = []
        try:
            while True:
                if self.config.shuffle_buffer <= 1:
                    sample = next(inputs)
                else:  # a buffer of raw (undecoded) samples: ~tens of kB each, not decoded tensors
                    while len(buf) <= self.config.shuffle_buffer:
                        new = next(inputs)  # the first one also completes a restored buffer
                        if placeholders:
                            placeholders = False
                            kept = [s for s in buf if s is not None]
                            if len(kept) < len(buf):
                                print(
                                    f"warning: rank {self.config.rank} worker {worker}: {len(buf) - len(kept)} samples of "
                                    "the saved shuffle buffer could not be read again (shards changed or "
                                    "unreadable); the stream goes on without them",
                                    file=sys.stderr,
                                    flush=True,
                                )
                            buf[:] = kept
                        buf.append(new)
                    i = _seed(*base, "shuffle", pos.out) % len(buf)
                    buf[i], buf[-1] = buf[-1], buf[i]
                    sample = buf.pop()
                k = pos.out
                pos.out += 1
                crop = partial(self.transform, rng=random.Random(_seed(*base, "crop", k)))
                tensor = to_pixels(sample, counts, crop, self.config.max_image_pixels, self.config.image_size)
                if tensor is None:
                    pos.bad_in_a_row += 1
                    if pos.bad_in_a_row >= MAX_BAD_IMAGES_IN_A_ROW:
                        raise StreamError(
                            f"{pos.bad_in_a_row} undecodable images in a row (last shard: {sample['__url__']})"
                        )
                    continue
                pos.bad_in_a_row = 0
                images.append(tensor)
                texts.append(sample["text"])
                uids.append(sample["uid"])
                if len(images) == self.config.batch_size:
                    delta = counts - reported
                    reported = counts.copy()
                    info = _skip_info(delta)
                    info.update(worker=worker, samples=self.config.batch_size, uids=uids, stream=pos.state(buf))
                    if self.balance is not None:
                        info["pass"] = self._pass(pos.draw)
                    yield stack(images), _tokenize(self.tokenizer, texts), info
                    images, texts, uids = [], [], []
        except StreamError as exc:  # to the loader as a batch: a DataLoader worker's exception would be a traceback
            yield None, None, {"error": str(exc), "worker": worker}


class TrainLoader:
    """Iterable over `(images [B,3,S,S] uint8, tokens [B,L] long, info)`: the trainer
    normalises the images on its device (`train.transforms.normalize`).

    `info`: `skipped` (samples skipped since this batch's worker's previous batch),
    `shard_errors`, `held_out`, `shards` (shards opened), `reasons` ({reason: n}),
    `worker`, `samples` (= B), `uids` (the batch's sample uids, in order). Summing `info` over batches counts every skip exactly once.
    `totals` accumulates them over every batch this loader yielded.

    `state_dict()` is the stream's position after the last batch yielded (each worker's
    position as of its last batch taken; batches prefetched but not taken do not count);
    `load_state_dict()` before iterating continues there exactly: the same batches, in the
    same order, as if the run had never stopped. Infinite unless `num_batches` is given
    (then exactly that many per iteration). Raises StreamError when the stream can never
    produce a batch.
    """

    def __init__(self, dataset: TrainStream, num_batches: int | None = None, prefetch_factor: int = 2):
        self.dataset = dataset
        self.workers = max(0, dataset.config.workers)
        self.num_batches = num_batches
        self.prefetch_factor = prefetch_factor
        self.batches = 0
        self.totals: Counter = Counter()
        self._iterations = 0
        self._epoch_batches = 0
        self.streams: list[dict | None] = [None] * max(1, self.workers)
        self._resume: dict | None = None
        self.resume_note: str | None = None  # why make_train_loader could not continue a given state

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("the training stream is infinite (no num_batches given)")
        return self.num_batches

    def state_dict(self) -> dict:
        d, c = self.dataset, self.dataset.config
        return {
            "format": STREAM_FORMAT,
            "seed": c.seed,
            "rank": c.rank,
            "world_size": c.world_size,
            "workers": self.workers,
            "urls": urls_fingerprint(d.urls),
            "num_urls": len(d.urls),
            "batch_size": c.batch_size,
            "val_fraction": c.val_fraction,
            "shuffle_buffer": c.shuffle_buffer,
            "balance_t": d.balance.t if d.balance is not None else None,
            "start_step": d.start_step,
            "step": d.start_step + self.batches,
            "batches": self.batches,
            "epoch": d.epoch,
            "epoch_batches": self._epoch_batches,
            "streams": [dict(s) if s is not None else None for s in self.streams],
            "totals": dict(self.totals),
        }

    def mismatch(self, state: Any, step: int | None = None) -> str | None:
        """Why `state` cannot be continued by this loader (None: it can); `step`: the step
        the stream must be at (a checkpoint's)."""
        if not isinstance(state, dict) or state.get("format") != STREAM_FORMAT:
            return "the checkpoint holds no stream position"
        mine = self.state_dict()
        if state.get("urls") != mine["urls"]:
            return (
                f"the shard list changed ({state.get('num_urls')} shards then, {mine['num_urls']} now, or other ones)"
            )
        for key, what in (
            ("world_size", "ranks"),
            ("workers", "--workers"),
            ("seed", "--seed"),
            ("rank", "rank"),
            ("balance_t", "--balance-t"),
        ):
            if state.get(key) != mine[key]:
                return f"{what} changed ({state.get(key)} then, {mine[key]} now)"
        streams = state.get("streams")
        if (
            not isinstance(streams, list)
            or len(streams) != len(self.streams)
            or not all(s is None or _valid_position(s) for s in streams)
            or not all(
                isinstance(state.get(k), int) and state[k] >= 0
                for k in ("start_step", "batches", "epoch", "epoch_batches")
            )
        ):
            return "the checkpoint's stream position is incomplete or malformed"
        if step is not None and state.get("step") != step:
            return "the checkpoint's stream position is not the one of its step"
        return None

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` (a `state_dict()` of an identically configured loader) was."""
        why = self.mismatch(state)
        if why:
            raise ValueError(why)
        self.dataset.start_step = int(state["start_step"])
        self.batches = int(state["batches"])
        self._resume = state

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
        # Non-persistent workers: the stream is infinite, so one DataLoader iterator serves
        # the whole run; a new iteration gets fresh workers that see the new epoch.
        d = self.dataset
        resume, self._resume = self._resume, None
        if resume is not None:
            d.epoch = int(resume["epoch"])
            self._iterations = d.epoch + 1
            self._epoch_batches = int(resume["epoch_batches"])
            self.streams = [dict(s) if s is not None else None for s in resume["streams"]]
            d.resume = list(self.streams)
        else:
            d.epoch = self._iterations
            self._iterations += 1
            self._epoch_batches = 0
            self.streams = [None] * max(1, self.workers)
            d.resume = None
        # The DataLoader hands out batches round robin from worker 0: shift the streams so
        # that the one whose turn it was comes first.
        d.worker_shift = self._epoch_batches % max(1, self.workers)
        d.parent_pid = os.getpid()
        # Its own generator for the workers' base seed: the global torch RNG (dropout, ...)
        # must not depend on when the loader was started.
        generator = torch.Generator()
        generator.manual_seed(_seed("loader", d.config.seed, d.config.rank, d.epoch) % 2**63)
        loader = DataLoader(
            d,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=d.config.pin_memory,
            persistent_workers=False,
            prefetch_factor=self.prefetch_factor if self.workers else None,
            generator=generator,
            worker_init_fn=_worker_init if self.workers else None,
        )
        it = iter(loader)
        try:
            n = 0
            while self.num_batches is None or n < self.num_batches:
                images, tokens, info = next(it)
                if "error" in info:
                    raise StreamError(info["error"])
                for k in ("skipped", "shard_errors", "held_out", "not_drawn", "shards", "samples"):
                    self.totals[k] += info[k]
                for k, v in info["reasons"].items():
                    self.totals[k] += v
                self.streams[info["worker"]] = info.pop("stream")
                self.batches += 1
                self._epoch_batches += 1
                n += 1
                yield images, tokens, info
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it


def make_train_loader(
    urls: Sequence[str] | str,
    tokenizer: Tokenizer,
    config: StreamConfig,
    start_step: int = 0,
    num_batches: int | None = None,
    resume: Any = None,
    balance: OnlineBalance | None = None,
) -> TrainLoader:
    """The training stream for one rank: infinite (or `num_batches`) batches of exactly
    `config.batch_size`, deterministic in the config and `start_step`.

    `urls`: shard patterns or URLs (see `train.shards.expand_urls`). `resume`: this rank's
    `TrainLoader.state_dict()` from a checkpoint of step `start_step`: the stream continues
    exactly there. When there is none, or it does not fit (other shards, ranks, workers or
    seed; the reason is in `resume_note`), the stream is reseeded from `start_step` instead
    (see module doc).
    """
    urls = expand_urls(urls)
    check_readable(urls)
    loader = TrainLoader(TrainStream(urls, tokenizer, config, start_step, balance), num_batches=num_batches)
    if resume is not None:
        loader.resume_note = loader.mismatch(resume, start_step)
        if loader.resume_note is None:
            loader.load_state_dict(resume)
    return loader


# --------------------------------------------------------------------------- validation


class ValSet(IterableDataset):
    """The held-out samples, once, in shard order (shards sorted; worker w of n reads shards
    w, w+n, ...). Yields `(images, tokens, uids, skip_info)`; the last batch may be short.

    Also usable with `val_fraction=1.0` to read every sample of a shard list once."""

    def __init__(self, urls: Sequence[str], tokenizer: Tokenizer, config: StreamConfig):
        super().__init__()
        self.urls = sorted(urls)
        self.tokenizer = tokenizer
        self.config = config
        self.transform = val_transform(config.image_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, list[str], dict]]:
        worker, num_workers = _worker()
        counts: Counter = Counter()
        reported: Counter = Counter()
        images: list[np.ndarray] = []
        texts: list[str] = []
        uids: list[str] = []

        def flush():
            nonlocal reported
            delta = counts - reported
            reported = counts.copy()
            info = {**_skip_info(delta), "not_held_out": delta["not_held_out"]}
            if not images:  # only counts, of a worker that found nothing to yield
                return None, None, [], info
            batch = (normalize(stack(images)), _tokenize(self.tokenizer, texts), list(uids), info)
            images.clear(), texts.clear(), uids.clear()
            return batch

        if self.config.val_fraction <= 0:
            return
        for url in self.urls[worker::num_workers]:
            for raw in iter_shard(url, counts):
                sample = accept(raw, counts, self.config.val_fraction, held_out=True)
                if sample is None:
                    continue
                tensor = to_pixels(sample, counts, self.transform, self.config.max_image_pixels, self.config.image_size)
                if tensor is None:
                    continue
                images.append(tensor)
                texts.append(sample["text"])
                uids.append(sample["uid"])
                if len(images) == self.config.batch_size:
                    yield flush()
        if images or +(counts - reported):
            yield flush()


class ValLoader:
    """Finite iterable of `(images, tokens, uids)`; skip counts accumulate in `totals`
    (complete once the iteration finished)."""

    def __init__(self, dataset: ValSet):
        self.dataset = dataset
        self.workers = max(0, dataset.config.workers)
        self.totals: Counter = Counter()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        self.totals = Counter()
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.workers, persistent_workers=False)
        for images, tokens, uids, info in loader:
            for k in ("skipped", "shard_errors", "shards", "not_held_out"):
                self.totals[k] += info[k]
            for k, v in info["reasons"].items():
                self.totals[k] += v
            self.totals["samples"] += len(uids)
            if uids:
                yield images, tokens, uids


def make_val_loader(urls: Sequence[str] | str, tokenizer: Tokenizer, config: StreamConfig) -> ValLoader:
    """The held-out part (`is_held_out(uid, config.val_fraction)`), once, deterministic order,
    center crops: `(images [b,3,S,S], tokens [b,L], uids)` with b <= config.batch_size."""
    urls = expand_urls(urls)
    check_readable(urls)
    return ValLoader(ValSet(urls, tokenizer, config))
