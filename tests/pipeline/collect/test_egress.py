"""The host policy holds at connect time: names and redirects that reach private addresses fail."""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.collect import egress
from pipeline.distribute import Engine
from pipeline.sample.server import serve_directory
from tests.support.collect import download


def test_names_resolving_to_local_addresses_are_refused():
    with pytest.raises(egress.RefusedHost, match="localhost resolves to non-public address 127.0.0.1"):
        egress.vetted_address("localhost", 80)
    with pytest.raises(egress.RefusedHost):
        egress.vetted_address("127.0.0.1", 80)


def selection(root, urls):
    cur = root / "curation"
    (cur / "selected").mkdir(parents=True)
    n = len(urls)
    pq.write_table(
        pa.table(
            {
                "uid": [f"{i:016x}" for i in range(n)],
                "url": urls,
                "text": ["a red square"] * n,
                "query_ids": pa.array([[0]] * n, pa.list_(pa.int32())),
                "queries": [["square"]] * n,
                "keep_prob": [1.0] * n,
                "source": ["test"] * n,
            }
        ),
        cur / "selected" / "part-00000.parquet",
    )
    return cur


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.ray)])
@pytest.mark.parametrize("allow", [False, True])
def test_download_refuses_local_hosts_unless_allowed(tmp_path, allow, engine, request):
    # On Ray the shards are fetched by the cluster's worker processes: the policy must hold there too.
    dist = Engine("ray", ray_address=request.getfixturevalue("ray_cluster")) if engine == "ray" else None
    img = tmp_path / "www"
    img.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "red").save(buf, format="PNG")
    (img / "red.png").write_bytes(buf.getvalue())
    with serve_directory(img) as base:
        port = base.rsplit(":", 1)[1]
        # A host *name* for this machine passes the pool step's URL-text check; connecting must not.
        cur = selection(tmp_path, [f"{base}/red.png", f"http://localhost:{port}/red.png"])
        stats = download(
            cur,
            tmp_path / "out",
            processes=1,
            threads=2,
            samples_per_shard=10,
            timeout=5,
            quiet=True,
            allow_private_hosts=allow,
            engine=dist,
        )
    rows = duckdb.sql(f"SELECT status, error_message FROM read_parquet('{tmp_path}/out/[0-9]*.parquet')").fetchall()
    assert len(rows) == 2 == stats["count"]
    if allow:
        assert [s for s, _ in rows] == ["success", "success"]
    else:
        assert all(s == "failed_to_download" and "refused by the host policy" in e for s, e in rows), rows
