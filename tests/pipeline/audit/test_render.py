"""report.html renders in a real browser (headless Chromium): non-blank, every plot drawn,
no console errors (the browser helpers: tests/support/browser.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.pipeline.audit.test_audit import build_sample
from tests.support.browser import (
    DevTools,
    assert_not_blank,
    browse,
    console_messages,
    pixels_near,
    screenshot,
    test_console_error_detection_works,  # noqa: F401 - the guard runs with these tests
)

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
    img = screenshot(page, tmp_path, height=8000)  # the contact sheets come first, the charts below
    assert_not_blank(img)
    # The charts' colours are on screen: blue bars and lines, green success bars and histogram.
    assert pixels_near(img, (0x3B, 0x6F, 0xB6)) > 2000, "blue bars drawn"
    assert pixels_near(img, (0x3F, 0x9A, 0x5A)) > 500, "green bars drawn"


def test_contact_sheets_render_every_thumbnail(report, tmp_path):
    """Each contact-sheet image decodes in the browser (non-zero natural size), as many as
    summary.json lists, each with its caption under it; no console errors."""
    page, summary = report
    listed = [im for s in summary["contact_sheets"]["sheets"] for im in s["images"]]
    with DevTools(tmp_path) as browser:
        tab = browser.load(page.as_uri())
        images = browser.images(tab)
        captions = browser.evaluate(
            tab, "Array.from(document.querySelectorAll('#images figcaption')).map(c => c.textContent)"
        )
    assert len(images) == len(listed) > 0
    assert all(im["naturalWidth"] > 0 and im["naturalHeight"] > 0 for im in images), images
    assert all(im["src"].startswith("data:image/jpeg;base64,") for im in images)
    assert captions == [(im["caption"] or "")[:160] for im in listed]
    assert browser.errors == []
