"""openclipart sample pool: caption rules and safe SVG parsing on small synthetic trees,
held-out categories, the pool parquet (served and fetched over real HTTP), and the figures
of Debian's real openclipart packages (found through $OPENCLIPART_DIR; missing -> failure)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.sample.openclipart import (
    PNG_SUBDIR,
    POOL_COLUMNS,
    SVG_SUBDIR,
    SampleStats,
    SvgError,
    SvgMetadata,
    clean_value,
    held_out_categories,
    main,
    make_caption,
    parse_svg_metadata,
    roots_from_cache,
    sample_rows,
    write_sample_pool,
)
from tests.support.httpserver import make_png, serve_directory


def svg(title="", description="", keywords=(), prolog="", tail="<path d='M0 0'/>", agent="Someone", subject=None):
    lis = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    subject = subject if subject is not None else f"<rdf:Bag>{lis}</rdf:Bag>"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
{prolog}<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<metadata><rdf:RDF><cc:Work rdf:about="">
  <dc:title>{title}</dc:title>
  <dc:description>{description}</dc:description>
  <dc:subject>{subject}</dc:subject>
  <dc:publisher><cc:Agent rdf:about="http://www.openclipart.org/"><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
  <dc:creator><cc:Agent><dc:title>{agent}</dc:title></cc:Agent></dc:creator>
</cc:Work></rdf:RDF></metadata>
{tail}</svg>
"""


def caption_of(text: str) -> str:
    return make_caption(parse_svg_metadata(text.encode()))


# -- captions ---------------------------------------------------------------------------


def test_caption_format():
    assert (
        caption_of(svg("Red apple", "A shiny red apple", ["fruit", "food"]))
        == "Red apple. A shiny red apple. fruit, food"
    )
    assert caption_of(svg("Wow!", "", ["a"])) == "Wow! a"
    assert caption_of(svg("", "", ["stars", "shapes"])) == "stars, shapes"
    assert caption_of(svg("Only a title")) == "Only a title."
    assert caption_of(svg()) == ""


def test_agent_titles_ignored():
    c = caption_of(svg("Cat", "", ["animal"], agent="Jane Doe"))
    assert "Jane" not in c and "Open Clip Art Library" not in c and c == "Cat. animal"


def test_junk_dropped():
    c = caption_of(
        svg(
            "HASH(0x85a0ae8)",
            "none",
            [
                "",
                "hash(0x8589f20)",
                "hash",
                "sun",
                "  ",
                "Untitled",
                "N/A",
                "unknown",
                "someone@example.org",
                "http://x.org/a",
            ],
        )
    )
    assert c == "sun"
    assert caption_of(svg("Quaver", "HASH(0x89fd810)", ["music"])) == "Quaver. music"
    assert caption_of(svg("Pie", "jean.victor.balin@gmail.com", ["food"])) == "Pie. food"
    assert caption_of(svg("Pie", "contact: a.b@c.de", [])) == "Pie."
    assert caption_of(svg("Hash Browns", "", ["potato"])) == "Hash Browns. potato"  # a real word kept
    assert caption_of(svg("Car", "Um carro esporte, voyeg3r@gmail.com", [])) == "Car. Um carro esporte."
    assert (
        caption_of(svg("Pizza", "A slice. Created by ringe. Email: ri@rin.no.", []))
        == "Pizza. A slice. Created by ringe."
    )


def test_repeats_dropped_case_insensitively():
    c = caption_of(svg("Banana", "banana", ["food", "banana", "Fruit", "fruit", "FOOD", "banana."]))
    assert c == "Banana. food, Fruit"


def test_whitespace_html_entities_underscores():
    c = caption_of(
        svg(
            "  Sunny\n\t day  ",
            "line one\n   line two &amp;eacute;toile &amp;quot;x&amp;quot;",
            ["united_nations_member", "rome,italy", " a ;"],
        )
    )
    assert c == 'Sunny day. line one line two étoile "x". united nations member, rome, italy, a'
    html_desc = (
        '&lt;!-- Creative Commons --&gt;&lt;a href="http://c.org/"&gt;&lt;img src="x.gif" /&gt;'
        '&lt;/a&gt;&lt;br /&gt;Dedicated to the &lt;a href="y"&gt;Public Domain&lt;/a&gt;.'
    )
    assert caption_of(svg("Phone", html_desc)) == "Phone. Dedicated to the Public Domain."
    assert clean_value("a < b") == "a < b"


def test_plain_text_subject_and_alt_title():
    assert caption_of(svg("Map", subject="europe, world ,  flag")) == "Map. europe, world, flag"
    alt = svg("<rdf:Alt><rdf:li xml:lang='x-default'>Globe</rdf:li></rdf:Alt>", "", ["earth"])
    assert caption_of(alt) == "Globe. earth"


def test_clean_value():
    assert clean_value("  a\u00a0 b ") == "a b"
    assert clean_value("x HASH(0xdeadbeef) y") == "x y"
    for junk in ("", "none", "NULL", "-", "untitled", "www.example.com", "https://a.b/c?d", "hash"):
        assert clean_value(junk) == "", junk


# -- safe parsing -----------------------------------------------------------------------


def test_plain_doctype_allowed():
    doctype = (
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.0//EN"\n"http://www.w3.org/TR/2001/REC-SVG-20010904/DTD/svg10.dtd">\n'
    )
    assert caption_of(svg("Cat", prolog=doctype)) == "Cat."


@pytest.mark.parametrize(
    "prolog, title, message",
    [
        ('<!DOCTYPE svg [<!ENTITY x "y">]>', "&x;", "entity declaration refused"),
        (
            '<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',
            "&c;",
            "entity declaration refused",
        ),  # laughs
        ('<!DOCTYPE svg [<!ENTITY ext SYSTEM "file:///etc/passwd">]>', "&ext;", "entity declaration refused"),
        ('<!DOCTYPE svg [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>', "T", "entity declaration refused"),
        ('<!DOCTYPE svg [<!ENTITY u SYSTEM "x" NDATA gif>]>', "T", "entity declaration refused"),
    ],
)
def test_entities_refused(prolog, title, message):
    with pytest.raises(SvgError, match=message):
        parse_svg_metadata(svg(title, prolog=prolog).encode())


def test_malformed():
    with pytest.raises(SvgError, match="malformed XML"):
        parse_svg_metadata(b"<svg><metadata><dc:title>x</metadata>")
    with pytest.raises(SvgError, match="malformed XML"):
        parse_svg_metadata(svg("A").replace("</dc:title>", "</dc:titel>").encode())
    with pytest.raises(SvgError, match="malformed XML"):
        parse_svg_metadata(b"")


def test_stops_after_metadata(tmp_path):
    """Only the metadata is read: what follows it is never parsed (nor even read, if large)."""
    meta = parse_svg_metadata(svg("Cat", tail="<unclosed><<<garbage").encode())
    assert meta.titles == ["Cat"]
    f = tmp_path / "big.svg"
    f.write_text(svg("Big", tail="<path d='M0 0'/>" * 500_000))  # ~8 MB of drawing
    with open(f, "rb") as fh:
        assert parse_svg_metadata(fh).titles == ["Big"]
        assert fh.tell() < 1 << 17


def test_no_metadata_is_empty():
    meta = parse_svg_metadata(b'<svg xmlns="http://www.w3.org/2000/svg"><title>layer</title></svg>')
    assert meta == SvgMetadata() and make_caption(meta) == ""


# -- rows over a tree -------------------------------------------------------------------


def write_tree(cache: Path) -> tuple[Path, Path]:
    png_root, svg_root = roots_from_cache(cache)
    files = {
        "animals/cat_01": svg("Cat", "A cat", ["animal", "pet"]),
        "animals/birds/owl_01": svg("Owl", "", ["bird"]),
        "food/fruit/apple b_01": svg("Apple", "", ["fruit"]),
        "food/empty_01": svg("", "", ["hash", "HASH(0x1)"]),
        "food/broken_01": "<svg><metadata>",
        "food/entity_01": svg("&x;", prolog='<!DOCTYPE svg [<!ENTITY x "y">]>'),
        "people/nosvg_01": None,
        "zoo/tiger_01": svg("Tiger", "", ["cat", "animal"]),
    }
    for i, (stem, text) in enumerate(files.items()):
        png = png_root / f"{stem}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(make_png(2 + i, 2))
        if text is not None:
            s = svg_root / f"{stem}.svg"
            s.parent.mkdir(parents=True, exist_ok=True)
            s.write_text(text)
    # the package files some drawings under a second category with a relative link
    (png_root / "people" / "cat_01.png").symlink_to("../animals/cat_01.png")
    (svg_root / "people").mkdir(exist_ok=True)
    (svg_root / "people" / "cat_01.svg").symlink_to("../animals/cat_01.svg")
    (png_root / "people" / "notes.txt").write_text("not a png")
    return png_root, svg_root


def test_rows_and_counts(tmp_path):
    png_root, svg_root = write_tree(tmp_path)
    stats = SampleStats()
    rows = list(sample_rows(png_root, svg_root, stats))
    assert [r["path"] for r in rows] == [
        "animals/birds/owl_01.png",
        "animals/cat_01.png",
        "food/empty_01.png",
        "food/fruit/apple b_01.png",
        "zoo/tiger_01.png",
    ]  # sorted
    by_path = {r["path"]: r for r in rows}
    assert by_path["animals/cat_01.png"] == {
        "path": "animals/cat_01.png",
        "category": "animals",
        "text": "Cat. A cat. animal, pet",
        "also_in": ["people"],
    }
    assert by_path["animals/birds/owl_01.png"]["category"] == "animals"
    assert by_path["food/empty_01.png"]["text"] == ""
    assert all(r["category"] not in r["text"] or r["category"] == "animals" for r in rows)
    d = stats.to_dict()
    assert (d["pngs"], d["png_links"], d["missing_svg"], d["svg_errors"]) == (8, 1, 1, 2)
    assert d["svg_error_reasons"] == {"entity declaration refused": 1, "malformed XML: no element found": 1}
    assert (d["rows"], d["captioned"], d["empty_caption"]) == (5, 4, 1)
    assert d["categories"] == {"animals": 2, "food": 2, "zoo": 1}
    assert d["captioned_by_category"] == {"animals": 2, "food": 1, "zoo": 1}
    assert d["caption_chars"]["min"] == len("Owl. bird") and d["caption_chars"]["max"] == len("Cat. A cat. animal, pet")
    assert rows == list(sample_rows(png_root, svg_root))  # deterministic


def test_missing_roots(tmp_path):
    with pytest.raises(InputError, match="PNG folder not found"):
        list(sample_rows(tmp_path / "png", tmp_path))
    with pytest.raises(InputError, match="SVG folder not found"):
        list(sample_rows(tmp_path, tmp_path / "svg"))


# -- held-out categories ----------------------------------------------------------------


def test_held_out_categories():
    cats = [f"cat{i}" for i in range(22)]
    chosen = held_out_categories(cats, 0.2, seed=0)
    assert len(chosen) == 4 and chosen == sorted(chosen) and set(chosen) <= set(cats)
    assert held_out_categories(list(reversed(cats)) + cats, 0.2, seed=0) == chosen  # order, repeats
    assert held_out_categories(cats, 0.2, seed=0) == chosen
    assert any(held_out_categories(cats, 0.2, seed=s) != chosen for s in range(1, 5))
    assert set(held_out_categories(cats, 0.1, seed=0)) <= set(held_out_categories(cats, 0.3, seed=0))
    assert held_out_categories(cats, 0.0) == [] and held_out_categories(cats, 1.0) == sorted(cats)
    assert held_out_categories([], 0.5) == []
    with pytest.raises(ValueError):
        held_out_categories(cats, 1.5)


# -- pool -------------------------------------------------------------------------------


def test_write_pool_served_and_fetched(tmp_path):
    png_root, svg_root = write_tree(tmp_path)
    out = tmp_path / "pool" / "openclipart.parquet"
    with serve_directory(png_root) as base:
        stats = write_sample_pool(png_root, svg_root, base, out)
        table = pq.read_table(out)
        assert table.column_names == list(POOL_COLUMNS)
        rows = table.to_pylist()
        assert [r["path"] for r in rows] == [
            "animals/birds/owl_01.png",
            "animals/cat_01.png",
            "food/fruit/apple b_01.png",
            "zoo/tiger_01.png",
        ]  # empty left out
        assert rows[2]["url"] == base + "/food/fruit/apple%20b_01.png"
        for r in rows:  # real HTTP: every URL gives the PNG's bytes
            with urllib.request.urlopen(r["url"], timeout=10) as resp:
                assert resp.read() == (png_root / r["path"]).read_bytes()
    assert stats["pool_rows"] == 4 and stats["held_out_rows"] == 0 and stats["empty_caption"] == 1
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporary left


def test_write_pool_held_out(tmp_path):
    png_root, svg_root = write_tree(tmp_path)
    out = tmp_path / "pool.parquet"
    stats = write_sample_pool(png_root, svg_root, "http://h:1/", out, held_out=["people", "zoo"])
    paths = pq.read_table(out).column("path").to_pylist()
    # zoo by folder; cat_01 by its link under people/
    assert paths == ["animals/birds/owl_01.png", "food/fruit/apple b_01.png"]
    assert stats["held_out_categories"] == ["people", "zoo"] and stats["held_out_rows"] == 2
    assert pq.read_table(out).column("url").to_pylist()[0] == "http://h:1/animals/birds/owl_01.png"


def test_write_pool_deterministic(tmp_path):
    png_root, svg_root = write_tree(tmp_path)
    write_sample_pool(png_root, svg_root, "http://h:1", tmp_path / "a.parquet")
    write_sample_pool(png_root, svg_root, "http://h:1", tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_cli(tmp_path, capsys):
    write_tree(tmp_path / "cache")
    out, stats_file = tmp_path / "pool.parquet", tmp_path / "stats.json"
    assert (
        main(
            [
                "--cache",
                str(tmp_path / "cache"),
                "--base-url",
                "http://127.0.0.1:9",
                "--out",
                str(out),
                "--hold-out-fraction",
                "0.5",
                "--seed",
                "3",
                "--stats",
                str(stats_file),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(stats_file.read_text())
    assert len(printed["held_out_categories"]) == 2  # of animals, food, people, zoo
    assert printed["pool_rows"] == pq.read_table(out).num_rows
    assert main(["--cache", str(tmp_path / "absent"), "--base-url", "http://x", "--out", str(out)]) == 2
    assert "PNG folder not found" in capsys.readouterr().err


# -- the real packages ------------------------------------------------------------------


@pytest.fixture(scope="module")
def openclipart_dir() -> Path:
    value = os.environ.get("OPENCLIPART_DIR")
    if not value or not (Path(value) / PNG_SUBDIR).is_dir() or not (Path(value) / SVG_SUBDIR).is_dir():
        pytest.fail(
            f"OPENCLIPART_DIR is unset or lacks {PNG_SUBDIR} and {SVG_SUBDIR} ({value!r}); fetch them "
            "with `python -m pipeline.sample.fetch --cache .cache/sample openclipart` and set "
            "OPENCLIPART_DIR=.cache/sample (as `make test` does)"
        )
    return Path(value)


@pytest.fixture(scope="module")
def real(openclipart_dir):
    stats = SampleStats()
    rows = list(sample_rows(*roots_from_cache(openclipart_dir), stats))
    return rows, stats.to_dict()


def test_real_counts(real):
    rows, d = real
    assert d["pngs"] == 6900 and d["png_links"] == 1221  # Debian openclipart 1:0.18+dfsg-19
    assert d["missing_svg"] == 0
    assert d["svg_errors"] == 4 and d["svg_error_reasons"] == {"entity declaration refused": 4}
    assert d["rows"] == len(rows) == 6896
    assert d["captioned"] == 6893 and d["captioned_share"] > 0.99
    assert len(d["categories"]) == 22
    assert d["categories"]["animals"] == 286 and d["categories"]["computer"] == 1793
    assert d["categories"]["shapes"] == 1582 and d["categories"]["buttons"] == 3
    assert 30 < d["caption_chars"]["median"] < 60 and d["caption_chars"]["max"] < 1000
    assert sum(1 for r in rows if r["also_in"]) > 0
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)


def test_real_captions(real):
    rows, _ = real
    text = {r["path"]: r["text"] for r in rows}
    assert (
        text["animals/bugs/ragnetto_incazzato_archi_01.png"]
        == "Ragnetto incazzato. architetto francesco rollandin, insect"
    )
    assert text["recreation/music/quaver_nathan_eady_01.png"] == "Quaver. music, recreation"
    assert (
        text["recreation/holiday/sunshine_matthew_gates_01.png"]
        == "Sunshine. holiday, sunny, crepuscular, sun, weather, weathersym, recreation, hot"
    )
    joined = "\n".join(text.values())
    for junk in ("HASH(", "hash(0x", "<a ", "&lt;", "&amp;", "@gmail.com", "_"):
        assert junk not in joined, junk
    assert ", hash," not in joined and not any(t.endswith(", hash") for t in text.values())


def test_real_pool_over_http(openclipart_dir, tmp_path):
    png_root, svg_root = roots_from_cache(openclipart_dir)
    held = held_out_categories([p.name for p in png_root.iterdir() if p.is_dir()], 0.2, seed=0)
    assert len(held) == 4
    with serve_directory(png_root) as base:
        stats = write_sample_pool(png_root, svg_root, base, tmp_path / "pool.parquet", held_out=held)
        rows = pq.read_table(tmp_path / "pool.parquet").to_pylist()
        assert len(rows) == stats["pool_rows"] == 6893 - stats["held_out_rows"]
        assert not {r["category"] for r in rows} & set(held)
        for r in rows[:: max(1, len(rows) // 25)]:
            with urllib.request.urlopen(r["url"], timeout=10) as resp:
                assert resp.read() == (png_root / r["path"]).read_bytes()
