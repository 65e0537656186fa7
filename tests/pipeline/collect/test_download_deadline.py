"""Every download ends within its deadline and its size cap, whatever the server does.

img2dataset's `timeout` bounds each socket read, so a server that drips a byte a second
(or a header line at a time) would hold a worker for as long as it drips, and `read()`
takes a body of any size. A loopback server (below) serves 40 good images and one route
per hostile behaviour; the real download stage runs over all of them with a 4-second
deadline and a per-read timeout longer than that (so only the deadline can stop the slow
routes). Checked: the stage finishes within the deadline plus the stage's start-up, the
tars hold exactly the 40 good images, and every row is in the shards' parquet with the
reason it failed.
"""

from __future__ import annotations

import http.server
import json
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.collect import download
from tests.support.httpserver import bomb_png, make_png

pytestmark = pytest.mark.slow

DEADLINE = 4.0
TIMEOUT = 20  # per socket read: longer than the deadline, so it cannot be what stops a route
MAX_BYTES = 1_000_000
DRIP_BYTES = 300  # at a byte a second: five minutes without a deadline
STARTUP_BUDGET = 40.0  # seconds to start img2dataset's processes on a loaded 2-core machine
GOOD = 40
DEADLINE_MSG = f"download deadline of {DEADLINE:g} s exceeded"

# route -> (img2dataset status, check of its error message)
FAULTS = {
    "/404": ("failed_to_download", lambda m: m == "HTTP Error 404: Not Found"),
    "/500": ("failed_to_download", lambda m: m == "HTTP Error 500: Internal Server Error"),
    "/html": ("failed_to_resize", lambda m: m == "Image decoding error"),
    "/truncated": ("failed_to_download", lambda m: m == "IncompleteRead(2000 bytes read, 1000 more expected)"),
    "/bomb": ("failed_to_resize", lambda m: "CV_IO_MAX_IMAGE_PIXELS" in m),
    "/empty": ("failed_to_resize", lambda m: "!buf.empty()" in m),  # OpenCV refuses an empty buffer
    "/loop": ("failed_to_download", lambda m: m.startswith("HTTP Error 302") and "infinite loop" in m),
    "/hang": ("failed_to_download", lambda m: m == DEADLINE_MSG),
    "/drip": ("failed_to_download", lambda m: m == DEADLINE_MSG),
    "/drip-headers": ("failed_to_download", lambda m: m == DEADLINE_MSG),
    "/short-body": ("failed_to_download", lambda m: m == DEADLINE_MSG),
    "/huge-length": (
        "failed_to_download",
        lambda m: m == f"response body over the {MAX_BYTES:,}-byte limit (Content-Length: 10,000,000,000)",
    ),
    "/oversized": (
        "failed_to_download",
        lambda m: m == f"response body over the {MAX_BYTES:,}-byte limit (no Content-Length)",
    ),
    "/noai": ("failed_to_download", lambda m: m == "Use of image disallowed by X-Robots-Tag directive"),
}


def good_png(i: int) -> bytes:
    return make_png(32 + i, 24, (6 * i, 255 - 6 * i, 90))


class _Hostile(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 (a body without Content-Length ends when the connection closes)."""

    stop: threading.Event

    def log_message(self, *args):
        pass

    def _head(self, status: int, ctype: str, length: int | None, extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _send(self, data: bytes, ctype: str = "image/png", status: int = 200, extra=()) -> None:
        self._head(status, ctype, len(data), extra)
        self.wfile.write(data)

    def do_GET(self):  # noqa: C901 - one branch per route
        path = self.path
        png = make_png(40, 40, (10, 200, 10))  # a valid image, for the routes that misbehave around one
        if path.startswith("/good/"):
            return self._send(good_png(int(path.rsplit("/", 1)[1].split(".")[0])))
        if path in ("/404", "/500"):
            return self._send(b"no\n", "text/plain", int(path[1:]))
        if path == "/html":
            return self._send(b"<!DOCTYPE html><html><body>not an image</body></html>\n", "text/html")
        if path == "/truncated":  # 1,000 bytes fewer than announced, then the connection closes
            self._head(200, "image/png", 3000)
            self.wfile.write(png.ljust(2000, b"\0"))
            return
        if path == "/bomb":
            return self._send(bomb_png(20_000))
        if path == "/empty":
            return self._send(b"")
        if path == "/loop":
            self._head(302, "text/plain", 0, [("Location", "/loop")])
            return
        if path == "/hang":  # accepts, reads the request, never answers
            self.stop.wait()
            return
        if path == "/drip":
            self._head(200, "image/png", DRIP_BYTES)
            for b in png.ljust(DRIP_BYTES, b"\0")[:DRIP_BYTES]:
                if self.stop.wait(1):
                    return
                self.wfile.write(bytes([b]))
                self.wfile.flush()
            return
        if path == "/drip-headers":  # a valid response, one header line a second, never ending
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            n = 0
            while not self.stop.wait(1):
                self.wfile.write(f"X-Drip-{n}: x\r\n".encode())
                self.wfile.flush()
                n += 1
            return
        if path == "/short-body":  # announces more than it sends and keeps the connection open
            self._head(200, "image/png", len(png) + 1000)
            self.wfile.write(png)
            self.wfile.flush()
            self.stop.wait()
            return
        if path == "/huge-length":  # announces 10 GB: refused before reading, whatever follows
            self._head(200, "image/png", 10_000_000_000)
            self.wfile.write(png)
            self.wfile.flush()
            self.stop.wait()
            return
        if path == "/oversized":  # no Content-Length: the body runs until the connection closes
            self._head(200, "image/png", None)
            chunk = b"\0" * 65536
            try:
                for _ in range(2 * MAX_BYTES // len(chunk) + 1):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client hung up once it had enough: what we want
            return
        if path == "/noai":
            return self._send(png, extra=[("X-Robots-Tag", "noai")])
        return self._send(b"?\n", "text/plain", 404)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # clients hanging up on dripping routes are the point


@pytest.fixture()
def hostile():
    stop = threading.Event()
    handler = type("Handler", (_Hostile,), {"stop": stop})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def selection(root: Path, urls: list[str]) -> Path:
    cur = root / "curation"
    (cur / "selected").mkdir(parents=True)
    n = len(urls)
    pq.write_table(
        pa.table(
            {
                "uid": [f"{i:016x}" for i in range(n)],
                "url": urls,
                "text": [f"pair {i}" for i in range(n)],
                "query_ids": pa.array([[0]] * n, pa.list_(pa.int32())),
                "queries": [["pair"]] * n,
                "keep_prob": [1.0] * n,
                "source": ["test"] * n,
            }
        ),
        cur / "selected" / "part-00000.parquet",
    )
    return cur


@pytest.mark.timeout(180)
def test_every_download_ends_within_its_deadline_and_size_cap(tmp_path, hostile):
    good = {f"{hostile}/good/{i}.png": i for i in range(GOOD)}
    faults = {f"{hostile}{route}": route for route in FAULTS}
    cur = selection(tmp_path, [*good, *faults])
    out = tmp_path / "shards"

    start = time.monotonic()
    stats = download(
        cur,
        out,
        processes=1,
        threads=64,
        samples_per_shard=100,
        timeout=TIMEOUT,
        quiet=True,
        allow_private_hosts=True,
        download_deadline=DEADLINE,
        max_bytes=MAX_BYTES,
    )
    elapsed = time.monotonic() - start
    print(f"mixed fault pool ({len(good) + len(faults)} URLs) downloaded in {elapsed:.1f} s")

    # The slow routes run in parallel: each ends at the deadline, none waits for its server.
    assert elapsed < DEADLINE + STARTUP_BUDGET, f"took {elapsed:.0f} s"

    rows = pq.read_table(out / "00000.parquet").to_pylist()
    assert sorted(r["url"] for r in rows) == sorted([*good, *faults])  # every row accounted for, once
    by_url = {r["url"]: r for r in rows}
    for url in good:
        assert by_url[url]["status"] == "success", by_url[url]
    for url, route in faults.items():
        status, message_ok = FAULTS[route]
        row = by_url[url]
        assert row["status"] == status and row["error_message"] and message_ok(row["error_message"]), (
            route,
            row["status"],
            row["error_message"],
        )

    with tarfile.open(out / "00000.tar") as tf:
        names = tf.getnames()
    keys = {r["key"] for r in rows if r["status"] == "success"}
    assert sorted(names) == sorted(f"{k}.{ext}" for k in keys for ext in ("jpg", "txt", "json"))
    assert len(keys) == GOOD
    assert stats["count"] == len(rows) and stats["successes"] == GOOD
    assert sum(stats["status_dict"].values()) == len(rows)
    assert stats["status_dict"][DEADLINE_MSG] == 4
    summary = json.loads((cur / "download_stats.json").read_text())
    assert summary["status_dict"] == dict(
        Counter("success" if r["status"] == "success" else r["error_message"] for r in rows)
    )


def test_bad_limits_are_input_errors(tmp_path):
    from pipeline.errors import InputError

    cur = selection(tmp_path, ["http://example.com/a.png"])
    with pytest.raises(InputError, match="deadline must be a positive number"):
        download(cur, tmp_path / "out", download_deadline=0)
    with pytest.raises(InputError, match="max bytes must be at least 1"):
        download(cur, tmp_path / "out", max_bytes=0)
