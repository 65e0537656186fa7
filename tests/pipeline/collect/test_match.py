"""Query matching: word boundaries, case, overlaps, and the match stage over parquet parts."""

from __future__ import annotations

import json
import pickle
import random
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.collect import match as m
from pipeline.collect.match import QueryMatcher, fold_case
from pipeline.errors import InputError
from tests.support.collect import match_pool


def found(queries: list[str], text: str | None, ignore_case: bool = False) -> list[str]:
    return [queries[i] for i in QueryMatcher(queries, ignore_case).match(text)]


# ------------------------------------------------------------------ boundaries


@pytest.mark.parametrize(
    "query, text, expected",
    [
        ("Zürich", "Zürichsee", False),
        ("Zürich", "Lake Zürich, Switzerland", True),
        ("café", "two cafés", False),
        ("café", "café au lait", True),
        ("cafe", "cafe\u0301 au lait", False),  # decomposed é: the mark belongs to the word
        ("東京", "東京都", False),  # CJK characters are letters: no match inside a run
        ("東京", "「東京」 tower", True),
        ("東京", "東京 タワー", True),
        ("3D", "3Dprint", False),
        ("3D", "3D printer", True),
        ("dog", "dog2", False),
        ("dog", "hotdog", False),
        ("dog", "dogs", False),
        ("dog", "a dog, a cat", True),
        ("dog", "(dog)", True),
        ("dog", "the dog's bone", True),
        ("dog", "dog-friendly", True),
        ("dog", "dog_house", True),  # underscore is not a letter or digit
        ("dog", "dog", True),
        ("dog", "dog at start", True),
        ("dog", "at the end: dog", True),
        ("C++", "C++ code", True),
        ("C++", "C++x", False),
        (".NET", "ASP.NET", False),
        (".NET", "(.NET)", True),
        (".NET", ".NET", True),
        ("U.S. Army", "the U.S. Army's band", True),
    ],
)
def test_word_boundaries(query, text, expected):
    assert found(["filler", query], text) == ([query] if expected else [])


def test_overlapping_and_multi_word_queries():
    queries = ["New York", "York", "New York City", "City", "York City", "Yor", "New"]
    assert found(queries, "I love New York City!") == ["New York", "York", "New York City", "City", "York City", "New"]
    assert found(queries, "NewYork City") == ["City"]
    assert found(queries, "New  York") == ["York", "New"]  # phrases match as written


def test_repeated_occurrences_counted_once_and_ids_sorted():
    queries = ["zebra", "dog", "apple"]
    ids = QueryMatcher(queries).match("dog apple dog zebra dog")
    assert ids == [0, 1, 2]


def test_empty_and_null():
    matcher = QueryMatcher(["", "   ", "dog", None])
    assert matcher.size == 1
    assert matcher.match("") == []
    assert matcher.match(None) == []
    assert matcher.match("   ") == []
    assert matcher.match("dog") == [2]
    assert QueryMatcher(["", " "]).match("anything") == []


def test_nul_is_an_ordinary_non_word_character():  # though NUL is the internal marker
    queries = ["dog", "big dog", "\x00", "g\x00d"]
    assert found(queries, "big\x00dog") == ["dog"]
    assert found(queries, "\x00dog\x00 g\x00d") == ["dog", "g\x00d"]
    assert found(queries, "a \x00 b") == ["\x00"]


# ------------------------------------------------------------------ case


def test_case_sensitive_by_default():
    assert found(["dog"], "DOG Dog") == []
    assert found(["dog"], "DOG", ignore_case=True) == ["dog"]


def test_ignore_case_keeps_all_queries_sharing_a_key():
    matcher = QueryMatcher(["Gas", "gas", "water"], ignore_case=True)
    assert matcher.match("GAS") == [0, 1]
    assert QueryMatcher(["Gas", "gas"]).match("GAS") == []
    assert QueryMatcher(["Gas", "gas"]).match("gas") == [1]


def test_fold_case_preserves_length():
    for text in ["İstanbul", "ΟΔΟΣ Σ ς", "Straße", "ǅemal", "ﬁne", "ABC", "x" * 3]:
        assert len(fold_case(text)) == len(text)
    assert fold_case("İSTANBUL") == "istanbul"
    assert fold_case("ΟΔΟΣ") == fold_case("οδος") == fold_case("οδοσ")


def test_ignore_case_offsets_do_not_shift():
    # str.lower() makes 'İ' two characters; the edge query's check would then look at the
    # wrong neighbour. Here every position after the İs must still line up.
    queries = [".NET", "dog", "istanbul"]
    assert found(queries, "İİİ .net", ignore_case=True) == [".NET"]
    assert found(queries, "İİİx.net", ignore_case=True) == []
    assert found(queries, "İSTANBUL dog", ignore_case=True) == ["dog", "istanbul"]
    assert found(queries, "ΟΔΟΣ.NET", ignore_case=True) == []


def _is_word(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c)[0] == "M"


def _reference(queries: list[str], text: str, ignore_case: bool) -> list[int]:
    """Brute force: every occurrence of every query, boundaries checked on the text."""
    fold = fold_case if ignore_case else (lambda s: s)
    hay = fold(text)
    ids = []
    for qid, q in enumerate(queries):
        if not q.strip():
            continue
        needle, i = fold(q), hay.find(fold(q))
        while i >= 0:
            j = i + len(needle)
            if (i == 0 or not _is_word(text[i - 1])) and (j == len(text) or not _is_word(text[j])):
                ids.append(qid)
                break
            i = hay.find(needle, i + 1)
    return ids


def test_agrees_with_brute_force_on_random_texts():
    alphabet = list("aAbB1 ,._-'") + ["é", "e\u0301", "\u0301", "İ", "i", "Σ", "σ", "ς", "東", "\x00"]
    rng = random.Random(7)
    for ignore_case in (False, True):
        for _ in range(40):
            queries = ["".join(rng.choices(alphabet, k=rng.randint(1, 4))) for _ in range(25)]
            matcher = QueryMatcher(queries, ignore_case)
            for _ in range(30):
                text = "".join(rng.choices(alphabet, k=rng.randint(0, 16)))
                assert matcher.match(text) == _reference(queries, text, ignore_case), (queries, text)


def test_pickles():
    matcher = QueryMatcher(["New York", "gas", "Gas", "C++"], ignore_case=True)
    clone = pickle.loads(pickle.dumps(matcher))
    assert clone.match("GAS in NEW YORK, c++!") == matcher.match("GAS in NEW YORK, c++!") == [0, 1, 2, 3]


# ------------------------------------------------------------------ the stage

QUERIES = ["dog", "New York", "York", "cat", "Gas", "gas"]


def _write_pool(root, parts: list[list[tuple[str, str | None]]]):
    pool = root / "pool"
    pool.mkdir()
    for i, rows in enumerate(parts):
        pq.write_table(
            pa.table(
                {
                    "uid": [u for u, _ in rows],
                    "url": [f"http://x/{u}.jpg" for u, _ in rows],
                    "text": pa.array([t for _, t in rows], pa.string()),
                }
            ),
            pool / f"part-{i:05d}.parquet",
        )
    qpath = root / "queries.parquet"
    pq.write_table(pa.table({"query": QUERIES, "source": ["wordnet"] * len(QUERIES)}), qpath)
    return str(pool / "*.parquet"), str(qpath)


PARTS = [
    [("a", "a dog in New York"), ("b", "nothing here"), ("c", None), ("d", "cat, cat, dog")],
    [("e", ""), ("f", "GAS station"), ("g", "gas and Gas")],
    [("h", "hotdogs only")],
]


@pytest.fixture
def pool(tmp_path):
    return _write_pool(tmp_path, PARTS)


def _outputs(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_match_pool_outputs_and_stats(pool, tmp_path):
    glob, queries = pool
    out = tmp_path / "out"
    stats = match_pool(glob, queries, str(out))
    # only parquet parts at the top: the folder reads as one dataset (pandas, pyarrow, DuckDB)
    assert sorted(p.name for p in out.iterdir()) == ["_counts", "_stats"] + [f"part-0000{i}.parquet" for i in range(3)]
    assert sorted(p.name for p in (out / "_stats").iterdir()) == [f"part-0000{i}.json" for i in range(3)]
    # each part carries its own per-query sums, which the balance step adds up
    assert pq.read_table(out / "_counts" / "part-00000.parquet").to_pylist() == [
        {"query_id": q, "count": c} for q, c in ((0, 2), (1, 1), (2, 1), (3, 1))
    ]
    assert pq.read_table(out / "_counts" / "part-00002.parquet").num_rows == 0
    table = pq.read_table(out / "part-00000.parquet")
    assert table.schema == pa.schema([("uid", pa.string()), ("query_ids", pa.list_(pa.int32()))])
    assert table.to_pylist() == [{"uid": "a", "query_ids": [0, 1, 2]}, {"uid": "d", "query_ids": [0, 3]}]
    assert pq.read_table(out / "part-00001.parquet").to_pylist() == [{"uid": "g", "query_ids": [4, 5]}]
    assert pq.read_table(out / "part-00002.parquet").num_rows == 0
    part0 = json.loads((out / "_stats" / "part-00000.json").read_text())
    assert {k: part0[k] for k in m.STAT_KEYS} == {
        "rows": 4,
        "matched": 2,
        "dropped_no_match": 1,
        "null_text": 1,
        "matches": 5,
    }
    assert {k: stats[k] for k in m.STAT_KEYS} == {
        "rows": 8,
        "matched": 3,
        "dropped_no_match": 4,
        "null_text": 1,
        "matches": 7,
    }
    assert stats["parts"] == 3 and stats["parts_skipped"] == 0

    folded = match_pool(glob, queries, str(tmp_path / "folded"), ignore_case=True)
    assert pq.read_table(tmp_path / "folded" / "part-00001.parquet").column("uid").to_pylist() == ["f", "g"]
    assert folded["matched"] == 4


def test_match_pool_streams_batches_in_row_order(tmp_path, monkeypatch):
    rows = [(f"u{i:03d}", ("dog " if i % 3 else "") + f"row {i}" + (" cat" if i % 5 == 0 else "")) for i in range(50)]
    glob, queries = _write_pool(tmp_path, [rows])
    monkeypatch.setattr(m, "BATCH_ROWS", 7)
    monkeypatch.setattr(m, "FLUSH_ROWS", 4)
    stats = match_pool(glob, queries, str(tmp_path / "out"))
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    expected = [(u, QueryMatcher(QUERIES).match(t)) for u, t in rows if QueryMatcher(QUERIES).match(t)]
    assert list(zip(table.column("uid").to_pylist(), table.column("query_ids").to_pylist())) == expected
    assert pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").metadata.num_row_groups > 1
    assert stats["rows"] == 50 and stats["matched"] == len(expected)


def test_match_pool_workers_give_identical_bytes(pool, tmp_path):
    glob, queries = pool
    s1 = match_pool(glob, queries, str(tmp_path / "w1"), workers=1)
    s2 = match_pool(glob, queries, str(tmp_path / "w2"), workers=2)
    assert s1 == s2
    assert _outputs(tmp_path / "w1") == _outputs(tmp_path / "w2")


class Bar:
    """A progress factory recording what the stage reports."""

    def __call__(self, total):
        self.total, self.done, self.closed = total, 0, False
        return self

    def update(self, n):
        self.done += n

    def close(self):
        self.closed = True


def test_match_pool_resumes(pool, tmp_path):
    glob, queries = pool
    out = tmp_path / "out"
    bar = Bar()
    first = match_pool(glob, queries, str(out), progress=bar)
    assert bar.total == bar.done == 8 and bar.closed
    before = _outputs(out)
    kept = (out / "part-00000.parquet").stat().st_mtime_ns
    (out / "_stats" / "part-00001.json").unlink()
    (out / "part-00001.parquet").unlink()
    (out / "_stats" / "part-00002.json").unlink()  # parquet without stats: incomplete, redone
    again = match_pool(glob, queries, str(out))
    assert _outputs(out) == before
    assert (out / "part-00000.parquet").stat().st_mtime_ns == kept
    assert again == {**first, "parts_skipped": 1}
    bar = Bar()
    assert match_pool(glob, queries, str(out), progress=bar)["parts_skipped"] == 3
    assert bar.total == bar.done == 8 and bar.closed


def test_missing_text_column_is_an_input_error(tmp_path):
    _, queries = _write_pool(tmp_path, [[("a", "dog")]])
    bad = tmp_path / "bad" / "part-00000.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.table({"uid": ["a"], "caption": ["dog"]}), bad)
    with pytest.raises(InputError) as e:
        match_pool(str(bad), queries, str(tmp_path / "out"))
    assert str(bad) in str(e.value) and "'text'" in str(e.value) and "uid, caption" in str(e.value)
    assert not (tmp_path / "out" / "_stats" / "part-00000.json").exists()


def test_unreadable_part_in_a_worker_is_an_input_error(pool, tmp_path):
    glob, queries = pool
    (tmp_path / "pool" / "part-00009.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="part-00009.parquet: cannot read as parquet"):
        match_pool(glob, queries, str(tmp_path / "out"), workers=2)


def test_column_order_and_types(tmp_path):
    _, queries = _write_pool(tmp_path, [[("a", "dog")]])
    part = tmp_path / "other" / "part-00000.parquet"
    part.parent.mkdir()
    pq.write_table(
        pa.table(
            {
                "text": pa.array(["cat", "x", "dog"], pa.large_string()),
                "uid": pa.array(["1", "2", "3"], pa.large_string()),
            }
        ),
        part,
    )
    match_pool(str(part), queries, str(tmp_path / "out"))
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.to_pydict() == {"uid": ["1", "3"], "query_ids": [[3], [0]]}
    assert table.schema.field("uid").type == pa.string()
    pq.write_table(pa.table({"uid": [1], "text": ["dog"]}), part)
    with pytest.raises(InputError, match="column 'uid' is int64, expected string"):
        match_pool(str(part), queries, str(tmp_path / "out2"))


def test_missing_inputs_are_input_errors(pool, tmp_path):
    glob, queries = pool
    with pytest.raises(InputError, match="no pool part file"):
        match_pool(str(tmp_path / "nowhere" / "*.parquet"), queries, str(tmp_path / "out"))
    with pytest.raises(InputError, match="query list not found"):
        match_pool(glob, str(tmp_path / "missing.parquet"), str(tmp_path / "out"))
