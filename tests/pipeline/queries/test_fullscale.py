"""What each recipe's bigram rule selects on a count-level simulation of full English
Wikipedia (N = 4.5e9 tokens; `tests/support/wikisim.py`), through the real `Aggregates` and
`select_queries`. Reduced scale: rows that no threshold can reach are thinned, N is not."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.support import wikisim

pytestmark = pytest.mark.slow  # ~25 s: the sample is counted, then three simulated builds

SCALE = 0.02
MAX_BIGRAMS = 100_646
N = wikisim.TOKENS


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wiki_sample_dump, wordnet_dir):
    """Each build once: clip and metaclip defaults, metaclip with a bigram count floor of 5."""
    out = {}
    for name, recipe, overrides in (
        ("clip", "clip", {}),
        ("metaclip", "metaclip", {}),
        ("metaclip_floor5", "metaclip", {"min_bigram_count": 5}),
    ):
        out[name] = wikisim.simulate(recipe, tmp_path_factory.mktemp(name), scale=SCALE, details=True, **overrides)
    return out


def kinds_of(result: dict, bigrams: list[str]) -> np.ndarray:
    w = result["_written"]
    at = pc.index_in(pa.array(bigrams, pa.string()), value_set=w.bigram).to_numpy(zero_copy_only=False)
    assert not np.isnan(at.astype(float)).any(), "a selected bigram was never written"
    return w.kind[at.astype(np.int64)]


def assert_same_selection(selected: list[tuple], expected: list[tuple]) -> None:
    """The real selection equals the numpy one, up to the order of exact PMI ties at the cut."""
    assert len(selected) == len(expected)
    if not expected:
        return
    cut = expected[-1][2]
    got = {b for b, _, _ in selected}
    want = {b for b, _, _ in expected}
    tied = {b for b, _, p in selected + expected if abs(p - cut) < 1e-9}
    assert (got ^ want) <= tied, sorted(got ^ want)[:10]


def test_law_meets_its_anchors(wiki_sample_dump):
    stats = wikisim.sample_stats()
    s1, q = stats.head_fit
    assert 0.7 < s1 < 1.1  # the sample's mid-range slope
    mass = N * (1 - stats.digit_share)
    law = wikisim.fit_law(s1, q, mass)
    assert law.s2 > 1.2  # the tail steepens...
    assert abs(law.vocab(100) - wikisim.V100) <= 0.01 * wikisim.V100  # ...to hit both anchors
    assert abs(law.vocab(5) - wikisim.V5) <= 0.01 * wikisim.V5
    total = law.count(np.arange(1, law.vocab(1) + 1)).sum()
    assert abs(total - mass) <= 0.01 * mass
    # One s = 1 law holding the same tokens, K r^-1 down to count 1/2 (K ln 2K = mass),
    # would put ~2M words above 100: the anchors need the steeper tail.
    k = mass
    for _ in range(50):
        k = mass / math.log(2 * k)
    assert k / 100 > 5 * wikisim.V100


def test_clip_fills_max_bigrams_with_the_most_associated_frequent_pairs(runs):
    r = runs["clip"]
    assert r["N"] == N
    assert r["added"]["bigram"] == MAX_BIGRAMS == r["rules"]["max_bigrams"]
    selected = r["_bigrams"]
    assert min(c for _, c, _ in selected) >= 100  # the count floor holds
    assert_same_selection(selected, r["_expected"])
    pmis = [p for _, _, p in selected]
    assert pmis == sorted(pmis, reverse=True)
    # The top are count-~100 pairs whose words occur mostly together: PMI near log2(N/100).
    assert pmis[0] <= math.log2(N / 100) + 1e-9
    assert min(pmis[:10]) > math.log2(N / 100) - 1.5
    assert set(kinds_of(r, [b for b, _, _ in selected[:10]])) == {0}  # planted collocations
    # No compositional pair makes the list, and the cut lies far above the thinned rows.
    assert r["selected_bigram_kinds"]["compositional"] == 0
    assert r["selected_bigram_kinds"]["bound"] == 0
    assert pmis[-1] > wikisim.THIN_PMI + 2
    # More case-kept (and case-folded) words pass 100 than the unigram cap: the cap binds.
    by_case = r["unigram_candidates_by_case"]
    assert by_case["keep"] > by_case["fold"] > r["rules"]["max_unigrams"] == r["added"]["unigram"]


def test_metaclip_pmi30_admits_only_rare_bound_pairs(runs):
    r = runs["metaclip"]
    selected = r["_bigrams"]
    assert selected, "no bound pair reached PMI 30"
    assert_same_selection(selected, r["_expected"])
    bound = r["N"] / 2**30  # PMI >= 30 <=> c(x) c(y) / c(xy) <= N / 2^30 (~4)
    w = r["_written"]
    chosen = pa.array([b for b, _, _ in selected], pa.string())
    at = pc.index_in(chosen, value_set=w.bigram).to_numpy(zero_copy_only=False).astype(np.int64)
    ratio = w.cx[at] * w.cy[at] / w.c[at]
    assert (ratio <= bound).all() and bound < 4.2
    assert (w.c[at] <= 4).all() and (w.cx[at] <= 4).all() and (w.cy[at] <= 4).all()
    assert set(kinds_of(r, [b for b, _, _ in selected])) == {3}  # none of the frequent pairs
    assert r["selected_bigram_kinds"]["collocation"] == r["selected_bigram_kinds"]["associated"] == 0
    # Every word of a selected pair occurs in >= 3 articles: the doc-frequency filter ran.
    assert r["bound_pairs_ratio_ok"] > len(selected)


def test_metaclip_with_a_count_floor_of_5_admits_nothing(runs):
    r = runs["metaclip_floor5"]
    assert math.log2(r["N"] / 5) < 30
    assert r["added"]["bigram"] == 0 and r["candidates"]["bigram"] == 0
    assert r["max_pmi"] <= math.log2(r["N"] / 5) + 1e-9
