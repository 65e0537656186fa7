"""Loopback HTTP server: files served, traversal refused, shutdown on every exit, the
/_fault/ routes, and the CLI (first line = base URL, SIGTERM stops it)."""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError
from tests.support.httpserver import BOMB_SIZE, OPTOUT_HEADER, TINY_PNG, TRUNCATED_MISSING, make_png, serve_directory
from tests.support.signals import sigint_as_in_a_terminal

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    (root / "animals" / "big cats").mkdir(parents=True)
    (root / "animals" / "big cats" / "lion ü.png").write_bytes(make_png(3, 2))
    (root / "a.png").write_bytes(TINY_PNG)
    (root / "notes.txt").write_text("hello\n")
    (root / "link.png").symlink_to("animals/big cats/lion ü.png")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return root


def get(url: str, timeout: float = 10) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def raw_get(base: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send `path` byte for byte (urllib would not send some of these)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_closed(base: str) -> bool:
    u = urlsplit(base)
    try:
        socket.create_connection((u.hostname, u.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_serves_files(site):
    with serve_directory(site) as base:
        assert base.startswith("http://127.0.0.1:") and not base.endswith("/")
        status, body, headers = get(base + "/" + quote("animals/big cats/lion ü.png"))
        assert status == 200 and body == (site / "animals/big cats/lion ü.png").read_bytes()
        assert headers["Content-Type"] == "image/png" and int(headers["Content-Length"]) == len(body)
        assert Image.open(io.BytesIO(body)).size == (3, 2)
        assert get(base + "/a.png?x=1")[1] == TINY_PNG  # query string ignored
        assert get(base + "/notes.txt")[1] == b"hello\n"
        assert get(base + "/link.png")[1] == make_png(3, 2)  # link inside the root: followed
        assert raw_get(base, "/a.png", "HEAD") == (200, b"")


def test_missing_and_directories_are_404(site):
    with serve_directory(site) as base:
        assert get(base + "/nope.png")[0] == 404
        assert get(base + "/animals")[0] == 404  # no listing
        assert get(base + "/animals/")[0] == 404
        assert get(base + "/")[0] == 404
        assert get(base + "/%ff%fe")[0] == 404  # not UTF-8
        assert get(base + "/_fault/500")[0] == 404  # fault routes off by default
        assert get(base + "/_fault/optout")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/..%2fsecret.txt",
        "/..%2F..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/secret.txt",
        "/animals/../../secret.txt",
        "/../secret.txt",
        "/a.png%00",
        "/..%5csecret.txt",
        "/escape.txt",
    ],
)
def test_traversal_refused(site, path):
    with serve_directory(site) as base:
        status, body = raw_get(base, path)
        assert status == 403, (path, status)
        assert b"outside the root" not in body and b"root:" not in body


def test_stops_after_block(site):
    with serve_directory(site) as base:
        assert get(base + "/a.png")[0] == 200
    assert port_closed(base)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_stops_on_exception(site, exc):
    with pytest.raises(exc):
        with serve_directory(site) as base:
            assert get(base + "/a.png")[0] == 200
            raise exc()
    assert port_closed(base)


def test_two_servers_and_concurrency(site):
    with serve_directory(site) as a, serve_directory(site) as b:
        assert a != b
        results = []

        def fetch():
            results.append(get(a + "/a.png")[1] == TINY_PNG and get(b + "/notes.txt")[0] == 200)

        threads = [threading.Thread(target=fetch) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [True] * 32


def test_bad_root(tmp_path):
    with pytest.raises(InputError, match="not found"):
        with serve_directory(tmp_path / "absent"):
            pass


# -- fault routes -----------------------------------------------------------------------


def test_fault_statuses_and_notimage(site):
    with serve_directory(site, faults=True) as base:
        assert get(base + "/_fault/404")[0] == 404
        assert get(base + "/_fault/500")[0] == 500
        assert get(base + "/_fault/unknown")[0] == 404
        status, body, headers = get(base + "/_fault/notimage")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(body))
        assert get(base + "/a.png")[1] == TINY_PNG  # files still served


def test_fault_slow(site):
    with serve_directory(site, faults=True) as base:
        t0 = time.monotonic()
        status, body, _ = get(base + "/_fault/slow?seconds=0.6")
        assert status == 200 and time.monotonic() - t0 >= 0.6
        assert Image.open(io.BytesIO(body)).format == "PNG"
        with pytest.raises(TimeoutError):  # a client timeout fires
            urllib.request.urlopen(base + "/_fault/slow?seconds=5", timeout=0.3).read()
        for bad in ("-1", "61", "nan", "x"):
            assert get(base + f"/_fault/slow?seconds={bad}")[0] == 400


def test_fault_slow_is_cut_short_by_shutdown(site):
    done = {}
    with serve_directory(site, faults=True) as base:

        def slow():
            done["status"] = get(base + "/_fault/slow?seconds=60", timeout=30)[0]

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
    t.join(10)
    assert not t.is_alive() and done["status"] == 200
    assert time.monotonic() - t0 < 5


def test_fault_truncated(site):
    with serve_directory(site, faults=True) as base:
        with urllib.request.urlopen(base + "/_fault/truncated", timeout=10) as r:
            announced = int(r.headers["Content-Length"])
            with pytest.raises(http.client.IncompleteRead) as info:
                r.read()
        assert len(info.value.partial) == announced - TRUNCATED_MISSING


def test_fault_bomb(site):
    with serve_directory(site, faults=True) as base:
        status, body, headers = get(base + "/_fault/bomb")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert len(body) < 1_000_000  # small file ...
    assert body[:8] == b"\x89PNG\r\n\x1a\n" and body[12:16] == b"IHDR"
    assert struct.unpack(">II", body[16:24]) == (BOMB_SIZE, BOMB_SIZE)  # ... huge image
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))


def test_fault_optout(site):
    with serve_directory(site, faults=True) as base:
        status, body, headers = get(base + "/_fault/optout")
    assert status == 200 and Image.open(io.BytesIO(body)).format == "PNG"
    # img2dataset splits the header on "," and refuses noai / noimageai by default
    directives = [d.strip().lower() for v in headers.get_all("X-Robots-Tag") for d in v.split(",")]
    assert OPTOUT_HEADER == "noai, noimageai" and {"noai", "noimageai"} <= set(directives)


# -- CLI --------------------------------------------------------------------------------


def test_cli_serves_until_sigterm(site, tmp_path):
    url_file = tmp_path / "url.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.httpserver", str(site), "--faults", "--url-file", str(url_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        assert get(base + "/a.png")[1] == TINY_PNG
        assert get(base + "/_fault/500")[0] == 500
        assert url_file.read_text().strip() == base
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""  # quiet: no request log, no traceback
    assert port_closed(base)
    assert not url_file.exists()


def test_cli_sigint(site):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.httpserver", str(site)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        base = proc.stdout.readline().strip()
        assert get(base + "/a.png")[0] == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == ""
    assert port_closed(base)


def test_cli_bad_root(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tests.support.httpserver", str(tmp_path / "absent")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "absent: folder to serve not found" in res.stderr
