"""Training and validation data: a webdataset stream over `shards/NNNNN.tar`.

Shards are webdataset tars (`KEY.jpg`, `KEY.txt`, `KEY.json`; the json carries `uid`).

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
* Bad input never raises: an unopenable shard, a truncated or corrupt tar, a sample
  without `.txt` or image, undecodable text or json, image bytes that PIL cannot decode,
  an image whose header declares more than `max_image_pixels` pixels (a decompression
  bomb: refused before decoding, `image_too_large`) are skipped and counted. Each batch carries, in `info`, what its worker skipped since
  that worker's previous batch; every count travels with exactly one batch, so summing
  `info` over the batches received sums correctly across workers (no shared counters).
  Only a stream that can never produce a sample raises StreamError (every shard tried and
  none had a usable sample, or 10,000 undecodable images in a row): that is a
  configuration error, not bad input, and otherwise it would be a silent hang.
* The held-out part is `is_held_out(uid, val_fraction)`: a salted blake2b hash of the uid
  alone, so it is the same for every seed, rank, worker count and run.

Why a hand-written tar reader rather than `webdataset.tarfile_to_samples`: webdataset
0.2.86 reports errors through `handler(exn)` per file member or per shard, so one bad
sample can be reported several times (or a truncated shard not at all: Python's
streaming `tarfile` ends iteration silently on a short or garbled header after the first
member). Here each sample lands in exactly one bucket (trained, held out, or skipped for
one reason), and a tar that does not end with its end-of-archive block counts as a
shard error. Shards are opened with webdataset's `gopen` for `pipe:` and http(s) (curl),
with fsspec for other URL schemes (s3://, gs://, ... when their fsspec backend is
installed); webdataset 0.2.86's gopen itself has no fsspec support. A remote (fsspec)
shard whose connection drops is reopened at the byte it stopped at (`_ReopeningReader`);
one that keeps failing counts as `shard_read_error`, with a warning on stderr.

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
checkpoint written before this, without positions) the stream is reseeded from
`start_step` instead: a deterministic function of the step, not the samples the
interrupted run would have seen next.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import sys
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import braceexpand
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import store
from .args import DEFAULT_MAX_IMAGE_PIXELS  # images above it are skipped unread
from .eval_data import to_rgb  # transparency onto white, as the evaluation sees images

try:  # open_clip's constants, without importing the whole package when not needed
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
except ImportError:  # pragma: no cover - open_clip is pinned in requirements
    OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
    OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = [
    "expand_urls",
    "is_held_out",
    "train_transform",
    "val_transform",
    "TrainStream",
    "TrainLoader",
    "make_train_loader",
    "ValSet",
    "ValLoader",
    "make_val_loader",
    "check_remote_shards",
    "IMAGE_EXTS",
    "SAMPLE_REASONS",
    "SHARD_REASONS",
    "StreamError",
    "STREAM_FORMAT",
    "DEFAULT_MAX_IMAGE_PIXELS",
]

Tokenizer = Callable[[list[str]], torch.Tensor]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # first present is used; shards carry .jpg
# Every sample read lands in exactly one of: yielded, "held_out" (or, for the val set,
# "not_held_out"), or one of these skip reasons.
SAMPLE_REASONS = (
    "missing_image",
    "missing_text",
    "bad_text",
    "bad_json",
    "bad_image",
    "image_too_large",
    "partial_sample",
)
SHARD_REASONS = ("shard_unreadable", "shard_truncated", "shard_read_error")
# A remote shard whose read fails is reopened at the same byte this many times, after
# READ_BACKOFF_S, 2x, 4x ... seconds (on top of the fsspec backend's own retries: s3fs
# retries each ranged GET 5 times within ~2 s), then given up and counted.
READ_RETRIES = 3
READ_BACKOFF_S = 1.0
MAX_BAD_IMAGES_IN_A_ROW = 10_000

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_MAGIC = re.compile(r"[*?[]")
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


# --------------------------------------------------------------------------- URLs


def _scheme(url: str) -> str:
    if url.startswith("pipe:"):
        return "pipe"
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else ""


def _file_url_path(url: str) -> str:
    """`file:///abs/x.tar` -> `/abs/x.tar`; `file://rel/x.tar` -> `rel/x.tar`."""
    return url[len("file://") :] if url.lower().startswith("file://") else url


def _expand_local(path: str) -> tuple[list[str], bool]:
    """(paths, whether anything existing matched) for one brace-expanded local path."""
    if _GLOB_MAGIC.search(path):
        import glob

        found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        return [os.path.normpath(p) for p in found], bool(found)
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".tar"))
        return [os.path.normpath(p) for p in found], bool(found)
    # A literal path is kept even if missing (brace patterns with gaps, a shard that is
    # still being written): reading it is then a counted shard error, never a crash.
    return [os.path.normpath(path)], os.path.exists(path)


def expand_urls(patterns: Sequence[str] | str) -> list[str]:
    """Expand shard patterns into a sorted, de-duplicated list of shard URLs.

    Each pattern is brace-expanded (`shards/{00000..00004}.tar`), then each result:
    a local path or `file://` URL is globbed when it has `*?[` (a directory means its
    `*.tar`); `pipe:CMD` is kept verbatim; another URL (`s3://b/x.tar`, `https://...`)
    is kept as a URL, globbed through fsspec when it has glob characters. Literal paths are
    kept even when missing (a gap in a brace range is counted when read), but a pattern
    that matches nothing at all raises ValueError naming it. Literal remote URLs are not
    touched here (see `check_remote_shards`).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    urls: set[str] = set()
    for pattern in patterns:
        matched: list[str] = []
        any_found = False
        for item in braceexpand.braceexpand(pattern):
            scheme = _scheme(item)
            if scheme == "pipe":
                matched.append(item)
                any_found = True
            elif scheme in ("", "file"):
                paths, found = _expand_local(_file_url_path(item))
                prefix = "file://" if scheme == "file" else ""
                matched += [prefix + p for p in paths]
                any_found |= found
            elif _GLOB_MAGIC.search(item.split("://", 1)[1]):
                try:
                    import fsspec

                    fs = fsspec.filesystem(scheme)
                    found_paths = sorted(fs.glob(item))
                except Exception as exc:  # missing backend (s3fs, gcsfs), network, ...
                    raise ValueError(f"{pattern}: cannot list {scheme}:// URLs ({exc})") from None
                matched += [p if _scheme(p) else f"{scheme}://{p}" for p in found_paths]
                any_found |= bool(found_paths)
                if not found_paths:
                    store.check_bucket(item, pattern)
            else:
                matched.append(item)  # a remote URL: existence is checked when read
                any_found = True
        if not matched or not any_found:
            raise ValueError(f"{pattern}: matches no shard")
        urls.update(matched)
    return sorted(urls)


def check_remote_shards(patterns: Sequence[str] | str) -> None:
    """ValueError naming the pattern when none of its literal fsspec URLs (`s3://b/{0..9}.tar`)
    exists, and the bucket when that is what is missing.

    `expand_urls` leaves such URLs alone (a missing one is counted when read), so a run
    that can read nothing would only fail once the stream gives up; the trainer calls this
    first. One listing per folder, not one request per shard; http(s) is not listed.
    """
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        by_folder: dict[str, set[str]] = defaultdict(set)
        for item in braceexpand.braceexpand(pattern):
            if _scheme(item) not in ("", "file", "pipe", "http", "https") and not _GLOB_MAGIC.search(
                item.split("://", 1)[1]
            ):
                folder, name = item.rsplit("/", 1)
                by_folder[folder].add(name)
        if not by_folder:
            continue
        found = False
        for folder, names in by_folder.items():
            fs, path = store.filesystem(folder)
            try:
                listed = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
            except FileNotFoundError:
                continue
            except PermissionError:
                found = True  # may read but not list: existence is checked when read
                break
            except Exception as exc:  # noqa: BLE001 - endpoint down, bad credentials, ...
                raise ValueError(f"{pattern}: cannot list {folder} ({type(exc).__name__}: {exc})") from None
            if names & listed:
                found = True
                break
        if not found:
            store.check_bucket(next(iter(by_folder)), pattern)
            raise ValueError(f"{pattern}: matches no shard")


def _check_readable(urls: Sequence[str]) -> None:
    """Fail fast (ValueError) on URL schemes nothing here can open."""
    for scheme in sorted({_scheme(u) for u in urls} - {"", "file", "pipe", "http", "https"}):
        try:
            import fsspec

            fsspec.get_filesystem_class(scheme)
        except Exception as exc:
            example = next(u for u in urls if _scheme(u) == scheme)
            raise ValueError(f"{example}: cannot read {scheme}:// URLs ({exc})") from None


def _open_url(url: str):
    scheme = _scheme(url)
    if scheme == "":
        return open(url, "rb")
    if scheme == "file":
        return open(_file_url_path(url), "rb")
    if scheme in ("pipe", "http", "https"):
        # curl for http(s), a subprocess for pipe:. (`webdataset.gopen` the attribute is the
        # function, which shadows the module of the same name.)
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    return _ReopeningReader(url)


class ShardReadError(OSError):
    """A remote shard that kept failing to read (READ_RETRIES reopenings)."""


class _ReopeningReader:
    """A remote (fsspec) shard read front to back that survives dropped connections.

    A failed read closes the file, waits (READ_BACKOFF_S, doubling), reopens the URL and
    seeks back to the byte it had reached, READ_RETRIES times per shard; then it raises
    ShardReadError. So a drop costs either nothing or a counted, reported shard error:
    never the silent loss of the rest of a shard (it used to end the shard as if the tar
    were truncated) and never a hang.
    """

    def __init__(self, url: str):
        self.url = url
        self.pos = 0
        self.reopened = 0
        self._f = self._open()

    def _open(self):
        import fsspec

        return fsspec.open(self.url, "rb").open()

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self._f.read(n)
            except Exception as exc:  # noqa: BLE001 - whatever the backend raises once its own retries are spent
                self._reopen(exc)
                continue
            self.pos += len(data)
            return data

    def _reopen(self, exc: Exception) -> None:
        if self.reopened >= READ_RETRIES:
            raise ShardReadError(
                f"{self.url}: read failed at byte {self.pos} after {self.reopened} reopenings "
                f"({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]})"
            ) from exc
        time.sleep(READ_BACKOFF_S * 2**self.reopened)
        self.reopened += 1
        with contextlib.suppress(Exception):
            self._f.close()
        try:
            self._f = self._open()
            self._f.seek(self.pos)
        except Exception:  # noqa: BLE001 - still down: the next read fails on the closed file and retries
            pass

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()


_reported_read_errors: set[str] = set()


def _report_read_error(url: str, message: str) -> None:
    """One stderr line per shard and process: a lost connection is not a silent loss, and a
    shard drawn again and again (with replacement) does not flood the log."""
    if url not in _reported_read_errors:
        _reported_read_errors.add(url)
        print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- held-out split


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


# --------------------------------------------------------------------------- transforms


_MEAN_255 = np.asarray(OPENAI_DATASET_MEAN, dtype=np.float32) * 255
_INV_STD_255 = 1.0 / (np.asarray(OPENAI_DATASET_STD, dtype=np.float32) * 255)


def _square_to_tensor(img: Image.Image, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop `box`, resize to size x size (bicubic), normalise: float32 [3, size, size].

    Same values as torchvision's to_tensor + normalize, in numpy: per-image torch ops pay
    intra-op threading overhead (8x slower with 2 threads on a loaded 2-core machine when
    the stream runs in the main process)."""
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    arr = (np.asarray(out, dtype=np.float32) - _MEAN_255) * _INV_STD_255
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


class TrainTransform:
    """Resize the shorter side to `image_size`, take a random square crop of that size.

    CLIP's only augmentation: no flip, no colour jitter, no scale jitter. Implemented as the
    equivalent crop-then-resize (a random square of the shorter side's length in the
    original image, resized once to `image_size`), which never materialises the resized
    full image (a 1x5000 banner would otherwise become 224x1,120,000 pixels). The crop
    position comes from `rng` (a `random.Random`; default: the `random` module).
    """

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        crop_rng = rng or random
        img = to_rgb(img)
        w, h = img.size
        s = min(w, h)
        left, top = crop_rng.randint(0, w - s), crop_rng.randint(0, h - s)
        return _square_to_tensor(img, (left, top, left + s, top + s), self.image_size)

    def __repr__(self) -> str:
        return f"TrainTransform(image_size={self.image_size}, random square crop, bicubic)"


class ValTransform:
    """Resize the shorter side to `image_size`, center crop (deterministic)."""

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img)
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return _square_to_tensor(img, (left, top, left + s, top + s), self.image_size)

    def __repr__(self) -> str:
        return f"ValTransform(image_size={self.image_size}, center crop, bicubic)"


def train_transform(image_size: int) -> TrainTransform:
    """PIL image -> normalised float32 [3, S, S], random square crop (see TrainTransform)."""
    return TrainTransform(image_size)


def val_transform(image_size: int) -> ValTransform:
    """PIL image -> normalised float32 [3, S, S], center crop."""
    return ValTransform(image_size)


# --------------------------------------------------------------------------- reading shards


class _TarInfo(tarfile.TarInfo):
    """Records whether the archive ended with its end-of-archive (all-zero) block.

    Python's streaming tarfile ends iteration silently on an empty, short or garbled
    header after the first member, which is how a truncated shard looks.
    """

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            tf._wit_clean_end = True
            raise


class _TarFile(tarfile.TarFile):
    """A TarFile whose attributes that `_iter_shard_indexed` uses are typed."""

    members: list[tarfile.TarInfo]  # set by TarFile.__init__; typeshed leaves it out
    _wit_clean_end: bool  # whether the end-of-archive block was read (see `_TarInfo`)


class _SafeClose:
    """Closing a pipe (curl, `pipe:`) can raise on the child's exit status, also when the
    consumer stops early; a read error has already been counted by then."""

    def __init__(self, stream):
        self.stream = stream

    def close(self):
        try:
            self.stream.close()
        except Exception:
            pass


def iter_shard(url: str, counts: Counter) -> Iterator[dict]:
    """Yield raw samples {"__key__", "__url__", ext: bytes} of one shard; never raises.

    Counts `shard_unreadable` (cannot open / not a tar), `shard_truncated` (ends early or
    corrupt after some members; the sample being read then counts as `partial_sample`),
    `shard_read_error` (a remote shard whose reads kept failing; reported on stderr).
    """
    for _, raw in _iter_shard_indexed(url, counts):
        yield raw


def _iter_shard_indexed(
    url: str, counts: Counter, start: int = 0, wanted: frozenset | set = frozenset()
) -> Generator[tuple[int, dict], None, None]:
    """`(index, raw sample)` of one shard from raw sample `start` on, plus the earlier ones
    whose index is in `wanted`; never raises (see `iter_shard`).

    The others before `start` are passed over without reading their bytes. This is how a
    resumed stream finds its place again: a tar is read front to back, so going back to
    the middle of a shard costs reading its headers (and the `wanted` samples) up to there.
    Reopening a shard at `start > 0` does not count it as opened again (`shards`).
    """
    if start == 0:
        counts["shards"] += 1
    try:
        stream = _open_url(url)
    except Exception:
        counts["shard_unreadable"] += 1
        return
    current: dict | None = None
    index = 0  # of the sample being assembled
    yielded = 0
    cut_at_header = False
    try:
        with contextlib.closing(_SafeClose(stream)):
            tf = _TarFile.open(fileobj=stream, mode="r|*", tarinfo=_TarInfo)
            tf._wit_clean_end = False
            for member in tf:
                if not member.isreg():
                    continue
                m = _KEY_EXT.match(member.name)
                base = member.name.rsplit("/", 1)[-1]
                if m is None or base.startswith("__"):
                    continue
                key, ext = m.group(1), m.group(2).lower()
                if current is not None and key != current["__key__"]:
                    done, current = current, None
                    index += 1
                    if index - 1 >= start or index - 1 in wanted:
                        yield index - 1, done  # complete before reading on: a cut below loses only `key`
                        yielded += 1
                if current is None:
                    current = {"__key__": key, "__url__": url}
                if index >= start or index in wanted:
                    data = tf.extractfile(member)
                    assert data is not None  # a regular file's (isreg above)
                    current[ext] = data.read()
                tf.members = []  # streaming: do not keep every header in memory
            # No end-of-archive block: cut (or garbled) at a header. The members read so far
            # are whole; the sample in hand goes on to the usual member checks.
            cut_at_header = not tf._wit_clean_end
    except ShardReadError as exc:  # the connection kept dropping
        counts["shard_read_error"] += 1
        if current is not None:
            counts["partial_sample"] += 1
        _report_read_error(url, f"{exc}; skipping the rest of the shard ({yielded} samples read)")
        return
    except Exception:  # cannot open as tar, or cut inside a member's data
        if index or current is not None:
            counts["shard_truncated"] += 1
        else:
            counts["shard_unreadable"] += 1
        if current is not None:
            counts["partial_sample"] += 1
        return
    if cut_at_header:
        counts["shard_truncated" if (index or current is not None) else "shard_unreadable"] += 1
    if current is not None and (index >= start or index in wanted):
        yield index, current


def _check_sample(raw: dict, counts: Counter) -> dict | None:
    """Members present and text/json decodable -> {"uid", "text", "image": bytes, ...}."""
    image_ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if image_ext is None:
        counts["missing_image"] += 1
        return None
    if "txt" not in raw:
        counts["missing_text"] += 1
        return None
    uid = raw["__key__"].rsplit("/", 1)[-1]  # without a json, the key stands in for the uid
    if "json" in raw:
        try:
            meta = json.loads(raw["json"])
            if isinstance(meta, dict) and meta.get("uid") not in (None, ""):
                uid = str(meta["uid"])
        except Exception:
            counts["bad_json"] += 1
            return None
    return {"uid": uid, "txt": raw["txt"], "image": raw[image_ext], "__url__": raw["__url__"]}


def _decode_text(sample: dict, counts: Counter) -> str | None:
    try:
        text = sample["txt"].decode("utf-8").strip()
    except Exception:
        counts["bad_text"] += 1
        return None
    if not text:
        counts["missing_text"] += 1
        return None
    return text


def decode_image(data: bytes, counts: Counter, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image | None:
    """The decoded image, or None counted as `bad_image` or `image_too_large`.

    The size is checked from the header, before anything is decoded: a PNG of a few hundred
    kB can declare 12000 x 12000 pixels, 432 MB once decoded (Pillow only warns between
    its 89.5M and 179M pixel thresholds). `max_pixels` replaces Pillow's own thresholds
    here (None: no limit).
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # no warning and no error of Pillow's: the check below decides
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        counts["bad_image"] += 1
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        w, h = img.size
        if max_pixels and w * h > max_pixels:
            counts["image_too_large"] += 1
            return None
        img.load()  # force the decode: truncated or garbage bytes fail here, not later
        if min(img.size) < 1:
            raise ValueError("empty image")
        return img
    except Exception:
        counts["bad_image"] += 1
        return None


def _skip_info(delta: Counter) -> dict:
    reasons = {r: delta[r] for r in SAMPLE_REASONS + SHARD_REASONS if delta[r]}
    return {
        "skipped": sum(delta[r] for r in SAMPLE_REASONS),
        "shard_errors": sum(delta[r] for r in SHARD_REASONS),
        "held_out": delta["held_out"],
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

STREAM_FORMAT = 2  # layout of `TrainLoader.state_dict()`; checkpoints without one are reseeded


class StreamError(RuntimeError):
    """The stream can never produce a batch: every shard unreadable, empty or held out, or
    nothing but undecodable images. A configuration error, not bad input (that is skipped
    and counted); raised where the loader is iterated, also when a DataLoader worker found it."""


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
        batch_size: int,
        image_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        val_fraction: float = 0.0,
        shuffle_buffer: int = 2000,
        start_step: int = 0,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        super().__init__()
        if not urls:
            raise ValueError("no training shards")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        is_held_out("", val_fraction)  # validates the range
        self.urls = list(urls)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.transform = train_transform(image_size)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.val_fraction = float(val_fraction)
        self.shuffle_buffer = max(0, int(shuffle_buffer))
        self.start_step = int(start_step)
        self.max_image_pixels = max_image_pixels
        self.epoch = 0
        self.resume: list[dict | None] | None = None  # per worker, set by TrainLoader
        self.worker_shift = 0  # DataLoader worker w plays stream (w + shift) % workers
        self.parent_pid: int | None = None  # the process that started the DataLoader workers

    def _base(self, worker: int, num_workers: int) -> tuple:
        return ("train", self.seed, self.rank, self.world_size, worker, num_workers, self.start_step, self.epoch)

    def _shard(self, base: tuple, draw: int) -> str:
        """Draw `draw` of a worker: shards with replacement, so no rank ever runs dry."""
        return self.urls[_seed(*base, "shard", draw) % len(self.urls)]

    def _accept(self, raw: dict, counts: Counter, ref: tuple[int, int]) -> dict | None:
        """A raw sample -> a checked, not held-out sample with its text and `ref` (draw, raw
        index), or None (counted)."""
        sample = _check_sample(raw, counts)
        if sample is None:
            return None
        if is_held_out(sample["uid"], self.val_fraction):
            counts["held_out"] += 1
            return None
        text = _decode_text(sample, counts)
        if text is None:
            return None
        sample["text"] = text
        sample["ref"] = ref
        return sample

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
            with contextlib.closing(_iter_shard_indexed(self._shard(base, d), Counter(), last + 1, wanted)) as raws:
                for j, raw in raws:
                    if j > last:
                        break
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
            with contextlib.closing(_iter_shard_indexed(url, counts, pos.raw, wanted)) as raws:
                for j, raw in raws:
                    if j < pos.raw:  # a sample of the restored shuffle buffer
                        buf[slots[(draw, j)]] = self._accept(raw, Counter(), ref=(draw, j))
                        continue
                    pos.raw = j + 1
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
                        f"({skipped or 'no samples'}; val_fraction {self.val_fraction})"
                    )
            pos.draw, pos.raw = draw + 1, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict] | tuple[None, None, dict]]:
        """Batches; a StreamError comes as `(None, None, {"error", "worker"})` (see the except below)."""
        worker, num_workers = _worker()
        worker = (worker + self.worker_shift) % num_workers
        base = self._base(worker, num_workers)
        state = self.resume[worker] if self.resume is not None else None
        pos = _Position(state)
        refs = [(int(d), int(j)) for d, j in state["buffer"].tolist()] if state else []
        buf, slots = self._restore(base, refs, pos.draw) if refs else ([], {})
        counts: Counter = Counter()
        reported: Counter = Counter()
        inputs = self._inputs(base, pos, counts, state is not None, buf, slots)
        placeholders = bool(refs)
        images: list[torch.Tensor] = []
        texts: list[str] = []
        uids: list[str] = []
        try:
            while True:
                if self.shuffle_buffer <= 1:
                    sample = next(inputs)
                else:  # a buffer of raw (undecoded) samples: ~tens of kB each, not decoded tensors
                    while len(buf) <= self.shuffle_buffer:
                        new = next(inputs)  # the first one also completes a restored buffer
                        if placeholders:
                            placeholders = False
                            kept = [s for s in buf if s is not None]
                            if len(kept) < len(buf):
                                print(
                                    f"warning: rank {self.rank} worker {worker}: {len(buf) - len(kept)} samples of "
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
                img = decode_image(sample["image"], counts, self.max_image_pixels)
                tensor = None
                if img is not None:
                    try:
                        tensor = self.transform(img, random.Random(_seed(*base, "crop", k)))
                    except Exception:  # e.g. a mode PIL cannot convert to RGB
                        counts["bad_image"] += 1
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
                if len(images) == self.batch_size:
                    delta = counts - reported
                    reported = counts.copy()
                    info = _skip_info(delta)
                    info.update(worker=worker, samples=self.batch_size, uids=uids, stream=pos.state(buf))
                    yield _stack(images), _tokenize(self.tokenizer, texts), info
                    images, texts, uids = [], [], []
        except StreamError as exc:  # to the loader as a batch: a DataLoader worker's exception would be a traceback
            yield None, None, {"error": str(exc), "worker": worker}


class TrainLoader:
    """Iterable over `(images [B,3,S,S] float32, tokens [B,L] long, info)`.

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

    def __init__(
        self,
        dataset: TrainStream,
        workers: int = 0,
        num_batches: int | None = None,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ):
        self.dataset = dataset
        self.workers = max(0, int(workers))
        self.num_batches = num_batches
        self.pin_memory = pin_memory
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
        d = self.dataset
        return {
            "format": STREAM_FORMAT,
            "seed": d.seed,
            "rank": d.rank,
            "world_size": d.world_size,
            "workers": self.workers,
            "urls": urls_fingerprint(d.urls),
            "num_urls": len(d.urls),
            "batch_size": d.batch_size,
            "val_fraction": d.val_fraction,
            "shuffle_buffer": d.shuffle_buffer,
            "start_step": d.start_step,
            "step": d.start_step + self.batches,
            "batches": self.batches,
            "epoch": d.epoch,
            "epoch_batches": self._epoch_batches,
            "streams": [dict(s) if s is not None else None for s in self.streams],
            "totals": dict(self.totals),
        }

    def mismatch(self, state: Any) -> str | None:
        """Why `state` cannot be continued by this loader (None: it can)."""
        if not isinstance(state, dict) or state.get("format") != STREAM_FORMAT:
            return "the checkpoint holds no stream position (written before step-exact resume)"
        mine = self.state_dict()
        if state.get("urls") != mine["urls"]:
            return (
                f"the shard list changed ({state.get('num_urls')} shards then, {mine['num_urls']} now, or other ones)"
            )
        for key, what in (("world_size", "ranks"), ("workers", "--workers"), ("seed", "--seed"), ("rank", "rank")):
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
        generator.manual_seed(_seed("loader", d.seed, d.rank, d.epoch) % 2**63)
        loader = DataLoader(
            d,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
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
                for k in ("skipped", "shard_errors", "held_out", "shards", "samples"):
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
    batch_size: int,
    image_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 0,
    val_fraction: float = 0.0,
    shuffle_buffer: int = 2000,
    start_step: int = 0,
    num_batches: int | None = None,
    pin_memory: bool = False,
    resume: dict | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> TrainLoader:
    """The training stream for one rank: infinite (or `num_batches`) batches of exactly
    `batch_size`, deterministic in (seed, rank, world_size, workers, start_step).

    `urls`: shard patterns or URLs (see `expand_urls`). `resume`: a `TrainLoader.state_dict()`
    from a checkpoint: the stream continues exactly there. When there is none, or it does
    not fit (other shards, ranks, workers or seed; the reason is in `resume_note`), the
    stream is reseeded from `start_step` instead (see module doc).
    """
    urls = expand_urls(urls)
    _check_readable(urls)
    stream = TrainStream(
        urls,
        tokenizer,
        batch_size,
        image_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        val_fraction=val_fraction,
        shuffle_buffer=shuffle_buffer,
        start_step=start_step,
        max_image_pixels=max_image_pixels,
    )
    loader = TrainLoader(stream, workers=workers, num_batches=num_batches, pin_memory=pin_memory)
    if resume is not None:
        loader.resume_note = loader.mismatch(resume)
        if loader.resume_note is None:
            loader.load_state_dict(resume)
    return loader


# --------------------------------------------------------------------------- validation


class ValSet(IterableDataset):
    """The held-out samples, once, in shard order (shards sorted; worker w of n reads shards
    w, w+n, ...). Yields `(images, tokens, uids, skip_info)`; the last batch may be short.

    Also usable with `val_fraction=1.0` to read every sample of a shard list once."""

    def __init__(
        self,
        urls: Sequence[str],
        tokenizer: Tokenizer,
        batch_size: int,
        image_size: int,
        val_fraction: float,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        super().__init__()
        is_held_out("", val_fraction)
        self.max_image_pixels = max_image_pixels
        self.urls = sorted(urls)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.transform = val_transform(image_size)
        self.val_fraction = float(val_fraction)

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, list[str], dict]]:
        worker, num_workers = _worker()
        counts: Counter = Counter()
        reported: Counter = Counter()
        images: list[torch.Tensor] = []
        texts: list[str] = []
        uids: list[str] = []

        def flush():
            nonlocal reported
            delta = counts - reported
            reported = counts.copy()
            info = {**_skip_info(delta), "not_held_out": delta["not_held_out"]}
            if not images:  # only counts, of a worker that found nothing to yield
                return None, None, [], info
            batch = (_stack(images), _tokenize(self.tokenizer, texts), list(uids), info)
            images.clear(), texts.clear(), uids.clear()
            return batch

        if self.val_fraction <= 0:
            return
        for url in self.urls[worker::num_workers]:
            for raw in iter_shard(url, counts):
                sample = _check_sample(raw, counts)
                if sample is None:
                    continue
                if not is_held_out(sample["uid"], self.val_fraction):
                    counts["not_held_out"] += 1
                    continue
                text = _decode_text(sample, counts)
                if text is None:
                    continue
                img = decode_image(sample["image"], counts, self.max_image_pixels)
                if img is None:
                    continue
                try:
                    tensor = self.transform(img)
                except Exception:
                    counts["bad_image"] += 1
                    continue
                images.append(tensor)
                texts.append(text)
                uids.append(sample["uid"])
                if len(images) == self.batch_size:
                    yield flush()
        if images or +(counts - reported):
            yield flush()


class ValLoader:
    """Finite iterable of `(images, tokens, uids)`; skip counts accumulate in `totals`
    (complete once the iteration finished)."""

    def __init__(self, dataset: ValSet, workers: int = 0):
        self.dataset = dataset
        self.workers = max(0, int(workers))
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


def make_val_loader(
    urls: Sequence[str] | str,
    tokenizer: Tokenizer,
    batch_size: int,
    image_size: int,
    val_fraction: float,
    workers: int = 0,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> ValLoader:
    """The held-out part (`is_held_out(uid, val_fraction)`), once, deterministic order,
    center crops: `(images [b,3,S,S], tokens [b,L], uids)` with b <= batch_size."""
    urls = expand_urls(urls)
    _check_readable(urls)
    return ValLoader(ValSet(urls, tokenizer, batch_size, image_size, val_fraction, max_image_pixels), workers)
