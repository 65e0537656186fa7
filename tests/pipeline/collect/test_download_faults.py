"""The download stage under hostile servers, end to end through `python -m pipeline shards`.

A loopback server (`serve_directory(..., faults=True)`) serves six real images of varied
sizes and modes plus every fault route: HTTP 404 and 500, a response slower than
`--timeout`, a body cut short, an HTML page, a 2.5-giga-pixel PNG bomb, an `X-Robots-Tag:
noai` opt-out, and a 100-mega-pixel PNG that OpenCV's own default limit (2**30 pixels) would
decode but `--max-image-pixels` (default 89,478,485) must refuse. The pool also holds rows
the pool step drops (a `data:` URL, an empty caption, a duplicate pair).

Checked: the run exits 0 well before the slow route would answer; every input row is
accounted for by the pool stats; every selected row is attempted exactly once (one
parquet row per uid); good images are in the tar with their curation metadata; each fault
gets the failure img2dataset really reports for it (measured with img2dataset 1.47.0, on
one line each below); `curation/download_stats.json` sums to the same counts.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.support.collect import download
from tests.support.httpserver import SLOW_MAX_SECONDS, TRUNCATED_MISSING, bomb_png, make_png, serve_directory

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset's workers would try the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow

IMAGE_SIZE = 256
TIMEOUT = 2
QUERIES = ["cat", "dog", "red kite"]

# name -> (mode, width, height, caption); varied modes exercise OpenCV's decoding paths
# (alpha matting for RGBA, greyscale, palette) and sizes both sides of IMAGE_SIZE.
GOOD = {
    "small.png": ("RGB", 300, 200, "a cat on a mat"),  # shorter side < 256: kept as is
    "wide.png": ("RGB", 640, 480, "a dog and a cat"),
    "alpha.png": ("RGBA", 400, 300, "a red kite flying"),
    "grey.png": ("L", 257, 900, "the dog sleeps"),
    "palette.png": ("P", 120, 90, "cat"),
    "large.png": ("RGB", 1200, 800, "red kite and dog"),
}
HUGE_SIDE = 10_000  # 10,000 x 10,000 = 1e8 pixels: > 89,478,485, < OpenCV's default 2**30

# name -> (URL path, caption, img2dataset status, check of its error message).
# What img2dataset 1.47.0 reports, measured: urllib's str(HTTPError) for 404/500; the socket
# timeout's "timed out"; http.client's IncompleteRead; its own "Image decoding error" when
# cv2.imdecode returns None; OpenCV's validateInputImageSize assertion (raised from the
# header, before any pixel buffer is allocated) for both oversized PNGs; its own opt-out
# message, sent after the headers and before the body is read.
FAULTS = {
    "404": ("/_fault/404", "cat not found", "failed_to_download", lambda m: m == "HTTP Error 404: Not Found"),
    "500": (
        "/_fault/500",
        "cat server error",
        "failed_to_download",
        lambda m: m == "HTTP Error 500: Internal Server Error",
    ),
    "slow": (
        f"/_fault/slow?seconds={SLOW_MAX_SECONDS:g}",
        "a slow dog",
        "failed_to_download",
        lambda m: "timed out" in m.lower(),
    ),
    "truncated": (
        "/_fault/truncated",
        "truncated red kite",
        "failed_to_download",
        lambda m: re.fullmatch(rf"IncompleteRead\(\d+ bytes read, {TRUNCATED_MISSING} more expected\)", m),
    ),
    "notimage": ("/_fault/notimage", "a cat page", "failed_to_resize", lambda m: m == "Image decoding error"),
    "bomb": (
        "/_fault/bomb",
        "bomb dog",
        "failed_to_resize",
        lambda m: "pixels <= CV_IO_MAX_IMAGE_PIXELS" in m and "validateInputImageSize" in m,
    ),
    "huge": (
        "/huge.png",
        "a huge cat",
        "failed_to_resize",
        lambda m: "pixels <= CV_IO_MAX_IMAGE_PIXELS" in m and "validateInputImageSize" in m,
    ),
    "optout": (
        "/_fault/optout",
        "opted out dog",
        "failed_to_download",
        lambda m: m == "Use of image disallowed by X-Robots-Tag directive",
    ),
}


def _write_image(path: Path, mode: str, width: int, height: int, seed: int) -> None:
    rgb = Image.linear_gradient("L").resize((width, height))
    img = Image.merge("RGB", (rgb, rgb.rotate(90).resize((width, height)), Image.new("L", (width, height), 40 * seed)))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize((width, height)))
    elif mode == "P":
        img = img.quantize(16)
    else:
        img = img.convert(mode)
    img.save(path, format="PNG")


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    for i, (name, (mode, w, h, _)) in enumerate(GOOD.items()):
        _write_image(root / name, mode, w, h, i)
    (root / "huge.png").write_bytes(bomb_png(HUGE_SIDE))  # ~12 kB on the wire
    bomb_png()  # built now, not on the server's first request, where it could outlast --timeout
    return root


def _read_parquets(pattern_dir: Path, pattern: str) -> list[dict]:
    files = sorted(pattern_dir.glob(pattern))
    assert files, f"no {pattern} in {pattern_dir}"
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def test_download_faults_end_to_end(tmp_path: Path, site: Path):
    out = tmp_path / "shards"
    pq.write_table(pa.table({"query": QUERIES}), tmp_path / "queries.parquet")

    with serve_directory(site, faults=True) as base:
        expected = {}  # url -> (kind, caption); kind = image name or fault name
        for name, (_, _, _, caption) in GOOD.items():
            expected[f"{base}/{name}"] = (name, caption)
        for name, (path, caption, _, _) in FAULTS.items():
            expected[f"{base}{path}"] = (name, caption)
        urls = list(expected)
        captions = [expected[u][1] for u in urls]
        dropped = [
            ("data:image/png;base64,iVBORw0KGgo=", "a cat in a data URL"),  # dropped_scheme
            (f"{base}/small.png", " \t "),  # dropped_empty_text
            (urls[0], captions[0]),
        ]  # dropped_duplicate
        pool = pa.table({"url": urls + [u for u, _ in dropped], "caption": captions + [c for _, c in dropped]})
        pq.write_table(pool, tmp_path / "pool.parquet")

        start = time.monotonic()
        r = run_cli(
            "shards",
            "--out",
            str(out),
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--queries",
            str(tmp_path / "queries.parquet"),
            "--allow-private-hosts",
            "--per-query",
            "1000000",
            "--processes",
            "1",
            "--threads",
            "4",
            "--samples-per-shard",
            "100",
            "--timeout",
            str(TIMEOUT),
            "--workers",
            "1",
            "--quiet",
            timeout=3 * SLOW_MAX_SECONDS,
        )
        elapsed = time.monotonic() - start

    assert r.returncode == 0, r.stderr[-4000:]
    log = out / "curation" / "download.log"  # where --quiet sends img2dataset's own output
    for text in (r.stderr, log.read_text(errors="replace") if log.exists() else ""):
        assert "Traceback" not in text, text[-4000:]
    # The slow route answers after SLOW_MAX_SECONDS: finishing before that means the
    # request was abandoned at --timeout, not waited out.
    assert elapsed < SLOW_MAX_SECONDS, f"download took {elapsed:.0f} s: the slow route was waited for"

    cur = out / "curation"
    # -- pool: every input row kept or counted under one dropped_* reason -------------
    ps = json.loads((cur / "pool_stats.json").read_text())
    drops = {k: v for k, v in ps.items() if k.startswith("dropped_")}
    assert ps["rows_in"] == pool.num_rows == ps["kept"] + sum(drops.values())
    assert ps["kept"] == len(expected)
    assert {k: v for k, v in drops.items() if v} == {
        "dropped_scheme": 1,
        "dropped_empty_text": 1,
        "dropped_duplicate": 1,
    }
    ms = json.loads((cur / "match_stats.json").read_text())
    assert ms["rows"] == ms["matched"] == len(expected)
    bs = json.loads((cur / "balance_stats.json").read_text())
    assert bs["matched"] == bs["kept"] == len(expected) and bs["dropped_by_balance"] == 0

    # -- the selection: one row per kept pair, all with keep probability 1 ------------
    selected = _read_parquets(cur / "selected", "part-*.parquet")
    assert sorted(row["url"] for row in selected) == sorted(expected)
    assert len({row["uid"] for row in selected}) == len(selected)
    assert all(row["keep_prob"] == 1.0 for row in selected)
    by_uid = {row["uid"]: row for row in selected}
    for row in selected:  # the matched queries are the ones in the caption
        want = sorted(q for q in QUERIES if re.search(rf"\b{q}\b", row["text"]))
        assert sorted(row["queries"]) == want, row
        assert [QUERIES[i] for i in row["query_ids"]] == row["queries"]

    # -- the shards' parquet: every selected row attempted exactly once ---------------
    attempted = _read_parquets(out, "[0-9]*.parquet")
    assert sorted(row["uid"] for row in attempted) == sorted(by_uid), "a selected row is missing or doubled"
    results = {}
    for row in attempted:
        sel = by_uid[row["uid"]]
        assert (row["url"], row["caption"], row["queries"], row["query_ids"]) == (
            sel["url"],
            sel["text"],
            sel["queries"],
            sel["query_ids"],
        )
        results[expected[row["url"]][0]] = row

    for name, (_mode, w, h, _caption) in GOOD.items():
        row = results[name]
        assert row["status"] == "success" and row["error_message"] is None, (name, row)
        assert (row["original_width"], row["original_height"]) == (w, h), name
        assert min(row["width"], row["height"]) == min(w, h, IMAGE_SIZE), name  # never upscaled
        assert abs(row["width"] / row["height"] - w / h) < 0.01, name  # aspect kept

    for name, (_, _, status, message_ok) in FAULTS.items():
        row = results[name]
        assert row["status"] == status, (name, row["status"], row["error_message"])
        assert row["error_message"] and message_ok(row["error_message"]), (name, row["error_message"])
        assert row["width"] is None and row["original_width"] is None, name  # nothing was decoded

    # -- the tars: exactly the successes, each with image, caption and curation json ---
    tars = sorted(out.glob("[0-9]*.tar"))
    members = []
    for tar in tars:
        with tarfile.open(tar) as tf:
            members += tf.getnames()
    success_keys = {row["key"] for row in attempted if row["status"] == "success"}
    assert sorted(members) == sorted(f"{k}.{ext}" for k in success_keys for ext in ("jpg", "txt", "json"))

    import webdataset as wds

    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert len(samples) == len(GOOD)
    for sample in samples:
        meta = json.loads(sample["json"])
        row = next(r for r in attempted if r["key"] == sample["__key__"])
        assert meta["uid"] == row["uid"] and meta["status"] == "success"
        sel = by_uid[meta["uid"]]
        assert (meta["url"], meta["caption"], meta["queries"], meta["query_ids"], meta["keep_prob"]) == (
            sel["url"],
            sel["text"],
            sel["queries"],
            sel["query_ids"],
            sel["keep_prob"],
        )
        assert sample["txt"].decode() == sel["text"]
        with Image.open(io.BytesIO(sample["jpg"])) as img:
            assert img.format == "JPEG" and img.size == (row["width"], row["height"])

    # -- statistics: per shard and the stage's summary agree with the parquet rows ----
    want_status = Counter("success" if r["status"] == "success" else r["error_message"] for r in attempted)
    want_counts = Counter(r["status"] for r in attempted)
    assert want_counts == {"success": len(GOOD), "failed_to_download": 5, "failed_to_resize": 3}
    summary = json.loads((cur / "download_stats.json").read_text())
    assert summary["shards"] == len(tars) == len(list(out.glob("[0-9]*_stats.json")))
    assert summary["count"] == len(selected) == sum(summary["status_dict"].values())
    assert summary["successes"] == want_counts["success"]
    assert summary["failed_to_download"] == want_counts["failed_to_download"]
    assert summary["failed_to_resize"] == want_counts["failed_to_resize"]
    assert summary["status_dict"] == dict(want_status)
    per_shard = [json.loads(p.read_text()) for p in sorted(out.glob("[0-9]*_stats.json"))]
    assert sum(s["count"] for s in per_shard) == summary["count"]
    assert sum((Counter(s["status_dict"]) for s in per_shard), Counter()) == want_status


class _Redirector(http.server.BaseHTTPRequestHandler):
    """`/red.png` an image; `/go?to=URL` a 302 to URL."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/red.png":
            body = make_png(300, 200)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path == "/go":
            self.send_response(302)
            self.send_header("Location", parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)


@contextlib.contextmanager
def _redirector():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_redirect_from_a_public_host_to_a_private_one_is_refused(tmp_path: Path):
    """The policy holds on every hop of a redirect, through the real download stage.

    Loopback is all a test has, so one loopback server plays the public host: its address
    is let through the policy (`allowed_addresses`), as a public one would be. A second
    loopback server (another port) plays the private host a redirect points to.
    """

    with _redirector() as public, _redirector() as private:
        pub, priv = f"http://127.0.0.1:{public}", f"http://127.0.0.1:{private}"
        cases = {
            f"{pub}/red.png": "success",  # the allowance works
            f"{pub}/go?to={quote(pub + '/red.png')}": "success",  # a redirect between public addresses
            f"{pub}/go?to={quote(priv + '/red.png')}": "127.0.0.1",  # public -> private address
            f"{pub}/go?to={quote(f'http://localhost:{private}/red.png')}": "localhost",  # -> a private name
            f"{priv}/red.png": "127.0.0.1",  # the private host itself
        }
        cur = tmp_path / "curation"
        (cur / "selected").mkdir(parents=True)
        n = len(cases)
        pq.write_table(
            pa.table(
                {
                    "uid": [f"{i:016x}" for i in range(n)],
                    "url": list(cases),
                    "text": ["a red kite"] * n,
                    "query_ids": pa.array([[2]] * n, pa.list_(pa.int32())),
                    "queries": [["red kite"]] * n,
                    "keep_prob": [1.0] * n,
                    "source": ["test"] * n,
                }
            ),
            cur / "selected" / "part-00000.parquet",
        )
        stats = download(
            cur,
            tmp_path / "out",
            processes=1,
            threads=n,
            samples_per_shard=10,
            timeout=5,
            quiet=True,
            allowed_addresses=(f"127.0.0.1:{public}",),
        )

    rows = {r["url"]: r for r in pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()}
    assert len(rows) == n == stats["count"]
    for url, want in cases.items():
        row = rows[url]
        if want == "success":
            assert row["status"] == "success", (url, row["error_message"])
        else:
            assert row["status"] == "failed_to_download", (url, row["status"])
            assert f"refused by the host policy: {want} resolves to non-public address" in row["error_message"], (
                url,
                row["error_message"],
            )
