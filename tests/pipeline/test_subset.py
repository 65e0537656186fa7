"""`python -m pipeline subset`: selected uids as DataComp's subset file, checked against an
independent computation (np.unique over the expected uids in DataComp's `u8,u8` layout)
and against DataComp's resharder lookup (np.searchsorted on the structured array)."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.subset import hex_to_u16, u16_to_hex, write_subset
from tests.conftest import assert_one_line_error, run_cli


def curation(root, parts: list[list[str]], query_ids=None):
    sel = root / "curation" / "selected"
    sel.mkdir(parents=True)
    for i, uids in enumerate(parts):
        cols = {"uid": uids, "url": [f"http://x/{u}" for u in uids]}
        if query_ids is not None:
            cols["query_ids"] = pa.array(query_ids[i], pa.list_(pa.int32()))
        pq.write_table(pa.table(cols), sel / f"part-{i:05d}.parquet")
    return root


def datacomp_uids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


def test_npy_is_datacomps_sorted_u8_u8_and_round_trips(tmp_path):
    uids = datacomp_uids(5000)
    uids[7] = uids[7].upper()  # hex in either case is the same uid
    uids += [uids[11]]  # listed twice: kept twice, as DataComp's resharder would write it twice
    root = curation(tmp_path / "c", [uids[:2000], uids[2000:]])
    meta = write_subset(root, tmp_path / "subset.npy")
    got = np.load(tmp_path / "subset.npy")
    # independently: the uids as (high, low) integers, sorted with numpy's structured sort
    want = np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], dtype=np.dtype("u8,u8"))
    want.sort()
    assert got.dtype == np.dtype("u8,u8") and np.array_equal(got, want)
    assert np.array_equal(np.unique(got), np.unique(want)) and len(np.unique(got)) == 5000
    assert u16_to_hex(got) == sorted(u.lower() for u in uids)
    assert meta["count"] == 5001 and meta["listed_twice"] == 1
    assert json.loads((tmp_path / "subset.npy.json").read_text())["sha256"] == meta["sha256"]
    # the resharder's lookup finds every listed uid (and one that is not, nowhere)
    for u in (uids[0], uids[4999], uids[11]):
        key = hex_to_u16(pa.array([u.lower()]))[0]
        a, b = np.searchsorted(got, key, "left"), np.searchsorted(got, key, "right")
        assert b - a == (2 if u == uids[11] else 1)
    key = hex_to_u16(pa.array(["0" * 32]))[0]
    assert np.searchsorted(got, key, "left") == np.searchsorted(got, key, "right")


def test_txt_and_parquet_take_any_uid_in_the_same_order(tmp_path):
    uids = ["b2", "a1", "c3"]
    root = curation(tmp_path / "c", [uids])
    write_subset(root, tmp_path / "s.txt", "txt")
    assert (tmp_path / "s.txt").read_text().split() == ["a1", "b2", "c3"]
    write_subset(root, tmp_path / "s.parquet", "parquet")
    assert pq.read_table(tmp_path / "s.parquet").column("uid").to_pylist() == ["a1", "b2", "c3"]


def test_online_datasets_give_the_subset_a_pass_draws(tmp_path):
    """With --balance-t: the rows the trainer's pass would keep (`collect.online_draw`),
    deterministic in the seed and pass, the heads cut to about T, the tail whole."""
    from pipeline.collect.online_draw import OnlineBalance, online_keep_probabilities, uid_keys

    uids = datacomp_uids(1050, seed=1)
    ids = [[0]] * 1000 + [[1]] * 50
    root = curation(tmp_path / "c", [uids], [ids])
    meta = json.dumps({"mode": "online", "per_query": 50, "online_cap": None, "seed": 0})
    table = pa.table(
        {"query_id": pa.array([0, 1], pa.int32()), "query": ["cat", "dog"], "count": [1000, 50], "t": [50, 50]}
    )
    pq.write_table(table.replace_schema_metadata({"balance": meta}), root / "entry_counts.parquet")
    write_subset(root, tmp_path / "a.npy", balance_t=100, seed=3, pass_=2)
    got = set(u16_to_hex(np.load(tmp_path / "a.npy")))
    balance = OnlineBalance(100.0, 3, online_keep_probabilities(pq.read_table(root / "entry_counts.parquet"), 100))
    kept = balance.drawn(uid_keys(uids), pa.array(ids, pa.list_(pa.int64())), 2)
    assert got == {u for u, k in zip(uids, kept) if k}
    cats = sum(1 for u in uids[:1000] if u in got)
    assert 60 <= cats <= 140 and all(u in got for u in uids[1000:])  # Binomial(1000, 0.1): 100 +- 40 at 1e-4
    write_subset(root, tmp_path / "b.npy", balance_t=100, seed=3, pass_=3)
    assert set(u16_to_hex(np.load(tmp_path / "b.npy"))) != got


def test_bad_uids_and_empty_selections_are_one_line_errors(tmp_path):
    root = curation(tmp_path / "c", [datacomp_uids(3) + ["0123456789abcdef"]])
    res = run_cli("subset", "--curation", str(root), "--out", str(tmp_path / "s.npy"))
    assert_one_line_error(res, "part-00000.parquet: row 3: uid '0123456789abcdef' is not 32 hex digits")
    empty = curation(tmp_path / "e", [[]])
    res = run_cli("subset", "--curation", str(empty), "--out", str(tmp_path / "e.npy"))
    assert_one_line_error(res, "no selected rows")
    res = run_cli("subset", "--curation", str(tmp_path / "nothing"), "--out", str(tmp_path / "n.npy"))
    assert_one_line_error(res, "no selected parts")
    assert not (tmp_path / "s.npy").exists()
