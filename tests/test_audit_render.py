"""report.html renders in a real browser (headless Chromium): non-blank, every plot drawn,
no console errors. Chromium is Debian's `chromium` package (.ci/run installs it); a missing
browser fails the test rather than skipping it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from .test_audit import build_sample

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1280, 4000
CONSOLE = re.compile(r":CONSOLE|Uncaught", re.I)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium not found: install Debian's `chromium` package "
                "(apt-get install -y --no-install-recommends chromium); .ci/run does this")


def browse(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--window-size={WIDTH},{HEIGHT}", *mode, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    audit = build_sample(tmp_path_factory)["audit"]
    return audit / "report.html", json.loads((audit / "summary.json").read_text())


def test_console_error_detection_works(tmp_path):
    """Guards the check below: a page with a script error must be caught by it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); nope();</script></body></html>")
    res = browse(bad, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr), res.stderr[-2000:]


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
    for value in (f"{h['queries']:,}", f"{h['pool_rows']:,}", f"{h['kept_after_balancing']:,}",
                  f"{h['images_downloaded']:,}"):
        assert value in dom
    assert not re.search(r"""(src|href)=["']?https?:""", dom)


def test_report_screenshot_is_not_blank(report, tmp_path):
    page, _ = report
    shot = tmp_path / "report.png"
    res = browse(page, tmp_path, f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    img = Image.open(shot).convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    small = img.resize((WIDTH // 4, HEIGHT // 4))
    colors = small.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "a rendered report has text, tiles and charts, not a flat page"
    background = max(colors)[1]
    ink = sum(n for n, c in colors if sum(abs(a - b) for a, b in zip(c, background)) > 60)
    assert ink > 0.02 * small.width * small.height

    # The charts' colours are on screen: blue bars and lines, green success bars and histogram.
    pixels = img.getcolors(maxcolors=1 << 22)

    def near(rgb: tuple[int, int, int]) -> int:
        return sum(n for n, c in pixels if sum(abs(a - b) for a, b in zip(c, rgb)) < 30)

    assert near((0x3B, 0x6F, 0xB6)) > 2000, "blue bars drawn"
    assert near((0x3F, 0x9A, 0x5A)) > 500, "green bars drawn"
