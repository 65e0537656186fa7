"""The sample's loopback HTTP server (pipeline/sample/server.py) with test routes, and test images.

`serve_directory(root, faults=True)` adds test routes under ``/_fault/`` for the download
stage's failure modes, all bounded and deterministic:

- ``/_fault/404``, ``/_fault/500``: those statuses;
- ``/_fault/slow?seconds=N``: waits N seconds (default 1, at most 60; cut short when the
  server shuts down), then 200 with a tiny valid PNG;
- ``/_fault/truncated``: a PNG whose Content-Length announces 1,000 more bytes than are
  sent; the connection is then closed (the client sees an incomplete read);
- ``/_fault/notimage``: 200 ``text/html``;
- ``/_fault/bomb``: a valid 50000x50000 1-bit greyscale PNG of 0.3 MB that would decode to
  2.5 giga-pixels (Pillow raises DecompressionBombError on opening it);
- ``/_fault/optout``: 200 with a valid PNG and ``X-Robots-Tag: noai, noimageai``, which
  img2dataset's default `disallowed_header_directives` refuses.

Without ``faults`` it is the product's server, unchanged.

CLI: ``python -m tests.support.httpserver ROOT [--host H] [--port N] [--faults]
[--url-file F]`` prints the base URL as its first line (flushed; also written to F when
given, atomically, once the server accepts connections) and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import struct
import sys
import threading
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import EXIT_INPUT_ERROR, InputError
from pipeline.io import atomic_path
from pipeline.sample import server

SLOW_MAX_SECONDS = 60.0
BOMB_SIZE = 50_000
TRUNCATED_MISSING = 1000
OPTOUT_HEADER = "noai, noimageai"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small valid RGB PNG of one colour (deterministic bytes)."""
    raw = (b"\0" + bytes(rgb) * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


TINY_PNG = make_png(4, 4)


@functools.lru_cache(maxsize=4)  # a few sizes; building the default one takes a second or two
def bomb_png(size: int = BOMB_SIZE) -> bytes:
    """A complete, valid size x size 1-bit greyscale PNG of zeros (~size**2 / 8200 bytes)."""
    row = b"\0" * (1 + (size + 7) // 8)  # filter byte + packed bits
    rows_per_chunk = max(1, (8 << 20) // len(row))
    comp = zlib.compressobj(9)
    parts = []
    for start in range(0, size, rows_per_chunk):
        parts.append(comp.compress(row * min(rows_per_chunk, size - start)))
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


class FaultHandler(server.DirectoryHandler):
    """The product's handler plus the ``/_fault/`` routes."""

    def _respond(self, body: bool) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_fault/"):
            return self._fault(path[len("/_fault/") :], body)
        return super()._respond(body)

    def _fault(self, name: str, body: bool) -> None:
        if name == "404":
            return self._error(404, body)
        if name == "500":
            return self._error(500, body)
        if name == "slow":
            query = parse_qs(urlsplit(self.path).query)
            try:
                seconds = float(query.get("seconds", ["1"])[0])
            except ValueError:
                return self._error(400, body)
            if not 0 <= seconds <= SLOW_MAX_SECONDS:  # also refuses nan
                return self._error(400, body)
            self.stopping.wait(seconds)
            return self._send(200, TINY_PNG, "image/png", body)
        if name == "truncated":
            data = make_png(64, 64, (30, 120, 200))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data) + TRUNCATED_MISSING))
            self.end_headers()
            if body:
                self.wfile.write(data)
            self.close_connection = True
            return None
        if name == "notimage":
            page = b"<!DOCTYPE html><html><body><p>Not an image.</p></body></html>\n"
            return self._send(200, page, "text/html; charset=utf-8", body)
        if name == "bomb":
            return self._send(200, bomb_png(), "image/png", body)
        if name == "optout":
            return self._send(200, TINY_PNG, "image/png", body, [("X-Robots-Tag", OPTOUT_HEADER)])
        return self._error(404, body)


def serve_directory(
    root: str | Path, host: str = "127.0.0.1", port: int = 0, faults: bool = False
) -> contextlib.AbstractContextManager[str]:
    """`pipeline.sample.server.serve_directory`, with the ``/_fault/`` routes when `faults`."""
    return server.serve_directory(root, host, port, handler=FaultHandler if faults else server.DirectoryHandler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.support.httpserver",
        description="Serve a folder over HTTP until interrupted; print the base URL first.",
    )
    ap.add_argument("root", help="folder to serve")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ap.add_argument("--port", type=int, default=0, help="port (default: 0, a free one)")
    ap.add_argument("--faults", action="store_true", help="add the /_fault/ test routes")
    ap.add_argument("--url-file", help="also write the base URL to this file once serving")
    args = ap.parse_args(argv)

    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    url_file = Path(args.url_file) if args.url_file else None
    try:
        with serve_directory(args.root, args.host, args.port, faults=args.faults) as url:
            if url_file:  # before the line on stdout: whoever reads that line finds the file too
                with atomic_path(url_file) as tmp:
                    tmp.write_text(url + "\n")
            print(url, flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as e:  # port in use, bad host
        print(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    finally:
        if url_file and url_file.exists():
            url_file.unlink()  # a stale URL must not outlive the server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
