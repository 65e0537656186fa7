"""Shards we did not write (issue 24): img2dataset's own layout, as LAION, DataComp and CC3M
are downloaded (`jpg` + `txt` + `json` with img2dataset's fields and no uid, keys
`SSSSSIIII`, a parquet and a stats file per shard), written here by img2dataset itself
from a loopback HTTP server; and plain `webp`/`png` + `txt` shards without json whose keys
repeat from shard to shard. The loader reads both, a sample's uid is `SHARD/KEY`
(`pipeline.shard_format.sample_uid`), the stream resumes exactly from its state, and the
trainer, its evaluation and `train.overlap` run on them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.conftest import required_path
from tests.support.httpserver import serve_directory
from tests.support.trainer import ENV, ROOT, metrics, run_train
from train.config import StreamConfig
from train.stream import is_held_out, make_train_loader, make_val_loader

pytestmark = pytest.mark.sample

I2D_SAMPLES, I2D_PER_SHARD = 30, 20  # img2dataset: 00000.tar (20) and 00001.tar (10)
PLAIN_SHARDS, PLAIN_PER_SHARD = 2, 8  # plain: keys sample00..sample07 in each shard
PLANTED = ("00001", "sample03")  # the plain sample copied into the evaluation set


class ZeroTokenizer:
    """Captions to fixed token rows (module level: picklable); the loader tests need no vocabulary."""

    def __call__(self, texts):
        return torch.tensor([[len(t), 0, 0, 0] for t in texts], dtype=torch.long)


def _captioned_pngs(openclipart_dir: Path, n: int) -> tuple[Path, list[dict]]:
    from pipeline.sample.openclipart import roots_from_cache, sample_rows

    png_root, svg_root = roots_from_cache(str(openclipart_dir))
    rows = (r for r in sample_rows(png_root, svg_root) if r["text"])
    return Path(png_root), [r for r, _ in zip(rows, range(n))]


def _img2dataset_shards(out: Path, png_root: Path, rows: list[dict]) -> Path:
    """img2dataset.download, as a user runs it on LAION's or DataComp's parquet."""
    import img2dataset

    with serve_directory(png_root) as base:
        urls = out.parent / "i2d-urls.parquet"
        table = pa.table({"url": [f"{base}/{r['path']}" for r in rows], "caption": [r["text"] for r in rows]})
        pq.write_table(table, urls)
        img2dataset.download(
            url_list=str(urls),
            input_format="parquet",
            url_col="url",
            caption_col="caption",
            output_format="webdataset",
            output_folder=str(out),
            image_size=64,
            resize_mode="keep_ratio",
            processes_count=1,
            thread_count=4,
            number_sample_per_shard=I2D_PER_SHARD,
            timeout=10,
            enable_wandb=False,
        )
    return out


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _plain_shards(out: Path, png_root: Path, rows: list[dict]) -> Path:
    """webp + txt (shard 0) and png + txt (shard 1), no json, the same keys in both."""
    out.mkdir(parents=True)
    for s in range(PLAIN_SHARDS):
        with tarfile.open(out / f"{s:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(PLAIN_PER_SHARD):
                r = rows[s * PLAIN_PER_SHARD + i]
                image = Image.open(png_root / r["path"]).convert("RGBA").convert("RGB")
                image.thumbnail((64, 64))
                ext, fmt = ("webp", "WEBP") if s == 0 else ("png", "PNG")
                for name, data in (
                    (f"sample{i:02d}.{ext}", _encoded(image, fmt)),
                    (f"sample{i:02d}.txt", r["text"].encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tf.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    png_root, rows = _captioned_pngs(required_path("OPENCLIPART_DIR"), I2D_SAMPLES + PLAIN_SHARDS * PLAIN_PER_SHARD)
    return {
        "i2d": _img2dataset_shards(root / "i2d", png_root, rows[:I2D_SAMPLES]),
        "plain": _plain_shards(root / "plain", png_root, rows[I2D_SAMPLES:]),
        "root": root,
    }


def _expected_uids(foreign) -> set[str]:
    i2d = set()
    for tar in sorted(foreign["i2d"].glob("*.tar")):
        with tarfile.open(tar) as tf:
            i2d |= {f"{tar.stem}/{m.name.split('.')[0]}" for m in tf.getmembers() if m.name.endswith(".jpg")}
    plain = {f"{s:05d}/sample{i:02d}" for s in range(PLAIN_SHARDS) for i in range(PLAIN_PER_SHARD)}
    return i2d | plain


def _urls(foreign) -> list[str]:
    return [str(foreign["i2d"] / "*.tar"), str(foreign["plain"] / "*.tar")]


def test_img2dataset_wrote_its_own_layout(foreign):
    """What the other tests stand on: img2dataset's layout, not ours (no uid in the json)."""
    tars = sorted(p.name for p in foreign["i2d"].glob("*.tar"))
    assert tars == ["00000.tar", "00001.tar"]
    assert {p.name for p in foreign["i2d"].glob("*_stats.json")} == {"00000_stats.json", "00001_stats.json"}
    with tarfile.open(foreign["i2d"] / "00001.tar") as tf:
        names = tf.getnames()
        meta = json.loads(tf.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert names[0].startswith("00001") and "uid" not in meta and {"url", "caption", "key", "status"} <= meta.keys()
    assert len(_expected_uids(foreign)) >= I2D_SAMPLES - 2 + PLAIN_SHARDS * PLAIN_PER_SHARD  # all but a few downloaded


def _loader(foreign, **kw):
    cfg = StreamConfig(batch_size=5, image_size=32, workers=kw.pop("workers", 0), val_fraction=0.2, shuffle_buffer=12)
    return make_train_loader(_urls(foreign), ZeroTokenizer(), cfg, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_reads_both_layouts_and_resumes_exactly(foreign, workers):
    """Every sample is read under its SHARD/KEY uid (the plain shards' repeated keys stay
    apart), the held-out part is never trained on, and a loader continued from its state
    after k batches yields exactly the uninterrupted one's batches."""
    expected = _expected_uids(foreign)
    held = {u for u in expected if is_held_out(u, 0.2)}
    assert 0 < len(held) < len(expected)
    n = 16  # draws with replacement: enough batches to see most shards more than once
    full = list(_loader(foreign, workers=workers, num_batches=n))
    seen = [u for *_, info in full for u in info["uids"]]
    assert set(seen) <= expected - held and len(set(seen)) > len(expected) // 2
    assert {u.split("/")[0] for u in seen} == {"00000", "00001"} and any(u.endswith("/sample03") for u in seen)
    assert sum(i["skipped"] for *_, i in full) == sum(i["reasons"].get("held_out", 0) for *_, i in full)
    for k in (3, 7):
        first = _loader(foreign, workers=workers, num_batches=k)
        assert [i["uids"] for *_, i in first] == [i["uids"] for *_, i in full[:k]]
        rest = _loader(foreign, workers=workers, num_batches=n - k, start_step=k, resume=first.state_dict())
        assert rest.resume_note is None
        for (ia, ta, a), (ib, tb, b) in zip(rest, full[k:], strict=True):
            assert a == b and torch.equal(ia, ib) and torch.equal(ta, tb)

    val = make_val_loader(_urls(foreign), ZeroTokenizer(), StreamConfig(batch_size=7, image_size=32, val_fraction=0.2))
    assert sorted(u for _, _, uids in val for u in uids) == sorted(held)


def _planted_imagefolder(foreign) -> Path:
    """2 classes x 3 images; one of them the decoded copy of the plain sample PLANTED."""
    folder = foreign["root"] / "imgs"
    if folder.exists():
        return folder
    for name, colour in (("cat", (200, 60, 40)), ("dog", (40, 60, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48, 40), tuple(c + 15 * i for c in colour)).save(folder / name / f"{i}.png")
    shard, key = PLANTED
    with tarfile.open(foreign["plain"] / f"{shard}.tar") as tf:
        data = tf.extractfile(f"{key}.png").read()
    Image.open(io.BytesIO(data)).save(folder / "dog" / "planted.png")
    return folder


def test_train_evaluate_and_overlap_on_foreign_shards(foreign, tmp_path):
    """`python -m train` on both layouts (its evaluation: retrieval on the held-out samples,
    zero-shot on an imagefolder),
    resumed from a checkpoint to the same losses; then `train.overlap` finds the planted copy
    under its shard, key and SHARD/KEY uid."""
    folder = _planted_imagefolder(foreign)
    res = run_train(
        "--train-data",
        *_urls(foreign),
        "--eval-datasets",
        f"imagefolder:{folder}",
        runs=str(tmp_path),
        name="foreign",
        steps=4,
        save_every=2,
        val_fraction=0.2,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "foreign"
    rows = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    report = json.loads((run / "eval" / "step-00000004.json").read_text())
    held = {u for u in _expected_uids(foreign) if is_held_out(u, 0.2)}
    assert report["retrieval"]["val"]["info"]["samples"] == len(held), report  # every held-out sample, read back
    assert report["datasets"][f"imagefolder:{folder}"]["n"] == 7

    # resumed at step 2 in a copy of the run: steps 3 and 4 again, the same losses bit for bit
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / "checkpoints" / "step-00000004.pt").unlink()
    res = run_train(
        "--train-data",
        *_urls(foreign),
        "--no-final-eval",
        "--resume",
        "latest",
        runs=str(tmp_path),
        name="again",
        steps=4,
        save_every=2,
        val_fraction=0.2,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = [r for r in metrics(again) if "loss" in r]
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in rows]

    res = subprocess.run(
        [sys.executable, "-m", "train.overlap", "--checkpoint", str(run), "--datasets", f"imagefolder:{folder}"],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    pairs = pq.read_table(run / "eval" / "overlap_pairs.parquet").to_pylist()
    shard, key = PLANTED
    found = [p for p in pairs if p["key"] == key and p["shard"].endswith(f"plain/{shard}.tar")]
    assert found and found[0]["uid"] == f"{shard}/{key}" and found[0]["kind"] == "exact", pairs
    assert all(p["uid"] for p in pairs)
