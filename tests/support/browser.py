"""Headless Chromium for the render tests of the HTML reports (the audit's, a run's): the
page's DOM as the browser built it, its console messages, and a screenshot; and, through
the DevTools protocol (`DevTools`), pages served over HTTP with JavaScript evaluated in
them (the dataset browser's). Chromium is Debian's `chromium` package (`make test`
installs it, through its `browser` target); a missing browser fails the test rather than
skipping it."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
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


# Chromium's flags for every test run: headless, no sandbox (root in CI), no network of its own.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
)


def browse(page: Path, tmp: Path, *mode: str, height: int = HEIGHT) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        *HEADLESS,
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


class DevTools:
    """Headless Chromium driven over the DevTools protocol, for pages that need JavaScript
    evaluated in them (the dataset browser's images: did each one decode?).

    The protocol runs on a pipe (`--remote-debugging-pipe`: JSON messages ending in a NUL
    byte, commands on the browser's fd 3 and replies on its fd 4), so there is no debugging
    port to find and no websocket client to install. One browser per `with` block; `load`
    opens a page in a new tab and waits for its load event; `errors` collects, from every
    tab, console errors, uncaught exceptions and the browser's own error log entries (a
    failed image or script load among them)."""

    def __init__(self, tmp: Path, width: int = WIDTH, height: int = 1200, timeout: float = 60):
        self.tmp, self.timeout = tmp, timeout
        self.size = (width, height)
        self.errors: list[str] = []
        self._events: list[dict] = []
        self._next_id = 0
        self._buf = b""
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> DevTools:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def high(fd: int) -> int:  # the shell below maps fds >= 10 onto 3 and 4, whatever they were
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return new

        child_r, child_w = high(to_browser_r), high(from_browser_w)
        cmd = [
            chromium(),
            *HEADLESS,
            f"--user-data-dir={self.tmp / 'devtools-profile'}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._log = open(self.tmp / "chromium.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-', "bash", *cmd],
            pass_fds=(child_r, child_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.tmp,
        )
        os.close(child_r)
        os.close(child_w)
        self._write, self._read = to_browser_w, from_browser_r
        return self

    def __exit__(self, *exc) -> None:
        assert self._proc is not None
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, AssertionError, TimeoutError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._log.close()

    # -- the protocol ----------------------------------------------------------------------
    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium (its log: chromium.log in the test's tmp folder)")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise OSError(
                        f"Chromium closed the DevTools pipe: {(self.tmp / 'chromium.log').read_text()[-2000:]}"
                    )
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if "method" in msg:
            self._note(msg)
        return msg

    def _note(self, event: dict) -> None:
        """Keep an event; record it in `errors` when it reports one."""
        self._events.append(event)
        method, p = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".rstrip())

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float | None = None):
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        msg: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, e in enumerate(self._events):
                if e["method"] == method and e.get("sessionId") == session:
                    return self._events.pop(i)
            self._message(deadline)

    def load(self, url: str) -> str:
        """Open `url` in a new tab, wait for its load event; the tab's session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        nav = self.call("Page.navigate", {"url": url}, session=session)
        assert not nav.get("errorText"), (url, nav)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str):
        """The value of a JavaScript expression in the tab (a promise is awaited)."""
        r = self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session=session
        )
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def images(self, session: str) -> list[dict]:
        """Every <img> of the tab once decoded (or failed): src, naturalWidth, naturalHeight."""
        return self.evaluate(
            session,
            "Promise.all(Array.from(document.images).map(im => im.decode().catch(() => null).then(() => "
            "({src: im.currentSrc || im.src, naturalWidth: im.naturalWidth, naturalHeight: im.naturalHeight}))))",
        )

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
