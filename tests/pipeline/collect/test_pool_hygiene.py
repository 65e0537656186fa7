"""Pool input hygiene: over-long URLs, invisible or display-reordering characters, error
messages that quote file bytes, and inputs without rows.

* a URL over 4,096 characters is dropped (``dropped_long_url``);
* a URL with a C0/C1 control or a bidirectional formatting character (in its host or
  anywhere) is dropped as ``dropped_bad_url``: raw, they make a URL display as another;
* an error that quotes a file (a WAT file's first line, a CSV header) escapes its
  control and bidi characters instead of sending them to the terminal;
* an input with no rows is an error naming it when no input has rows, whatever its
  format (an empty .jsonl used to give an empty pool and exit 0, an empty .csv an error),
  and is counted in ``empty_inputs`` when other inputs have rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.collect.pool import DROP_KEYS
from pipeline.collect.urls import MAX_URL_CHARS, check_url
from pipeline.errors import InputError, printable
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline.collect.test_wat import write_wat
from tests.support.collect import build_pool

GOOD = "https://example.com/cat.jpg"
BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]
CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x80", "\x9b"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _accounted(stats: dict) -> None:
    assert stats["rows_in"] == stats["kept"] + sum(stats[k] for k in DROP_KEYS)


def test_long_urls_are_dropped_and_counted(tmp_path):
    base = "https://example.com/"
    at_cap = base + "a" * (MAX_URL_CHARS - len(base))
    over = at_cap + "b"
    assert MAX_URL_CHARS == 4096 and len(at_cap) == 4096
    assert check_url(at_cap) is None and check_url(over) == "long_url"
    assert check_url("data:image/png;base64," + "A" * 5000) == "scheme"  # the scheme says more
    f = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"url": at_cap, "caption": "at the cap"},
            {"url": over, "caption": "over the cap"},
            {"url": over + "c" * 100_000, "caption": "far over"},
            {"url": GOOD, "caption": "a cat"},
        ],
    )
    stats = build_pool([str(f)], str(tmp_path / "pool"))
    assert stats["kept"] == 2 and stats["dropped_long_url"] == 2
    _accounted(stats)


def test_control_and_bidi_characters_make_a_bad_url():
    for char in BIDI + CONTROLS:
        for url in (
            f"https://exa{char}mple.com/cat.jpg",
            f"https://{char}example.com/cat.jpg",  # host
            f"https://example.com/{char}gpj.exe",
        ):  # path
            assert check_url(url) == "bad_url", f"U+{ord(char):04X} in {url!r}"


def test_hosts_with_bidi_or_control_characters_are_dropped_and_counted(tmp_path):
    rows = [{"url": f"https://pay{c}pal.example.com/logo.png", "caption": "a logo"} for c in BIDI + CONTROLS]
    rows += [
        {"url": GOOD, "caption": "a cat"},
        {"url": "https://bücher.example/ü.png", "caption": "internationalised names stay"},
    ]
    stats = build_pool([str(_jsonl(tmp_path / "p.jsonl", rows))], str(tmp_path / "pool"))
    assert stats["kept"] == 2 and stats["dropped_bad_url"] == len(BIDI) + len(CONTROLS)
    _accounted(stats)


def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("plain text, ünïcödé 魚") == "plain text, ünïcödé 魚"
    assert printable("\x1b[31mred\u202eevil\x07\r\n") == "\\x1b[31mred\\u202eevil\\x07\\r\\n"
    assert printable("x" * 200, 10) == "x" * 10 + "..."


def test_wat_error_does_not_echo_raw_file_bytes(tmp_path):
    bad = tmp_path / "CC-MAIN-x.warc.wat"
    bad.write_bytes(b"\x1b[2J\x1b[31mWARC/1.0 \xe2\x80\xae gpj.exe\x07\r\n\r\n")
    with pytest.raises(InputError) as e:
        build_pool([str(bad)], str(tmp_path / "pool"))
    msg = str(e.value)
    assert str(bad) in msg and "not a readable WARC/WAT file" in msg
    assert all(c.isprintable() for c in msg), repr(msg)
    assert "\\x1b[2J" in msg and "\\u202e" in msg
    res = run_cli("pool", "--pool", str(bad), "--out", str(tmp_path / "o"), "--quiet")
    assert_one_line_error(res, str(bad), "\\x1b[2J")
    assert "\x1b" not in res.stderr and "\u202e" not in res.stderr


def test_header_error_escapes_column_names(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("\x1b]0;pwned\x07link,caption\nhttps://example.com/a.jpg,a\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        build_pool([str(f)], str(tmp_path / "pool"))
    assert "\\x1b]0;pwned\\x07link" in str(e.value) and all(c.isprintable() for c in str(e.value))


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize(
    "name,content,why",
    [
        ("empty.jsonl", b"", "empty file"),
        ("empty.csv", b"", "empty file"),
        ("blank.jsonl", b"\n  \n\n", "no rows"),
        ("header.csv", b"url,caption\n", "no rows"),
        ("empty.tsv.gz", None, "no rows"),
        ("empty.parquet", None, "no rows"),
        ("CC-MAIN-none.warc.wat.gz", None, "no image links in its 0 metadata records"),
    ],
)
def test_a_pool_of_nothing_is_an_error_naming_the_file(tmp_path, name, content, why):
    f = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())}), f)
    elif name.endswith(".tsv.gz"):
        import gzip

        f.write_bytes(gzip.compress(b"url\tcaption\n"))
    elif name.endswith(".wat.gz"):
        write_wat(f, [])
    else:
        f.write_bytes(content)
    with pytest.raises(InputError, match=f"^{f}: {why}, nothing to pool$"):
        build_pool([str(f)], str(tmp_path / "pool"))


def test_empty_inputs_beside_others_are_counted(tmp_path):
    empty_csv = tmp_path / "a.csv"
    empty_csv.write_bytes(b"")
    empty_jsonl = tmp_path / "b.jsonl"
    empty_jsonl.write_bytes(b"")
    rows = _jsonl(tmp_path / "c.jsonl", [{"url": GOOD, "caption": "a cat"}])
    stats = build_pool([str(empty_csv), str(rows), str(empty_jsonl)], str(tmp_path / "pool"))
    assert stats["kept"] == 1 and stats["empty_inputs"] == 2
    assert [i["rows_in"] for i in stats["inputs"]] == [0, 1, 0]
    _accounted(stats)
    with pytest.raises(InputError, match=r"a\.csv: empty file, nothing to pool \(nor in the other 1 pool inputs\)"):
        build_pool([str(empty_csv), str(empty_jsonl)], str(tmp_path / "pool2"))


def test_cli_empty_jsonl_pool_is_a_one_line_error(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_bytes(b"")
    assert_one_line_error(
        run_cli("pool", "--pool", str(f), "--out", str(tmp_path / "o"), "--quiet"), f"{f}: empty file, nothing to pool"
    )
