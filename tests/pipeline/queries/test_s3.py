"""`pipeline queries` with every location in object storage: the real sample dump, the
WordNet data files and a pageview file uploaded to a real S3 API server on loopback (moto),
the CLI run as a user would with s3:// URLs for the inputs, --out and the spilled work dir,
on two worker processes. The query list on S3 must be byte-identical to a local run's; a run
killed after some chunks resumes from the chunks already on S3; a missing bucket is a
one-line error before any work."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from pipeline.wiki import dump as wd
from tests.conftest import assert_one_line_error, run_cli
from tests.support.s3server import moto_s3

pytestmark = pytest.mark.slow

BUCKET = "bkt"
THRESHOLDS = ["--min-count", "20", "--min-bigram-count", "5", "--min-pmi", "10"]
COMMON = ["--workers", "2", "--chunk-mb", "1", *THRESHOLDS]
OUTPUTS = ("queries.parquet", "queries.txt")
TIMEOUT = 300


@pytest.fixture(scope="module")
def store(wiki_sample_dump, wordnet_dir, tmp_path_factory):
    """The S3 server with the inputs uploaded, and the local reference runs."""
    base = tmp_path_factory.mktemp("queries_local")
    titles = [p.title.replace(" ", "_") for p in wd.iter_pages(str(wiki_sample_dump)) if p.is_article]
    pageviews = base / "pageviews-20240101-000000.gz"  # 20 titles pass, 10 fall below --min-views
    lines = [f"en {t} {100 + i} 0" for i, t in enumerate(titles[:20])] + [f"en {t} 60 0" for t in titles[20:30]]
    pageviews.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    refs = {}
    for name, extra in (("local", []), ("local_pv", ["--pageviews", str(pageviews)])):
        refs[name] = base / name
        res = run_cli(
            "queries",
            "--wiki-dump",
            str(wiki_sample_dump),
            "--wordnet",
            str(wordnet_dir),
            "--out",
            str(refs[name]),
            *extra,
            *COMMON,
            "--quiet",
            timeout=TIMEOUT,
        )
        assert res.returncode == 0, res.stderr
    with moto_s3() as s3:
        fs = s3.filesystem()
        s3.make_bucket(BUCKET)
        dump = f"{BUCKET}/in/{wiki_sample_dump.name}"
        fs.put_file(str(wiki_sample_dump), dump)
        fs.put_file(str(pageviews), f"{BUCKET}/in/{pageviews.name}")
        for name in ("data.noun", "data.verb", "data.adj", "data.adv"):  # all the reader needs
            fs.put_file(str(wordnet_dir / name), f"{BUCKET}/wordnet/{name}")
        yield {
            "fs": fs,
            **refs,
            "dump": f"s3://{dump}",
            "wordnet": f"s3://{BUCKET}/wordnet",
            "pageviews": f"s3://{BUCKET}/in/{pageviews.name}",
        }


def queries_on_s3(store, out: str, *extra: str):
    return run_cli(
        "queries",
        "--wiki-dump",
        store["dump"],
        "--wordnet",
        store["wordnet"],
        "--out",
        out,
        *COMMON,
        *extra,
        timeout=TIMEOUT,
    )


def comparable(build: dict) -> dict:
    """build.json without what legitimately differs: where the inputs are and the timings."""
    return {k: v for k, v in build.items() if k not in ("inputs", "timings_s", "built_at")}


def markers(fs, prefix: str) -> dict[str, object]:
    """The done markers of a work dir's parts: name -> LastModified."""
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1]: fs.info(p)["LastModified"] for p in fs.glob(f"{prefix}/stats/*.json")}


def test_s3_run_is_byte_identical_and_resumes_from_chunks_on_s3(store):
    fs, local = store["fs"], store["local"]
    out = f"{BUCKET}/q"
    work = f"{out}/.work/dump"

    # First run keeps its work dir (OUT/.work, on S3 too).
    res = queries_on_s3(store, f"s3://{out}", "--keep-work")
    assert res.returncode == 0, res.stderr
    fs.invalidate_cache()
    for name in OUTPUTS:
        assert fs.cat_file(f"{out}/{name}") == (local / name).read_bytes(), name
    remote_build = json.loads(fs.cat_file(f"{out}/build.json"))
    local_build = json.loads((local / "build.json").read_text())
    assert comparable(remote_build) == comparable(local_build)
    assert remote_build["inputs"]["wiki_dump"][0]["path"] == store["dump"]
    assert remote_build["inputs"]["wordnet"] == store["wordnet"]
    assert sorted(fs.ls(out, detail=False)) == [f"{out}/{n}" for n in (".work", "build.json", *OUTPUTS)]

    # The chunks' parts and done markers are on S3; nothing local was left behind.
    chunks = markers(fs, work)
    assert len(chunks) >= 3, chunks
    for part in ("uni", "bi", "titles"):
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.glob(f"{work}/{part}/*.parquet")) == sorted(
            c.replace(".json", ".parquet") for c in chunks
        )
    assert fs.isfile(f"{work}/manifest.json")

    # As a kill leaves it: one chunk's parts written but its marker not, the outputs not yet.
    lost = sorted(chunks)[1]
    fs.rm(f"{work}/stats/{lost}")
    for name in (*OUTPUTS, "build.json"):
        fs.rm(f"{out}/{name}")
    time.sleep(1.1)  # a chunk counted again would carry a later LastModified, even at 1 s resolution

    res = queries_on_s3(store, f"s3://{out}")
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(chunks) - 1} chunks already counted in s3://{work}" in res.stderr
    fs.invalidate_cache()
    for name in OUTPUTS:
        assert fs.cat_file(f"{out}/{name}") == (local / name).read_bytes(), name
    assert comparable(json.loads(fs.cat_file(f"{out}/build.json"))) == comparable(local_build)
    assert not fs.exists(f"{out}/.work"), "the default work dir is removed after success, on S3 too"
    assert sorted(fs.ls(out, detail=False)) == [f"{out}/{n}" for n in ("build.json", *OUTPUTS)]


def test_pageviews_and_explicit_work_dir_on_s3_kept_and_reused(store):
    fs, ref = store["fs"], store["local_pv"]
    work = f"{BUCKET}/work"
    args = ["--pageviews", store["pageviews"], "--work-dir", f"s3://{work}"]
    res = queries_on_s3(store, f"s3://{BUCKET}/q2", *args, "--quiet")
    assert res.returncode == 0, res.stderr
    before = {part: markers(fs, f"{work}/{part}") for part in ("dump", "pageviews")}
    assert all(before.values()), "an explicit --work-dir is kept"
    assert fs.isfile(f"{work}/pageviews/parts/000000.parquet")
    fs.invalidate_cache()
    for name in OUTPUTS:
        assert fs.cat_file(f"{BUCKET}/q2/{name}") == (ref / name).read_bytes(), name
    build = json.loads(fs.cat_file(f"{BUCKET}/q2/build.json"))
    assert build["titles_from"] == "pageviews" and build["sources"]["title"]["added"] > 0
    assert comparable(build) == comparable(json.loads((ref / "build.json").read_text()))

    time.sleep(1.1)  # a part counted again would carry a later LastModified, even at 1 s resolution
    res = queries_on_s3(store, f"s3://{BUCKET}/q3", *args)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(before['dump'])} chunks already counted in s3://{work}/dump" in res.stderr
    assert {part: markers(fs, f"{work}/{part}") for part in before} == before, "counted parts were redone"
    fs.invalidate_cache()
    for name in OUTPUTS:
        assert fs.cat_file(f"{BUCKET}/q3/{name}") == (ref / name).read_bytes(), name


def test_missing_bucket_is_a_one_line_error(store, tmp_path):
    for flag, url in (("--out", "s3://no-such-bucket/q"), ("--work-dir", "s3://no-such-bucket/work")):
        args = ["--out", url] if flag == "--out" else ["--out", str(tmp_path / "q"), "--work-dir", url]
        start = time.monotonic()
        res = run_cli(
            "queries",
            "--wiki-dump",
            store["dump"],
            "--wordnet",
            store["wordnet"],
            *args,
            *THRESHOLDS,
            "--quiet",
            timeout=120,
        )
        assert_one_line_error(res, flag, url)
        assert time.monotonic() - start < 60, "the error must come before any counting"
        assert not (tmp_path / "q").exists()
