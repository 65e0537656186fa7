"""What a download may reach and how long and how much it may take, enforced on the socket.

Host policy. The pool step refuses URLs whose host is a private, loopback or link-local
address, but a host *name* can resolve to one (`vm`, `metadata.google.internal`,
`127.0.0.1.nip.io`), and a public URL can redirect to one. img2dataset fetches with urllib,
so its worker processes get an opener whose connections resolve the host themselves,
refuse every non-public address, and connect to the vetted address (no second lookup that
DNS rebinding could change). Redirects open new connections, so they are checked too.

Limits. img2dataset's `timeout` bounds each socket operation, not the download: a server
that sends a byte a second, or a header line at a time, holds a worker for as long as it
likes, and `read()` takes a body of any size. So every download (the first request and its
redirects, from connecting to the last body byte) gets a total `deadline`, and a body over
`max_bytes` is refused: at once when its Content-Length says so, else as soon as more than
`max_bytes` arrive. Both end the download with an error (`DeadlineExceeded`, `TooLarge`)
whose message img2dataset records as the sample's `error_message`.

urllib has neither limit, so they are built from its own parts: an opener (`install`)
that starts the clock for each `urlopen`, http.client's `_create_connection` hook (vetting
and connecting within the time left; proxies and tunnels work as in urllib), and a response
class whose socket reads each wait at most the time left and whose `read()` counts bytes.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import cast

from .urls import ip_refused

_READ_CHUNK = 1 << 16
# socket's "no timeout given" sentinel, which http.client passes on; private, so not in typeshed
_DEFAULT_TIMEOUT = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


class RefusedHost(OSError):
    pass


class DeadlineExceeded(TimeoutError):
    pass


class TooLarge(OSError):
    pass


@dataclass(frozen=True)
class Policy:
    """What the opener of a download process enforces (picklable: it travels to workers).

    `guard`: refuse non-public addresses (False with --allow-private-hosts). `allow`:
    "IP:PORT" addresses let through although not public; for tests, where only loopback
    exists and a loopback server must play a public one. `deadline` (seconds) and
    `max_bytes` apply with or without the guard; None switches one off.
    """

    guard: bool
    deadline: float | None
    max_bytes: int | None
    allow: tuple[str, ...] = ()


OFF = Policy(guard=False, deadline=None, max_bytes=None)  # urllib's own behaviour: no guard, no limits
_POLICY = OFF  # per process: what `install` last set
_CLOCK = threading.local()  # per thread: the deadline (time.monotonic()) of the urlopen running there


def vetted_address(host: str, port: int, allow: tuple[str, ...] = ()) -> tuple:
    """The first address of `host`, if none of its addresses is private or local."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # an IPv4/IPv6 address string
        if ip_refused(ip) and _hostport(ip, port) not in allow:
            raise RefusedHost(f"refused by the host policy: {host} resolves to non-public address {ip}")
    return infos[0][4]


def _hostport(ip, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _deadline_message() -> str:
    return f"download deadline of {_POLICY.deadline:g} s exceeded"


def _left(deadline: float | None) -> float | None:
    """Seconds left before `deadline` (None: no deadline); DeadlineExceeded when none are."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(_deadline_message())
    return left


def _bounded(timeout, left: float | None):
    """The socket timeout for one operation: the per-operation `timeout`, cut to the time left."""
    if left is None:
        return timeout
    if timeout is None or timeout is _DEFAULT_TIMEOUT:
        return left
    return min(timeout, left)


def _create_connection(address, timeout=_DEFAULT_TIMEOUT, source_address=None) -> socket.socket:
    """http.client's `_create_connection` hook: the vetted address, within the time left."""
    host, port = address[:2]
    deadline = getattr(_CLOCK, "deadline", None)
    timeout = _bounded(timeout, _left(deadline))
    addr = vetted_address(host, port, _POLICY.allow)[:2] if _POLICY.guard else (host, port)
    try:
        return socket.create_connection(addr, timeout, source_address)
    except TimeoutError:
        _left(deadline)  # the deadline, not the per-operation timeout, cut it short: say so
        raise


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each waiting at most until the download's deadline.

    http.client reads the status line, headers and body through one buffered file over
    the socket; bounding each raw read by the time left bounds them all together.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # a SocketIO: keeps the socket open while we read
        self._timeout = sock.gettimeout()
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int | None:
        self._sock.settimeout(_bounded(self._timeout, _left(self._deadline)))
        try:
            return self._raw.readinto(b)
        except TimeoutError:
            _left(self._deadline)
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _LimitedResponse(http.client.HTTPResponse):
    """http.client's response, read within the download's deadline and `max_bytes`.

    `read()` with no size (what img2dataset calls) refuses a Content-Length over the cap
    before reading, and stops a body without one as soon as it passes the cap.
    """

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self._max_bytes = _POLICY.max_bytes
        deadline = getattr(_CLOCK, "deadline", None)
        if deadline is not None:
            self.fp.close()  # http.client's own file over the socket, not read from yet
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))

    def read(self, amt=None):
        cap = self._max_bytes
        if amt is not None or cap is None:
            return super().read(amt)
        if self.length is not None:
            if self.length > cap:
                self.close()
                raise TooLarge(f"response body over the {cap:,}-byte limit (Content-Length: {self.length:,})")
            return super().read()  # http.client reads exactly that much (IncompleteRead if short)
        parts, n = [], 0
        while True:
            chunk = super().read(min(_READ_CHUNK, cap + 1 - n))
            if not chunk:
                return b"".join(parts)
            n += len(chunk)
            if n > cap:
                self.close()
                raise TooLarge(f"response body over the {cap:,}-byte limit (no Content-Length)")
            parts.append(chunk)


class _HTTPConnection(http.client.HTTPConnection):
    response_class = _LimitedResponse

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _create_connection


class _HTTPSConnection(http.client.HTTPSConnection):
    response_class = _LimitedResponse

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _create_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


class _Opener:
    """urllib's opener with the clock started at each `open` (urlopen); redirects go to the
    inner opener directly, so they share the first request's deadline."""

    def __init__(self, policy: Policy):
        self._inner = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)
        self._seconds = policy.deadline

    def open(self, *args, **kwargs):
        _CLOCK.deadline = None if self._seconds is None else time.monotonic() + self._seconds
        try:
            return self._inner.open(*args, **kwargs)
        finally:
            _CLOCK.deadline = None  # the response keeps its own copy for the body

    def __getattr__(self, name):
        return getattr(self._inner, name)


def install(policy: Policy) -> None:
    """Make this process's urllib.request.urlopen enforce `policy` (idempotent)."""
    global _POLICY
    _POLICY = policy
    # _Opener stands in for an OpenerDirector (open() plus delegation), without subclassing it
    urllib.request.install_opener(cast(urllib.request.OpenerDirector, _Opener(policy)))


def uninstall() -> None:
    """urllib's default opener again: no host policy, no deadline, no size cap."""
    global _POLICY
    _POLICY = OFF
    urllib.request.install_opener(None)
