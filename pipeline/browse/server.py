"""The browser's HTTP side: a stdlib ThreadingHTTPServer on 127.0.0.1 and its routes.

Routes (GET and HEAD; every page is HTML, an unknown query, key, shard or page is a 404 page):

  /                      totals, the query finder (`?q=`: prefix or substring), top queries,
                         the most frequent failure reasons
  /query/QUERY           one query (URL-quoted, case-sensitive): its story and a paged grid of
                         its images (`?page=N`)
  /search?text=T         images whose caption contains T (`&page=N`)
  /sample/SHARD/KEY      one sample: image, caption, its parquet row and its tar's KEY.json
  /image/SHARD/KEY       the image's bytes, one byte-range read from SHARD.tar
  /failures              failure reasons; /failures/REASON (URL-quoted): its samples, paged

Only loopback: the socket is bound to 127.0.0.1 and nothing else, and a request whose Host
header names another host is refused (a web page cannot reach the server through a
rebinding DNS name). Path segments are URL-decoded one by one after splitting, so an
encoded slash stays inside its segment; a segment that decodes to `.` or `..` (or holds a
NUL) is refused with 400, and a shard must be one of the shards the index holds (digits
only, checked again by `ShardImages`) before any file is opened. Keys are only looked up,
never joined into a path. Responses carry a Content-Security-Policy that allows images
and forms from this server and inline styles only: no scripts, nothing from elsewhere.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import signal
import socketserver
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..audit.tars import ShardImages, read_member
from ..errors import InputError
from . import pages
from .index import FAILURES_PER_PAGE, PER_PAGE, Index

HOST = "127.0.0.1"  # the only address the browser listens on
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
MAX_PAGE = 10_000_000
MAX_TEXT = 500  # characters of a search text
HTML = "text/html; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)


def _html(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"))


def _not_found(message: str, suggestions: list[dict] | None = None) -> Response:
    return _html(404, pages.not_found(message, suggestions))


def _bad_request(message: str) -> Response:
    return _html(400, pages.error_page(400, "Bad request", message))


class App:
    """Routes a request target to a Response; shared by the server's threads."""

    def __init__(
        self, index: Index, images: ShardImages, per_page: int = PER_PAGE, failures_per_page: int = FAILURES_PER_PAGE
    ):
        self.index = index
        self.images = images
        self.per_page = per_page
        self.failures_per_page = failures_per_page

    def respond(self, target: str) -> Response:
        split = urlsplit(target)
        if not split.path.startswith("/"):
            return _bad_request("the request path must start with /")
        segments = []
        for raw in split.path.split("/")[1:]:  # split first: an encoded slash stays in its segment
            try:
                seg = unquote(raw, errors="strict")
            except UnicodeDecodeError:
                return _bad_request("the path is not UTF-8")
            if seg in (".", "..") or "\0" in seg:
                return _bad_request("a path segment may not be '.' or '..'")
            segments.append(seg)
        try:
            params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True, errors="strict").items()}
        except UnicodeDecodeError:
            return _bad_request("the query string is not UTF-8")
        head, rest = segments[0], segments[1:]
        if head == "" and not rest:
            return self.home(params.get("q", ""))
        if head == "query" and len(rest) == 1:
            return self.query(rest[0], params)
        if head == "search" and not rest:
            return self.search(params)
        if head == "sample" and len(rest) == 2:
            return self.sample(*rest)
        if head == "image" and len(rest) == 2:
            return self.image(*rest)
        if head == "failures" and not rest:
            return _html(200, pages.failures_page(self.index.totals, self.index.failure_reasons()))
        if head == "failures" and len(rest) == 1:
            return self.failure(rest[0], params)
        if head == "favicon.ico" and not rest:
            return Response(204, b"", "image/x-icon")
        return _not_found(f"No page at {split.path}.")

    # -- pages --------------------------------------------------------------------------------
    def home(self, q: str) -> Response:
        if len(q) > MAX_TEXT:
            return _bad_request(f"a query search is at most {MAX_TEXT} characters")
        found = self.index.search_queries(q) if q.strip() else None
        where = {"shards": str(self.index.inp.shards), "queries": str(self.index.inp.queries_file)}
        reasons = self.index.failure_reasons(limit=10)
        return _html(200, pages.home(where, self.index.totals, q, found, self.index.top_queries(), reasons))

    def query(self, word: str, params: dict) -> Response:
        page_no = _page(params)
        if isinstance(page_no, Response):
            return page_no
        info = self.index.query(word)
        if info is None:
            return _not_found(
                f"“{word}” is not in the query list (queries are case-sensitive).",
                self.index.search_queries(word, limit=10) if len(word) <= MAX_TEXT else None,
            )
        last = max(1, math.ceil(int(info.get("images_in_shards") or 0) / self.per_page))
        if page_no > last:
            return _not_found(
                f"“{word}” has {last} page{'s' if last != 1 else ''} of images; there is no page {page_no}."
            )
        images = self.index.query_images(int(info["query_id"]), page_no, self.per_page)
        return _html(200, pages.query_page(info, images, page_no, last))

    def search(self, params: dict) -> Response:
        text = params.get("text", "")
        if not text.strip():
            return _html(200, pages.search_form())
        if len(text) > MAX_TEXT:
            return _bad_request(f"a caption search is at most {MAX_TEXT} characters")
        page_no = _page(params)
        if isinstance(page_no, Response):
            return page_no
        rows, has_next = self.index.caption_search(text, page_no, self.per_page)
        return _html(200, pages.search_page(text, rows, page_no, has_next))

    def _known_shard(self, shard: str) -> bool:
        return shard.isdigit() and shard in self.index.shards

    def sample(self, shard: str, key: str) -> Response:
        if not self._known_shard(shard):
            return _not_found(f"No shard {shard!r} in {self.index.inp.shards}.")
        row = self.index.sample(shard, key)
        if row is None:
            return _not_found(f"No sample with key {key!r} in shard {shard}.")
        try:
            members = self.images.index(shard).get(key, {})
        except (FileNotFoundError, KeyError):
            members = {}
        meta = None
        if "json" in members:
            try:
                meta = json.loads(read_member(self.images.tar(shard), members["json"]))
            except (OSError, ValueError):
                meta = None
        ids = [int(i) for i in (row.get("query_ids") or [])]
        has_image = bool(members) and self.images.find(shard, key) is not None  # the tar index's rule (IMAGE_EXTS)
        return _html(
            200,
            pages.sample_page(
                shard,
                key,
                row,
                has_image,
                {ext: m.size for ext, m in members.items()},
                meta if isinstance(meta, dict) else None,
                str(self.images.tar(shard)),
                self.index.query_names(ids),
            ),
        )

    def image(self, shard: str, key: str) -> Response:
        if not self._known_shard(shard):
            return _not_found(f"No shard {shard!r}.")
        try:
            found = self.images.image(shard, key)
        except (FileNotFoundError, KeyError):
            found = None
        if found is None:
            return _not_found(f"No image with key {key!r} in shard {shard}.")
        ext, data = found
        return Response(
            200, data, CONTENT_TYPES.get(ext, "application/octet-stream"), [("Cache-Control", "max-age=86400")]
        )

    def failure(self, reason: str, params: dict) -> Response:
        page_no = _page(params)
        if isinstance(page_no, Response):
            return page_no
        count = self.index.failure_count(reason)
        if count == 0:
            return _not_found("No failed download has this reason.")
        last = max(1, math.ceil(count / self.failures_per_page))
        if page_no > last:
            return _not_found(f"This reason has {last} page{'s' if last != 1 else ''}; there is no page {page_no}.")
        rows = self.index.failures(reason, page_no, self.failures_per_page)
        return _html(200, pages.failure_page(reason, count, rows, page_no, last))


def _page(params: dict) -> int | Response:
    text = params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        return _bad_request(f"page must be a number from 1 to {MAX_PAGE:,}, not {text[:40]!r}")
    return int(text)


def _host_is_loopback(host_header: str | None) -> bool:
    if not host_header:
        return True  # HTTP/1.0 without Host: the client is on this machine anyway
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_NAMES


class Handler(http.server.BaseHTTPRequestHandler):
    server: BrowseServer
    server_version = "wit-browse/1"
    protocol_version = "HTTP/1.1"  # keep-alive: a page of 48 images reuses its connections
    timeout = 60  # seconds an idle or stalled client may hold its thread

    def log_message(self, format, *args):  # noqa: A002 - quiet; errors go to stderr in _serve
        pass

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        app = self.server.app
        if not _host_is_loopback(self.headers.get("Host")):
            res = _bad_request("this server answers requests for 127.0.0.1 or localhost only")
        elif app is None:
            res = Response(503, b"the index is being built\n", "text/plain; charset=utf-8")
        else:
            try:
                res = app.respond(self.path)
            except Exception:  # noqa: BLE001 - a bug: its traceback on stderr, a 500 page to the client
                traceback.print_exc(file=sys.stderr)
                res = _html(500, pages.error_page(500, "Server error", "The server hit an error; see its log."))
        self.send_response(res.status)
        self.send_header("Content-Type", res.content_type)
        self.send_header("Content-Length", str(len(res.body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in res.headers:
            self.send_header(name, value)
        self.end_headers()
        if body and res.body:
            self.wfile.write(res.body)


class BrowseServer(http.server.ThreadingHTTPServer):
    """Bound to 127.0.0.1:`port` (0: a free port) on creation; `app` answers once it is set."""

    daemon_threads = True

    def __init__(self, port: int, app: App | None = None):
        self.app = app
        super().__init__((HOST, port), Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: it looks up a host name
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def handle_error(self, request, client_address):
        """A client that hangs up or stalls is the client's business: stay quiet."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def bind(port: int) -> BrowseServer:
    try:
        return BrowseServer(port)
    except OSError as e:
        raise InputError(f"--port {port}: cannot listen on {HOST}:{port} ({e.strerror or e})") from None


@contextlib.contextmanager
def running(app: App, port: int = 0) -> Iterator[BrowseServer]:
    """Serve `app` from a background thread until the block ends."""
    server = bind(port)
    server.app = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Terminated(Exception):
    """SIGTERM: stop serving, exit 0."""


def _on_term(_signum, _frame):
    raise _Terminated


def serve(queries, shards, port: int, memory_limit: str) -> int:
    """`python -m pipeline browse`: index, print the URL, serve until Ctrl-C (130) or SIGTERM (0)."""
    from ..audit.views import open_inputs

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_term) if main_thread else None
    try:
        with open_inputs(queries, shards, memory_limit=memory_limit) as inp:
            server = bind(port)  # before the index: a busy port is an error at once
            index = None
            try:
                index = Index.build(inp)
                t = index.totals
                print(
                    f"browse: indexed {t['attempts']:,} samples ({t['images']:,} images, {t['shards']:,} shards, "
                    f"{t['queries_with_images']:,} of {t['queries']:,} queries with images) in {index.seconds:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                server.app = App(index, ShardImages(inp.shards))
                print(f"browse: serving {server.url} (Ctrl-C to stop)", flush=True)
                server.serve_forever(poll_interval=0.25)
            finally:
                server.server_close()
                if index is not None:
                    index.close()
    except _Terminated:
        print("browse: stopped", file=sys.stderr, flush=True)
        return 0
    except KeyboardInterrupt:
        print("browse: stopped", file=sys.stderr, flush=True)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
