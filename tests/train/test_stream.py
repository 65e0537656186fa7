"""train/shards.py, transforms.py and stream.py: shard URLs, the held-out split, the
transforms, the train stream and the val set, on synthetic shards (tests/support/shards.py)."""

from __future__ import annotations

import io
import os
import random
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from pipeline.errors import InputError
from tests.support.httpserver import bomb_png
from tests.support.shards import TOK, jpeg_bytes, red_of, sample, write_shards, write_tar
from train.config import StreamConfig
from train.shards import expand_urls
from train.stream import StreamError, is_held_out, make_train_loader, make_val_loader
from train.transforms import normalize, stack, train_transform, val_transform

S = 32  # model image size in these tests
N_SHARDS, PER_SHARD = 4, 20
MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), N_SHARDS, PER_SHARD)


ALL_UIDS = [f"uid{s * 100 + i:05d}" for s in range(N_SHARDS) for i in range(PER_SHARD)]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """mixed.tar: 6 good + 4 bad samples; truncated.tar: 6 good, then cut inside sample 6's
    jpg; cutheader.tar / garbled.tar: 6 good, then cut at / garbage in sample 6's first
    header; notatar.tar: random bytes; missing.tar: absent."""
    root = tmp_path_factory.mktemp("bad")
    good = jpeg_bytes(1000)
    write_tar(
        root / "mixed.tar",
        [
            sample(1000),
            sample(1001),
            sample(1002),
            sample(1003, jpg=b"\xff\xd8\xff\xe0 this is not a jpeg" + os.urandom(200)),  # bad_image
            sample(1004),
            sample(1005, txt=None),  # missing_text
            sample(1006),
            sample(1007, jpg=good[: len(good) // 2]),  # bad_image
            sample(1008, txt=b"photo \xff\xfe 1008"),  # bad_text
            sample(1009),
        ],
    )
    full = write_tar(root / "full.tar", [sample(2000 + i) for i in range(10)])
    with tarfile.open(full) as tf:
        member = tf.getmember(f"{2006:09d}.jpg")
    data = full.read_bytes()
    (root / "truncated.tar").write_bytes(data[: member.offset_data + member.size // 2])
    # cut exactly before a header, or a garbled header: Python's streaming tarfile just
    # stops there without an error, so the reader has to notice the missing end block
    (root / "cutheader.tar").write_bytes(data[: member.offset])
    garbled = bytearray(data)
    garbled[member.offset : member.offset + 512] = random.Random(1).randbytes(512)
    (root / "garbled.tar").write_bytes(bytes(garbled))
    full.unlink()
    (root / "notatar.tar").write_bytes(random.Random(0).randbytes(5000))
    return root


MIXED_GOOD = [f"uid{i:05d}" for i in (1000, 1001, 1002, 1004, 1006, 1009)]
TRUNC_GOOD = [f"uid{2000 + i:05d}" for i in range(6)]


def take(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def config(**kw) -> StreamConfig:
    """The stream settings of these tests: small batches, no workers, nothing held out."""
    return StreamConfig(
        **{"batch_size": 8, "image_size": S, "workers": 0, "val_fraction": 0.0, "shuffle_buffer": 16, **kw}
    )


def loader(shards, urls=None, tokenizer=TOK, start_step=0, num_batches=None, resume=None, **kw):
    urls = urls or [str(shards / "{00000..00003}.tar")]
    return make_train_loader(
        urls, tokenizer, config(**kw), start_step=start_step, num_batches=num_batches, resume=resume
    )


def val_loader(urls, batch_size, val_fraction, **kw):
    return make_val_loader(urls, TOK, config(batch_size=batch_size, val_fraction=val_fraction, **kw))


# --------------------------------------------------------------------------- URLs


def test_expand_urls_braces_globs_file_urls_and_errors(shards, bad):
    names = [str(shards / f"{i:05d}.tar") for i in range(N_SHARDS)]
    assert expand_urls([str(shards / "{00000..00003}.tar")]) == names
    assert expand_urls([str(shards / "*.tar")]) == names
    # overlapping patterns are deduplicated, the result sorted
    assert expand_urls([str(shards / "0000[23].tar"), str(shards / "{00000..00002}.tar")]) == names[:4]
    assert expand_urls(str(shards)) == names  # a folder means its *.tar
    assert expand_urls(["file://" + str(shards / "0000{1,2}.tar")]) == ["file://" + n for n in names[1:3]]
    assert expand_urls(["file://" + str(shards / "*.tar")]) == ["file://" + n for n in names]
    # remote URLs and pipes are kept as they are (never touched at expansion time)
    assert expand_urls(["s3://bucket/shards/{00000..00001}.tar"]) == [
        "s3://bucket/shards/00000.tar",
        "s3://bucket/shards/00001.tar",
    ]
    assert expand_urls(["pipe:cat x.tar"]) == ["pipe:cat x.tar"]
    # a gap in a brace range is kept (counted when read); a pattern matching nothing is an error
    assert expand_urls([str(bad / "{mixed,missing}.tar")]) == [str(bad / "missing.tar"), str(bad / "mixed.tar")]
    for pattern in (
        str(shards / "*.parquet"),
        str(shards / "nothing.tar"),
        str(shards / "{7..9}.tar"),
        "file://" + str(shards / "x*.tar"),
    ):
        with pytest.raises(InputError, match="matches no shard") as err:
            expand_urls(["s3://bucket/ok.tar", pattern])
        assert pattern in str(err.value)


def test_unreadable_scheme_fails_fast(shards):
    with pytest.raises(InputError, match="nosuchproto"):
        make_train_loader(["nosuchproto://bucket/x.tar"], TOK, config(batch_size=4))


# --------------------------------------------------------------------------- split and transforms


def test_held_out_is_a_stable_hash_of_the_uid():
    uids = [f"u{i}" for i in range(4000)]
    held = [u for u in uids if is_held_out(u, 0.1)]
    assert 300 < len(held) < 500
    assert held == [u for u in uids if is_held_out(u, 0.1)]
    # nested: a larger fraction holds out a superset; 0 and 1 are the extremes
    assert set(held) <= {u for u in uids if is_held_out(u, 0.3)}
    assert not any(is_held_out(u, 0.0) for u in uids)
    assert all(is_held_out(u, 1.0) for u in uids)
    # fixed values: changing the hash would silently move samples between train and val
    assert [is_held_out(u, 0.5) for u in "abcdefgh"] == [False, True, True, False, True, True, False, True]
    assert [u for u in (f"{i:016x}" for i in range(40)) if is_held_out(u, 0.1)] == [
        "0000000000000003",
        "0000000000000006",
    ]
    with pytest.raises(ValueError):
        is_held_out("a", 1.5)


def test_transforms_crop_square_and_composite_on_white():
    white = Image.new("RGB", (40, 64), (255, 255, 255))
    out = val_transform(S)(white)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8 and bool((out == 255).all())
    torch.testing.assert_close(normalize(stack([out]))[0], ((1 - MEAN) / STD).expand(3, S, S))
    # transparency is composited on white, palette and grey images become RGB
    clear = Image.new("RGBA", (50, 30), (0, 0, 0, 0))
    assert np.array_equal(train_transform(S)(clear), out)
    grey = Image.new("L", (30, 30), 0)
    torch.testing.assert_close(normalize(stack([val_transform(S)(grey)]))[0], ((0 - MEAN) / STD).expand(3, S, S))

    # a horizontal ramp 4x wider than tall: the crop is random along x, center for val
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (32, 1)))
    crops = [train_transform(S)(ramp, random.Random(seed)) for seed in range(8)]
    assert all(c.shape == (S, S, 3) for c in crops)
    lefts = {int(c[:, 0, 0].mean()) for c in crops}
    assert len(lefts) > 3  # different positions
    assert np.array_equal(train_transform(S)(ramp, random.Random(3)), crops[3])
    center = val_transform(S)(ramp)
    assert np.array_equal(center, val_transform(S)(ramp))
    # the center crop's mean is the ramp's mean (left and right margins equal)
    assert abs(float(center[..., 0].mean()) / 255 - 0.5) < 0.02
    # a batch: the model's axis order, the pixels of each image
    batch = stack(crops)
    assert batch.shape == (8, 3, S, S) and batch.dtype == torch.uint8
    assert all(np.array_equal(batch[i].permute(1, 2, 0).numpy(), c) for i, c in enumerate(crops))


def test_normalize_is_the_per_image_float_pass_bit_for_bit():
    """The loader hands over uint8 and the trainer normalises per batch: the values are the
    float32 ones the loader computed per image before, (x - 255 mean) * 1 / (255 std)."""
    hwc = np.random.default_rng(0).integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    images = stack(list(hwc))  # channels-last memory, as the loader hands it over
    mean = np.asarray(OPENAI_DATASET_MEAN, dtype=np.float32) * 255
    inv_std = 1.0 / (np.asarray(OPENAI_DATASET_STD, dtype=np.float32) * 255)
    per_image = [((img.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1) for img in hwc]
    out = normalize(images)
    assert out.is_contiguous() and torch.equal(out, torch.from_numpy(np.stack(per_image)))


# --------------------------------------------------------------------------- train stream


def test_train_batches_shapes_alignment_and_held_out_never_trained(shards):
    val_fraction = 0.3
    held = {u for u in ALL_UIDS if is_held_out(u, val_fraction)}
    assert 5 < len(held) < 50
    seen = []
    ld = loader(shards, val_fraction=val_fraction, num_batches=25)
    batches = list(ld)
    assert len(batches) == 25 and len(ld) == 25
    for images, tokens, info in batches:
        assert images.shape == (8, 3, S, S) and images.dtype == torch.uint8
        assert tokens.shape == (8, 4) and tokens.dtype == torch.long
        assert info["skipped"] == 0 and info["shard_errors"] == 0
        assert len(info["uids"]) == 8
        for img, tok, uid in zip(images, tokens, info["uids"]):
            sid = int(uid[3:])
            assert int(tok[0]) == sid  # caption belongs to this uid
            red = float(img[0].float().mean())
            assert abs(red - red_of(sid)) < 6, (uid, red)  # and so does the image
        seen += info["uids"]
    assert not held & set(seen)
    assert len(set(seen)) > 0.8 * (len(ALL_UIDS) - len(held))  # the stream covers the shards
    assert sum(i["held_out"] for *_, i in batches) == ld.totals["held_out"] > 0
    # the random crop: the same sample seen twice is not always cropped the same way
    by_uid: dict[str, list[torch.Tensor]] = {}
    for images, _, info in batches:
        for img, uid in zip(images, info["uids"]):
            by_uid.setdefault(uid, []).append(img)
    repeats = [v for v in by_uid.values() if len(v) > 1]
    assert repeats
    assert any(not torch.equal(v[0], w) for v in repeats for w in v[1:])


def test_val_loader_yields_exactly_the_held_out_part_in_order(shards):
    val_fraction = 0.3
    expected = [u for u in ALL_UIDS if is_held_out(u, val_fraction)]
    vl = val_loader([str(shards / "*.tar")], 4, val_fraction)
    first = list(vl)
    uids = [u for _, _, us in first for u in us]
    assert uids == expected
    assert all(len(us) == 4 for *_, us in first[:-1]) and 1 <= len(first[-1][2]) <= 4
    for images, tokens, us in first:
        assert images.shape == (len(us), 3, S, S) and tokens.shape == (len(us), 4)
        assert [int(t[0]) for t in tokens] == [int(u[3:]) for u in us]
    assert vl.totals["not_held_out"] == len(ALL_UIDS) - len(expected)
    assert vl.totals["skipped"] == 0
    # deterministic: a second pass gives identical tensors
    second = list(vl)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    # two workers read the same held-out set
    vl2 = val_loader([str(shards / "*.tar")], 4, val_fraction, workers=2)
    assert sorted(u for *_, us in vl2 for u in us) == sorted(expected)


def _uids(batches):
    return [info["uids"] for *_, info in batches]


def _same(a, b):
    return all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2]["uids"] == y[2]["uids"] for x, y in zip(a, b)
    ) and len(a) == len(b)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_deterministic_and_depends_on_rank_seed_and_start_step(shards, workers):
    def run(**kw):
        return list(loader(shards, workers=workers, num_batches=6, **kw))

    base = run()
    assert _same(base, run())
    assert _uids(run(rank=1, world_size=2)) != _uids(run(rank=0, world_size=2))
    assert _uids(run(seed=1)) != _uids(base)
    resumed = run(start_step=100)
    assert _uids(resumed) != _uids(base)
    assert _same(resumed, run(start_step=100))
    if workers:  # batches alternate between the two workers
        assert [i["worker"] for *_, i in base] == [0, 1, 0, 1, 0, 1]


def test_real_open_clip_tokenizer(shards):
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    images, tokens, info = next(iter(loader(shards, tokenizer=tok, batch_size=4)))
    assert tokens.shape == (4, 77) and tokens.dtype == torch.long
    torch.testing.assert_close(tokens, tok([f"photo {int(u[3:])}" for u in info["uids"]]))


# --------------------------------------------------------------------------- bad input


def test_bad_samples_and_shards_are_skipped_and_counted_exactly(bad):
    """Read once (val set with val_fraction=1 reads every sample): the buckets add up."""
    vl = val_loader([str(bad / "{mixed,truncated,cutheader,garbled,notatar,missing}.tar")], 5, 1.0)
    uids = [u for *_, us in vl for u in us]
    assert uids == TRUNC_GOOD + TRUNC_GOOD + MIXED_GOOD + TRUNC_GOOD  # sorted shard names
    t = vl.totals
    assert (t["bad_image"], t["missing_text"], t["bad_text"], t["partial_sample"]) == (2, 1, 1, 1)
    assert t["skipped"] == 5
    assert (t["shard_truncated"], t["shard_unreadable"], t["shard_errors"]) == (3, 2, 5)
    assert t["shards"] == 6


@pytest.mark.parametrize("workers", [0, 2])
def test_train_stream_counts_skips_per_batch_across_workers(bad, workers):
    # one pass over mixed.tar = 6 good + 4 skipped = one batch of 6, in every worker
    ld = loader(bad, urls=[str(bad / "mixed.tar")], batch_size=6, shuffle_buffer=0, workers=workers, num_batches=6)
    batches = list(ld)
    assert len(batches) == 6
    for _, _, info in batches:
        assert info["skipped"] == 4 and info["shards"] == 1
        assert info["reasons"] == {"bad_image": 2, "missing_text": 1, "bad_text": 1}
        assert sorted(info["uids"]) == MIXED_GOOD
    assert ld.totals["skipped"] == 24 and ld.totals["bad_image"] == 12

    # truncated.tar: the cut is found after the batch of its 6 good samples was made, so
    # each pass's partial sample and shard error travel with the next batch of that worker
    ld = loader(bad, urls=[str(bad / "truncated.tar")], batch_size=6, shuffle_buffer=0, workers=workers, num_batches=6)
    infos = [i for *_, i in ld]
    per_worker = max(1, workers)
    assert [i["skipped"] for i in infos] == [0] * per_worker + [1] * (6 - per_worker)
    assert [i["shard_errors"] for i in infos] == [0] * per_worker + [1] * (6 - per_worker)


def test_train_stream_keeps_going_over_bad_shards(bad, shards):
    urls = [str(bad / "{mixed,truncated,notatar,missing}.tar"), str(shards / "00000.tar")]
    ld = loader(shards, urls=urls, batch_size=8, shuffle_buffer=8, workers=2, num_batches=20)
    batches = list(ld)
    assert len(batches) == 20 and all(b[0].shape == (8, 3, S, S) for b in batches)
    t = ld.totals
    assert t["skipped"] > 0 and t["shard_unreadable"] > 0 and t["shard_truncated"] > 0
    assert t["skipped"] == sum(i["skipped"] for *_, i in batches)
    assert t["shard_errors"] == t["shard_unreadable"] + t["shard_truncated"]
    # at most 5 skipped samples and 1 shard error per shard opened
    assert t["skipped"] <= 4 * t["shards"] and t["shard_errors"] <= t["shards"]
    seen = {u for *_, i in batches for u in i["uids"]}
    assert seen <= set(MIXED_GOOD + TRUNC_GOOD + ALL_UIDS[:PER_SHARD])


def test_a_stream_without_any_trainable_sample_raises_instead_of_hanging(bad, shards):
    with pytest.raises(RuntimeError, match="no trainable sample"):
        next(iter(loader(bad, urls=[str(bad / "{notatar,missing}.tar")])))
    with pytest.raises(RuntimeError, match="no trainable sample"):  # everything held out
        next(iter(loader(shards, val_fraction=1.0)))


def test_two_ranks_each_give_exactly_n_batches(shards):
    """Ranks of unequal speed and worker counts all produce the N batches asked for."""
    start = time.monotonic()
    for rank, workers in ((0, 2), (1, 0)):
        ld = loader(shards, rank=rank, world_size=2, workers=workers, num_batches=7, batch_size=16, shuffle_buffer=32)
        batches = list(ld)
        assert len(batches) == 7 and all(b[0].shape[0] == 16 for b in batches)
        assert ld.state_dict()["step"] == 7
    assert time.monotonic() - start < 30


def test_reading_through_file_and_pipe_urls(shards):
    urls = ["file://" + str(shards / "00001.tar"), f"pipe:cat {shards / '00002.tar'}"]
    vl = val_loader(urls, 50, 1.0)
    assert sorted(u for *_, us in vl for u in us) == sorted(ALL_UIDS[PER_SHARD : 3 * PER_SHARD])
    assert vl.totals["skipped"] == 0 and vl.totals["shard_errors"] == 0


# --------------------------------------------------------------------------- exact resume


def _through_checkpoint(state: dict) -> dict:
    """As a checkpoint carries it: torch.save, then torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_continues_exactly_from_its_state(shards, bad, workers):
    """Stopped after k batches and continued from its state_dict, a loader yields exactly the
    batches (images, crops, captions, uids, skip counts) the uninterrupted one did, for odd k
    too (then the other worker's turn comes first); the shuffle buffer (24 samples) spans
    shard draws, and mixed.tar's skipped samples are counted once."""
    urls = [str(shards / "{00000..00003}.tar"), str(bad / "mixed.tar")]

    def make(num_batches, **kw):
        return loader(
            shards,
            urls=urls,
            workers=workers,
            shuffle_buffer=24,
            batch_size=6,
            val_fraction=0.2,
            num_batches=num_batches,
            **kw,
        )

    full = list(make(12))
    skips = [(i["skipped"], i["reasons"]) for *_, i in full]
    assert sum(i["skipped"] for *_, i in full) > 0, "the bad samples are in the stream"
    for k in (1, 5, 8):
        first = make(k)
        assert _same(list(first), full[:k])
        state = _through_checkpoint(first.state_dict())
        assert state["step"] == k and len(state["streams"]) == max(1, workers)
        rest = make(12 - k, resume=state, start_step=k)
        assert rest.resume_note is None
        tail = list(rest)
        assert _same(tail, full[k:]), f"continued after {k} batches"
        assert [(i["skipped"], i["reasons"]) for *_, i in tail] == skips[k:]
        assert rest.state_dict()["step"] == 12

    # A state that does not fit (other workers, an older checkpoint without one): the stream
    # is reseeded from start_step, and the loader says why.
    state = _through_checkpoint(make(3).state_dict())
    other = loader(
        shards,
        urls=urls,
        workers=workers + 1,
        shuffle_buffer=24,
        batch_size=6,
        val_fraction=0.2,
        resume=state,
        start_step=3,
        num_batches=2,
    )
    assert "--workers changed" in other.resume_note
    old = make(2, resume={"seed": 0, "start_step": 3}, start_step=3)
    assert "no stream position" in old.resume_note
    assert _same(list(old), list(make(2, start_step=3)))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_that_can_never_yield_raises_a_one_line_stream_error(bad, workers):
    with pytest.raises(StreamError) as err:
        next(iter(loader(bad, urls=[str(bad / "{notatar,missing}.tar")], workers=workers)))
    message = str(err.value)
    assert message.startswith("no trainable sample in any of the 2 training shards")
    assert "shard_unreadable 2" in message and "\n" not in message and "Traceback" not in message


def test_decompression_bombs_are_skipped_unread_and_counted(tmp_path):
    """12000x12000 (144M pixels: Pillow only warns) and 20000x20000 (Pillow refuses) PNGs of
    a few kB are refused from their header, as image_too_large; the limit is adjustable."""
    import warnings

    small, huge = bomb_png(12000), bomb_png(20000)
    assert len(small) < 50_000 and len(huge) < 100_000
    write_tar(
        tmp_path / "bombs.tar",
        [sample(3000), sample(3001, jpg=None, png=small), sample(3002), sample(3003, jpg=None, png=huge), sample(3004)],
    )
    good = ["uid03000", "uid03002", "uid03004"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        start = time.monotonic()
        vl = val_loader([str(tmp_path / "bombs.tar")], 8, 1.0)
        assert [u for *_, us in vl for u in us] == good
        assert time.monotonic() - start < 5, "nothing was decoded"
    assert vl.totals["image_too_large"] == 2 and vl.totals["skipped"] == 2 and vl.totals["bad_image"] == 0

    ld = loader(tmp_path, urls=[str(tmp_path / "bombs.tar")], batch_size=3, shuffle_buffer=0, num_batches=2)
    batches = list(ld)
    assert all(sorted(i["uids"]) == good for *_, i in batches)
    assert batches[0][2]["reasons"] == {"image_too_large": 2} and ld.totals["skipped"] == 4

    # the limit is a parameter: 32x48 JPEGs (1536 pixels) are too large under 1000
    vl = val_loader([str(tmp_path / "bombs.tar")], 8, 1.0, max_image_pixels=1000)
    assert list(vl) == [] and vl.totals["image_too_large"] == 5


def test_workers_default_to_what_a_gpu_needs_on_the_cores_there_are():
    from train.config import GPU_SAMPLES_PER_S, LOADER_PER_CORE, auto_workers

    need = -(-GPU_SAMPLES_PER_S // LOADER_PER_CORE)
    assert need >= 2
    assert auto_workers(64, gpu=True) == need  # a node's share of cores: what B/32 needs
    assert auto_workers(need, gpu=True) == need - 1  # one core stays with the training process
    assert auto_workers(2, gpu=True) == 1 and auto_workers(1, gpu=True) == 1
    assert auto_workers(64, gpu=False) == 1  # on a CPU the step needs the cores


def _read_shard(path: Path) -> tuple[list[dict], dict]:
    from collections import Counter

    from train.shards import iter_shard

    counts: Counter = Counter()
    samples = [{k: v for k, v in raw.items() if k != "__url__"} for raw in iter_shard(str(path), counts)]
    return samples, dict(counts)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_tar_reader_reads_what_tarfile_reads_at_every_cut(fmt, tmp_path):
    """`train.shards._Members` parses headers itself (tarfile's stream mode was a fifth of a
    small sample's loader time). At every byte a shard could be cut at, the samples and
    counts are those of tarfile's reader, which still reads compressed shards: the same
    bytes gzipped. (Where a cut falls inside a member's data, ours says so at once; tarfile
    gives the short data and fails on the next header: the same samples and counts.)"""
    import gzip

    long_name = "long-" + "n" * 120 + ".txt" if fmt != tarfile.USTAR_FORMAT else "plain.txt"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in [
            ("000001.jpg", jpeg_bytes(1)),
            ("000001.txt", b"photo 1"),
            ("d" * 60 + "/" + "e" * 70 + "/000002.jpg", b"x" * 700),  # a ustar prefix, or a long name
            ("d" * 60 + "/" + "e" * 70 + "/000002.txt", b"photo 2"),
            (long_name, b"a name no ustar field holds"),
            ("empty.txt", b""),
            ("000003.jpg", b"y" * 40),
            ("000003.txt", b"photo 3"),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
        for name, kind in (("folder", tarfile.DIRTYPE), ("link.txt", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "000001.txt" if kind == tarfile.SYMTYPE else ""
            tf.addfile(info)
    data = buf.getvalue()
    samples, counts = _read_shard(_write(tmp_path / "whole.tar", data))
    assert [s["__key__"] for s in samples] == [
        "000001",
        "d" * 60 + "/" + "e" * 70 + "/000002",
        long_name[:-4],
        "empty",
        "000003",
    ]
    assert samples[0]["jpg"] == jpeg_bytes(1) and counts == {"shards": 1}
    cuts = set(range(0, len(data) + 1, 61)) | {512 * k + d for k in range(len(data) // 512 + 1) for d in (-1, 0, 1)}
    for cut in sorted(c for c in cuts if 0 <= c <= len(data)):
        ours = _read_shard(_write(tmp_path / "cut.tar", data[:cut]))
        ref = _read_shard(_write(tmp_path / "cut.tar.gz", gzip.compress(data[:cut], mtime=0)))
        assert ours == ref, cut
    garbled = bytearray(data)
    garbled[1024 + 600] ^= 0xFF  # within a later header: its checksum fails, an unclean end, as tarfile
    assert _read_shard(_write(tmp_path / "garbled.tar", bytes(garbled))) == _read_shard(
        _write(tmp_path / "garbled.tar.gz", gzip.compress(bytes(garbled), mtime=0))
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_tar_reader_takes_short_reads_as_a_pipe_gives_them(tmp_path):
    """A pipe or socket may return fewer bytes than asked before the end; the reader asks
    again rather than taking a short read for a cut shard."""
    from train.shards import _Members

    data = write_tar(tmp_path / "s.tar", [sample(1), sample(2)]).read_bytes()

    class Dripping(io.BytesIO):
        def read(self, n=-1):
            return super().read(min(n, 100) if n and n > 0 else n)

    whole = [(name, get()) for name, regular, get in _Members(io.BytesIO(data)) if regular]
    members = _Members(Dripping(data))
    assert [(name, get()) for name, regular, get in members if regular] == whole and members.clean_end
    assert len(whole) == 6
