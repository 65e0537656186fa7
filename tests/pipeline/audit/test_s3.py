"""`pipeline audit` on a dataset in object storage, audited where it lies: the real sample
outputs (built once, as tests/pipeline/audit/test_audit.py builds them) uploaded with s3fs to a real S3 API
server on loopback (moto), and the CLI run as a user would with s3:// URLs. Every figure must
equal the local audit's; only the paths and the build time may differ. A missing bucket and
missing or invalid credentials are one-line errors naming the URL."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline.audit.test_audit import QUERIES, build_sample
from tests.support.s3server import moto_s3

pytestmark = pytest.mark.slow

BUCKET = "datasets"
PREFIX = f"{BUCKET}/run1"
TIMEOUT = 120  # an error must come back, not hang


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    sample = build_sample(tmp_path_factory)
    with moto_s3() as s3:
        fs = s3.filesystem()
        s3.make_bucket(BUCKET)
        fs.put(str(sample["queries"]), f"{PREFIX}/query_lists", recursive=True)
        fs.put(str(sample["shards"]), f"{PREFIX}/shards", recursive=True)
        fs.rm(f"{PREFIX}/shards/audit", recursive=True)  # the audit on S3 must write its own
        assert fs.isfile(f"{PREFIX}/shards/curation/entry_counts.parquet")
        assert fs.isfile(f"{PREFIX}/query_lists/queries.parquet")
        yield {"fs": fs, "sample": sample, "queries": f"s3://{PREFIX}/query_lists", "shards": f"s3://{PREFIX}/shards"}


def figures(summary: dict) -> dict:
    """summary.json without what legitimately differs: where the files are and the build time."""
    s = {k: v for k, v in summary.items() if k not in ("generated_at", "inputs")}
    s["query_list"] = {k: v for k, v in s["query_list"].items() if k != "file"}
    return s


def placeholders(text: str, summary: dict) -> str:
    """report.html/report.md with the two input paths (header, title) and the build time replaced."""
    for name in ("queries", "shards"):
        v = summary["inputs"][name]
        text = (
            text.replace(f"<code>{v}</code>", name)
            .replace(f"`{v}`", name)
            .replace(f"Dataset audit: {v}<", f"Dataset audit: {name}<")
        )
    return text.replace(summary["generated_at"], "T")


def test_report_on_s3_equals_the_local_report(store, tmp_path):
    fs, sample = store["fs"], store["sample"]
    res = run_cli("audit", "--queries", store["queries"], "--shards", store["shards"], timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert json.loads(res.stdout)["report"] == f"{store['shards']}/audit/report.html"

    # Written to SHARDS/audit on the same store, by default.
    fs.invalidate_cache()
    out = f"{PREFIX}/shards/audit"
    assert sorted(fs.ls(out, detail=False)) == [f"{out}/report.html", f"{out}/report.md", f"{out}/summary.json"]
    remote = json.loads(fs.cat_file(f"{out}/summary.json"))
    local = json.loads((sample["audit"] / "summary.json").read_text())

    for section in ("query_list", "pool", "matching", "balancing", "download", "text"):
        assert remote[section]["available"] is True, (section, remote[section])
    queries_file = f"{store['queries']}/queries.parquet"
    assert remote["inputs"]["shards"] == store["shards"] and remote["inputs"]["queries"] == queries_file
    assert remote["query_list"]["file"] == queries_file
    assert remote["inputs"]["views"] == {
        k: v.replace(str(sample["shards"]), store["shards"]).replace(str(sample["queries"]), store["queries"])
        for k, v in local["inputs"]["views"].items()
    }
    assert remote["inputs"]["views"]["samples"] == f"{store['shards']}/[0-9]*.parquet"
    assert remote["warnings"] == [] and remote["inputs"]["missing"] == {}
    # The figures: read from S3 through fsspec, they equal the local ones (tar sizes included).
    assert remote["headline"]["images_downloaded"] > 0 and remote["download"]["tar_bytes"] > 0
    assert remote["download"] == local["download"]
    assert figures(remote) == figures(local)

    # The HTML and markdown too, apart from the paths and the build time.
    for name in ("report.html", "report.md"):
        r = placeholders(fs.cat_file(f"{out}/{name}").decode(), remote)
        assert r == placeholders((sample["audit"] / name).read_text(), local), name
        assert store["shards"] not in r

    # --out may be a local folder: the report of a remote dataset, here.
    res = run_cli(
        "audit",
        "--queries",
        store["queries"],
        "--shards",
        store["shards"],
        "--out",
        str(tmp_path / "here"),
        "--quiet",
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr
    here = json.loads((tmp_path / "here" / "summary.json").read_text())
    assert {k: v for k, v in here.items() if k != "generated_at"} == {
        k: v for k, v in remote.items() if k != "generated_at"
    }


def test_sql_and_query_over_s3(store):
    fs, sample = store["fs"], store["sample"]
    summary = json.loads((sample["audit"] / "summary.json").read_text())
    base = ("audit", "--queries", store["queries"], "--shards", store["shards"])
    res = run_cli(
        *base,
        "--format",
        "json",
        "--sql",
        "SELECT (SELECT count(*) FROM queries) AS q, (SELECT count(*) FROM pool) AS p, "
        "(SELECT count(*) FROM matches) AS m, (SELECT count(*) FROM entry_counts) AS e, "
        "(SELECT count(*) FROM selected) AS s, (SELECT count(*) FROM samples) AS d, "
        "(SELECT count(DISTINCT shard) FROM samples) AS shards",
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {
            "q": len(QUERIES),
            "p": summary["pool"]["rows"],
            "m": summary["matching"]["matched"],
            "e": len(QUERIES),
            "s": summary["balancing"]["after"]["texts_kept"],
            "d": summary["download"]["attempted"],
            "shards": summary["download"]["shards"],
        }
    ]

    res = run_cli(*base, "--query", "animal", "--format", "json", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    remote = json.loads(res.stdout)
    res = run_cli(
        "audit",
        "--queries",
        str(sample["queries"]),
        "--shards",
        str(sample["shards"]),
        "--query",
        "animal",
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    local = json.loads(res.stdout)
    assert remote["images_in_shards"] > 0 and remote["samples"]
    for s in local["samples"]:
        s["image"] = s["image"].replace(str(sample["shards"]), store["shards"])
    assert remote == local
    for s in remote["samples"]:  # the image paths name real members of the tar shards on S3
        tar, member = s["image"].rsplit(":", 1)
        assert tar.startswith(f"s3://{PREFIX}/shards/")
        with fs.open(tar, "rb") as f, tarfile.open(fileobj=f) as tf:
            assert member in tf.getnames()


def test_missing_bucket_is_a_one_line_error(store):
    res = run_cli("audit", "--queries", store["queries"], "--shards", "s3://no-such-bucket/shards", timeout=TIMEOUT)
    assert_one_line_error(res, "--shards s3://no-such-bucket/shards", "bucket 'no-such-bucket' does not exist")
    res = run_cli(
        "audit", "--queries", "s3://no-such-bucket/q", "--shards", store["shards"], "--sql", "SELECT 1", timeout=TIMEOUT
    )
    assert_one_line_error(res, "--queries s3://no-such-bucket/q", "does not exist")
    # A missing folder in an existing bucket is like a missing local folder: an error naming it.
    res = run_cli("audit", "--queries", store["queries"], "--shards", f"s3://{BUCKET}/nope/s", timeout=TIMEOUT)
    assert_one_line_error(res, f"--shards s3://{BUCKET}/nope/s", "no such file or folder")


def test_missing_credentials_is_a_one_line_error(store, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    res = run_cli("audit", "--queries", store["queries"], "--shards", store["shards"], timeout=TIMEOUT)
    assert_one_line_error(res, f"--queries {store['queries']}", "cannot read", "credentials")


def test_invalid_credentials_is_a_one_line_error(store, monkeypatch):
    """A second server that checks keys (moto's IAM auth from the first request): the test keys
    are unknown to it, as a revoked or mistyped key is to S3."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with moto_s3() as strict:
        res = run_cli("audit", "--queries", store["queries"], "--shards", store["shards"], timeout=TIMEOUT)
    assert strict.port
    assert_one_line_error(res, f"--queries {store['queries']}", "cannot read", "PermissionError")
