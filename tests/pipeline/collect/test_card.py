"""The shard folder says what it holds: `sizes.json` (open_clip) and a dataset card (`README.md`,
Hugging Face), written by the download step. Checked on the real sample run of `test_audit`
(`pipeline shards` on openclipart) against the tars themselves, read with tarfile and
webdataset, and against open_clip's own size function; a rerun that redoes one shard over
stale files gives the same bytes again."""

from __future__ import annotations

import fnmatch
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from huggingface_hub import DatasetCard

from pipeline.collect.config import DownloadConfig, ShardParams
from pipeline.collect.shards import run_step
from pipeline.distribute import Engine
from pipeline.sample.openclipart import roots_from_cache
from pipeline.sample.server import serve_directory
from tests.conftest import required_path
from tests.pipeline.audit.test_audit import build_sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> dict:
    return build_sample(tmp_path_factory)


def tar_sizes(folder: Path) -> dict[str, int]:
    """Samples per tar, counted from the members (one KEY.jpg per sample)."""
    sizes = {}
    for tar in sorted(folder.glob("[0-9]*.tar")):
        with tarfile.open(tar) as tf:
            keys = {m.name.rsplit(".", 1)[0] for m in tf.getmembers() if m.isfile()}
            assert keys == {m.name[:-4] for m in tf.getmembers() if m.name.endswith(".jpg")}
        sizes[tar.name] = len(keys)
    return sizes


def front_matter(readme: Path) -> tuple[dict, str]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_sizes_json_counts_the_samples_in_each_tar(sample):
    shards = sample["shards"]
    sizes = json.loads((shards / "sizes.json").read_text())
    assert len(sizes) >= 2 and sizes == tar_sizes(shards)
    streamed = sum(1 for _ in wds.WebDataset(sorted(str(p) for p in shards.glob("[0-9]*.tar")), shardshuffle=False))
    successes = json.loads((shards / "curation" / "download_stats.json").read_text())["successes"]
    assert sum(sizes.values()) == streamed == successes > 0

    from open_clip_train.data import get_dataset_size  # what open_clip_train runs without --train-num-samples

    last = max(sizes)[: -len(".tar")]
    assert get_dataset_size(f"{shards}/{{00000..{last}}}.tar") == (successes, len(sizes))


def test_card_points_hugging_face_at_the_tars(sample):
    shards = sample["shards"]
    meta, body = front_matter(shards / "README.md")
    assert DatasetCard.load(shards / "README.md").data.to_dict() == meta  # huggingface_hub reads the same
    (config,) = meta["configs"]
    assert config["config_name"] == "default"
    (files,) = config["data_files"]
    assert files["split"] == "train"
    top = sorted(p.name for p in shards.iterdir() if p.is_file())
    assert {".tar", ".parquet", ".json", ".md"} <= {Path(n).suffix for n in top}
    assert [n for n in top if fnmatch.fnmatch(n, files["path"])] == sorted(p.name for p in shards.glob("*.tar"))

    dl = json.loads((shards / "curation" / "download_stats.json").read_text())
    images = dl["successes"]
    assert meta["license"] == "cc0-1.0", "every image is an openclipart drawing"
    assert meta["size_categories"] == ["n<1K" if images < 1000 else "1K<n<10K"]
    assert "zero-shot-image-classification" in meta["task_categories"]
    pool = json.loads((shards / "curation" / "pool_stats.json").read_text())
    bal = json.loads((shards / "curation" / "balance_stats.json").read_text())
    assert f"**{images:,} (image, caption) pairs in {dl['shards']:,} webdataset shards**" in body
    for line in (
        f"| in the pool (normalised, de-duplicated) | {pool['kept']:,} |",
        f"| kept by balancing | {bal['kept']:,} |",
        f"t = {bal['per_query']:,} per query",
    ):
        assert line in body
    assert "Openclipart" in body and "load_dataset(" in body and "open_clip_train.main" in body


def test_unknown_sources_are_licensed_other(sample, tmp_path):
    """Two pool sources, one known (the sample's openclipart file) and one web pool."""
    from pipeline.collect.card import write_derived

    out = tmp_path / "shards"
    shutil.copytree(sample["shards"] / "curation", out / "curation")
    for f in sample["shards"].glob("[0-9]*"):
        if f.suffix != ".tar":
            shutil.copy(f, out / f.name)
    first = out / "00000.parquet"
    t = pq.read_table(first)
    t = t.set_column(
        t.schema.get_field_index("source"), "source", pa.array(["s3://crawl/pool-1.parquet"] * t.num_rows, pa.string())
    )
    pq.write_table(t, first)
    write_derived(out / "curation", out, 256, 100)
    meta, body = front_matter(out / "README.md")
    assert meta["license"] == ["cc0-1.0", "other"] and meta["license_name"]
    assert "no license was recorded" in body and "| s3://crawl/pool-1.parquet | other |" in body

    stats = json.loads((out / "curation" / "pool_stats.json").read_text())
    del stats["licenses"]
    (out / "curation" / "pool_stats.json").write_text(json.dumps(stats))
    write_derived(out / "curation", out, 256, 100)
    meta, body = front_matter(out / "README.md")
    assert meta["license"] == "other" and "cc0" not in body


def test_a_rerun_that_redoes_one_shard_rewrites_both_from_every_shard(sample, tmp_path):
    """A shard lost (as if killed while writing it), stale sizes.json and README.md left behind:
    the download step redoes only that shard, and both files come out as before, byte for byte
    (img2dataset's incremental mode would also choke on a stale sizes.json: it reads every
    *.json of the folder as a shard's stats)."""
    shards = tmp_path / "shards"
    shutil.copytree(sample["shards"], shards, ignore=shutil.ignore_patterns("audit", ".lock"))
    sizes, card = (shards / "sizes.json").read_bytes(), (shards / "README.md").read_text()
    for suffix in ("_stats.json", ".tar", ".parquet"):
        (shards / f"00001{suffix}").unlink()
    (shards / "sizes.json").write_text(json.dumps({"00001.tar": 999}))
    (shards / "README.md").write_text("stale\n")
    kept = {p: p.stat().st_mtime_ns for p in shards.glob("[0-9]*_stats.json")}

    port = int((shards / "sample" / "port").read_text())  # the URLs in the selection point there
    png_root, _ = roots_from_cache(required_path("OPENCLIPART_DIR"))
    with serve_directory(png_root, port=port):
        run_step(
            "download",
            ShardParams(
                out=str(shards),
                download=DownloadConfig(samples_per_shard=100, processes=2, threads=8, allow_private_hosts=True),
                engine=Engine(workers=2),
                quiet=True,
            ),
        )
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished shards were downloaded again"
    assert (shards / "00001.tar").exists()
    assert (shards / "sizes.json").read_bytes() == sizes
    assert json.loads(sizes) == tar_sizes(shards)
    new = (shards / "README.md").read_text().replace(str(shards), "OUT")  # the folder, in the examples
    assert new.replace(str(sample["shards"]), "OUT") == card.replace(str(sample["shards"]), "OUT")
