"""A synthetic online-balanced dataset, as `pipeline shards --balance online` lays it out:
tars whose samples' json carry `query_ids`, a parquet per shard, each shard's index
(`NNNNN.tar.idx`, made from the tar's headers by `pipeline.shard_format.write_index`; the
download step's own, written as it writes, is checked in test_balance_online.py) and
`entry_counts.parquet` beside them.

Entries have Zipf-like sizes and some samples match two entries, so a pass's per-entry
counts are not independent, as in real data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.shard_format import write_index
from tests.support.shards import sample, write_tar

QUERIES = ["cat", "dog", "bird", "fish", "newt", "yak"]
# (entry ids of a sample, how many samples): heads well over T, a tail under it
SPEC = [([0], 400), ([1], 150), ([2], 60), ([3], 20), ([4], 5), ([0, 1], 40), ([1, 3], 20), ([5], 3)]
T = 30


def uid_of(sample_id: int) -> str:
    return f"{sample_id * 2654435761 % 2**64:016x}"


def samples_spec() -> list[list[int]]:
    out: list[list[int]] = []
    for ids, n in SPEC:
        out += [list(ids)] * n
    # interleave the groups so every shard has head and tail samples
    return [out[i] for i in sorted(range(len(out)), key=lambda i: (i * 7919) % len(out))]


def write_online_dataset(
    root: Path, per_shard: int = 100, index: bool = True, extra_counts: int = 0, corrupt: int = 0
) -> Path:
    """The dataset under `root`; `extra_counts`: matches per entry that are not in the
    shards (as for pairs that failed to download); `corrupt`: how many of the tail's
    samples (kept by every pass) have an undecodable image."""
    root.mkdir(parents=True, exist_ok=True)
    spec = samples_spec()
    broken = {sid for sid, ids in enumerate(spec) if ids in ([4], [5])}
    broken = set(sorted(broken)[:corrupt])
    counts = [0] * len(QUERIES)
    for ids in spec:
        for i in ids:
            counts[i] += 1
    for s in range(0, len(spec), per_shard):
        rows, members = [], []
        for sid in range(s, min(s + per_shard, len(spec))):
            ids = spec[sid]
            meta = {"uid": uid_of(sid), "query_ids": ids, "queries": [QUERIES[i] for i in ids], "status": "success"}
            bad = {"jpg": b"\xff\xd8 not a jpeg"} if sid in broken else {}
            members.append(sample(sid, json=json.dumps(meta).encode(), **bad))
            rows.append({"key": f"{sid:09d}", **meta})
        tar = write_tar(root / f"{s // per_shard:05d}.tar", members)
        pq.write_table(
            pa.table(
                {
                    "key": [r["key"] for r in rows],
                    "uid": [r["uid"] for r in rows],
                    "status": [r["status"] for r in rows],
                    "query_ids": pa.array([r["query_ids"] for r in rows], pa.list_(pa.int32())),
                    "queries": [r["queries"] for r in rows],
                }
            ),
            tar.with_suffix(".parquet"),
        )
        if index:
            write_index(str(tar))
    table = pa.table(
        {
            "query_id": pa.array(range(len(QUERIES)), pa.int32()),
            "query": QUERIES,
            "count": pa.array([c + extra_counts for c in counts], pa.int64()),
            "t": pa.array([T] * len(QUERIES), pa.int64()),
        }
    ).replace_schema_metadata(
        {"balance": json.dumps({"mode": "online", "per_query": T, "online_cap": None, "seed": 0}, sort_keys=True)}
    )
    pq.write_table(table, root / "entry_counts.parquet")
    return root


def entry_counts() -> list[int]:
    counts = [0] * len(QUERIES)
    for ids in samples_spec():
        for i in ids:
            counts[i] += 1
    return counts


def draws_over_passes(balance, samples: list[tuple[str, list[int]]], passes: int):
    """(times each sample is drawn over passes 0..passes-1, its keep probability
    1 - prod(1 - p_i)), from `OnlineBalance.drawn` on (uid, entry ids) pairs."""
    import numpy as np

    from train.balance import uid_keys

    keys = uid_keys([u for u, _ in samples])
    ids = pa.array([list(i) for _, i in samples], pa.list_(pa.int64()))
    times = np.zeros(len(samples))
    for e in range(passes):
        times += balance.drawn(keys, ids, e)
    keep_p = np.array([1 - np.prod([1 - balance.p[i] for i in i_s]) for _, i_s in samples])
    return times, keep_p


def assert_binomial_draws(times, keep_p, passes: int, alpha: float) -> None:
    """Each sample drawn Binomial(passes, p) times, independently of the others: the samples
    with p in (0, 1) by a two-sided chi-square test at false-alarm rate `alpha` (too regular
    draws fail as much as too wild ones), the others exactly 0 or `passes` times."""
    from scipy import stats

    varied = (keep_p > 0) & (keep_p < 1)
    assert (times[~varied] == passes * keep_p[~varied]).all()
    t_v, p_v = times[varied], keep_p[varied]
    chi2 = float(((t_v - passes * p_v) ** 2 / (passes * p_v * (1 - p_v))).sum())
    df = int(varied.sum())
    assert df > 0
    assert stats.chi2.ppf(alpha / 2, df) < chi2 < stats.chi2.isf(alpha / 2, df), (chi2, df)


def assert_pass_records(run, shards, t: float, seed: int, val_fraction: float) -> int:
    """RUN/balance/pass-NNNN.parquet, from pass 0 on, each equal to `train.balance.pass_record`
    for the shards, with its totals in its metadata; metrics.jsonl rows carry the latest
    pass's totals; the report shows the first and latest pass. How many records there are."""
    import json

    from train.balance import load_entry_table, make_balance, pass_record
    from train.report import write_report
    from train.stream import is_held_out

    urls = sorted(str(p) for p in Path(shards).glob("[0-9]*.tar"))
    table = load_entry_table(urls)
    balance = make_balance(table, t, seed)
    records = sorted((Path(run) / "balance").glob("pass-*.parquet"))
    assert [p.name for p in records] == [f"pass-{e:04d}.parquet" for e in range(len(records))] and records
    for e, path in enumerate(records):
        want, totals = pass_record(table, balance, urls, e, lambda uid: is_held_out(uid, val_fraction))
        got = pq.read_table(path)
        assert got.select(want.column_names).equals(want), path
        assert json.loads(got.schema.metadata[b"totals"]) == totals
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    latest = [r["balance"] for r in rows if "balance" in r]
    assert latest and latest[-1]["t"] == t and latest[-1]["drawn"] > 0
    html = write_report(run).read_text()
    assert 'id="balance"' in html and "drawn, pass 0" in html
    if len(records) > 1:
        assert f"drawn, pass {len(records) - 1}" in html
    return len(records)
