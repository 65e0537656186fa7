"""`python -m pipeline browse` on real sample shards (built once, as tests/pipeline/audit/test_audit.py
builds them): the real server on loopback, answers checked over HTTP against the shards'
own parquet files and tars read here (pyarrow, tarfile), the command line run as a user
runs it, and the pages opened in headless Chromium (every image decoded, no console error).
"""

from __future__ import annotations

import http.client
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.audit.tars import ShardImages
from pipeline.audit.views import open_inputs
from pipeline.browse.index import PER_PAGE as CLI_PER_PAGE
from pipeline.browse.index import Index
from pipeline.browse.server import App, running
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.pipeline.audit.test_audit import QUERIES, build_sample
from tests.support.browser import DevTools
from tests.support.s3server import moto_s3
from tests.support.signals import sigint_as_in_a_terminal

pytestmark = [pytest.mark.slow, pytest.mark.sample]

PER_PAGE = 8  # small pages, so that the sample's queries (20 texts each) span several
FAILURES_PER_PAGE = 2


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return build_sample(tmp_path_factory)


@pytest.fixture(scope="module")
def rows(sample) -> list[dict]:
    """Every attempted sample, read here from the shards' parquet files (shard from the name)."""
    out = []
    for f in sorted(sample["shards"].glob("[0-9]*.parquet")):
        t = pq.read_table(f)
        t = t.append_column("shard", pa.array([f.stem] * t.num_rows))
        out += t.select(["shard", "key", "status", "caption", "queries", "error_message"]).to_pylist()
    assert out
    return out


@pytest.fixture(scope="module")
def server(sample):
    with open_inputs(sample["queries"], sample["shards"], memory_limit="1GB") as inp:
        index = Index.build(inp)
        try:
            app = App(index, ShardImages(inp.shards), per_page=PER_PAGE, failures_per_page=FAILURES_PER_PAGE)
            with running(app) as srv:
                yield srv
        finally:
            index.close()


def get(server, path: str, host: str | None = None) -> tuple[int, dict, bytes]:
    """One GET to a server (or a port) with the path sent exactly as given (http.client does
    not normalise it)."""
    port = server if isinstance(server, int) else server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def page_text(body: bytes) -> str:
    return unescape(body.decode("utf-8"))


def image_keys(body: bytes) -> list[tuple[str, str]]:
    """(shard, key) of every image on a page, in page order."""
    return re.findall(r'<img src="/image/(\d+)/([^"]+)"', body.decode("utf-8"))


def images_of(rows: list[dict], query: str) -> list[tuple[str, str]]:
    return sorted((r["shard"], r["key"]) for r in rows if r["status"] == "success" and query in (r["queries"] or []))


def top_query(rows: list[dict]) -> str:
    """The query with the most images (the first by name among equals)."""
    counts: dict[str, int] = {}
    for r in rows:
        if r["status"] == "success":
            for q in r["queries"] or []:
                counts[q] = counts.get(q, 0) + 1
    return max(sorted(counts), key=lambda q: counts[q])


def tar_member(shards: Path, shard: str, name: str) -> bytes:
    with tarfile.open(shards / f"{shard}.tar") as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


# ---------------------------------------------------------------------------- HTTP level


def test_home_finds_queries_by_prefix_and_substring(server, rows):
    status, headers, body = get(server, "/?q=fro")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert 'href="/query/frog"' in body.decode()
    text = page_text(body)
    assert "Top queries by images" in text
    # substring, any case: "ree" is inside "tree" and "Christmas tree"
    _, _, body = get(server, "/?q=REE")
    assert 'href="/query/tree"' in body.decode() and 'href="/query/Christmas%20tree"' in body.decode()
    # dataset totals, counted here from the parquet files
    images = sum(r["status"] == "success" for r in rows)
    assert f"<b>{len(rows):,}</b><span>download attempts" in body.decode()
    assert f"<b>{images:,}</b><span>images in the shards" in body.decode()
    _, _, body = get(server, "/?q=zzzzqqq")
    assert "No query contains" in page_text(body)


def test_query_page_pages_through_exactly_its_images(server, rows, sample):
    query = top_query(rows)
    expected = images_of(rows, query)
    assert len(expected) > 2 * PER_PAGE, "the sample's top query spans at least three pages"
    last = -(-len(expected) // PER_PAGE)
    seen = []
    for n in range(1, last + 1):
        status, _, body = get(server, f"/query/{quote(query, safe='')}?page={n}")
        assert status == 200
        keys = image_keys(body)
        assert len(keys) == (PER_PAGE if n < last else len(expected) - PER_PAGE * (last - 1))
        seen += keys
        text = page_text(body)
        assert f"page {n} of {last}" in text
        if n == 1:
            assert f"<b>{len(expected):,}</b><span>images in the shards" in body.decode()
            # each image links to its sample page
            shard, key = keys[0]
            assert f'<a href="/sample/{shard}/{key}"><img src="/image/{shard}/{key}"' in body.decode()
    assert seen == expected  # every image once, in (shard, key) order; page 2 is not page 1
    assert image_keys(get(server, f"/query/{quote(query)}?page=2")[2]) != image_keys(
        get(server, f"/query/{quote(query)}")[2]
    )
    status, headers, body = get(server, f"/query/{quote(query)}?page={last + 1}")
    assert status == 404 and headers["content-type"].startswith("text/html") and image_keys(body) == []
    for bad in ("0", "-1", "x", "1.5"):
        assert get(server, f"/query/{quote(query)}?page={bad}")[0] == 400


def test_query_page_tells_the_querys_story(server, rows, sample):
    status, _, body = get(server, "/query/clip%20art")
    assert status == 200
    text = page_text(body)
    assert "“clip art”" in text and "source bigram" in text
    assert (
        "<b>11.50</b><span>PMI (bigrams)" in body.decode()
    )  # from the query list (tests/pipeline/audit/test_audit.py)
    ec = pq.read_table(sample["shards"] / "curation" / "entry_counts.parquet").to_pylist()
    qid = [q[0] for q in QUERIES].index("clip art")  # the row number is the query id
    before = next(r["count"] for r in ec if r["query_id"] == qid)
    assert f"<b>{before:,}</b><span>texts matched (before balancing)" in body.decode()
    attempts = sum(1 for r in rows if "clip art" in (r["queries"] or []))
    assert f"<b>{attempts:,}</b><span>download attempts" in body.decode()


def test_unknown_query_key_and_shard_are_404_pages(server):
    status, headers, body = get(server, "/query/Frog")  # queries are case-sensitive
    assert status == 404 and headers["content-type"] == "text/html; charset=utf-8"
    assert 'href="/query/frog"' in body.decode()  # suggested
    for path in (
        "/query/zzqx%20nothing",
        "/sample/00000/no-such-key",
        "/image/00000/no-such-key",
        "/sample/99999/00000000",
        "/image/99999/00000000",
        "/failures/no%20such%20reason",
        "/nowhere",
    ):
        status, headers, body = get(server, path)
        assert status == 404, path
        assert headers["content-type"].startswith("text/html") and b"Not found" in body, path


def test_image_bytes_are_the_tars_member(server, rows, sample):
    shard, key = next((r["shard"], r["key"]) for r in rows if r["status"] == "success")
    status, headers, body = get(server, f"/image/{shard}/{key}")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert "max-age" in headers["cache-control"]
    assert body == tar_member(sample["shards"], shard, f"{key}.jpg")
    with Image.open(io.BytesIO(body)) as im:
        im.load()
        assert im.width > 0 and im.height > 0


def test_sample_page_shows_every_field(server, rows, sample):
    r = next(r for r in rows if r["status"] == "success")
    status, _, body = get(server, f"/sample/{r['shard']}/{r['key']}")
    assert status == 200
    text = page_text(body)
    assert r["caption"] in text and f"{r['shard']}.tar" in text
    assert f'<img src="/image/{r["shard"]}/{r["key"]}"' in body.decode()
    columns = pq.read_schema(sample["shards"] / f"{r['shard']}.parquet").names
    for col in columns:
        assert f"<th>{col}</th>" in body.decode(), col
    assert f"{r['key']}.json" in text  # the tar's json, too
    for q in r["queries"]:
        assert f'href="/query/{quote(q, safe="")}"' in body.decode()


def test_failures_by_reason(server, rows):
    failed = [r for r in rows if r["status"] != "success"]
    status, _, body = get(server, "/failures")
    assert status == 200
    if not failed:
        assert "No download failed" in page_text(body)
        return
    reasons: dict[str, list] = {}
    for r in failed:
        reasons.setdefault(r["error_message"] or r["status"], []).append((r["shard"], r["key"]))
    for reason, keys in reasons.items():
        assert f'href="/failures/{quote(reason, safe="")}"' in body.decode()
        seen = []
        for n in range(1, -(-len(keys) // FAILURES_PER_PAGE) + 1):
            status, _, page = get(server, f"/failures/{quote(reason, safe='')}?page={n}")
            assert status == 200
            seen += re.findall(r'<a href="/sample/(\d+)/([^"]+)">', page.decode())
        assert seen == sorted(keys)


def test_caption_search_pages_through_matching_captions(server, rows):
    def matching(word: str) -> list[tuple[str, str]]:
        return sorted(
            (r["shard"], r["key"]) for r in rows if r["status"] == "success" and word in (r["caption"] or "").lower()
        )

    word = max(("animal", "computer", "penguin", "icon"), key=lambda w: len(matching(w)))
    expected = matching(word)
    assert len(expected) > PER_PAGE
    seen, n = [], 1
    while True:
        status, _, body = get(server, f"/search?text={word.upper()}&page={n}")  # any case
        assert status == 200
        keys = image_keys(body)
        if not keys:
            break
        seen += keys
        n += 1
    assert seen == expected
    assert "No caption contains it" in page_text(get(server, "/search?text=zzqxzzqx")[2])
    assert get(server, "/search")[0] == 200  # the form


def test_path_traversal_is_refused(server, sample, request):
    # A real tar outside the shards folder: no request may serve it.
    outside = sample["root"] / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "00000.tar").write_bytes((sample["shards"] / "00000.tar").read_bytes())
    request.addfinalizer(lambda: shutil.rmtree(outside))  # the folder is shared with the audit's tests
    for path in (
        "/image/../../etc/passwd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/image/%2E%2E/outside%2F00000/00000000",
        "/image/..%2Foutside%2F00000/00000000",
        "/image/..%2F..%2F..%2Fetc%2Fpasswd/x",
        "/image//etc/passwd",
        "/image/%2Fetc%2Fpasswd/x",
        f"/image/{quote(str(outside / '00000'), safe='')}/00000000",
        "/image/00000/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/0x1/00000000",
        "/image/%00/00000000",
        "/sample/..%2Foutside%2F00000/00000000",
        "/sample/00000/%2e%2e",
        "/../../../../etc/passwd",
    ):
        status, _, body = get(server, path)
        assert status in (400, 404), path
        assert b"root:" not in body and b"\xff\xd8" not in body[:2], path
    # only requests addressed to this machine (a rebinding DNS name is refused)
    assert get(server, "/", host="evil.example:80")[0] == 400
    assert get(server, "/", host=f"localhost:{server.server_address[1]}")[0] == 200


def test_concurrent_requests_get_their_own_answers(server, rows):
    """The server answers from several threads, each with its own DuckDB cursor."""
    query = top_query(rows)
    pages = [f"/query/{quote(query, safe='')}?page={n}" for n in (1, 2, 3)] + ["/?q=fro", "/failures"]
    images = [f"/image/{s}/{k}" for s, k in images_of(rows, query)[:12]]
    paths = (pages + images) * 3
    alone = {p: get(server, p)[2] for p in set(paths)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: get(server, p), paths))
    for p, (status, _, body) in zip(paths, answers):
        assert status == 200 and body == alone[p], p


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_server_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.socket.getsockname()[0] == "127.0.0.1"
    addr = _non_loopback_address()
    if addr is not None:  # connecting to the same port on another address of this machine fails
        with pytest.raises(OSError), socket.create_connection((addr, server.server_address[1]), timeout=5):
            pass


# --------------------------------------------------------------------------- command line


def _start(queries, shards) -> tuple[subprocess.Popen, int]:
    """`python -m pipeline browse --port 0` started as a user starts it; (process, its port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "browse", "--queries", str(queries), "--shards", str(shards), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(r"browse: serving (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)\n", line)
    assert m, (line, proc.poll())
    return proc, int(m.group(2))


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    try:
        proc.send_signal(sig)
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"])
def test_cli_serves_then_stops_cleanly(sample, sig, code):
    proc, port = _start(sample["queries"], sample["shards"])
    try:
        status, _, body = get(port, "/query/frog")
        assert status == 200 and b"frog" in body
    finally:
        _, err = _stop(proc, sig)
    assert proc.returncode == code, err
    assert err.splitlines()[-1] == "browse: stopped" and "Traceback" not in err


def test_cli_browses_a_dataset_on_s3(sample, rows):
    """--queries/--shards as s3:// URLs (moto's S3 server on loopback): pages from the parquet
    files and images from the tars where they lie."""
    with moto_s3() as s3:
        fs = s3.filesystem()
        s3.make_bucket("datasets")
        fs.put(str(sample["queries"]), "datasets/run1/query_lists", recursive=True)
        for f in sorted(sample["shards"].iterdir()):
            if f.name != "audit":
                fs.put(str(f), f"datasets/run1/shards/{f.name}", recursive=f.is_dir())
        proc, port = _start("s3://datasets/run1/query_lists", "s3://datasets/run1/shards")
        try:
            query = top_query(rows)
            status, _, body = get(port, f"/query/{quote(query, safe='')}")
            assert status == 200
            assert image_keys(body) == images_of(rows, query)[:CLI_PER_PAGE]
            shard, key = image_keys(body)[0]
            status, headers, data = get(port, f"/image/{shard}/{key}")
            assert status == 200 and data == tar_member(sample["shards"], shard, f"{key}.jpg")
            status, _, body = get(port, f"/sample/{shard}/{key}")
            assert status == 200 and b"s3://datasets/run1/shards/" in body
        finally:
            _, err = _stop(proc)
        assert proc.returncode == 0, err


def test_cli_bad_options_are_one_line_errors(sample, tmp_path):
    args = ["browse", "--queries", str(sample["queries"]), "--shards", str(sample["shards"])]
    assert_one_line_error(run_cli(*args, "--port", "http"), "--port")
    assert_one_line_error(run_cli(*args, "--port", "70000"), "--port 70000")
    assert_one_line_error(run_cli(*args, "--host", "0.0.0.0"), "--host 0.0.0.0", "127.0.0.1")
    assert_one_line_error(run_cli(*args, "--memory-limit", "lots"), "--memory-limit")
    assert_one_line_error(run_cli("browse", "--port", "0", "--shards", str(tmp_path / "none")), "--shards", "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        run_cli("browse", "--port", "0", "--queries", str(sample["queries"]), "--shards", str(empty)),
        "nothing to browse",
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert_one_line_error(run_cli(*args, "--port", port), f"--port {port}")
    res = run_cli("browse", "--help")
    assert res.returncode == 0 and "127.0.0.1" in res.stdout and "/query/QUERY" in res.stdout


# ------------------------------------------------------------------------------ Chromium


@pytest.mark.browser
def test_pages_render_in_chromium_with_every_image_decoded(server, rows, tmp_path):
    query = top_query(rows)
    assert len(images_of(rows, query)) >= 2 * PER_PAGE
    with DevTools(tmp_path) as browser:
        q = quote(query, safe="")
        for path, n_images in (("/?q=fro", 0), (f"/query/{q}", PER_PAGE), (f"/query/{q}?page=2", PER_PAGE)):
            tab = browser.load(server.url.rstrip("/") + path)
            assert browser.evaluate(tab, "document.querySelector('h1').textContent")
            images = browser.images(tab)
            assert len(images) == n_images, path
            for im in images:
                assert im["naturalWidth"] > 0 and im["naturalHeight"] > 0, im
        r = next(r for r in rows if r["status"] == "success")
        tab = browser.load(f"{server.url}sample/{r['shard']}/{r['key']}")
        images = browser.images(tab)
        assert len(images) == 1 and images[0]["naturalWidth"] > 0
        # the search box finds a query: type, submit, follow the link
        tab = browser.load(server.url)
        browser.evaluate(tab, "document.querySelector('input[name=q]').value = 'fro'; document.forms[0].submit()")
        browser.wait_event("Page.loadEventFired", tab)
        assert browser.evaluate(tab, "location.search") == "?q=fro"
        assert browser.evaluate(tab, "!!document.querySelector('a[href=\"/query/frog\"]')")
    assert browser.errors == []


@pytest.mark.browser
def test_devtools_helper_reports_console_errors_and_broken_images(server, tmp_path):
    """Guards the test above: a console error and an image that does not decode are caught."""
    with DevTools(tmp_path) as browser:
        tab = browser.load(server.url)
        browser.evaluate(tab, "console.error('boom'); 1")
        time.sleep(0.2)
        browser.evaluate(tab, "1")  # collects the events that came meanwhile
        assert any("boom" in e for e in browser.errors), browser.errors
        browser.evaluate(
            tab, "document.body.insertAdjacentHTML('beforeend', '<img src=\"/image/00000/no-such-key\">'); 1"
        )
        images = browser.images(tab)
        assert [im["naturalWidth"] for im in images] == [0]
