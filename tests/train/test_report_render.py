"""A run's report.html renders in a real browser (headless Chromium, tests/support/browser.py): every
chart drawn with its marks, the page non-blank, no console errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.browser import (
    assert_not_blank,
    browse,
    console_messages,
    pixels_near,
    screenshot,
    test_console_error_detection_works,  # noqa: F401 - the guard runs with these tests
)
from tests.train.test_report import make_run
from train.report import write_report

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHARTS = [
    "train_loss",
    "train_lr",
    "train_logit_scale",
    "train_samples_per_s",
    "zeroshot_top1",
    "zeroshot_top5",
    "retrieval_val",
    "fewshot_digits",
    "fewshot_animal-mnist",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return write_report(make_run(tmp_path_factory.mktemp("run")), now=datetime(2024, 5, 1, tzinfo=UTC))


def test_dom_has_every_chart_and_no_console_errors(page, tmp_path):
    res = browse(page, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    assert re.findall(r'<svg class="plot" data-plot="([^"]+)"', dom) == CHARTS
    for name, body in re.findall(r'<svg class="plot" data-plot="([^"]+)"(.*?)</svg>', dom, re.S):
        assert re.search(r"<polyline\b", body), name
        assert re.search(r"<title>[^<]+</title>", body) and 'class="legend"' in body, name
    for section in ("training", "zeroshot", "retrieval", "fewshot", "linear_probe", "overlap"):
        assert f'<section id="{section}">' in dom
    assert "<b>x</b>" not in dom and "&lt;b&gt;x&lt;/b&gt;&amp;" in dom, "the run name shows literally"
    assert not re.search(r"""(src|href)=["']?https?:""", dom)


def test_screenshot_is_not_blank(page, tmp_path):
    img = screenshot(page, tmp_path)
    assert_not_blank(img)
    assert pixels_near(img, (0x3B, 0x6F, 0xB6)) > 2000, "blue lines drawn"
    assert pixels_near(img, (0xE0, 0x7B, 0x39)) > 300, "orange lines (second set, zero-shot reference) drawn"
