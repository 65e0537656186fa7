"""A loopback HTTP server for a folder, so that the download stage does real HTTP.

`serve_directory(root)` runs a stdlib ThreadingHTTPServer on a free port in a background
thread and yields its base URL (``http://127.0.0.1:PORT``); the server is shut down and its
port closed when the block ends, however it ends (exception, KeyboardInterrupt).

It serves regular files under `root` (GET and HEAD), nothing else: no directory listings
(404), no path that leaves the folder. A path with a ``..`` segment, in clear or encoded
(``..%2f``), a backslash or a NUL is refused with 403, as is a symbolic link that resolves
outside `root` (links inside it, as in the openclipart package, are followed). Query
strings are ignored. Request logging is off.

The tests' failure routes (``/_fault/...``) and command line are in tests/support/httpserver.py,
which subclasses `DirectoryHandler`.
"""

from __future__ import annotations

import contextlib
import http.server
import mimetypes
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InputError

REQUEST_QUEUE_SIZE = 1024  # listen backlog: img2dataset opens many connections at once


class DirectoryHandler(http.server.BaseHTTPRequestHandler):
    server_version = "wit-sample/1"
    timeout = 60  # seconds a stalled client may hold its thread
    root: Path  # set on the subclass made by serve_directory
    stopping: threading.Event  # set when the server shuts down

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    # -- helpers ------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, content_type: str, body: bool, headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, body: bool) -> None:
        msg = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
        self._send(status, msg, "text/plain; charset=utf-8", body)

    def _respond(self, body: bool) -> None:
        target = self._resolve(urlsplit(self.path).path)
        if isinstance(target, int):
            return self._error(target, body)
        try:
            f = open(target, "rb")
        except OSError:
            return self._error(404, body)
        with f:
            size = os.fstat(f.fileno()).st_size
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile)

    def _resolve(self, url_path: str) -> Path | int:
        """The file for a URL path, or the HTTP status to answer (403 or 404)."""
        try:
            rel = unquote(url_path, errors="strict")
        except UnicodeDecodeError:
            return 404
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\0" in p for p in parts):
            return 403
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return 404
        if not real.is_relative_to(self.root):
            return 403
        return real if real.is_file() else 404


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def handle_error(self, request, client_address):
        """A client that hangs up or stalls is the client's business: stay quiet."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def serve_directory(
    root: str | Path, host: str = "127.0.0.1", port: int = 0, handler: type[DirectoryHandler] = DirectoryHandler
) -> Iterator[str]:
    """Serve `root` over HTTP in a background thread; yield the base URL (no final slash).

    `handler` is `DirectoryHandler` or a subclass of it (the tests' one adds failure routes)."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise InputError(f"{root}: folder to serve not found")
    bound: type[DirectoryHandler] = type(
        "Handler", (handler,), {"root": root_path.resolve(), "stopping": threading.Event()}
    )
    server = (_Server6 if ":" in host else _Server)((host, port), bound)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"httpserver:{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    try:
        bound_port = server.server_address[1]
        yield f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
    finally:
        bound.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
