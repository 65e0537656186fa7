"""Pageview files: every supported format, the per-hour threshold, the domain filter,
bad lines counted, compression by extension, and unreadable files as InputError."""

from __future__ import annotations

import bz2
import gzip

import fsspec
import pytest

from pipeline.errors import InputError
from pipeline.queries.pageviews import detect_format, file_title_views


def write(path, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wb") as f:
        f.write(data)
    return str(path)


def check_stats(stats):
    parts = ("kept_lines", "other_domain_lines", "below_threshold", "bad_lines", "comment_lines")
    assert stats["lines"] == sum(stats[k] for k in parts)


HOURLY = (
    "en Albert_Einstein 120 0\n"
    "en Albert_Einstein 30 0\n"  # below 50: this hour does not count
    "en Main_Page 50 0\n"  # exactly 50 counts
    "en.m Albert_Einstein 900 0\n"  # mobile: not a wanted domain by default
    "de Albert_Einstein 500 0\n"
    "en Caf\u00e9 70 0\n"
    "en Broken 12x 0\n"  # non-integer count
    "en Too_few 99\n"  # 3 fields
    "en Too many 99 0\n"  # 5 fields
    "en Negative -99 0\n"
)


def test_hourly_threshold_domain_and_bad_lines(tmp_path):
    path = tmp_path / "pageviews-20240101-000000.gz"
    raw = HOURLY.encode() + b"en Bad_\xff_utf8 80 0\n"
    views, stats = file_title_views(write(path, raw))
    assert views == {"Albert_Einstein": 120, "Main_Page": 50, "Caf\u00e9": 70}
    assert stats["lines"] == 11
    assert stats["kept_lines"] == 3
    assert stats["below_threshold"] == 1
    assert stats["other_domain_lines"] == 2
    assert stats["bad_lines"] == 5
    assert stats["views"] == 240
    assert stats["format_hourly"] == 1
    check_stats(stats)


def test_hourly_domains_and_threshold_are_parameters(tmp_path):
    path = write(tmp_path / "pageviews-20240101-010000.gz", HOURLY)
    views, _ = file_title_views(path, domains=["en", "en.m"], min_hourly_views=1)
    assert views["Albert_Einstein"] == 120 + 30 + 900
    views, _ = file_title_views(path, domains=["de"], min_hourly_views=600)
    assert views == {}


def test_hourly_legacy_pagecounts_and_plain_text(tmp_path):
    """pagecounts-raw lines carry real byte sizes; an uncompressed file is read as is."""
    path = write(tmp_path / "pagecounts-20140101-000000", "en Foo 60 123456\nen Bar 10 999\n")
    views, stats = file_title_views(path)
    assert views == {"Foo": 60} and stats["format_hourly"] == 1


DAILY = (
    # 6 fields: page_id present, or the literal null
    "en.wikipedia Albert_Einstein 736 desktop 190 A100B40X50\n"  # hours 100, 40 (<50), 50
    "en.wikipedia Albert_Einstein 736 mobile-web 70 C60D10\n"  # another access method
    "en.wikipedia Some_Redlink null desktop 55 A55\n"
    # 5 fields: older files omit a missing page_id
    "en.wikipedia Old_Page desktop 75 F75\n"
    "en.wikipedia Quiet_Page 12 desktop 49 A49\n"  # no hour reaches 50
    "de.wikipedia Albert_Einstein 99 desktop 500 A500\n"
    "en.wikipedia Bad_Code 1 desktop 50 Y50\n"  # Y is no hour
    "en.wikipedia Bad_Total 1 desktop x A50\n"
    "en.wikipedia Too_few 1\n"
)


def test_daily_pageview_complete_per_hour_rule(tmp_path):
    path = write(tmp_path / "pageviews-20240101-user.bz2", DAILY)
    views, stats = file_title_views(path)
    assert views == {"Albert_Einstein": 100 + 50 + 60, "Some_Redlink": 55, "Old_Page": 75}
    assert stats["format_daily"] == 1
    assert (stats["lines"], stats["kept_lines"], stats["below_threshold"]) == (9, 4, 1)
    assert (stats["other_domain_lines"], stats["bad_lines"]) == (1, 3)
    check_stats(stats)
    views, _ = file_title_views(path, min_hourly_views=1)
    assert views["Albert_Einstein"] == 260 and views["Quiet_Page"] == 49


MONTHLY = (
    # day letters: A = day 1 ... Z = 26, [ \ ] ^ _ = 27..31; threshold 50/h -> 1200/day
    "en.wikipedia Albert_Einstein 736 desktop 5200 A1200B1199_2000\\800[1\n"
    "en.wikipedia Albert_Einstein 736 mobile-app 1300 Y1300\n"
    "en.wikipedia Quiet_Page null desktop 100 A100\n"
)


def test_monthly_pageview_complete_day_rule(tmp_path):
    path = write(tmp_path / "pageviews-202401-user.bz2", MONTHLY)
    views, stats = file_title_views(path)
    assert views == {"Albert_Einstein": 1200 + 2000 + 1300}
    assert stats["format_monthly"] == 1 and stats["below_threshold"] == 1
    check_stats(stats)
    views, _ = file_title_views(path, min_hourly_views=1)  # 24/day
    assert views == {"Albert_Einstein": 1200 + 1199 + 2000 + 800 + 1300, "Quiet_Page": 100}


EZ_DAILY = "".join(f"# header line {i}\n" for i in range(25)) + (
    "en.z Albert_Einstein 250 A100B40C?D110\n"  # '?' = missing hour
    "en.m Albert_Einstein 999 A999\n"  # mobile in ez: not en.wikipedia
    "de.z Albert_Einstein 500 A500\n"
    "en.z Broken 500 500\n"  # counts not letter-coded
)


def test_pagecounts_ez_daily(tmp_path):
    path = write(tmp_path / "pagecounts-2012-01-01.bz2", EZ_DAILY)
    views, stats = file_title_views(path)  # en.wikipedia selects en.z
    assert views == {"Albert_Einstein": 210}
    assert stats["format_ez"] == 1 and stats["comment_lines"] == 25 and stats["bad_lines"] == 1
    check_stats(stats)
    views, _ = file_title_views(path, domains=["en"])  # "en" alone is the hourly desktop code
    assert views == {}


def test_pagecounts_ez_monthly_day_hour_groups(tmp_path):
    path = write(
        tmp_path / "pagecounts-2012-01-views-ge-5.bz2", "en.z Albert_Einstein 243 BE33F60,CH155,\nen.z Other 60 AA60\n"
    )
    views, stats = file_title_views(path)
    assert views == {"Albert_Einstein": 60 + 155, "Other": 60}  # 33 is below 50
    check_stats(stats)


def test_detect_format():
    assert detect_format("en Foo 12 0") == "hourly"
    assert detect_format(b"en Foo 12 34567\n") == "hourly"
    assert detect_format("en.wikipedia Foo 1 desktop 12 A2B10") == "daily"
    assert detect_format("en.wikipedia Foo desktop 12 A2B10") == "daily"
    monthly_name = "x/pageviews-202401-user.bz2"
    assert detect_format("en.wikipedia Foo 1 desktop 12 A2B10", monthly_name) == "monthly"
    assert detect_format("en.wikipedia Foo 1 desktop 12 A2_10") == "monthly"  # day 31
    assert detect_format("en.z Foo 12 A2B10") == "ez"
    assert detect_format("en.z Foo 12 BA2,CB10") == "ez"
    for line in ("", "en Foo", "en Foo x 0", "en.wikipedia Foo 1 desktop 12 a2", "a b c d e f g"):
        assert detect_format(line) is None


def test_mixed_formats_across_files(tmp_path):
    files = [
        write(tmp_path / "pageviews-20240101-000000.gz", HOURLY),
        write(tmp_path / "pageviews-20240102-user.bz2", DAILY),
        write(tmp_path / "pageviews-202402-user.bz2", MONTHLY),
    ]
    total: dict[str, int] = {}
    formats = []
    for f in files:
        views, stats = file_title_views(f)
        formats += [k for k in stats if k.startswith("format_")]
        for title, n in views.items():
            total[title] = total.get(title, 0) + n
    assert formats == ["format_hourly", "format_daily", "format_monthly"]
    assert total["Albert_Einstein"] == 120 + 210 + 4500


def test_fsspec_url():
    fs = fsspec.filesystem("memory")
    fs.pipe("/pv-test/pageviews-20240101-000000.gz", gzip.compress(HOURLY.encode()))
    try:
        views, _ = file_title_views("memory://pv-test/pageviews-20240101-000000.gz")
        assert views["Albert_Einstein"] == 120
    finally:
        fs.rm("/pv-test", recursive=True)


def test_crlf_and_missing_final_newline(tmp_path):
    path = write(tmp_path / "pageviews-20240101-020000.gz", "en A 60 0\r\nen B 70 0")
    assert file_title_views(path)[0] == {"A": 60, "B": 70}


def test_empty_file(tmp_path):
    views, stats = file_title_views(write(tmp_path / "pageviews-20240101-030000.gz", ""))
    assert views == {} and stats["lines"] == 0


def test_truncated_gzip_names_file(tmp_path):
    full = gzip.compress(("en Foo 60 0\n" * 20000).encode())
    path = tmp_path / "pageviews-20240101-040000.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="pageviews-20240101-040000.gz: cannot read or decompress"):
        file_title_views(str(path))


@pytest.mark.parametrize("name", ["pageviews-20240101-050000.gz", "pageviews-20240101-user.bz2"])
def test_not_compressed_though_named_so(tmp_path, name):
    path = tmp_path / name
    path.write_text("en Foo 60 0\n")
    with pytest.raises(InputError, match=name):
        file_title_views(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothing-here.gz"):
        file_title_views(str(tmp_path / "nothing-here.gz"))


def test_unknown_format_is_fatal(tmp_path):
    path = write(tmp_path / "notes.txt.gz", "this is not a pageview file at all\n" * 2000)
    with pytest.raises(InputError, match="notes.txt.gz: not a known pageview format"):
        file_title_views(path)


def test_leading_bad_lines_are_counted_not_fatal(tmp_path):
    path = write(tmp_path / "pageviews-20240101-060000.gz", "garbage\n" * 3 + "en Foo 60 0\n")
    views, stats = file_title_views(path)
    assert views == {"Foo": 60} and stats["bad_lines"] == 3 and stats["lines"] == 4


def test_counts_beyond_any_real_traffic_are_bad_lines(tmp_path):
    """A count past int64 used to crash the stage when stored (OverflowError), one past 4,300
    digits already in int(); both, and a title whose total in one file would pass a trillion,
    are bad lines now."""
    from pipeline.queries.pageviews import MAX_VIEWS

    huge, giant = "9" * 20, "9" * 5000
    near = str(MAX_VIEWS)  # the largest count accepted
    hourly = (
        f"en Ok 60 0\nen Huge {huge} 0\nen Giant {giant} 0\nen Edge {near} 0\n"
        f"en Edge 60 0\n"
    )  # this line would lift Edge past MAX_VIEWS
    views, stats = file_title_views(write(tmp_path / "pageviews-20240101-070000.gz", hourly))
    assert views == {"Ok": 60, "Edge": MAX_VIEWS}
    assert (stats["kept_lines"], stats["bad_lines"]) == (2, 3) and stats["views"] == 60 + MAX_VIEWS
    check_stats(stats)

    daily = (
        f"en.wikipedia Ok 1 desktop 60 A60\n"
        f"en.wikipedia Huge_Total 1 desktop {huge} A60\n"
        f"en.wikipedia Huge_Hour 1 desktop 60 A{huge}\n"
        f"en.wikipedia Giant_Hour 1 desktop 60 A{giant}\n"
    )
    views, stats = file_title_views(write(tmp_path / "pageviews-20240102-user.bz2", daily))
    assert views == {"Ok": 60} and stats["bad_lines"] == 3
    check_stats(stats)

    ez = f"en.z Ok 60 A60\nen.z Huge 60 BA{huge},\nen.z Missing 60 A?B?\n"
    views, stats = file_title_views(write(tmp_path / "pagecounts-2012-01-views-ge-5.bz2", ez))
    assert views == {"Ok": 60} and stats["bad_lines"] == 1 and stats["below_threshold"] == 1
    check_stats(stats)
