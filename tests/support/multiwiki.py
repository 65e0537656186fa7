"""The multilingual sample (pipeline/sample/multiwiki.py) for the tests: where it is, and
the worldwide query list built from it as a user builds it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.sample import multiwiki as mw
from tests.conftest import required_path, run_cli


def sample_dir() -> Path:
    """$MULTIWIKI_SAMPLE_DIR (set by `make test`), else the cache beside $WIKI_SAMPLE_DUMP,
    fetched there once if needed (PyPI and Debian, ~15 s)."""
    if os.environ.get("MULTIWIKI_SAMPLE_DIR"):
        return required_path("MULTIWIKI_SAMPLE_DIR")
    return mw.fetch_multiwiki(required_path("WIKI_SAMPLE_DUMP").parent.parent)


def worldwide_queries(sample: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`pipeline queries --recipe worldwide` over the sample's dumps, pageviews and OMW file."""
    return run_cli(
        "queries",
        "--recipe",
        "worldwide",
        "--wiki-dump",
        str(sample),
        "--pageviews",
        str(sample / "pageviews-sample"),
        "--omw",
        str(sample / "omw"),
        "--out",
        str(out),
        *extra,
        "--quiet",
    )
