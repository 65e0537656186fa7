"""report.html renders in a real browser (headless Chromium): non-blank, every plot drawn,
no console errors (the browser helpers: tests/support/browser.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .support.browser import (
    assert_not_blank,
    browse,
    console_messages,
    pixels_near,
    screenshot,
    test_console_error_detection_works,  # noqa: F401 - the guard runs with these tests
)
from .test_audit import build_sample

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    audit = build_sample(tmp_path_factory)["audit"]
    return audit / "report.html", json.loads((audit / "summary.json").read_text())


def test_report_dom_has_every_plot_and_no_console_errors(report, tmp_path):
    page, summary = report
    res = browse(page, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    plots = re.findall(r'<svg class="plot" data-plot="([^"]+)"', dom)
    assert plots == summary["plots"] and len(plots) >= 10
    # Each chart has drawn marks (bars or lines), not just an empty frame.
    for name, body in re.findall(r'<svg class="plot" data-plot="([^"]+)"(.*?)</svg>', dom, re.S):
        assert re.search(r"<(rect|polyline)\b", body), name
    for section in ("query_list", "pool", "matching", "balancing", "download", "text"):
        assert f'<section id="{section}">' in dom
    assert "Section unavailable" not in dom
    h = summary["headline"]
    for value in (
        f"{h['queries']:,}",
        f"{h['pool_rows']:,}",
        f"{h['kept_after_balancing']:,}",
        f"{h['images_downloaded']:,}",
    ):
        assert value in dom
    assert not re.search(r"""(src|href)=["']?https?:""", dom)


def test_report_screenshot_is_not_blank(report, tmp_path):
    page, _ = report
    img = screenshot(page, tmp_path)
    assert_not_blank(img)
    # The charts' colours are on screen: blue bars and lines, green success bars and histogram.
    assert pixels_near(img, (0x3B, 0x6F, 0xB6)) > 2000, "blue bars drawn"
    assert pixels_near(img, (0x3F, 0x9A, 0x5A)) > 500, "green bars drawn"
