"""Balancing while training (`train.balance`, `--balance-t`): what each pass draws, that the
stream reads exactly that (with and without shard indexes), the statistics of the draws,
determinism in the seed and step-exact resume, on a synthetic online dataset
(tests/support/online.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from scipy import stats

from pipeline.errors import InputError
from tests.support.online import (
    QUERIES,
    T,
    assert_binomial_draws,
    draws_over_passes,
    entry_counts,
    uid_of,
    write_online_dataset,
)
from tests.support.shards import TOK
from train.balance import load_entry_table, make_balance, pass_record, uid_keys
from train.config import StreamConfig
from train.stream import is_held_out, make_train_loader

ALPHA = 1e-4  # each statistical test below fails on correct draws with at most this probability


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("online")
    return {
        "indexed": write_online_dataset(root / "indexed"),
        "plain": write_online_dataset(root / "plain", index=False),
    }


def urls(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("[0-9]*.tar"))


def balanced(folder: Path, t: float = T, seed: int = 0):
    table = load_entry_table(urls(folder))
    return table, make_balance(table, t, seed)


def loader(folder: Path, seed: int = 0, num_batches: int | None = None, **kw):
    """A balancing train loader: one sample a batch, no shuffle buffer, no workers, 10% held
    out, unless `kw` says otherwise."""
    _, balance = balanced(folder, seed=seed)
    settings = {"batch_size": 1, "image_size": 32, "workers": 0, "val_fraction": 0.1, "shuffle_buffer": 0}
    config = StreamConfig(**{**settings, "seed": seed, **kw})
    return make_train_loader(urls(folder), TOK, config, num_batches=num_batches, balance=balance)


def shard_samples(folder: Path) -> dict[str, list[tuple[str, list[int]]]]:
    """Per shard URL, its samples' (uid, entry ids) in tar order."""
    out = {}
    for url in urls(folder):
        rows = pq.read_table(url[: -len(".tar")] + ".parquet").to_pylist()
        out[url] = [(r["uid"], r["query_ids"]) for r in rows]
    return out


def drawn_uids(balance, samples: list[tuple[str, list[int]]], pass_: int, val_fraction: float) -> list[str]:
    import pyarrow as pa

    uids = [u for u, _ in samples]
    kept = balance.drawn(uid_keys(uids), pa.array([ids for _, ids in samples], pa.list_(pa.int64())), pass_)
    return [u for u, k in zip(uids, kept) if k and not is_held_out(u, val_fraction)]


def test_the_stream_reads_exactly_what_each_pass_draws(data):
    """Without a shuffle buffer and one sample a batch, each batch's stream position names
    the shard draw it came from: every completed draw gave exactly its shard's samples that
    the draw's pass keeps (held-out ones never), in tar order."""
    table, balance = balanced(data["indexed"])
    by_uid = {u: url for url, rows in shard_samples(data["indexed"]).items() for u, _ in rows}
    samples = shard_samples(data["indexed"])
    ld = loader(data["indexed"])
    got: dict[int, list[str]] = {}
    passes: dict[int, int] = {}
    for n, (_, tokens, info) in enumerate(ld):
        uid = uid_of(int(tokens[0, 0]))
        assert info["uids"] == [uid]
        draw = ld.streams[info["worker"]]["draw"]  # the position after this batch: its draw
        got.setdefault(draw, []).append(uid)
        passes[draw] = info["pass"]
        if n == 400:
            break
    complete = sorted(got)[:-1]
    assert len(complete) >= 10 and max(passes.values()) >= 2
    for draw in complete:
        url = by_uid[got[draw][0]]
        assert got[draw] == drawn_uids(balance, samples[url], passes[draw], 0.1), f"draw {draw}"
        assert passes[draw] == draw * 1 // len(samples)  # one stream: a pass is as many draws as shards


def test_indexed_and_streamed_shards_give_the_same_batches_and_counts(data):
    """With an index the stream reads only the drawn samples' byte ranges; without one it
    reads every sample and drops the others before decoding: the same batches, the same
    counts of held-out and not-drawn samples."""
    runs = []
    for name in ("indexed", "plain"):
        ld = loader(data[name], num_batches=60, batch_size=4, shuffle_buffer=12, workers=2)
        runs.append(([info["uids"] for *_, info in ld], dict(ld.totals)))
    assert runs[0] == runs[1]
    assert runs[0][1]["not_drawn"] > 0 and runs[0][1]["held_out"] > 0


def test_a_stale_index_is_not_used(data, tmp_path):
    """An index whose tar was rewritten (another size) is ignored: the shard is streamed."""
    folder = tmp_path / "stale"
    shutil.copytree(data["indexed"], folder)
    tar = folder / "00000.tar"
    tar.write_bytes(tar.read_bytes() + b"\0" * 10240)  # still a valid tar, 20 blocks longer
    first = [info["uids"] for *_, info in loader(folder, num_batches=30)]
    assert first == [info["uids"] for *_, info in loader(data["indexed"], num_batches=30)]


def test_per_entry_draws_stay_within_binomial_bounds_of_min_count_t(data):
    """Over 300 passes (nothing held out): each entry's expectation is the sum of its
    samples' keep probabilities, min(count, T) for an entry whose samples match it alone;
    a single-entry entry's drawn count is Binomial(count, min(1, T / count)) each pass
    (exact two-sided bounds, Bonferroni over passes); every sample is drawn
    Binomial(passes, p) times independently of the others (chi-square over samples, both
    tails: too regular draws fail as much as too wild ones). False-alarm rate <= ALPHA each."""
    table, balance = balanced(data["indexed"])
    passes = 300
    counts = entry_counts()
    records = [pass_record(table, balance, urls(data["indexed"]), e, lambda uid: False) for e in range(passes)]
    first = records[0][0].to_pydict()
    assert first["query"] == QUERIES and first["count"] == counts and first["samples"] == counts
    expected = dict(zip(first["query_id"], first["expected"]))
    for single in (2, 4, 5):  # bird (60 > T), newt (5), yak (3): samples of that entry only
        assert expected[single] == pytest.approx(min(counts[single], T))
    n, p = counts[2], T / counts[2]
    lo, hi = stats.binom.ppf(ALPHA / (2 * passes), n, p), stats.binom.isf(ALPHA / (2 * passes), n, p)
    birds = [r.column("drawn").to_pylist()[2] for r, _ in records]
    assert all(lo <= b <= hi for b in birds), (lo, hi, min(birds), max(birds))
    assert all(r.column("drawn").to_pylist()[4:] == [5, 3] for r, _ in records)  # the tail, whole each pass

    # per sample: times drawn over the passes
    samples = [s for rows in shard_samples(data["indexed"]).values() for s in rows]
    times, keep_p = draws_over_passes(balance, samples, passes)
    assert sum(r["drawn"] for _, r in records) == times.sum()
    assert sum(r["expected"] for _, r in records) / passes == pytest.approx(keep_p.sum(), abs=1e-3)
    assert_binomial_draws(times, keep_p, passes, ALPHA)
    # and per entry, the passes' mean converges to the expectation (z-test, Bonferroni over entries)
    z = stats.norm.isf(ALPHA / (2 * len(QUERIES)))
    for i in range(len(QUERIES)):
        has = np.array([i in ids for _, ids in samples])
        var = float((keep_p * (1 - keep_p))[has].sum()) * passes
        total = sum(r.column("drawn").to_pylist()[i] for r, _ in records)
        assert abs(total - passes * expected[i]) <= z * max(var, 1e-12) ** 0.5, QUERIES[i]


def test_same_seed_same_subsets_other_seed_or_pass_other_ones(data):
    folder = data["indexed"]
    table, a = balanced(folder, seed=0)
    _, b = balanced(folder, seed=1)
    held = lambda uid: is_held_out(uid, 0.1)  # noqa: E731
    again = balanced(folder, seed=0)[1]
    assert pass_record(table, a, urls(folder), 0, held)[0].equals(pass_record(table, again, urls(folder), 0, held)[0])
    assert not pass_record(table, a, urls(folder), 0, held)[0].equals(pass_record(table, b, urls(folder), 0, held)[0])
    samples = [s for rows in shard_samples(folder).values() for s in rows]
    assert drawn_uids(a, samples, 0, 0.1) == drawn_uids(balanced(folder, seed=0)[1], samples, 0, 0.1)
    assert drawn_uids(a, samples, 0, 0.1) != drawn_uids(b, samples, 0, 0.1)
    assert drawn_uids(a, samples, 0, 0.1) != drawn_uids(a, samples, 1, 0.1)
    same = [info["uids"] for *_, info in loader(folder, num_batches=40, batch_size=4, shuffle_buffer=12)]
    assert same == [info["uids"] for *_, info in loader(folder, num_batches=40, batch_size=4, shuffle_buffer=12)]
    other = [info["uids"] for *_, info in loader(folder, seed=1, num_batches=40, batch_size=4, shuffle_buffer=12)]
    assert same != other


@pytest.mark.parametrize("workers", [0, 2])
def test_a_balanced_stream_continues_exactly_from_its_state(data, workers):
    """Stopped and continued from its state_dict, a balancing loader yields exactly the
    batches the uninterrupted one did, the shuffle buffer spanning shard draws and passes;
    a state taken at another T is not continued."""
    folder = data["indexed"]
    _, balance = balanced(folder)
    config = StreamConfig(batch_size=6, image_size=32, workers=workers, val_fraction=0.1, shuffle_buffer=24)

    def make(num_batches, **kw):
        return make_train_loader(urls(folder), TOK, config, num_batches=num_batches, balance=balance, **kw)

    full = list(make(30))
    assert full[-1][2]["pass"] >= 1, "the run crosses a pass"
    for k in (7, 19):
        first = make(k)
        assert [i["uids"] for *_, i in first] == [i["uids"] for *_, i in full[:k]]
        rest = make(30 - k, resume=first.state_dict(), start_step=k)
        assert rest.resume_note is None
        tail = list(rest)
        assert [i["uids"] for *_, i in tail] == [i["uids"] for *_, i in full[k:]]
        assert all((a[0] == b[0]).all() for a, b in zip(tail, full[k:])), "the same crops"
        assert [i["not_drawn"] for *_, i in tail] == [i["not_drawn"] for *_, i in full[k:]]
    _, other = balanced(folder, t=T / 2)
    state = make(3).state_dict()
    moved = make_train_loader(urls(folder), TOK, config, num_batches=2, balance=other, resume=state, start_step=3)
    assert "--balance-t changed" in moved.resume_note


def test_shards_without_counts_or_with_counts_that_disagree_are_refused(data, tmp_path):
    from tests.support.shards import write_shards

    with pytest.raises(InputError, match="entry_counts.parquet: not found: --balance-t needs shards that carry"):
        load_entry_table(urls(write_shards(tmp_path / "offline", 2, 5)))
    import pyarrow as pa

    low = tmp_path / "low"
    shutil.copytree(data["indexed"], low)
    t = pq.read_table(low / "entry_counts.parquet")
    counts = t.column("count").to_pylist()
    counts[1] = 10
    pq.write_table(t.set_column(2, "count", pa.array(counts, pa.int64())), low / "entry_counts.parquet")
    with pytest.raises(InputError, match=r"entry 1 \('dog'\) counts 10 matches but the shards hold 210"):
        load_entry_table(urls(low))
    short = tmp_path / "short"
    shutil.copytree(data["indexed"], short)
    pq.write_table(t.slice(0, 3), short / "entry_counts.parquet")
    with pytest.raises(InputError, match=r"00000.parquet: row \d+: entry id \d is not in .*\(0..2\)"):
        load_entry_table(urls(short))
    with pytest.raises(InputError, match="--balance-t must be > 0, got 0"):
        make_balance(load_entry_table(urls(data["indexed"])), 0, 0)


# --------------------------------------------------------------------------- the trainer


def test_balance_t_on_shards_that_cannot_be_balanced_is_a_one_line_error(data, tmp_path, capsys):
    """The trainer's own entry point (`train.main.main`, in this process: the CLI's code
    path without a second torch import): exit 2 and one `error:` line, before any run folder."""
    from tests.support.shards import write_shards
    from train.main import main

    offline = write_shards(tmp_path / "offline", 2, 5)
    common = ["--runs", str(tmp_path), "--name", "x", "--steps", "2", "--quiet"]
    for shards, t, needles in (
        (offline, "10", ("entry_counts.parquet: not found", "--balance online")),
        (data["indexed"], "0", ("--balance-t must be > 0",)),
    ):
        assert main(["--train-data", f"{shards}/[0-9]*.tar", "--balance-t", t, *common]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines
    assert not (tmp_path / "x").exists(), "nothing ran"


@pytest.mark.slow
def test_on_s3_the_drawn_samples_are_read_by_range_and_the_batches_match_local_disk(data):
    """Against a real S3 API (moto on loopback): the counts and the shards' parquet files are
    read from the bucket, each shard's index too, and a pass's samples are fetched by ranged
    GETs: the same batches and counts as from local disk."""
    from tests.support.s3server import moto_s3
    from train.shards import read_index

    folder = data["indexed"]
    with moto_s3() as server:
        server.make_bucket("online")
        fs = server.filesystem()
        for p in sorted(folder.iterdir()):
            fs.put_file(str(p), f"online/shards/{p.name}")
        remote = [f"s3://online/shards/{Path(u).name}" for u in urls(folder)]
        assert read_index(remote[0]) is not None
        table = load_entry_table(remote)
        assert table.counts.tolist() == entry_counts()
        config = StreamConfig(batch_size=4, image_size=32, workers=0, val_fraction=0.1, shuffle_buffer=12)
        got = []
        for where in (remote, urls(folder)):
            ld = make_train_loader(where, TOK, config, num_batches=40, balance=make_balance(table, T, 0))
            got.append(([info["uids"] for *_, info in ld], dict(ld.totals)))
        assert got[0] == got[1] and got[0][1]["not_drawn"] > 0


def test_reading_by_index_matches_the_tar_reader_and_counts_an_index_that_does_not_fit(tmp_path):
    """Byte-range reads give the samples the streaming reader gives, long (pax) member names
    included; an index whose ranges are not whole members is a counted shard error."""
    from collections import Counter

    from pipeline.shard_format import write_index
    from tests.support.shards import sample, write_tar
    from train.shards import ShardIndex, iter_shard, iter_shard_rows, read_index

    long = "k" * 120  # over ustar's 100 characters: a pax header carries the name
    rows = [sample(i) for i in range(6)]
    rows[3] = {**sample(3), "__key__": f"{long}3"}
    tar = write_tar(tmp_path / "00000.tar", rows)
    write_index(str(tar))
    index = read_index(str(tar))
    assert index is not None and index.keys[3] == f"{long}3"
    counts: Counter = Counter()
    got = dict(iter_shard_rows(str(tar), index, [1, 3, 4], counts))
    every = list(iter_shard(str(tar), Counter()))
    assert got == {j: every[j] for j in (1, 3, 4)} and not +counts - Counter(shards=1)
    table = pq.read_table(f"{tar}.idx")
    shifted = table.set_column(3, "offset", pa.compute.add(table.column("offset"), 512))
    broken = ShardIndex(shifted)
    counts = Counter()
    assert list(iter_shard_rows(str(tar), broken, [1, 2], counts)) == [] and counts["shard_truncated"] == 1
