"""Combining sources: order, first-source-wins dedup, per-source quotas and the size cap."""

from pipeline.queries.combine import Row, combine


def rows(source, words):
    return [Row(w, source) for w in words]


def test_order_dedup_and_quotas():
    out, report = combine(
        [
            ("wordnet", rows("wordnet", ["dog", "Gas", "hot dog"]), 10),
            ("unigram", rows("unigram", ["dog", "gas", "cat", "the", "of"]), 3),
            ("bigram", rows("bigram", ["hot dog", "New York"]), 5),
            ("title", rows("title", ["Gas", "Paris"]), 1),
        ],
        size=100,
    )
    assert [(r.query, r.source) for r in out] == [
        ("dog", "wordnet"),
        ("Gas", "wordnet"),
        ("hot dog", "wordnet"),
        # duplicates do not use up the quota: 'dog' is skipped, then 3 new words are taken
        ("gas", "unigram"),
        ("cat", "unigram"),
        ("the", "unigram"),
        ("New York", "bigram"),
        ("Paris", "title"),
    ]
    assert report["unigram"] == {"added": 3, "duplicates_skipped": 1, "considered": 4}
    assert report["title"] == {"added": 1, "duplicates_skipped": 1, "considered": 2}


def test_size_caps_whole_list_and_stops_consuming():
    consumed = []

    def gen():
        for w in ["a", "b", "c", "d"]:
            consumed.append(w)
            yield Row(w, "unigram")

    out, report = combine([("wordnet", rows("wordnet", ["x", "y"]), 10), ("unigram", gen(), 10)], size=3)
    assert [r.query for r in out] == ["x", "y", "a"]
    assert report["unigram"]["added"] == 1
    assert consumed == ["a", "b"]  # stopped right after the cap, never drained the source


def test_case_is_kept_distinct():
    out, _ = combine([("wordnet", rows("wordnet", ["gas"]), 5), ("unigram", rows("unigram", ["Gas", "GAS"]), 5)], 10)
    assert [r.query for r in out] == ["gas", "Gas", "GAS"]
