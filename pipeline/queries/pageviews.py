"""Per-title view counts from Wikimedia pageview dumps, one file at a time.

CLIP kept "titles of Wikipedia articles above a search-volume threshold"; MetaCLIP summed
English titles over hourly pageview dumps, counting a (title, hour) only when it had at
least 50 views (noise and bot floor), then kept titles with >= 70 views in total. This
module does the per-file part: stream one file, return {title: views kept} for the wanted
domain codes. Summing over files (`pageview_counting.py`) and the final threshold
(`aggregate.py`) belong to the callers, so memory holds one file's counts at a time and
files of different formats can be mixed freely.

Formats, recognised from the first data line (and, for daily vs monthly, the file name):

``hourly``  ``pageviews-YYYYMMDD-HH0000.gz`` (2015-) and the legacy ``pagecounts-raw`` /
    ``pagecounts-all-sites`` files: ``domain_code page_title count_views
    total_response_size`` (the size is always 0 in ``pageviews``). Domain codes: ``en``
    desktop English Wikipedia, ``en.m`` mobile, ``en.b`` Wikibooks... The rule applies to
    the line's count.
``daily``  ``pageview_complete`` daily files ``pageviews-YYYYMMDD-{user,automated,
    spider}.bz2``: ``wiki_code page_title page_id access_method daily_total
    hourly_counts``, e.g. ``en.wikipedia Albert_Einstein 736 desktop 25683 A1012B1108...``.
    ``hourly_counts`` is the hour letter (A = 00h ... X = 23h) followed by that hour's
    views, zero hours omitted. ``page_id`` is ``null`` when unknown; the first version of
    Wikimedia's dump job omitted a missing page_id instead (5-field lines, accepted too;
    the 2011-2015 back-fill has no page ids). The rule applies to each hour. One line
    per access method (desktop, mobile-web, mobile-app): each line's hours are judged on
    their own, as ``en`` and ``en.m`` lines are in hourly files.
``monthly``  ``pageview_complete`` monthly files ``pageviews-YYYYMM-user.bz2``: same
    fields, but the letters are days (A = day 1 ... Z = 26, then ``[ \\ ] ^ _`` = 27-31).
    Hours are not known, so a day counts when it averages the threshold per hour
    (views >= 24 * min_hourly_views). Told from daily files by the 6-digit date in the
    name, or by a day letter after X.
``ez``  Erik Zachte's merged ``pagecounts-ez`` files (2011-2016; ``#`` comment header):
    ``project page_title total counts`` with project like ``en.z`` (z = Wikipedia) and
    counts either hour-coded like daily files (``?`` marks a missing hour, counted as 0)
    or, in monthly files, comma-separated day groups: day letter, then hour letter +
    views (``BE33,CH155`` = 33 views on day 2 at 04h, 155 on day 3 at 07h). Both keep
    the per-hour rule. A wanted ``xx.wikipedia`` domain also selects ``xx.z`` lines, the
    mapping Wikimedia used when it re-published these files as ``pageview_complete``.

Lines that do not parse (wrong field count, non-integer count, malformed hour code, title
not UTF-8, a count above MAX_VIEWS) are skipped and counted, never fatal. Only lines of a wanted domain are parsed
(the domain test is a prefix check, which keeps the ~90% of other-domain lines cheap), and
a letter-coded line whose total is below the threshold is not decoded (none of its hours
can pass), so ``bad_lines`` counts malformed lines that could have counted. A file that
cannot be read or decompressed (missing, not gzip/bz2 though named so, truncated) is an
``InputError`` naming the file.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec

from ..errors import InputError

READ_BYTES = 1 << 20
FORMATS = ("hourly", "daily", "monthly", "ez")
# Give up on a file whose first this-many lines match no known format.
MAX_LEADING_BAD_LINES = 1000

_DAY = rb"[A-Z\[\\\]^_]"  # day 1..31
_HOURS = rb"(?:[A-X](?:[0-9]+|\?))+"  # hour letter + views ('?' = missing, pagecounts-ez)
HOUR_CODE = re.compile(_HOURS)
DAY_CODE = re.compile(rb"(?:" + _DAY + rb"[0-9]+)+")
EZ_CODE = re.compile(_HOURS + rb"|" + _DAY + _HOURS + rb"(?:," + _DAY + _HOURS + rb")*,?")
_DIGITS = re.compile(rb"[0-9]+")  # letters carry no digits: these are exactly the counts
_MONTHLY_NAME = re.compile(r"pageviews-\d{6}-")

# A count of more than 12 digits (a trillion views: years of all of Wikipedia's traffic, in
# one line) is corruption, counted as a bad line; so is a line that would lift a title's
# total in one file above it. Besides refusing nonsense, this keeps every sum far inside the
# int64 the parts are stored in (a 20-digit count would crash the stage with an
# OverflowError), and a digit run is measured before int() parses it.
MAX_DIGITS = 12
MAX_VIEWS = 10**MAX_DIGITS - 1

STAT_KEYS = ("lines", "kept_lines", "other_domain_lines", "below_threshold", "bad_lines", "comment_lines", "views")


def detect_format(first_line: bytes | str, name: str = "") -> str | None:
    """Format of a file from its first data line (and name, to tell daily from monthly);
    None when the line fits no known format."""
    if isinstance(first_line, str):
        first_line = first_line.encode("utf-8", "replace")
    parts = first_line.split()
    if len(parts) == 4 and parts[2].isdigit():
        if parts[3].isdigit():
            return "hourly"
        if EZ_CODE.fullmatch(parts[3]):
            return "ez"
    if len(parts) in (5, 6) and parts[-2].isdigit():
        code = parts[-1]
        monthly_name = _MONTHLY_NAME.search(posixpath.basename(name)) is not None
        if not monthly_name and HOUR_CODE.fullmatch(code):
            return "daily"
        if DAY_CODE.fullmatch(code):
            return "monthly"
    return None


def file_title_views(
    path: str,
    domains: Iterable[str] = ("en", "en.wikipedia"),
    min_hourly_views: int = 50,
    formats: Iterable[str] | None = None,
    by_domain: bool = False,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Views per title (as written in the file, underscores kept) in one pageview file.

    Only lines whose domain/wiki code is in ``domains`` count, and of those only hours with
    >= ``min_hourly_views`` views (days with >= 24x that in monthly files). Returns
    (views, stats); a file whose format is not in ``formats`` (None: any) is an
    ``InputError``. stats has ``lines = kept_lines + other_domain_lines + below_threshold +
    bad_lines + comment_lines``, ``views`` (the sum kept) and ``format_<name>: 1``.

    ``by_domain`` (many languages at once): keys are ``"<domain> <title>"``, the domain
    test is a set lookup on a line's first field (a prefix test per domain would cost a
    comparison per wanted domain per line), and stats also has ``other_domains``: lines per
    domain not wanted.
    """
    domains = tuple(domains)
    threshold = max(int(min_hourly_views), 1)
    views: dict[str, int] = {}
    stats: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0)
    try:
        with fsspec.open(path, "rb", compression="infer") as f:
            lines: Iterator[bytes] = itertools.chain.from_iterable(_blocks(f))
            fmt = None
            for line in lines:
                if line.startswith(b"#"):
                    stats["lines"] += 1
                    stats["comment_lines"] += 1
                    continue
                fmt = detect_format(line, path)
                if fmt:
                    break
                stats["lines"] += 1
                stats["bad_lines"] += 1
                if stats["bad_lines"] >= MAX_LEADING_BAD_LINES:
                    raise InputError(
                        f"{path}: not a known pageview format (first {MAX_LEADING_BAD_LINES} "
                        f"lines fit none of {', '.join(FORMATS)}; e.g. {line[:80]!r})"
                    )
            if fmt is None:  # empty, or only comments / bad lines
                return views, stats
            if formats is not None and fmt not in formats:
                raise InputError(
                    f"{path}: a {fmt} pageview file, but only {', '.join(formats)} files "
                    "are read here (the metaclip recipe sums hourly files)"
                )
            stats[f"format_{fmt}"] = 1
            lines = itertools.chain([line], lines)
            prefixes = _prefixes(domains, fmt)
            others: Counter[bytes] = Counter()
            if by_domain:
                lines, prefixes = _wanted_lines(lines, prefixes, others), (b"",)
            if fmt == "hourly":
                _count_hourly(lines, prefixes, threshold, views, stats, by_domain)
            else:
                if fmt == "monthly":
                    threshold *= 24
                code = {"daily": HOUR_CODE, "monthly": DAY_CODE, "ez": EZ_CODE}[fmt]
                fields = (4,) if fmt == "ez" else (5, 6)
                _count_coded(lines, prefixes, fields, code, threshold, views, stats, by_domain)
            if by_domain:
                n = sum(others.values())
                stats["lines"] += n
                stats["other_domain_lines"] += n
                stats["other_domains"] = {k.decode("utf-8", "replace"): v for k, v in sorted(others.items())}
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read or decompress: {e}") from None
    return views, stats


def _blocks(f) -> Iterator[list[bytes]]:
    """Lines (without newline) in lists of ~1 MiB: far faster than readline per line."""
    rest = b""
    while chunk := f.read(READ_BYTES):
        block = (rest + chunk).split(b"\n")
        rest = block.pop()
        yield block
    if rest:
        yield [rest]


def _prefixes(domains: tuple[str, ...], fmt: str) -> tuple[bytes, ...]:
    """Line prefixes selecting the wanted domains (domain code + the space after it)."""
    codes = set(domains)
    if fmt == "ez":  # pagecounts-ez spells xx.wikipedia as xx.z
        codes |= {d[: -len(".wikipedia")] + ".z" for d in domains if d.endswith(".wikipedia")}
    return tuple(sorted(c.encode() + b" " for c in codes))


def _wanted_lines(lines, prefixes: tuple[bytes, ...], others: Counter) -> Iterator[bytes]:
    """The lines whose first field (+ its space) is one of `prefixes`; the others counted
    per domain."""
    wanted = frozenset(p[:-1] for p in prefixes)
    for line in lines:
        domain = line[: line.find(b" ")]
        if domain in wanted:
            yield line
        else:
            others[domain] += 1


def _key(parts: list[bytes], by_domain: bool) -> str:
    return (parts[0] + b" " + parts[1] if by_domain else parts[1]).decode()


def _count_hourly(lines, prefixes, threshold, views, stats, by_domain=False) -> None:
    """Hot loop for 4-field hourly lines (~10M per file); plain locals for speed."""
    n = other = bad = below = kept = total = 0
    get = views.get
    for line in lines:
        n += 1
        if not line.startswith(prefixes):
            other += 1
            continue
        parts = line.split()
        if len(parts) != 4 or not parts[2].isdigit() or len(parts[2]) > MAX_DIGITS:
            bad += 1
            continue
        count = int(parts[2])
        if count < threshold:
            below += 1
            continue
        try:
            title = _key(parts, by_domain)
        except UnicodeDecodeError:
            bad += 1
            continue
        summed = get(title, 0) + count
        if summed > MAX_VIEWS:
            bad += 1
            continue
        views[title] = summed
        kept += 1
        total += count
    _add(stats, n, other, bad, below, kept, total)


def _count_coded(lines, prefixes, fields, code_re, threshold, views, stats, by_domain=False) -> None:
    """Loop for letter-coded lines (daily, monthly, ez): each coded count is judged alone."""
    n = other = bad = below = kept = total = 0
    get = views.get
    valid = code_re.fullmatch
    digits = _DIGITS.findall
    for line in lines:
        n += 1
        if not line.startswith(prefixes):
            other += 1
            continue
        parts = line.split()
        if len(parts) not in fields or not parts[-2].isdigit() or len(parts[-2]) > MAX_DIGITS:
            bad += 1
            continue
        if int(parts[-2]) < threshold:  # the line total bounds every hour: skip decoding
            below += 1
            continue
        if not valid(parts[-1]):
            bad += 1
            continue
        runs = digits(parts[-1])
        if max(map(len, runs), default=0) > MAX_DIGITS:
            bad += 1
            continue
        count = sum(v for v in map(int, runs) if v >= threshold)
        if not count:
            below += 1
            continue
        try:
            title = _key(parts, by_domain)
        except UnicodeDecodeError:
            bad += 1
            continue
        summed = get(title, 0) + count
        if summed > MAX_VIEWS:
            bad += 1
            continue
        views[title] = summed
        kept += 1
        total += count
    _add(stats, n, other, bad, below, kept, total)


def _add(stats, n, other, bad, below, kept, total) -> None:
    stats["lines"] += n
    stats["other_domain_lines"] += other
    stats["bad_lines"] += bad
    stats["below_threshold"] += below
    stats["kept_lines"] += kept
    stats["views"] += total
