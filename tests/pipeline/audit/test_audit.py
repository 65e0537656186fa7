"""`pipeline audit` on freshly built real sample outputs: every figure checked against counts
computed here independently (pyarrow over the raw files, plain Python), plus --query, --sql,
missing inputs and determinism."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_one_line_error, required_path, run_cli

pytestmark = pytest.mark.slow

PER_QUERY = 20
# (query, source, count, pmi, views): a little of every source; "zzqx never" matches nothing.
QUERIES = [
    ("animal", "wordnet", 900, None, None),
    ("computer", "wordnet", 89, None, None),
    ("frog", "wordnet", 12, None, None),
    ("cat", "wordnet", 40, None, None),
    ("bird", "wordnet", 30, None, None),
    ("flower", "wordnet", 25, None, None),
    ("tree", "wordnet", 80, None, None),
    ("star", "wordnet", 50, None, None),
    ("food", "wordnet", 60, None, None),
    ("linux", "unigram", 33, None, None),
    ("the", "unigram", 9000, None, None),
    ("of", "unigram", 8000, None, None),
    ("people", "unigram", 300, None, None),
    ("clip art", "bigram", 7, 11.5, None),
    ("Christmas tree", "bigram", 5, 10.2, None),
    ("Tux", "title", None, None, 120),
    ("zzqx never", "title", None, None, 70),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_query_list(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cols = list(zip(*QUERIES))
    pq.write_table(
        pa.table(
            {
                "query": pa.array(cols[0], pa.string()),
                "source": pa.array(cols[1], pa.string()),
                "count": pa.array(cols[2], pa.int64()),
                "pmi": pa.array(cols[3], pa.float64()),
                "views": pa.array(cols[4], pa.int64()),
            }
        ),
        folder / "queries.parquet",
    )
    (folder / "queries.txt").write_text("".join(q[0] + "\n" for q in QUERIES))
    sources = Counter(q[1] for q in QUERIES)
    (folder / "build.json").write_text(
        json.dumps(
            {
                "tool": {"name": "pipeline queries", "version": "test"},
                "recipe": "metaclip",
                "parameters": {"recipe": "metaclip", "min_count": 20, "min_pmi": 10.0, "size": None},
                "titles_from": "written by the test",
                "total": len(QUERIES),
                "sources": {s: {"added": n, "duplicates_skipped": 0, "considered": n} for s, n in sources.items()},
            }
        )
    )
    return folder


def build_sample(tmp_path_factory) -> dict:
    """Real sample outputs + one audit, built once per session (the render test reuses them)."""
    root = tmp_path_factory.getbasetemp() / "audit-sample"
    done = root / "done.json"
    if done.exists():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    if root.exists():
        shutil.rmtree(root)
    openclipart = required_path("OPENCLIPART_DIR")
    queries = write_query_list(root / "query_lists")
    shards = root / "shards"
    res = run_cli(
        "shards",
        "--sample-openclipart",
        str(openclipart),
        "--queries",
        str(queries / "queries.parquet"),
        "--out",
        str(shards),
        "--per-query",
        str(PER_QUERY),
        "--samples-per-shard",
        "100",
        "--sample-port",
        str(free_port()),
        "--processes",
        "2",
        "--threads",
        "8",
        "--workers",
        "2",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    res = run_cli("audit", "--queries", str(queries), "--shards", str(shards), "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""
    paths = {"root": root, "queries": queries, "shards": shards, "audit": shards / "audit"}
    done.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> dict:
    return build_sample(tmp_path_factory)


@pytest.fixture(scope="session")
def summary(sample) -> dict:
    return json.loads((sample["audit"] / "summary.json").read_text())


def read(pattern_dir: Path, glob: str) -> pa.Table:
    files = sorted(pattern_dir.glob(glob))
    assert files, f"no {glob} in {pattern_dir}"
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def per_query(table: pa.Table, column: str = "query_ids") -> Counter:
    return Counter(pc.list_flatten(table.column(column)).to_pylist())


# ------------------------------------------------------------------ figures vs independent counts


def test_every_section_available_and_no_warnings(summary):
    for section in ("query_list", "pool", "matching", "balancing", "download", "text"):
        assert summary[section]["available"] is True, (section, summary[section])
    assert summary["warnings"] == []
    assert summary["generated_at"]  # the build time, in one place


def test_query_list_figures(summary):
    q = summary["query_list"]
    assert q["queries"] == len(QUERIES)
    expected = Counter(s for _, s, *_ in QUERIES)
    assert {r["source"]: r["queries"] for r in q["by_source"]} == expected
    assert [r["source"] for r in q["by_source"]] == ["wordnet", "unigram", "bigram", "title"]
    assert q["by_source"][2]["examples"] == ["clip art", "Christmas tree"]
    assert q["build"]["parameters"]["min_pmi"] == 10.0 and q["build"]["titles_from"] == "written by the test"
    assert q["build"]["recipe"] == "metaclip"


def test_pool_and_matching_figures(sample, summary):
    cur = sample["shards"] / "curation"
    pool = read(cur / "pool", "part-*.parquet")
    stats = json.loads((cur / "pool_stats.json").read_text())
    p = summary["pool"]
    assert p["rows"] == pool.num_rows == stats["kept"]
    assert p["rows_in"] == stats["rows_in"]
    assert p["dropped"] == {k[len("dropped_") :]: v for k, v in stats.items() if k.startswith("dropped_")}
    assert p["rows_in"] == p["rows"] + p["dropped_total"]

    matches = read(cur / "matches", "part-*.parquet")
    lengths = pc.list_value_length(matches.column("query_ids")).to_pylist()
    matched = sum(1 for n in lengths if n > 0)
    m = summary["matching"]
    assert m["matched"] == matched
    assert m["matched_share"] == pytest.approx(matched / pool.num_rows, abs=1e-6)
    assert m["matches"] == sum(lengths)
    assert m["matches_per_matched_text"]["mean"] == pytest.approx(sum(lengths) / matched, abs=1e-4)
    assert m["matches_per_matched_text"]["max"] == max(lengths)
    hist = {b["bin"]: b["count"] for b in m["matches_per_text_histogram"]}
    assert hist["0"] == pool.num_rows - matched
    assert hist["1"] == lengths.count(1) and hist["2"] == lengths.count(2)
    assert sum(hist.values()) == pool.num_rows


def test_balancing_figures(sample, summary):
    cur = sample["shards"] / "curation"
    before = per_query(read(cur / "matches", "part-*.parquet"))
    selected = read(cur / "selected", "part-*.parquet")
    after = per_query(selected)
    ec = pq.read_table(cur / "entry_counts.parquet").to_pylist()
    assert {r["query_id"]: r["count"] for r in ec if r["count"]} == dict(before)

    b = summary["balancing"]
    assert b["per_query"] == PER_QUERY
    assert b["before"]["queries"] == len(QUERIES)
    assert b["before"]["queries_with_matches"] == len(before)
    assert b["before"]["queries_without_matches"] == len(QUERIES) - len(before) >= 1  # "zzqx never"
    assert b["before"]["matches"] == sum(before.values())
    head = {q: n for q, n in before.items() if n > PER_QUERY}
    assert len(head) >= 3, "the cap must bind for several queries"
    assert b["head"]["queries_over_cap"] == len(head)
    assert b["head"]["share_of_matches_before"] == pytest.approx(sum(head.values()) / sum(before.values()), abs=1e-6)
    assert b["head"]["share_of_matches_after"] == pytest.approx(
        sum(after[q] for q in head) / sum(after.values()), abs=1e-6
    )

    matched = summary["matching"]["matched"]
    assert summary["matching"]["recipe"] == "clip"
    built = json.loads((sample["shards"] / "curation" / "match_stats.json").read_text())["queries_built_with"]
    assert built["recipe"] == "metaclip" and built["parameters"]["min_pmi"] == 10.0
    assert b["after"]["texts_kept"] == selected.num_rows < matched
    assert b["after"]["kept_fraction"] == pytest.approx(selected.num_rows / matched, abs=1e-6)
    assert b["after"]["matches"] == sum(after.values())
    assert b["after"]["queries_matched_but_none_selected"] == len(set(before) - set(after))

    # Rank-frequency curves: rank 1 is the largest count, the last point the smallest.
    rf = b["before"]["rank_frequency"]
    assert rf["queries"] == len(before)
    assert rf["points"][0] == [1, max(before.values())] and rf["points"][-1] == [len(before), min(before.values())]
    assert b["after"]["rank_frequency"]["points"][0] == [1, max(after.values())]

    # Per query, for the most matched queries: before, after, keep probability.
    names = [q[0] for q in QUERIES]
    top = b["top_queries"]
    ranked = [q for q, _ in sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))]
    assert [r["query_id"] for r in top] == ranked[:15]
    for r in top:
        assert r["query"] == names[r["query_id"]]
        assert r["before"] == before[r["query_id"]] and r["after"] == after.get(r["query_id"], 0)
        assert r["keep_prob"] == pytest.approx(min(1.0, PER_QUERY / r["before"]), abs=1e-6)
    by_source = {r["source"]: r for r in b["by_source"]}
    assert by_source["title"]["matches_before"] == sum(n for q, n in before.items() if QUERIES[q][1] == "title")


def test_download_figures(sample, summary):
    samples = read(sample["shards"], "[0-9]*.parquet").to_pylist()
    d = summary["download"]
    ok = [r for r in samples if r["status"] == "success"]
    assert d["attempted"] == len(samples) == summary["balancing"]["after"]["texts_kept"]
    assert d["successes"] == len(ok) > 0
    assert d["success_rate"] == pytest.approx(len(ok) / len(samples), abs=1e-6)
    assert {r["status"]: r["count"] for r in d["by_status"]} == Counter(r["status"] for r in samples)
    assert d["opt_out_refusals"] == sum("X-Robots-Tag" in (r["error_message"] or "") for r in samples)
    assert d["shards"] == len(list(sample["shards"].glob("[0-9]*.tar")))
    dl_stats = json.loads((sample["shards"] / "curation" / "download_stats.json").read_text())
    assert d["successes"] == dl_stats["successes"] and d["attempted"] == dl_stats["count"]
    assert d["top_hosts"][0]["host"] == "127.0.0.1" and d["top_hosts"][0]["attempted"] == len(samples)

    hashes = Counter(r["sha256"] for r in ok if r["sha256"])
    dup = d["duplicates"]
    assert dup["distinct_sha256"] == len(hashes)
    assert dup["duplicate_groups"] == sum(1 for n in hashes.values() if n > 1)
    assert dup["redundant_images"] == sum(n - 1 for n in hashes.values())

    widths = sorted(r["original_width"] for r in ok)
    sizes = d["image_sizes"]["original_width"]
    assert sizes["max"] == widths[-1] and sizes["min"] == widths[0]
    assert sizes["quantiles"]["p50"] == widths[(len(widths) + 1) // 2 - 1]  # nearest rank
    assert sum(b["count"] for b in d["aspect_ratio_histogram"]) == len(ok)
    assert sum(b["count"] for b in d["image_sizes"]["original_short_side_histogram"]) == len(ok)


def test_text_figures(sample, summary):
    ok = [r for r in read(sample["shards"], "[0-9]*.parquet").to_pylist() if r["status"] == "success"]
    t = summary["text"]
    lengths = [len(r["caption"]) for r in ok]
    assert t["captions"] == len(ok)
    assert t["caption_chars"]["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=1e-4)
    assert t["caption_chars"]["max"] == max(lengths)
    assert sum(b["count"] for b in t["caption_chars_histogram"]) == len(ok)
    counts = Counter(q for r in ok for q in r["queries"])
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: len(t["top_queries"])]
    assert [(r["query"], r["samples"]) for r in t["top_queries"]] == expected


def test_headline(summary):
    h = summary["headline"]
    assert h["queries"] == summary["query_list"]["queries"]
    assert h["pool_rows"] == summary["pool"]["rows"]
    assert h["matched_share"] == summary["matching"]["matched_share"]
    assert h["kept_after_balancing"] == summary["balancing"]["after"]["texts_kept"]
    assert h["images_downloaded"] == summary["download"]["successes"]
    assert h["download_success_rate"] == summary["download"]["success_rate"]


# ------------------------------------------------------------------ the files


def test_report_files_are_self_contained(sample, summary):
    html = (sample["audit"] / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"
    assert "@import" not in html and "url(" not in html
    svgs = re.findall(r'<svg class="plot" data-plot="([^"]+)"', html)
    assert svgs == summary["plots"]
    assert {
        "flow",
        "queries_by_source",
        "matches_per_text",
        "rank_frequency",
        "download_status",
        "caption_length",
        "top_queries_shards",
    } <= set(svgs)
    assert f"{summary['headline']['images_downloaded']:,}" in html
    assert html.count(summary["generated_at"]) == 1, "the build time appears once"
    md = (sample["audit"] / "report.md").read_text()
    assert "| queries | pool rows |" in md
    assert "Recipe: metaclip (MetaCLIP v1's rules)." in md and "Recipe: metaclip" in html
    assert f"{summary['headline']['kept_after_balancing']:,}" in md
    for title in ("Query list", "Pool", "Matching", "Balancing", "Download", "Text"):
        assert f"## {title}" in md


def test_outputs_are_deterministic_apart_from_the_time(sample, summary, tmp_path):
    res = run_cli(
        "audit",
        "--queries",
        str(sample["queries"]),
        "--shards",
        str(sample["shards"]),
        "--out",
        str(tmp_path / "again"),
        "--memory-limit",
        "256MB",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["images_downloaded"] == summary["headline"]["images_downloaded"]
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    t0, t1 = summary.pop("generated_at"), again.pop("generated_at")
    assert again == summary
    html0 = (sample["audit"] / "report.html").read_text().replace(t0, "T")
    html1 = (tmp_path / "again" / "report.html").read_text().replace(t1, "T")
    assert html0 == html1


# ------------------------------------------------------------------ interactive use


def test_query_lookup(sample):
    cur = sample["shards"] / "curation"
    qid = [q[0] for q in QUERIES].index("animal")
    before = per_query(read(cur / "matches", "part-*.parquet"))[qid]
    after = per_query(read(cur / "selected", "part-*.parquet"))[qid]
    ok = [
        r
        for r in read(sample["shards"], "[0-9]*.parquet").to_pylist()
        if r["status"] == "success" and qid in r["query_ids"]
    ]
    args = ("audit", "--queries", str(sample["queries"]), "--shards", str(sample["shards"]), "--query", "animal")
    res = run_cli(*args, "--format", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["query_id"], info["source"]) == (qid, "wordnet")
    assert info["matches_before_balancing"] == before > PER_QUERY
    assert info["kept_after_balancing"] == after
    assert info["images_in_shards"] == len(ok)
    assert info["keep_probability"] == pytest.approx(PER_QUERY / before, abs=1e-6)
    assert 0 < len(info["samples"]) <= 5
    for s in info["samples"]:  # image paths point at real members of the tar shards
        tar, member = s["image"].rsplit(":", 1)
        with tarfile.open(tar) as tf:
            assert member in tf.getnames()
        assert "animal" in s["caption"]
    text = run_cli(*args)
    assert text.returncode == 0 and f"{before:,}" in text.stdout and info["samples"][0]["image"] in text.stdout

    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(sample["shards"]), "--query", "Animal")
    assert_one_line_error(res, "--query 'Animal'", "similar: animal")


def test_sql(sample, summary):
    base = ("audit", "--queries", str(sample["queries"]), "--shards", str(sample["shards"]))
    res = run_cli(
        *base,
        "--format",
        "json",
        "--sql",
        "SELECT (SELECT count(*) FROM queries) AS q, (SELECT count(*) FROM pool) AS p, "
        "(SELECT count(*) FROM matches) AS m, (SELECT count(*) FROM entry_counts) AS e, "
        "(SELECT count(*) FROM selected) AS s, (SELECT count(*) FROM samples) AS d",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {
            "q": len(QUERIES),
            "p": summary["pool"]["rows"],
            "m": summary["matching"]["matched"],
            "e": len(QUERIES),
            "s": summary["balancing"]["after"]["texts_kept"],
            "d": summary["download"]["attempted"],
        }
    ]
    res = run_cli(
        *base, "--format", "csv", "--sql", "SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY status"
    )
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {r["status"]: int(r["n"]) for r in rows} == {
        r["status"]: r["count"] for r in summary["download"]["by_status"]
    }
    res = run_cli(
        *base, "--sql", "SELECT query_id, query, source FROM queries WHERE source = 'bigram' ORDER BY query_id"
    )
    assert res.returncode == 0
    assert res.stdout.splitlines()[0].split() == ["query_id", "query", "source"]
    assert "clip art" in res.stdout and "(2 rows)" in res.stdout
    bad = run_cli(*base, "--sql", "SELEC 1")
    assert_one_line_error(bad, "--sql", "syntax error")


def test_help_documents_every_view():
    res = run_cli("audit", "--help")
    assert res.returncode == 0
    for view in ("queries", "pool", "matches", "entry_counts", "selected", "samples"):
        assert re.search(rf"^\s+{view}\s", res.stdout, re.M), view
    for col in ("query_id", "query_ids", "keep_prob", "sha256", "error_message"):
        assert col in res.stdout


# ------------------------------------------------------------------ missing inputs


def test_missing_curation_marks_sections_unavailable(sample, tmp_path):
    """Only the shards' parquet files (no curation/, no tars), with duplicated images planted."""
    shards = tmp_path / "shards"
    shards.mkdir()
    files = sorted(sample["shards"].glob("[0-9]*.parquet"))
    for i, f in enumerate(files):
        t = pq.read_table(f)
        if i == 0:
            sha = t.column("sha256").to_pylist()
            ok = [j for j, s in enumerate(sha) if s]
            sha[ok[1]] = sha[ok[2]] = sha[ok[0]]  # one group of 3 identical images
            t = t.set_column(t.schema.get_field_index("sha256"), "sha256", pa.array(sha, pa.string()))
        pq.write_table(t, shards / f.name)
    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(shards))
    assert res.returncode == 0, res.stderr
    assert "unavailable sections: pool, matching, balancing" in res.stderr
    s = json.loads((shards / "audit" / "summary.json").read_text())
    for section in ("pool", "matching", "balancing"):
        assert s[section]["available"] is False and "curation" in s[section]["reason"]
    assert s["download"]["available"] and s["text"]["available"] and s["query_list"]["available"]
    assert s["headline"]["pool_rows"] is None and s["headline"]["images_downloaded"] > 0
    ok = [r for r in read(shards, "[0-9]*.parquet").to_pylist() if r["status"] == "success"]
    hashes = Counter(r["sha256"] for r in ok)
    assert s["download"]["duplicates"]["duplicate_groups"] == sum(1 for n in hashes.values() if n > 1) >= 1
    assert s["download"]["duplicates"]["redundant_images"] == sum(n - 1 for n in hashes.values()) >= 2
    assert s["download"]["duplicates"]["largest_groups"][0]["images"] == 3
    html = (shards / "audit" / "report.html").read_text()
    assert html.count("Section unavailable") == 3
    assert re.findall(r'data-plot="([^"]+)"', html) == s["plots"]
    md = (shards / "audit" / "report.md").read_text()
    assert "*unavailable*" in md

    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(shards), "--sql", "SELECT * FROM pool")
    assert_one_line_error(res, "view 'pool' is unavailable")


def test_nothing_to_audit_is_a_one_line_error(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "s").mkdir()
    res = run_cli("audit", "--queries", str(tmp_path / "q"), "--shards", str(tmp_path / "s"))
    assert_one_line_error(res, "nothing to audit", str(tmp_path / "s"))
    res = run_cli("audit", "--queries", str(tmp_path / "q"), "--shards", str(tmp_path / "s"), "--memory-limit", "lots")
    assert_one_line_error(res, "--memory-limit")


def test_corrupt_part_is_reported_not_a_traceback(sample, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(sample["shards"] / "curation", shards / "curation")
    part = sorted((shards / "curation" / "selected").glob("part-*.parquet"))[0]
    part.write_bytes(b"this is not parquet")
    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(shards))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "selected unavailable" in res.stderr
    s = json.loads((shards / "audit" / "summary.json").read_text())
    assert s["balancing"]["available"] and s["balancing"]["after"]["available"] is False
    assert str(part) in s["balancing"]["after"]["reason"]


def test_paths_that_do_not_exist_are_one_line_errors(sample, tmp_path):
    nowhere = tmp_path / "no" / "such" / "dir"
    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(nowhere), "--out", str(tmp_path / "a"))
    assert_one_line_error(res, f"--shards {nowhere}: no such file or folder")
    assert not (tmp_path / "a").exists() and not nowhere.exists()
    res = run_cli("audit", "--queries", str(nowhere), "--shards", str(sample["shards"]), "--out", str(tmp_path / "b"))
    assert_one_line_error(res, f"--queries {nowhere}: no such file or folder")
    missing_file = sample["queries"] / "queries-old.parquet"
    res = run_cli("audit", "--queries", str(missing_file), "--shards", str(sample["shards"]), "--sql", "SELECT 1")
    assert_one_line_error(res, f"--queries {missing_file}: no such file or folder")
    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(nowhere), "--query", "animal")
    assert_one_line_error(res, f"--shards {nowhere}")
    # An existing folder with nothing to audit still gets its report: every section it lacks is unavailable.
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("audit", "--queries", str(sample["queries"]), "--shards", str(empty))
    assert res.returncode == 0, res.stderr
    assert "unavailable sections: pool, matching, balancing, download, text" in res.stderr
    assert json.loads((empty / "audit" / "summary.json").read_text())["query_list"]["available"] is True


def test_report_md_tells_the_report_time_from_the_query_lists_build(sample, tmp_path):
    t = json.loads((sample["audit"] / "summary.json").read_text())["generated_at"]
    md = (sample["audit"] / "report.md").read_text()
    assert (
        f"Report written {t}; query list `{sample['queries'] / 'queries.parquet'}` (its build.json records no "
        f"build time)" in md
    )
    assert f"built {t}" not in md, "the report's own time is not the query list's build time"
    assert f"report written {t}" in (sample["audit"] / "report.html").read_text()

    queries = tmp_path / "query_lists"
    shutil.copytree(sample["queries"], queries)
    build = json.loads((queries / "build.json").read_text())
    build["timings_s"] = {"wordnet": 0.25, "count_dump": 1.0, "total": 1.5}  # what `pipeline queries` records
    (queries / "build.json").write_text(json.dumps(build))
    res = run_cli(
        "audit", "--queries", str(queries), "--shards", str(sample["shards"]), "--out", str(tmp_path / "a"), "--quiet"
    )
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "a" / "report.md").read_text()
    assert "(its build.json records no build time; the build took 1.5 s)" in md
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["query_list"]["build"]["seconds"] == 1.5

    build["built_at"] = "2026-11-30T14:24:07+00:00"
    (queries / "build.json").write_text(json.dumps(build))
    res = run_cli(
        "audit", "--queries", str(queries), "--shards", str(sample["shards"]), "--out", str(tmp_path / "b"), "--quiet"
    )
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "b" / "report.md").read_text()
    assert f"query list `{queries / 'queries.parquet'}`, built 2026-11-30T14:24:07+00:00;" in md


# ------------------------------------------------------------------ contact sheets


def test_contact_sheets_show_top_queries_a_random_sample_and_failures(sample, summary):
    """The sheets' queries are the most matched ones (counted here from the parquet files),
    every image belongs to its sheet, and each thumbnail is that key's image: the byte-range
    read through the tar index gives the bytes tarfile extracts."""
    import base64

    from PIL import Image

    from pipeline.audit.sheets import PER_QUERY as SHEET_SIZE
    from pipeline.audit.sheets import RANDOM, THUMB_PX, TOP_QUERIES
    from pipeline.audit.tars import thumbnail

    cs = summary["contact_sheets"]
    assert cs["available"] and cs["left_out_for_budget"] == 0 and cs["unreadable"] == 0
    samples = read(sample["shards"], "[0-9]*.parquet").to_pylist()
    ok = [r for r in samples if r["status"] == "success"]
    by_query = Counter(q for r in ok for q in r["queries"])
    ranked = sorted(by_query.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_QUERIES]
    sheets = cs["sheets"]
    queries = [s for s in sheets if s["kind"] == "query"]
    assert [(s["query"], int(s["note"].split()[0].replace(",", ""))) for s in queries] == ranked
    row = {r["key"]: r for r in ok}
    for s in queries:
        assert len(s["images"]) == min(SHEET_SIZE, by_query[s["query"]])
        for im in s["images"]:
            assert s["query"] in row[im["key"]]["queries"] and im["caption"] == row[im["key"]]["caption"]
    (rand,) = [s for s in sheets if s["kind"] == "random"]
    assert len(rand["images"]) == min(RANDOM, len(ok)) and len({i["key"] for i in rand["images"]}) == len(
        rand["images"]
    )
    # failures: the shards keep no image for a failed download; each reason is listed as such
    failed = Counter(r["error_message"] for r in samples if r["status"] != "success" and r["error_message"])
    assert {f["reason"]: f["failed"] for f in cs["failure_reasons"]} == dict(failed.most_common(8))
    assert all(f["with_image"] == 0 for f in cs["failure_reasons"])

    html = (sample["audit"] / "report.html").read_text()
    uris = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', html)
    listed = [im for s in sheets for im in s["images"]]
    assert len(uris) == len(listed) > 0
    assert len(html.encode()) < 3_000_000
    for uri, im in list(zip(uris, listed))[:: max(1, len(listed) // 12)]:
        with tarfile.open(sample["shards"] / f"{im['shard']}.tar") as tf:
            original = tf.extractfile(f"{im['key']}.jpg").read()
        data = base64.b64decode(uri)
        assert data == thumbnail(original, THUMB_PX)
        with Image.open(io.BytesIO(data)) as t:
            assert max(t.size) == THUMB_PX or max(t.size) < THUMB_PX


def test_contact_sheets_keep_to_their_budget(sample):
    from pipeline.audit.sheets import contact_sheets
    from pipeline.audit.views import open_inputs

    with open_inputs(sample["queries"], sample["shards"]) as inp:
        small = contact_sheets(inp, budget=20_000)
        full = contact_sheets(inp)
    shown = sum(len(s["images"]) for s in small["sheets"])
    assert 0 < small["bytes"] <= 20_000 and small["left_out_for_budget"] > 0
    assert shown + small["left_out_for_budget"] == sum(len(s["images"]) for s in full["sheets"])
    assert "thumbnails left out" not in (sample["audit"] / "report.html").read_text()
