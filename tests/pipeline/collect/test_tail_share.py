"""Per-language t by equal tail share, against a direct transcription of MetaCLIP 2's
``t_to_p`` / ``p_to_t`` (metaclip/curation/curate.py) on synthetic counts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.collect.tail_share import (
    per_language_thresholds,
    tail_share,
    threshold_for_share,
    thresholds_per_entry,
)
from pipeline.errors import InputError


# MetaCLIP 2's functions as its curate.py writes them (numpy arrays of per-entry counts).
def reference_p_to_t(entry_counts, p=0.1):
    counts = np.sort(entry_counts)
    cumsum_counts = np.cumsum(counts)
    portion = cumsum_counts / counts.sum()
    p_idx = (np.abs(portion - p)).argmin()
    t = counts[p_idx]
    return t


def reference_t_to_p(entry_counts, t=20000):
    return float(entry_counts[entry_counts < t].sum() / entry_counts.sum())


def zipf_counts(rng: np.random.Generator, entries: int, matches: int, s: float) -> np.ndarray:
    """Counts of `matches` draws over `entries` entries with a Zipf(s)-shaped popularity,
    many entries never drawn (as in a real language's metadata)."""
    weights = 1.0 / np.arange(1, entries + 1) ** s
    counts = rng.multinomial(matches, weights / weights.sum())
    return rng.permutation(counts).astype(np.uint64)


@pytest.mark.parametrize("seed", range(6))
def test_functions_equal_metaclip2s_on_synthetic_languages(seed: int):
    rng = np.random.default_rng(seed)
    english = zipf_counts(rng, 50_000, 3_000_000, 1.05)
    for t_en in (200, 2_000, 20_000, 170_000):
        p = reference_t_to_p(english, t_en)
        assert tail_share(english, t_en) == p
        for entries, matches, s in ((20_000, 400_000, 1.1), (3_000, 20_000, 0.9), (500, 800, 1.3), (40, 45, 0.5)):
            counts = zipf_counts(rng, entries, matches, s)
            assert threshold_for_share(counts, p) == int(reference_p_to_t(counts, p)), (t_en, entries)


def test_ties_and_edges_follow_the_reference():
    counts = np.array([5, 5, 5, 5, 0, 0], dtype=np.uint64)
    for p in (0.0, 0.1, 0.25, 0.3, 0.5, 0.99, 1.0):
        assert threshold_for_share(counts, p) == int(reference_p_to_t(counts, p)), p
    # a share nearer to 0 than to the first entry's share: t = 0, as in MetaCLIP 2
    assert threshold_for_share(np.array([0, 100, 100]), 0.1) == int(reference_p_to_t(np.array([0, 100, 100]), 0.1)) == 0
    assert tail_share(np.array([1, 2, 3, 3]), 3) == reference_t_to_p(np.array([1, 2, 3, 3]), 3) == 3 / 9
    with pytest.raises(ValueError):
        tail_share(np.zeros(3), 5)


def test_per_language_table():
    rng = np.random.default_rng(7)
    en = zipf_counts(rng, 5_000, 300_000, 1.05)
    de = zipf_counts(rng, 2_000, 30_000, 1.0)
    th = np.zeros(50, dtype=np.uint64)  # no text in Thai matched
    counts = np.concatenate([de, en, th])
    langs = np.array(["de"] * len(de) + ["en"] * len(en) + ["th"] * len(th), dtype=object)
    table = per_language_thresholds(counts, langs, 1_000, "en")
    p = reference_t_to_p(en, 1_000)
    assert table["en"]["t"] == 1_000 and table["en"]["reference_tail_share"] == round(p, 6)
    assert table["de"]["t"] == int(reference_p_to_t(de, p))
    assert table["de"]["t"] < 1_000  # a tenth of the matches: a lower t for the same tail share
    assert table["th"] == {"t": None, "tail_share": None, "entries": 50, "matches": 0}
    per_entry = thresholds_per_entry(langs, table)
    assert (per_entry[: len(de)] == table["de"]["t"]).all() and (per_entry[len(de) : len(de) + len(en)] == 1_000).all()
    with pytest.raises(InputError, match="reference language 'ja'"):
        per_language_thresholds(counts, langs, 1_000, "ja")
    with pytest.raises(InputError, match="'th' has no matches"):
        per_language_thresholds(counts, langs, 1_000, "th")
