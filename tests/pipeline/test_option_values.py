"""Out-of-range values, through the real CLI: refused up front with exit 2, or (in input
files) skipped and counted; never a traceback or a late failure after retries."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import run_cli


def refused(res, option: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert f"error: argument {option}:" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_pageview_count_beyond_int64_is_a_bad_line(tmp_path, wiki_sample_dump, wordnet_dir):
    """Today: an OverflowError in every attempt at the file, exit 1. Also: a negative
    --min-pmi is a legitimate PMI floor, not a bad value."""
    pv = tmp_path / "pageviews-20240101-000000.gz"
    pv.write_bytes(gzip.compress(b"en Anarchism 120 0\nen Autism 99999999999999999999999 0\nen Autism 70 0\n"))
    out = tmp_path / "out"
    res = run_cli(
        "queries",
        "--wiki-dump",
        str(wiki_sample_dump),
        "--wordnet",
        str(wordnet_dir),
        "--pageviews",
        str(pv),
        "--out",
        str(out),
        "--min-count",
        "5",
        "--min-bigram-count",
        "3",
        "--min-pmi",
        "-5",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    build = json.loads((out / "build.json").read_text())
    assert build["pageviews"]["bad_lines"] == 1 and build["pageviews"]["kept_lines"] == 2
    assert build["pageviews"]["views"] == 190
    assert build["parameters"]["min_pmi"] == -5


@pytest.mark.parametrize(
    "option, value",
    [
        ("--size", "0"),
        ("--size", "-10"),
        ("--min-count", "0"),
        ("--min-count", "-1"),
        ("--min-bigram-count", "-5"),
        ("--min-doc-freq", "0"),
        ("--min-views", "-1"),
        ("--min-hourly-views", "0"),
        ("--max-unigrams", "0"),
        ("--max-bigrams", "-1"),
        ("--max-titles", "-3"),
        ("--min-pmi", "nan"),
        ("--min-pmi", "inf"),
        ("--chunk-mb", "-1"),
        ("--workers", "0"),
        ("--max-part-retries", "-1"),
    ],
)
def test_queries_refuses_out_of_range_thresholds(tmp_path, option, value):
    """Every threshold and cap of `queries` (their argparse types changed just before this
    file was written, so this guards that change rather than failing on it)."""
    res = run_cli("queries", "--wiki-dump", "x.bz2", "--wordnet", "wn", "--out", str(tmp_path / "o"), option, value)
    refused(res, option)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "verb, option, value",
    [
        ("balance", "--seed", "-1"),  # today: accepted, then every balance part fails three times (exit 1)
        ("balance", "--seed", str(2**64)),
        ("shards", "--seed", "-7"),
        ("download", "--retries", "-1"),  # today: img2dataset's range(retries + 1) makes no attempt at all
        ("download", "--image-size", "100000"),  # past JPEG's largest side
        ("download", "--timeout", str(10**30)),  # today: every image "fails" (socket timeout overflow)
        ("shards", "--sample-port", "-5"),  # today: a traceback from bind()
        ("shards", "--sample-port", "70000"),
    ],
)
def test_shards_refuses_out_of_range_options(tmp_path, verb, option, value):
    res = run_cli(verb, "--out", str(tmp_path / "o"), option, value)
    refused(res, option)
    assert not (tmp_path / "o").exists()
