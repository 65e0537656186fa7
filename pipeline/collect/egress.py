"""The host policy enforced when connecting, not only on the URL text.

The pool step refuses URLs whose host is a private, loopback or link-local address, but
a host *name* can resolve to one (`vm`, `metadata.google.internal`, `127.0.0.1.nip.io`),
and a public URL can redirect to one. img2dataset fetches with urllib, so its worker
processes get an opener whose connections resolve the host themselves, refuse every
non-public address, and connect to the vetted address (no second lookup that DNS
rebinding could change). Redirects open new connections, so they are checked too.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request

from .urls import ip_refused


class RefusedHost(OSError):
    pass


def vetted_address(host: str, port: int) -> tuple:
    """The first address of `host`, if none of its addresses is private or local."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if ip_refused(ip):
            raise RefusedHost(f"refused by the host policy: {host} resolves to non-public address {ip}")
    return infos[0][4]


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        addr = vetted_address(self.host, self.port)
        self.sock = socket.create_connection(addr[:2], self.timeout, self.source_address)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        addr = vetted_address(self.host, self.port)
        sock = socket.create_connection(addr[:2], self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)


def install() -> None:
    """Make this process's urllib.request.urlopen enforce the policy (idempotent)."""
    urllib.request.install_opener(urllib.request.build_opener(_GuardedHTTPHandler, _GuardedHTTPSHandler))


def uninstall() -> None:
    """urllib's default opener again (the opener is per process, and Ray reuses processes)."""
    urllib.request.install_opener(None)
