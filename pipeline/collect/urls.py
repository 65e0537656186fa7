"""URL and caption hygiene shared by the collection stages.

* `normalise_text`: one canonical spelling of a caption (whitespace collapsed).
* `check_url`: why a URL can't be a download target, or None when it can.
* `make_uid`: the stable id of an (url, text) pair; every later stage keys on it.

Whitespace: every character Python's `str.isspace()` accepts (Unicode White_Space plus the
ASCII information separators), every other C0/C1 control character and the byte-order mark
U+FEFF become one space; runs collapse, ends are stripped. No Unicode normal form is
applied (NFC would silently change uids computed by other tools on the same pairs).

URL policy (`check_url`), in order, each returning a reason string:

* ``"scheme"``: no scheme (a relative leftover) or a scheme other than http/https
  (``data:``, ``javascript:``, ``file:``, ``ftp:``, ``mailto:`` ...).
* ``"long_url"``: longer than MAX_URL_CHARS (4,096) characters. Common servers refuse
  request lines over 8 kB (414), and an image URL that long is a tracking payload or
  garbage that every later stage would carry.
* ``"bad_url"``: whitespace, C0/C1 control characters or bidirectional formatting
  characters (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) anywhere (callers
  strip the ends first): no valid URL holds them raw, and the bidi ones make a URL display
  as another in logs and terminals; no ``//authority``, a backslash in it, no host, a host
  with characters no DNS name or IP literal has (``%``-escapes included), a port that
  is not 1-65535 in ASCII digits, a numeric host that is not a valid IPv4 address.
* ``"private_host"`` (only when ``allow_private_hosts`` is false): ``localhost`` and
  ``*.localhost`` (and Debian's ``ip6-localhost``/``ip6-loopback``), and IP literals that
  are not globally routable: private, loopback, link-local, multicast, reserved,
  unspecified, shared (100.64/10), documentation ranges; IPv4-mapped and 6to4 IPv6
  addresses are judged by the IPv4 address inside. IPv4 hosts are read the way
  `inet_aton` (and so curl and most HTTP clients) reads them, so ``http://2130706433/``,
  ``http://127.1/`` and ``http://0x7f.0.0.1/`` all count as loopback. Host names are not
  resolved (no DNS here): a public name pointing at a private address is the downloader's
  business.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import socket

REASON_SCHEME = "scheme"
REASON_BAD_URL = "bad_url"
REASON_PRIVATE_HOST = "private_host"
REASON_LONG_URL = "long_url"
MAX_URL_CHARS = 4096

_WS_EXTRA_RE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ufeff]")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(?://([^/?#]*))?")
_BAD_CHARS_RE = re.compile(r"[\x00-\x20\x7f-\x9f\s\ufeff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Host names: DNS letters/digits/hyphen/dot, underscore (seen in the wild), and any non-ASCII
# character (internationalised names before punycode). urlsplit has lowercased it already.
_HOST_RE = re.compile(r"[a-z0-9_\-.\u0080-\U0010ffff]+")
_NUMERIC_LABEL_RE = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_PORT_RE = re.compile(r"[0-9]*")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def normalise_text(text: str | None) -> str | None:
    """Collapse all Unicode whitespace and control characters to single spaces; strip.

    None stays None; the result may be "" (callers treat that as no text).
    """
    if text is None:
        return None
    if _WS_EXTRA_RE.search(text):
        text = _WS_EXTRA_RE.sub(" ", text)
    return " ".join(text.split())


def make_uid(url: str, text: str) -> str:
    """Stable 16-hex-character id of an (url, text) pair (blake2b, 8-byte digest)."""
    return hashlib.blake2b((url + "\x00" + text).encode("utf-8"), digest_size=8).hexdigest()


def uid_key(uid: str) -> int:
    """A uid's 64-bit number, for the pool's dedup and the balance draws: our own 16-hex-digit
    uids as their value, a source's 32-hex-digit ones (DataComp's) as their halves' xor (they
    are hashes already), any other string by its blake2b-64."""
    if len(uid) == 16 or len(uid) == 32:
        try:
            value = int(uid, 16)
        except ValueError:
            pass
        else:
            return value if len(uid) == 16 else (value >> 64) ^ (value & 0xFFFFFFFFFFFFFFFF)
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def ip_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.version == 6:
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None and ip_refused(inner):
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@functools.lru_cache(maxsize=1 << 16)
def _host_verdict(host: str, bracketed: bool) -> str | None:
    """bad_url / private_host / None for a lowercased host (brackets already removed)."""
    if bracketed:
        try:
            ip = ipaddress.IPv6Address(host)  # zone ids ("fe80::1%25eth0") are accepted
        except ValueError:
            return REASON_BAD_URL
        return REASON_PRIVATE_HOST if ip_refused(ip) else None
    if len(host) > 253 or not _HOST_RE.fullmatch(host):
        return REASON_BAD_URL
    name = host[:-1] if host.endswith(".") else host
    if not name or name.startswith(".") or ".." in name:
        return REASON_BAD_URL
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return REASON_PRIVATE_HOST
    last = name.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL_RE.fullmatch(last):
        # WHATWG URL: a host whose last label is numeric is an IPv4 address or invalid.
        if not all(_NUMERIC_LABEL_RE.fullmatch(p) for p in name.split(".")):
            return REASON_BAD_URL
        try:
            ip4 = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            return REASON_BAD_URL
        return REASON_PRIVATE_HOST if ip_refused(ip4) else None
    return None


def check_url(url: str | None, allow_private_hosts: bool = False) -> str | None:
    """Why `url` can't be downloaded (``scheme``, ``long_url``, ``bad_url``, ``private_host``), or None.

    The caller strips surrounding whitespace; whitespace left inside is a ``bad_url``.
    """
    if not url:
        return REASON_BAD_URL
    m = _SCHEME_RE.match(url)
    if m is None or m.group(1).lower() not in ("http", "https"):
        return REASON_SCHEME
    if len(url) > MAX_URL_CHARS:
        return REASON_LONG_URL
    if _BAD_CHARS_RE.search(url):
        return REASON_BAD_URL
    netloc = m.group(2)  # RFC 3986 authority: after "//", up to the first / ? or #
    if not netloc or "\\" in netloc:
        return REASON_BAD_URL
    hostport = netloc.rpartition("@")[2]
    if not hostport:
        return REASON_BAD_URL
    bracketed = hostport.startswith("[")
    if bracketed:
        host, sep, rest = hostport[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return REASON_BAD_URL
        port = rest[1:] if rest else ""
    else:
        host, _, port = hostport.partition(":")
    if port and (not _PORT_RE.fullmatch(port) or not 0 < int(port) <= 65535):
        return REASON_BAD_URL
    if not host:
        return REASON_BAD_URL
    verdict = _host_verdict(host.lower(), bracketed)
    if verdict == REASON_PRIVATE_HOST and allow_private_hosts:
        return None
    return verdict
