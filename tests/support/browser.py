"""Headless Chromium for the render tests of the HTML reports (the audit's, a run's): the
page's DOM as the browser built it, its console messages, and a screenshot. Chromium is
Debian's `chromium` package (`make test` installs it, through its `browser` target); a
missing browser fails the test rather than skipping it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

WIDTH, HEIGHT = 1280, 4000
CONSOLE = re.compile(r":CONSOLE|Uncaught", re.I)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium not found: install Debian's `chromium` package "
        "(apt-get install -y --no-install-recommends chromium); make test does this"
    )


def browse(page: Path, tmp: Path, *mode: str, height: int = HEIGHT) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WIDTH},{height}",
        *mode,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def screenshot(page: Path, tmp: Path, height: int = HEIGHT) -> Image.Image:
    """The page drawn at WIDTH x `height`, after checking it logged nothing to the console."""
    shot = tmp / "page.png"
    res = browse(page, tmp, f"--screenshot={shot}", height=height)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    img = Image.open(shot).convert("RGB")
    assert img.size == (WIDTH, height)
    return img


def assert_not_blank(img: Image.Image) -> None:
    """Text, tiles and charts: many colours, and ink on more than 2% of the page."""
    small = img.resize((img.width // 4, img.height // 4))
    colors = small.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "a rendered report has text, tiles and charts, not a flat page"
    background = max(colors)[1]
    ink = sum(n for n, c in colors if sum(abs(a - b) for a, b in zip(c, background)) > 60)
    assert ink > 0.02 * small.width * small.height


def pixels_near(img: Image.Image, rgb: tuple[int, int, int]) -> int:
    """How many pixels are within 30 (summed over R, G, B) of `rgb`: a chart colour on screen."""
    return sum(n for n, c in img.getcolors(maxcolors=1 << 22) if sum(abs(a - b) for a, b in zip(c, rgb)) < 30)


def test_console_error_detection_works(tmp_path):
    """Guards the render tests that import it: a page with a script error must be caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); nope();</script></body></html>")
    res = browse(bad, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr), res.stderr[-2000:]
