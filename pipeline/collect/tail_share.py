"""Per-language balancing thresholds by equal tail share (MetaCLIP 2, ``curate.py``).

One t for every language would flatten a small language's head as hard as English's, though
its counts are a thousand times smaller. MetaCLIP 2 fixes the reference language's t
(English: 170,000 in MetaCLIP 2, 20,000 in WIT) and measures p, the share of its matches
that fall on *tail* entries, those matched fewer than t times (`tail_share`, its
``t_to_p``). Every other language gets the t at which its own tail holds the same share
(`threshold_for_share`, its ``p_to_t``): sort its entry counts, take the running share of
matches, and pick the count where that share is closest to p (the first, on a tie). The
two are not exact inverses: ``p_to_t``'s share includes the entry it stops at, ``t_to_p``
excludes counts equal to t. We keep both definitions literal, so a language's t is the one
MetaCLIP 2 would compute from the same counts (tests/pipeline/collect/test_tail_share.py
checks them against a direct transcription of its functions).

Counts are per entry and include the entries nothing matched (MetaCLIP 2 sizes each
language's array by its metadata); a language with no match has no t.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def tail_share(counts: np.ndarray, t: float) -> float:
    """The share of all matches on entries matched fewer than `t` times (``t_to_p``)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no matches: the tail share is undefined")
    return float(counts[counts < t].sum() / total)


def threshold_for_share(counts: np.ndarray, p: float) -> int:
    """The count whose running share of matches (entries sorted by count, that entry
    included) is closest to `p`, the first on a tie (``p_to_t``)."""
    ordered = np.sort(np.asarray(counts, dtype=np.int64))
    total = int(ordered.sum())
    if total == 0:
        raise ValueError("no matches: no threshold")
    share = np.cumsum(ordered) / total
    return int(ordered[int(np.abs(share - p).argmin())])


def per_language_thresholds(counts: np.ndarray, langs: np.ndarray, t_reference: int, reference: str) -> dict[str, dict]:
    """{lang: {"t", "tail_share", "entries", "matches"}}: the reference language keeps
    `t_reference`, every other language with matches gets its equal-tail-share t, one with
    none gets t None. `langs` is each entry's language (aligned with `counts`)."""
    counts = np.asarray(counts, dtype=np.int64)
    langs = np.asarray(langs, dtype=object)
    present = sorted(set(langs.tolist()))
    if reference not in present:
        raise InputError(
            f"the reference language {reference!r} of the per-language thresholds has no entries "
            f"in the query list (languages: {', '.join(present)}); choose one with --balance-reference"
        )
    ref = counts[langs == reference]
    if ref.sum() == 0:
        raise InputError(f"the reference language {reference!r} has no matches: its tail share is undefined")
    p = tail_share(ref, t_reference)
    out: dict[str, dict] = {}
    for lang in present:
        c = counts[langs == lang]
        matches = int(c.sum())
        if lang == reference:
            t: int | None = int(t_reference)
        else:
            t = threshold_for_share(c, p) if matches else None
        out[lang] = {
            "t": t,
            "tail_share": None if not matches or t is None else round(tail_share(c, t), 6),
            "entries": int(c.size),
            "matches": matches,
        }
    out[reference]["reference_tail_share"] = round(p, 6)
    return out


def thresholds_per_entry(langs: np.ndarray, table: dict[str, dict]) -> np.ndarray:
    """Each entry's t from `per_language_thresholds` (0 for a language without matches:
    none of its entries occurs, so its t never applies)."""
    langs = np.asarray(langs, dtype=object)
    t = np.zeros(len(langs), dtype=np.float64)
    for lang, info in table.items():
        t[langs == lang] = info["t"] or 0
    return t
