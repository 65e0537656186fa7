"""The candidate pool: formats, normalisation, URL policy, dedup, accounting, determinism,
resumability."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.collect.pool import DROP_KEYS, input_format
from pipeline.collect.pool import stage as pool_mod
from pipeline.collect.urls import check_url, make_uid, normalise_text
from pipeline.errors import InputError
from tests.support.collect import build_pool

ROWS = [
    ("https://example.com/cat.jpg", "a cat"),
    ("https://example.com/dog.png", 'a dog, "quoted"\nover two lines'),
    ("http://img.example.org:8080/p/bird.gif?x=1&y=2", "a bird"),
    ("https://example.net/fish.webp", "ünïcödé fish 魚"),
]
EXPECTED = [(u, normalise_text(t)) for u, t in ROWS]


# --------------------------------------------------------------------------- helpers


def run(tmp_path: Path, inputs, name: str = "pool", **kw) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    stats = build_pool([str(i) for i in inputs], str(out), **kw)
    return stats, read_pool(out)


def read_pool(out: Path) -> list[dict]:
    rows: list[dict] = []
    for p in sorted(out.glob("part-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def pairs(rows) -> list[tuple]:
    return [(r["url"], r["text"]) for r in rows]


def assert_accounted(stats: dict) -> None:
    assert stats["rows_in"] == stats["kept"] + sum(stats[k] for k in DROP_KEYS)


def csv_text(rows, header=("url", "caption"), sep=",") -> str:
    def q(v: str) -> str:
        return '"' + v.replace('"', '""') + '"'

    lines = [sep.join(header)] + [sep.join(q(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def jsonl_text(rows, keys=("url", "caption")) -> str:
    return "".join(json.dumps(dict(zip(keys, r)), ensure_ascii=False) + "\n" for r in rows)


def write_table(path: Path, rows, keys=("url", "caption"), extra: dict | None = None) -> Path:
    """Write `rows` in the format (and compression) the file name asks for."""
    fmt, comp = input_format(str(path))
    if fmt == "parquet":
        cols = {k: [r[i] for r in rows] for i, k in enumerate(keys)}
        cols.update(extra or {})
        pq.write_table(pa.table(cols), path)
        return path
    assert not extra
    text = {
        "csv": lambda: csv_text(rows, keys),
        "tsv": lambda: csv_text(rows, keys, "\t"),
        "jsonl": lambda: jsonl_text(rows, keys),
    }[fmt]()
    data = text.encode("utf-8")
    data = {None: lambda d: d, "gzip": gzip.compress, "bz2": bz2.compress, "zstd": zstandard.ZstdCompressor().compress}[
        comp
    ](data)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- urls.py


def test_uid_is_stable():
    assert make_uid("https://example.com/cat.jpg", "a cat") == "15522c75b36c56f3"
    assert (
        make_uid("https://example.com/cat.jpg", "a cat")
        == hashlib.blake2b(b"https://example.com/cat.jpg\x00a cat", digest_size=8).hexdigest()
    )
    assert make_uid("https://example.com/cat.jpg", "a cat ") != make_uid("https://example.com/cat.jpg", "a cat")


def test_normalise_text():
    assert normalise_text("  a\tb\n\r c\u00a0d\u3000e\u2003f\u2028g\x85h  ") == "a b c d e f g h"
    assert normalise_text("x\x00y\x07z\ufeff\x1fw\x9b!") == "x y z w !"
    assert normalise_text("   \n\t ") == ""
    assert normalise_text(None) is None
    assert normalise_text("already clean") == "already clean"


GOOD_URLS = [
    "http://example.com/a.jpg",
    "HTTPS://EXAMPLE.COM/A.JPG",
    "https://example.com:8443/x?q=1#frag",
    "http://user:pw@8.8.8.8:8080/x",
    "http://[2606:4700::1111]/x.png",
    "https://exa_mple.example/x",
    "https://münchen.example/bild.jpg",
    "https://example.com./trailing-dot",
]
BAD = [
    ("data:image/png;base64,iVBORw0KGgo=", "scheme"),
    ("javascript:void(0)", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("ftp://example.com/a.jpg", "scheme"),
    ("mailto:a@example.com", "scheme"),
    ("/relative/img.png", "scheme"),
    ("img.png", "scheme"),
    ("//cdn.example.com/img.png", "scheme"),
    ("http://example.com/a b.jpg", "bad_url"),
    ("http://example.com/a\tb.jpg", "bad_url"),
    ("http://example.com/a\x00.jpg", "bad_url"),
    ("http://example.com/a\u00a0b.jpg", "bad_url"),
    ("http://example.com:99999/a.jpg", "bad_url"),
    ("http://example.com:abc/a.jpg", "bad_url"),
    ("http://example.com:0/a.jpg", "bad_url"),
    ("http://example.com:+80/a.jpg", "bad_url"),
    ("http:///a.jpg", "bad_url"),
    ("http://", "bad_url"),
    ("http:example.com/a.jpg", "bad_url"),
    ("http://user@/a.jpg", "bad_url"),
    ("http://[::1/a.jpg", "bad_url"),
    ("http://[zz]/a.jpg", "bad_url"),
    ("http://a..b/x", "bad_url"),
    ("http://ex%41mple.com/x", "bad_url"),
    ("http://evil.example\\@good.example/x", "bad_url"),
    ("http://1.2.3.4.5/x", "bad_url"),
    ("http://example.123/x", "bad_url"),
]
PRIVATE = [
    "http://10.1.2.3/a.jpg",
    "http://172.16.0.1/a.jpg",
    "http://192.168.1.1:8000/a.jpg",
    "http://127.0.0.1:8765/a.jpg",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0/a.jpg",
    "http://224.0.0.1/a.jpg",
    "http://240.0.0.1/a.jpg",
    "http://100.64.0.1/a.jpg",
    "http://2130706433/a.jpg",  # 127.0.0.1 as one number
    "http://127.1/a.jpg",
    "http://0x7f.0.0.1/a.jpg",
    "http://[::1]:8080/a.jpg",
    "http://[fe80::1]/a.jpg",
    "http://[fe80::1%25eth0]/a.jpg",
    "http://[fc00::1]/a.jpg",
    "http://[ff02::1]/a.jpg",
    "http://[::]/a.jpg",
    "http://[::ffff:10.0.0.1]/a.jpg",
    "http://localhost/a.jpg",
    "http://LOCALHOST:8000/a.jpg",
    "http://img.localhost/a.jpg",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_check_url_accepts(url):
    assert check_url(url) is None


@pytest.mark.parametrize("url,reason", BAD)
def test_check_url_rejects(url, reason):
    assert check_url(url) == reason
    assert check_url(url, allow_private_hosts=True) == reason  # the flag only concerns hosts


@pytest.mark.parametrize("url", PRIVATE)
def test_check_url_private_hosts(url):
    assert check_url(url) == "private_host"
    assert check_url(url, allow_private_hosts=True) is None


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "name",
    [
        "p.csv",
        "p.tsv",
        "p.jsonl",
        "p.parquet",
        "p.csv.gz",
        "p.tsv.gz",
        "p.jsonl.gz",
        "p.csv.zst",
        "p.jsonl.zst",
        "p.jsonl.bz2",
    ],
)
def test_every_table_format(tmp_path, name):
    f = write_table(tmp_path / name, ROWS)
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == EXPECTED
    assert [r["uid"] for r in rows] == [make_uid(u, t) for u, t in EXPECTED]
    assert {r["source"] for r in rows} == {str(f)}
    assert list(rows[0]) == ["uid", "url", "text", "source"]
    assert stats["rows_in"] == stats["kept"] == len(ROWS)
    assert_accounted(stats)


def test_output_schema_is_strings(tmp_path):
    f = write_table(tmp_path / "p.csv", ROWS)
    run(tmp_path, [f], keep_cols=["caption"])
    schema = pq.read_schema(tmp_path / "pool" / "part-00000.parquet")
    assert schema.names == ["uid", "url", "text", "source", "caption"]
    assert all(t == pa.string() for t in schema.types)


def test_custom_columns_and_keep_cols_parquet(tmp_path):
    f = write_table(
        tmp_path / "p.parquet",
        ROWS,
        keys=("URL", "ALT"),
        extra={
            "width": [640, None, 300, 10],
            "nsfw": [False, True, None, False],
            "tags": [["a", "b"], [], None, ["c"]],
            "note": ["x", None, "z", "w"],
        },
    )
    stats, rows = run(tmp_path, [f], url_col="URL", text_col="ALT", keep_cols=["width", "nsfw", "tags", "note"])
    assert pairs(rows) == EXPECTED
    assert [r["width"] for r in rows] == ["640", None, "300", "10"]
    assert [r["nsfw"] for r in rows] == ["false", "true", None, "false"]
    assert [r["tags"] for r in rows] == ['["a", "b"]', "[]", None, '["c"]']
    assert [r["note"] for r in rows] == ["x", None, "z", "w"]


def test_custom_columns_csv_and_jsonl(tmp_path):
    rows3 = [(u, t, str(i)) for i, (u, t) in enumerate(ROWS)]
    c = write_table(tmp_path / "a.csv", rows3, keys=("image", "alt", "id"))
    j = tmp_path / "b.jsonl"
    j.write_text(
        "".join(json.dumps({"image": u, "alt": t, "id": i, "other": [1]}) + "\n" for i, (u, t) in enumerate(ROWS))
    )
    _, rows = run(tmp_path, [c], "pc", url_col="image", text_col="alt", keep_cols=["id"])
    assert pairs(rows) == EXPECTED and [r["id"] for r in rows] == ["0", "1", "2", "3"]
    _, rows = run(tmp_path, [j], "pj", url_col="image", text_col="alt", keep_cols=["id", "other"])
    assert pairs(rows) == EXPECTED and [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["other"] == "[1]"


@pytest.mark.parametrize("name", ["m.csv", "m.tsv.gz", "m.jsonl", "m.parquet"])
def test_missing_column_is_one_line_input_error(tmp_path, name):
    f = write_table(tmp_path / name, ROWS, keys=("url", "text"))
    with pytest.raises(InputError) as e:
        build_pool([str(f)], str(tmp_path / "out"))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(f) in msg and "'caption'" in msg
    assert "url" in msg.split("columns are:")[1] and "text" in msg.split("columns are:")[1]


def test_missing_keep_col_is_an_input_error(tmp_path):
    f = write_table(tmp_path / "m.csv", ROWS)
    with pytest.raises(InputError, match=r"m\.csv.*'width'"):
        build_pool([str(f)], str(tmp_path / "out"), keep_cols=["width"])


def test_bad_parameters(tmp_path):
    f = write_table(tmp_path / "m.csv", ROWS)
    with pytest.raises(InputError, match="clashes"):
        build_pool([str(f)], str(tmp_path / "out"), keep_cols=["uid"])
    with pytest.raises(InputError, match=r"x\.xlsx: unknown pool format"):
        build_pool([str(_touch(tmp_path / "x.xlsx"))], str(tmp_path / "out"))
    with pytest.raises(InputError, match="no pool file matches"):
        build_pool([str(tmp_path / "nothing-*.csv")], str(tmp_path / "out"))


def _touch(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def test_empty_csv_is_an_input_error(tmp_path):
    f = _touch(tmp_path / "empty.csv")
    with pytest.raises(InputError, match=r"empty\.csv: empty file"):
        build_pool([str(f)], str(tmp_path / "out"))


def test_corrupt_gzip_is_an_input_error(tmp_path):
    f = tmp_path / "bad.jsonl.gz"
    f.write_bytes(b"\x1f\x8b\x08\x00garbage-garbage-garbage")
    with pytest.raises(InputError) as e:
        build_pool([str(f)], str(tmp_path / "out"))
    assert str(f) in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- row rules


def test_nulls_and_empty_text_are_dropped_and_counted(tmp_path):
    f = tmp_path / "n.parquet"
    pq.write_table(
        pa.table(
            {
                "url": [
                    "https://e.example/1.jpg",
                    None,
                    "https://e.example/3.jpg",
                    "https://e.example/4.jpg",
                    "   ",
                    "https://e.example/6.jpg",
                ],
                "caption": ["one", "two", None, "", "five", " \n\t\u3000 "],
            }
        ),
        f,
    )
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == [("https://e.example/1.jpg", "one")]
    assert stats["dropped_null_url"] == 2
    assert stats["dropped_empty_text"] == 3
    assert stats["rows_in"] == 6
    assert_accounted(stats)


def test_jsonl_nulls_missing_keys_and_malformed_lines(tmp_path):
    f = tmp_path / "n.jsonl"
    f.write_text(
        "\n".join(
            [
                '{"url": "https://e.example/1.jpg", "caption": "one"}',
                '{"url": null, "caption": "two"}',
                '{"url": "https://e.example/3.jpg"}',  # missing key after the first record -> null
                "",  # blank: not a row
                "not json at all",
                "[1, 2, 3]",
                '{"url": 5, "caption": "number url"}',
                '{"url": "https://e.example/8.jpg", "caption": "eight"}',
            ]
        )
        + "\n"
    )
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == [("https://e.example/1.jpg", "one"), ("https://e.example/8.jpg", "eight")]
    assert stats["rows_in"] == 7
    assert stats["dropped_null_url"] == 1
    assert stats["dropped_empty_text"] == 1
    assert stats["dropped_malformed"] == 3
    assert_accounted(stats)


def test_csv_row_with_wrong_field_count_is_malformed(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text(
        "url,caption\nhttps://e.example/1.jpg,one\nhttps://e.example/2.jpg,two,extra\n"
        "https://e.example/3.jpg\nhttps://e.example/4.jpg,four\n"
    )
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == [("https://e.example/1.jpg", "one"), ("https://e.example/4.jpg", "four")]
    assert stats["dropped_malformed"] == 2 and stats["rows_in"] == 4
    assert_accounted(stats)


def test_non_utf8_bytes(tmp_path):
    f = tmp_path / "b.csv"
    f.write_bytes(
        b"url,caption,note\n"
        b"https://e.example/1.jpg,fine,ok\n"
        b"https://e.example/2.jpg,caf\xe9 latin-1,ok\n"
        b"https://e.example/\xff.jpg,bad url bytes,ok\n"
        b"https://e.example/4.jpg,fine four,n\xe9\n"
    )
    stats, rows = run(tmp_path, [f], "p1", keep_cols=["note"])
    assert pairs(rows) == [("https://e.example/1.jpg", "fine"), ("https://e.example/4.jpg", "fine four")]
    assert rows[1]["note"] == "n\ufffd"  # extra columns are repaired, not dropped
    assert stats["dropped_bad_encoding"] == 2
    assert stats["keep_cols_bad_encoding"] == 1
    assert_accounted(stats)

    j = tmp_path / "b.jsonl"
    j.write_bytes(
        b'{"url": "https://e.example/1.jpg", "caption": "fine"}\n'
        b'{"url": "https://e.example/2.jpg", "caption": "caf\xe9"}\n'
        b'{"url": "https://e.example/3.jpg", "caption": "lone \\ud800 surrogate"}\n'
    )
    stats, rows = run(tmp_path, [j], "p2")
    assert pairs(rows) == [("https://e.example/1.jpg", "fine")]
    assert stats["dropped_bad_encoding"] == 2
    assert_accounted(stats)


def test_invalid_utf8_inside_a_parquet_string_column(tmp_path):
    f = tmp_path / "b.parquet"
    captions = pa.array([b"fine", b"caf\xe9"], pa.binary()).view(pa.string())  # no validation on view
    pq.write_table(pa.table({"url": ["https://e.example/1.jpg", "https://e.example/2.jpg"], "caption": captions}), f)
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == [("https://e.example/1.jpg", "fine")]
    assert stats["dropped_bad_encoding"] == 1


@pytest.mark.parametrize("name", ["big.csv", "big.jsonl.gz", "big.parquet"])
def test_one_megabyte_text_is_truncated(tmp_path, name):
    huge = ("word " * 200_000) + "end"  # ~1 MB
    rows = [("https://e.example/big.jpg", huge), ("https://e.example/small.jpg", "small")]
    f = write_table(tmp_path / name, rows)
    stats, out = run(tmp_path, [f])
    assert pairs(out)[1] == ("https://e.example/small.jpg", "small")
    assert len(out[0]["text"]) <= 4096 and out[0]["text"].startswith("word word")
    assert out[0]["text"] == normalise_text(huge)[:4096].rstrip()
    assert out[0]["uid"] == make_uid(out[0]["url"], out[0]["text"])
    assert stats["text_truncated"] == 1 and stats["kept"] == 2


def test_max_text_chars(tmp_path):
    f = write_table(
        tmp_path / "t.csv", [("https://e.example/1.jpg", "abcdefghij klm"), ("https://e.example/2.jpg", "short")]
    )
    stats, rows = run(tmp_path, [f], max_text_chars=11)
    assert pairs(rows) == [("https://e.example/1.jpg", "abcdefghij"), ("https://e.example/2.jpg", "short")]
    assert stats["text_truncated"] == 1


def test_url_rules_in_the_pool(tmp_path):
    urls = [u for u, _ in BAD] + PRIVATE + GOOD_URLS + ["  https://e.example/padded.jpg \n"]
    f = write_table(tmp_path / "u.jsonl", [(u, f"caption {i}") for i, u in enumerate(urls)])
    stats, rows = run(tmp_path, [f], "strict")
    n_scheme = sum(1 for _, r in BAD if r == "scheme")
    assert stats["dropped_scheme"] == n_scheme
    assert stats["dropped_bad_url"] == len(BAD) - n_scheme
    assert stats["dropped_private_host"] == len(PRIVATE)
    assert [r["url"] for r in rows] == GOOD_URLS + ["https://e.example/padded.jpg"]  # ends stripped
    assert_accounted(stats)

    stats, rows = run(tmp_path, [f], "allowed", allow_private_hosts=True)
    assert stats["dropped_private_host"] == 0
    assert [r["url"] for r in rows] == PRIVATE + GOOD_URLS + ["https://e.example/padded.jpg"]
    assert_accounted(stats)


def test_whitespace_normalisation_in_the_pool(tmp_path):
    f = write_table(
        tmp_path / "w.csv",
        [
            ("https://e.example/1.jpg", "  a\n\tgrey\u00a0\u00a0cat  "),
            ("https://e.example/1.jpg", "a grey cat"),  # same pair once normalised
            ("https://e.example/2.jpg", "line one\r\nline two"),
        ],
    )
    stats, rows = run(tmp_path, [f])
    assert pairs(rows) == [("https://e.example/1.jpg", "a grey cat"), ("https://e.example/2.jpg", "line one line two")]
    assert stats["dropped_duplicate"] == 1


# --------------------------------------------------------------------------- dedup and order


def _dup_inputs(tmp_path):
    a = write_table(
        tmp_path / "a.csv",
        [
            ("https://e.example/A.jpg", "A", "a1"),
            ("https://e.example/B.jpg", "B", "a2"),
            ("https://e.example/A.jpg", "A", "a3"),  # duplicate within the file
            ("https://e.example/A.jpg", "A but other text", "a4"),  # same url, other text: kept
        ],
        keys=("url", "caption", "id"),
    )
    b = write_table(
        tmp_path / "b.jsonl",
        [
            ("https://e.example/B.jpg", "B", "b1"),  # duplicate across files
            ("https://e.example/C.jpg", "C", "b2"),
            ("https://e.example/A.jpg", "A", "b3"),
            ("https://e.example/C.jpg", "C", "b4"),
        ],
        keys=("url", "caption", "id"),
    )
    return a, b


def test_duplicates_first_occurrence_wins(tmp_path):
    a, b = _dup_inputs(tmp_path)
    stats, rows = run(tmp_path, [a, b], "ab", keep_cols=["id"])
    assert [(r["text"], r["id"], Path(r["source"]).name) for r in rows] == [
        ("A", "a1", "a.csv"),
        ("B", "a2", "a.csv"),
        ("A but other text", "a4", "a.csv"),
        ("C", "b2", "b.jsonl"),
    ]
    assert stats["dropped_duplicate"] == 4 and stats["kept"] == 4 and stats["rows_in"] == 8
    assert len({r["uid"] for r in rows}) == len(rows)
    assert_accounted(stats)

    # input order decides which copy is first
    stats, rows = run(tmp_path, [b, a], "ba", keep_cols=["id"])
    assert [(r["text"], r["id"]) for r in rows] == [("B", "b1"), ("C", "b2"), ("A", "b3"), ("A but other text", "a4")]


def test_glob_inputs_are_sorted_and_deduplicated(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_table(d / "2.csv", [("https://e.example/2.jpg", "two")])
    write_table(d / "1.csv", [("https://e.example/1.jpg", "one")])
    stats, rows = run(tmp_path, [d / "*.csv", d / "1.csv"])
    assert pairs(rows) == [("https://e.example/1.jpg", "one"), ("https://e.example/2.jpg", "two")]
    assert stats["files"] == 2


def _mixed_inputs(tmp_path) -> list[Path]:
    files = []
    for k in range(3):
        rows = []
        for i in range(40):
            n = (i * 7 + k * 13) % 29  # plenty of repeats within and across files
            url = f"https://img{n % 5}.example/{n}.jpg" if i % 11 else f"http://192.168.0.{n}/x.jpg"
            rows.append((url, f"caption  {n % 17}\t" if i % 9 else ""))
        files.append(write_table(tmp_path / f"m{k}.{['csv', 'jsonl', 'parquet'][k]}", rows))
    return files


def test_parts_are_byte_identical_across_runs_and_worker_counts(tmp_path):
    files = _mixed_inputs(tmp_path)
    s1, rows1 = run(tmp_path, files, "w1", rows_per_part=7, workers=1)
    s2, rows2 = run(tmp_path, files, "w2", rows_per_part=7, workers=2)
    s3, _ = run(tmp_path, files, "w1again", rows_per_part=7, workers=1)
    names = sorted(p.name for p in (tmp_path / "w1").glob("part-*.parquet"))
    assert len(names) > 2 and names == s1["parts"]
    for other in ("w2", "w1again"):
        assert sorted(p.name for p in (tmp_path / other).glob("part-*.parquet")) == names
        for n in names:
            assert (tmp_path / "w1" / n).read_bytes() == (tmp_path / other / n).read_bytes(), (other, n)
    for k in [*DROP_KEYS, "rows_in", "kept"]:
        assert s1[k] == s2[k] == s3[k]
    assert_accounted(s1)
    assert s1["rows_in"] == 120 and s1["dropped_duplicate"] > 0 and s1["dropped_private_host"] > 0
    assert rows1 == rows2 and len(rows1) == s1["kept"]


def test_rows_per_part_and_order(tmp_path):
    rows = [(f"https://e.example/{i}.jpg", f"caption {i}") for i in range(8)]
    a = write_table(tmp_path / "a.csv", rows[:5])
    b = write_table(tmp_path / "b.parquet", rows[5:])
    stats, out = run(tmp_path, [a, b], rows_per_part=3)
    assert stats["parts"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    sizes = [pq.read_metadata(tmp_path / "pool" / p).num_rows for p in stats["parts"]]
    assert sizes == [3, 2, 3]  # parts never span inputs: a.csv fills 0-1, b.parquet 2
    assert pairs(out) == rows  # input order, across files and parts
    assert [{r["source"] for r in pq.read_table(tmp_path / "pool" / p).to_pylist()} for p in stats["parts"]] == [
        {str(a)},
        {str(a)},
        {str(b)},
    ]


def test_nothing_kept_writes_one_empty_part(tmp_path):
    f = write_table(tmp_path / "e.csv", [("javascript:void(0)", "x"), ("https://e.example/1.jpg", " ")])
    stats, rows = run(tmp_path, [f], keep_cols=["caption"])
    assert rows == [] and stats["kept"] == 0 and stats["parts"] == ["part-00000.parquet"]
    schema = pq.read_schema(tmp_path / "pool" / "part-00000.parquet")
    assert schema.names == ["uid", "url", "text", "source", "caption"]
    assert_accounted(stats)


# --------------------------------------------------------------------------- resumability


def test_complete_rerun_does_nothing(tmp_path, monkeypatch):
    files = _mixed_inputs(tmp_path)
    s1, rows1 = run(tmp_path, files, rows_per_part=10)
    out = tmp_path / "pool"
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "_stats.json" in mtimes and not (out / "_work").exists()

    def boom(*a, **k):
        raise AssertionError("a complete pool must not be rebuilt")

    monkeypatch.setattr(pool_mod, "spill_input", boom)
    monkeypatch.setattr(pool_mod, "write_parts", boom)
    s2 = build_pool([str(f) for f in files], str(out), rows_per_part=10)
    assert s2 == s1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_changed_input_or_parameters_rebuild(tmp_path):
    f = write_table(tmp_path / "c.csv", ROWS)
    stats, rows = run(tmp_path, [f])
    assert stats["kept"] == 4
    write_table(f, ROWS[:2])
    stats, rows = run(tmp_path, [f])
    assert stats["kept"] == 2 and pairs(rows) == EXPECTED[:2]
    stats, rows = run(tmp_path, [f], rows_per_part=1)
    assert stats["parts"] == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(p.name for p in (tmp_path / "pool").glob("part-*")) == stats["parts"]  # no stale parts


def test_killed_run_reruns_cleanly(tmp_path, monkeypatch):
    files = _mixed_inputs(tmp_path)
    clean_stats, _ = run(tmp_path, files, "clean", rows_per_part=7)
    out = tmp_path / "pool"

    # 1) killed while spilling the third input: the first two spills survive and are reused
    real_spill = pool_mod.spill_input
    calls: list[str] = []

    def spill_then_die(index, path, *rest):
        calls.append(path)
        if index == 2:
            raise KeyboardInterrupt
        return real_spill(index, path, *rest)

    monkeypatch.setattr(pool_mod, "spill_input", spill_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_pool([str(f) for f in files], str(out), rows_per_part=7)
    assert not (out / "_stats.json").exists()

    # 2) killed while writing the parts: one part renamed, one half-written temp file left
    calls.clear()

    def spill_and_record(index, path, *rest):
        calls.append(path)
        return real_spill(index, path, *rest)

    monkeypatch.setattr(pool_mod, "spill_input", spill_and_record)
    real_close = pool_mod.PartWriter._close_part

    def close_then_die(self):
        real_close(self)
        if len(self.parts) == 2:
            (self.out_dir / f".part-00009.parquet.tmp-{999999}").write_bytes(b"half")
            raise KeyboardInterrupt

    monkeypatch.setattr(pool_mod.PartWriter, "_close_part", close_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_pool([str(f) for f in files], str(out), rows_per_part=7)
    assert calls == [str(files[2])]  # inputs 0 and 1 were not read again
    assert not (out / "_stats.json").exists()
    assert (out / "part-00000.parquet").exists() and (out / "part-00001.parquet").exists()
    assert (out / ".part-00009.parquet.tmp-999999").exists()

    # 3) the rerun completes: same parts, bytes and stats as a run never interrupted
    monkeypatch.setattr(pool_mod.PartWriter, "_close_part", real_close)
    monkeypatch.setattr(pool_mod, "spill_input", real_spill)
    stats = build_pool([str(f) for f in files], str(out), rows_per_part=7)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(clean_stats["parts"] + ["_stats.json"])  # no temp files, no _work
    for n in clean_stats["parts"]:
        assert (out / n).read_bytes() == (tmp_path / "clean" / n).read_bytes()
    for k in [*DROP_KEYS, "rows_in", "kept"]:
        assert stats[k] == clean_stats[k]


def test_stats_file_is_complete(tmp_path):
    files = _mixed_inputs(tmp_path)
    stats, rows = run(tmp_path, files)
    on_disk = json.loads((tmp_path / "pool" / "_stats.json").read_text())
    assert on_disk == stats
    assert [i["path"] for i in stats["inputs"]] == [str(f) for f in files]
    assert sum(i["rows_in"] for i in stats["inputs"]) == stats["rows_in"]
    assert stats["kept"] == len(rows)
    assert_accounted(stats)


def test_input_error_in_a_worker_process_propagates(tmp_path):
    good = write_table(tmp_path / "good.csv", ROWS)
    bad = write_table(tmp_path / "bad.csv", ROWS, keys=("url", "alt"))
    with pytest.raises(InputError, match=r"bad\.csv: header has no column 'caption'"):
        build_pool([str(good), str(bad)], str(tmp_path / "out"), workers=2)


def test_bad_memory_limit_is_an_input_error(tmp_path):
    f = write_table(tmp_path / "m.csv", ROWS)
    with pytest.raises(InputError, match="memory limit"):
        build_pool([str(f)], str(tmp_path / "out"), memory_limit="lots")


def test_progress_factory_gets_one_step_per_input(tmp_path):
    events: list = []

    class Bar:
        def __init__(self, total):
            events.append(("total", total))

        def update(self, n):
            events.append(("update", n))

        def set_postfix(self, **kw):
            events.append(("postfix", kw["rows"]))

        def close(self):
            events.append(("close",))

    files = _mixed_inputs(tmp_path)
    build_pool([str(f) for f in files], str(tmp_path / "pool"), progress=Bar)
    assert events[0] == ("total", 3) and events[-1] == ("close",)
    assert sum(e[1] for e in events if e[0] == "update") == 3
    assert [e for e in events if e[0] == "postfix"][-1] == ("postfix", "120")
    events.clear()
    build_pool([str(f) for f in files], str(tmp_path / "pool"), progress=Bar)
    assert events == []  # complete: nothing to report
