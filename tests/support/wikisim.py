"""Count-level simulation of full English Wikipedia that runs the real query selection.

We cannot count the 90 GB dump here, so this writes count tables with Wikipedia's shape
straight into a work dir, in the spill format of `pipeline.queries.counting` (``uni/``,
``bi/``, ``titles/`` parts; a pageview ``parts/`` folder), and runs the real
`Aggregates.build` + `select_queries` on them, per recipe (`simulate`). No text, no dump.

Everything is decided for lowercase digit-free *lemmas* (one per rank) and rendered per
recipe: ``metaclip`` gets the lemmas with a document frequency d; ``clip`` their case
forms plus digit tokens. "Sample" numbers are measured by `measure_sample()` on the
embedded 457k-token dump (106 articles) counted with both recipes' real counters.

Unigrams. N = 4.5e9 tokens, 2.94% digit tokens (sample). Lemma counts: a broken power law,
K (r+q)^-s1 up to rank r_b, then c(r_b) (r/r_b)^-s2. s1 = 0.851, q = 0: the sample's mid
range (ranks 5-2,000). s2, r_b, K: fitted to N and two published anchors, 310k lowercase
words reach 100 (MetaCLIP kept 251,465 after removing its WordNet entries; ~290-340k
before) and 2.5M reach 5 (fastText's enwiki vectors, min_count 5): s2 = 1.483, r_b = 503,
K = 2.73e8, 3.7M lemmas reach 3, 11M reach 1. (One s = 1 law holding N would put 2.2M words
above 100.) Digit tokens (clip) take the same shape scaled to their mass (29k reach 100).
Strings: ranks 1-4.9k are the sample's words seen >= 10 times, in its order; its rarer
words interleaved with WordNet's single-word head words (by SemCor tag count, then
polysemy) fill ranks up to 500k, stretched (rank j + j^2/J), so 46k of WordNet's 59k
reach 100 (assumed ~3/4); all other ranks are synthetic 4-syllable strings.

Case (clip). A lemma is lower-, Capitalised- or UPPER-dominant with the sample's shares
(words seen >= 20 times: 83.0 / 16.1 / 0.9%; capitalised WordNet heads are Capitalised)
and splits its count over the three forms with the share vector of a random sample word
of that type seen >= 50 times (a sample word keeps its own).

Document frequency (metaclip). A lemma of count c is in >= 3 articles with the sample's
P(d >= 3 | c) for c <= 10 (0 below 3; 0.38 at 3, 0.54 at 4, 0.82 at 10), and with
1 - 0.18 * 10/c above. Assumed for bound-pair words too (the two words of a pair share
one draw), although the sample's bound pairs cluster more (6 of its 83 at c = 3-4 span 3
articles; its articles are ~7x longer than Wikipedia's average, which inflates clustering;
the bench reports the count under that rate too).

Bigrams, lemma level (clip writes each pair in its words' dominant forms, count times the
smaller dominant share). (i) collocations and associated pairs: every lemma seen >= 100
times copies the pair list of a sample "donor" word, frequency-matched for frequent
lemmas, a random sample word seen 10-40 times for the rest (assumed: rare Wikipedia words
associate like the sample's rare words), as the rarer word of each pair: its share
a = c(xy)/c(rarer) and partner ratio rho = c(partner)/c(rarer) are kept, the partner is a
lemma of count ~rho c. "Collocation": a >= 0.5 (the rarer word mostly occurs in the pair).
(ii) compositional (assumed): each of the 100 most frequent lemmas neighbours a content
lemma with probability 0.25, PMI uniform in 0..6. Only pairs seen >= 100 times are
written: below that neither recipe can select them (metaclip needs c(x), c(y) <= 4).
(iii) bound rare pairs: a word of count c = 3..10 is the rarer member of a pair holding all
its occurrences, partner seen <= 4c times, at the sample's rate (2.0% of words at c = 3;
0.65% with c(x)c(y)/c(xy) <= 4), (c, c_partner) drawn from the sample's such pairs, each
word in at most one.

Titles: assumption-driven, nothing measured. 6.9M articles; a viewed title is a redirect
with probability 0.15, a missing page with 0.02. Mean desktop views per hour are
Zipf-Mandelbrot 4e6 / (H (k + 10)) over the 8.3M titles; an hour's views are lognormal
around that (sigma 1); the period is one month of hourly files (720) and an hour counts
only with >= 50 views, so a title sums 720 lambda Phi((ln(lambda/50) + 1/2) / 1) views
(pageview rows: titles with at least one such hour). Title lengths follow the sample's
articles (49% one word, 30% two); a one-word article title is a Capitalised lemma (rank
log-uniform in 1..300k), half the two-word ones are generated collocations ("Xxx yyy").
Clip keeps only the dump's article titles, metaclip every viewed title.

Size (`scale`). Lemmas seen 1-2 times (7.3M, 8.8M tokens) are never written; lemmas and
digit tokens seen 3-99 times are written with probability `scale` (bound-pair words
always), as are pairs with PMI < 10 and the dump's unviewed titles. The mass left out goes
to placeholder rows ("#..." strings, count 99: below every threshold, d = 99 for
metaclip), so clip's N is exactly 4.5e9 and metaclip's N (digit-free words in >= 3
articles) ~4.34e9 at any scale. Selections do not depend on `scale`; only the candidate
count of clip's bigrams and the aggregate's row statistics do.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DUMP = ROOT / ".cache/sample/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WORDNET = ROOT / ".cache/sample/wordnet-base/usr/share/wordnet"

TOKENS = 4_500_000_000
V100 = 310_000  # lowercase digit-free words seen >= 100 times (MetaCLIP: 251,465 + its WordNet overlap)
V5 = 2_500_000  # words seen >= 5 times (fastText enwiki vectors, min_count 5)
HEAD_FIT_RANKS = (5, 2000)  # the sample's mid range, for s1 and q
TOP_SAMPLE_MIN = 10  # sample words seen this often take ranks 1.. in sample order
REAL_LAST_RANK = 500_000  # the rarest real (sample/WordNet) word lands here
EXPLICIT_MIN = 3  # lemmas seen fewer times are mass only (never selectable by either recipe)
PLACEHOLDER = 99  # count of a placeholder row: below min_count and min_bigram_count (100)
MIN_PAIR = 100  # pairs seen fewer times are not written (below both recipes' reach, see above)
DONOR_MATCH_MIN = 20  # sample count from which a donor is frequency-matched
DONOR_RARE = (10, 40)  # sample counts of the donors for rarer Wikipedia words
THIN_PMI = 10.0  # pairs below this lemma PMI are thinned by `scale`
COLLOCATION_SHARE = 0.5  # rarer word's share in the pair for a "collocation"
COMPOSITIONAL_PMI = 6.0
FUNCTION_WORDS, FUNCTION_PAIR_P = 100, 0.25  # class (ii) compositional pairs (assumed)
BOUND_MAX = 10  # bound rare pairs are measured/generated for rarer-word counts 3..BOUND_MAX

ARTICLES = 6_900_000
REDIRECT_SHARE, MISSING_SHARE = 0.15, 0.02
VIEWS_PER_HOUR = 4e6  # desktop, English Wikipedia, all titles
VIEW_Q = 10.0
BURST_SIGMA = 1.0
HOURS = 720
HOURLY_MIN = 50
ONE_WORD_TITLE_RANKS = 300_000


# ----------------------------------------------------------------------------- the sample


@dataclass
class SampleStats:
    """What the simulation takes from the embedded sample dump (see `measure_sample`)."""

    tokens: int  # metaclip word sequence length, digit words included
    digit_share: float
    words: list[str]  # lowercase digit-free words (metaclip), most frequent first
    counts: np.ndarray  # their counts
    spread: np.ndarray  # P(d >= 3 | c) for c = 0..BOUND_MAX
    bound_rate: np.ndarray  # bound pairs per word of count c (rarer word), c = 0..BOUND_MAX
    bound_pairs: np.ndarray  # (c_rare, c_partner, rare_is_left) rows
    bound_spread: float  # share of bound pairs (c 3..4) whose words are both in >= 3 articles
    type_share: np.ndarray  # lower / cap / upper-dominant shares of words seen >= 20 times
    share_pool: list[np.ndarray]  # per type: (n, 3) share vectors of words seen >= 50 times
    own_shares: dict[str, tuple[float, float, float]]  # sample words seen >= 20 times
    donor_counts: np.ndarray  # case-folded clip counts of the donor words, most frequent first
    donor_pairs: np.ndarray  # (donor index, a, rho, donor_is_left), sorted by donor
    title_words: np.ndarray  # P(title has k words), k = 1..6 (6: six or more)
    head_fit: tuple[float, float] = (0.0, 0.0)  # (s1, q)


def _lemma_key(col: str) -> str:
    return f"NOT regexp_matches({col}, '[0-9]')"


def measure_sample(dump: str | Path | None = None, workers: int = 2) -> SampleStats:
    """Count the sample dump with both recipes (real counting code, into a temporary dir)
    and measure the shape parameters the simulation uses."""
    from pipeline.queries.counting import count_dumps

    dump = str(dump or os.environ.get("WIKI_SAMPLE_DUMP") or SAMPLE_DUMP)
    with tempfile.TemporaryDirectory(prefix="wikisim-sample-") as tmp:
        meta = count_dumps([dump], Path(tmp) / "metaclip", workers=workers, chunk_mb=1, recipe="metaclip")
        count_dumps([dump], Path(tmp) / "clip", workers=workers, chunk_mb=1, recipe="clip")
        con = duckdb.connect()
        try:
            return _measure(con, Path(tmp), int(meta["tokens"]))
        finally:
            con.close()


def _measure(con, tmp: Path, tokens: int) -> SampleStats:
    m, c = tmp / "metaclip", tmp / "clip"
    con.execute(
        f"CREATE TABLE mu AS SELECT w, sum(c)::BIGINT c, sum(d)::BIGINT d "
        f"FROM read_parquet('{m}/uni/*.parquet') GROUP BY w"
    )
    con.execute(
        f"CREATE TABLE mb AS SELECT split_part(b, ' ', 1) x, split_part(b, ' ', 2) y, sum(c)::BIGINT c "
        f"FROM read_parquet('{m}/bi/*.parquet') GROUP BY b"
    )
    words, counts = con.execute("SELECT list(w ORDER BY c DESC, w), list(c ORDER BY c DESC, w) FROM mu").fetchone()
    counts = np.array(counts, np.int64)
    spread = np.zeros(BOUND_MAX + 1)
    per_count = np.zeros(BOUND_MAX + 1)
    by_count = con.execute("SELECT c, count(*), avg((d >= 3)::INT) FROM mu WHERE c <= ? GROUP BY c", [BOUND_MAX])
    for k, n, s in by_count.fetchall():
        spread[k], per_count[k] = s, n
    # Bound pairs: the rarer word occurs only in this pair; the partner at most 4x as often.
    con.execute(
        """
        CREATE TABLE bound AS SELECT least(ux.c, uy.c) cr, greatest(ux.c, uy.c) cp, (ux.c <= uy.c) rare_left,
               (ux.d >= 3 AND uy.d >= 3) spread
        FROM mb JOIN mu ux ON ux.w = mb.x JOIN mu uy ON uy.w = mb.y
        WHERE mb.x <> mb.y AND mb.c = least(ux.c, uy.c) AND least(ux.c, uy.c) <= ?
          AND greatest(ux.c, uy.c) <= 4 * least(ux.c, uy.c)
    """,
        [BOUND_MAX],
    )
    pairs = np.array(con.execute("SELECT cr, cp, rare_left::INT FROM bound ORDER BY ALL").fetchall(), np.int64)
    bound_rate = np.zeros(BOUND_MAX + 1)
    for k, n in con.execute("SELECT cr, count(*) FROM bound GROUP BY cr").fetchall():
        bound_rate[k] = n / per_count[k]
    bound_spread = con.execute("SELECT avg(spread::INT) FROM bound WHERE cr BETWEEN 3 AND 4").fetchone()[0]

    # Case: forms of each lowercase digit-free key in clip's counts.
    con.execute(f"""
        CREATE TABLE cu AS SELECT w, sum(c)::BIGINT c FROM read_parquet('{c}/uni/*.parquet') GROUP BY w;
        CREATE TABLE ck AS SELECT lower(w) k, sum(c)::DOUBLE tot,
               sum(c) FILTER (WHERE w = lower(w)) lo,
               sum(c) FILTER (WHERE w <> lower(w) AND w = upper(left(w, 1)) || lower(substr(w, 2))) cap,
               sum(c) FILTER (WHERE w <> lower(w) AND w = upper(w)) up
        FROM cu WHERE {_lemma_key("w")} GROUP BY lower(w)
    """)
    shares = con.execute("""
        SELECT k, tot, coalesce(lo, 0) / tot, coalesce(cap, 0) / tot, coalesce(up, 0) / tot FROM ck WHERE tot >= 20
        ORDER BY k
    """).fetchall()  # ordered: the pools are drawn from by index
    vec = np.array([s[2:] for s in shares])
    vec = vec / np.maximum(vec.sum(1, keepdims=True), 1e-12)
    dominant = vec.argmax(1)
    type_share = np.bincount(dominant, minlength=3) / len(dominant)
    rich = np.array([s[1] >= 50 for s in shares])
    share_pool = [vec[rich & (dominant == t)] for t in range(3)]
    own = {s[0]: tuple(v) for s, v in zip(shares, vec)}

    # Donor pair lists: case-folded clip counts (phrases end at punctuation, as clip's do).
    con.execute(f"""
        CREATE TABLE fu AS SELECT k w, tot::BIGINT c, row_number() OVER (ORDER BY tot DESC, k) - 1 i FROM ck;
        CREATE TABLE fb AS SELECT lower(split_part(b, ' ', 1)) x, lower(split_part(b, ' ', 2)) y, sum(c)::BIGINT c
        FROM read_parquet('{c}/bi/*.parquet') WHERE {_lemma_key("b")} GROUP BY ALL
    """)
    donor_counts = np.array(con.execute("SELECT list(c ORDER BY i) FROM fu").fetchone()[0], np.int64)
    donor_pairs = np.array(
        con.execute("""
        SELECT CASE WHEN ux.c <= uy.c THEN ux.i ELSE uy.i END,
               fb.c / least(ux.c, uy.c), greatest(ux.c, uy.c) / least(ux.c, uy.c), (ux.c <= uy.c)::INT
        FROM fb JOIN fu ux ON ux.w = fb.x JOIN fu uy ON uy.w = fb.y WHERE fb.x <> fb.y ORDER BY ALL
    """).fetchall(),
        np.float64,
    )
    title_len = np.array(
        [
            r[0]
            for r in con.execute(
                f"SELECT least(len(string_split(title, ' ')), 6) FROM read_parquet('{c}/titles/*.parquet')"
            ).fetchall()
        ]
    )
    title_words = np.bincount(title_len, minlength=7)[1:] / len(title_len)
    stats = SampleStats(
        tokens=tokens,
        digit_share=1 - counts.sum() / tokens,
        words=list(words),
        counts=counts,
        spread=spread,
        bound_rate=bound_rate,
        bound_pairs=pairs,
        bound_spread=float(bound_spread or 0.0),
        type_share=type_share,
        share_pool=share_pool,
        own_shares=own,
        donor_counts=donor_counts,
        donor_pairs=donor_pairs,
        title_words=title_words,
    )
    stats.head_fit = fit_head(counts)
    return stats


@cache
def sample_stats() -> SampleStats:
    """`measure_sample()` once per process."""
    return measure_sample()


# ----------------------------------------------------------------------------- unigram law


def fit_head(counts: np.ndarray, ranks: tuple[int, int] = HEAD_FIT_RANKS) -> tuple[float, float]:
    """(s1, q) of log c = a - s1 log(r + q), least squares over the given ranks (q on a grid)."""
    r = np.arange(ranks[0], ranks[1] + 1, dtype=float)
    y = np.log(counts[ranks[0] - 1 : ranks[1]].astype(float))
    best = None
    for q in np.arange(0.0, 10.01, 0.25):
        x = np.log(r + q)
        slope, icpt = np.polyfit(x, y, 1)
        res = float(((y - icpt - slope * x) ** 2).sum())
        if best is None or res < best[0] - 1e-12:
            best = (res, -slope, q)
    return float(best[1]), float(best[2])


@dataclass(frozen=True)
class Law:
    """Lemma count by rank (1-based): K (r+q)^-s1 up to r_b, then c(r_b) (r/r_b)^-s2."""

    s1: float
    q: float
    s2: float
    rb: float
    K: float

    @property
    def cb(self) -> float:
        return self.K * (self.rb + self.q) ** -self.s1

    def count(self, rank) -> np.ndarray:
        r = np.asarray(rank, float)
        return np.where(
            r <= self.rb,
            self.K * (np.minimum(r, self.rb) + self.q) ** -self.s1,
            self.cb * (np.maximum(r, self.rb) / self.rb) ** -self.s2,
        )

    def rank_at(self, count) -> np.ndarray:
        """The (real-valued) rank where the law has this count."""
        c = np.asarray(count, float)
        c = np.maximum(c, 1e-6)
        head = (self.K / c) ** (1 / self.s1) - self.q
        tail = self.rb * (self.cb / c) ** (1 / self.s2)
        return np.where(c >= self.cb, head, tail)

    def vocab(self, at_least: float) -> int:
        """Ranks whose rounded count is >= at_least."""
        return int(np.floor(self.rank_at(at_least - 0.5)))


def fit_law(s1: float, q: float, mass: float, v100: int = V100, v5: int = V5) -> Law:
    """The tail slope s2 from the two vocabulary anchors; then r_b (bisection) and K so that
    the law holds `mass` tokens and has v100 words at >= 100 (counts are rounded, so the
    anchors are where the law crosses 99.5 and 4.5)."""
    s2 = math.log(99.5 / 4.5) / math.log(v5 / v100)

    def law_for(rb: float) -> Law:
        head = ((np.arange(1, int(rb) + 1) + q) ** -s1).sum()
        tail = rb / (s2 - 1) * ((int(rb) + 0.5) / rb) ** (1 - s2)  # sum over r > r_b, as an integral
        K = mass / (head + (rb + q) ** -s1 * tail)
        return Law(s1, q, s2, rb, K)

    lo, hi = 2.0, float(v100)
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        law = law_for(mid)
        if law.rb * (law.cb / 99.5) ** (1 / s2) > v100:
            hi = mid
        else:
            lo = mid
    return law_for(lo)


# ----------------------------------------------------------------------------- strings

_SYLLABLES = np.array([list((c + v).encode()) for c in "bdfgklmnprstvz" for v in "aeiou"], np.uint8)


def synthetic(ids: np.ndarray, syllables: int = 4) -> pa.StringArray:
    """Distinct pronounceable lowercase strings, one per id (bijective for ids < 70^syllables:
    the id is scrambled by an odd multiplier prime to 5 and 7, then written in syllables)."""
    ids = np.asarray(ids, np.int64)
    base = len(_SYLLABLES)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < base**syllables), "id out of range"
    ids = (ids * 40_503) % base**syllables
    digits = (ids[:, None] // base ** np.arange(syllables - 1, -1, -1)) % base
    data = _SYLLABLES[digits].reshape(len(ids), 2 * syllables)
    offsets = np.arange(len(ids) + 1, dtype=np.int32) * (2 * syllables)
    return pa.StringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data)))


def _rng(seed: int, name: str) -> np.random.Generator:
    """One independent stream per component, so a knob on one does not shift the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")  # letters, internal - or ' (both recipes' tokens)


def wordnet_order(folder: str | Path) -> tuple[list[str], set[str]]:
    """WordNet's single-token head words, lowercased, most frequent first by proxy (SemCor tag
    count from cntlist.rev, then number of synsets in the index files); and which of them
    are capitalised head words (proper nouns)."""
    from pipeline.queries.wordnet import find_database, read_head_words

    heads = read_head_words(str(folder)).words
    fs, base = find_database(str(folder))
    tags: dict[str, int] = {}
    poly: dict[str, int] = {}
    try:
        with fs.open(f"{base}/cntlist.rev", "rt") as f:
            for line in f:
                key, _, n = line.split()
                lemma = key.split("%", 1)[0].lower()
                tags[lemma] = tags.get(lemma, 0) + int(n)
    except FileNotFoundError:
        pass
    for pos in ("noun", "verb", "adj", "adv"):
        with fs.open(f"{base}/index.{pos}", "rt") as f:
            for line in f:
                if not line.startswith(" "):
                    parts = line.split(" ", 3)
                    poly[parts[0].lower()] = poly.get(parts[0].lower(), 0) + int(parts[2])
    lowered: dict[str, bool] = {}
    for h in heads:
        if " " in h or not _WORD.fullmatch(h):
            continue
        low = h.lower()
        lowered[low] = lowered.get(low, True) and h != low  # capitalised unless some form is lowercase
    order = sorted(lowered, key=lambda w: (-tags.get(w, 0), -poly.get(w, 0), len(w), w))
    return order, {w for w, cap in lowered.items() if cap}


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """Recipe-independent simulated Wikipedia: lemmas, case shares, document spread,
    pairs, digit tokens, titles. Arrays are indexed by lemma rank - 1."""

    law: Law
    scale: float
    seed: int
    counts: np.ndarray  # lemma counts (ranks 1..n), n = lemmas seen >= EXPLICIT_MIN times
    light_mass: int  # tokens of lemmas seen 1..EXPLICIT_MIN-1 times (never explicit)
    explicit: np.ndarray  # bool: this lemma is written (always for counts >= 100)
    real_rank: np.ndarray  # 0-based ranks holding real words, sorted
    real_word: pa.StringArray  # the words at those ranks
    shares: np.ndarray  # (n, 3) float32 lower / Capitalised / UPPER
    spread: np.ndarray  # bool: in >= 3 articles
    pairs: dict  # x, y (0-based ranks), c, kind (0 collocation, 1 associated, 2 compositional, 3 bound), pmi
    digit_counts: np.ndarray
    digit_explicit: np.ndarray
    digit_light_mass: int
    titles: dict  # title (StringArray), views, kind (0 article, 1 redirect, 2 missing)
    dump_titles: pa.StringArray  # article titles of the dump (clip), viewed ones first
    stats: SampleStats = field(repr=False, default=None)

    KINDS = ("collocation", "associated", "compositional", "bound")

    def words(self, ranks0: np.ndarray) -> pa.StringArray:
        """Lowercase strings of the lemmas at these 0-based ranks."""
        ranks0 = np.asarray(ranks0, np.int64)
        out = synthetic(ranks0)
        pos = np.searchsorted(self.real_rank, ranks0)
        pos = np.minimum(pos, len(self.real_rank) - 1)
        hit = self.real_rank[pos] == ranks0
        clash = pc.and_(pc.is_in(out, value_set=self.real_word), pa.array(~hit))
        if pc.any(clash).as_py():  # a synthetic string that is also a real word: make it unique
            out = pc.if_else(clash, pc.binary_join_element_wise(out, "q", ""), out)
        if hit.any():
            out = pc.replace_with_mask(out, pa.array(hit), self.real_word.take(pa.array(pos[hit])))
        return out


def _explicit_draw(rng: np.random.Generator, counts: np.ndarray, scale: float) -> np.ndarray:
    """Rows seen >= 100 times always; the rest with probability `scale`."""
    return (counts >= 100) | (rng.random(len(counts)) < scale)


def build_world(
    seed: int = 0, scale: float = 1.0, stats: SampleStats | None = None, wordnet: str | Path | None = None
) -> World:
    """The simulated Wikipedia for a seed (deterministic); `scale` only thins rows no
    threshold can reach (see the module docstring)."""
    stats = stats or sample_stats()
    wordnet = wordnet or os.environ.get("WORDNET_DIR") or WORDNET
    s1, q = stats.head_fit
    digit = stats.digit_share
    law = fit_law(s1, q, TOKENS * (1 - digit))

    # Lemma counts: every rank with a rounded count >= 1; explicit ones from EXPLICIT_MIN.
    n_all = law.vocab(1)
    n = law.vocab(EXPLICIT_MIN)
    counts = np.rint(law.count(np.arange(1, n + 1))).astype(np.int64)
    light = np.rint(law.count(np.arange(n + 1, n_all + 1))).astype(np.int64)
    light_mass = int(light.sum())

    # Real words at ranks: the sample's frequent words first, then the rest spread out.
    wn_words, wn_proper = wordnet_order(wordnet)
    sample_words = [w for w in stats.words if _WORD.fullmatch(w) and not w.endswith("'s")]
    sample_counts = dict(zip(stats.words, stats.counts.tolist()))
    top = [w for w in sample_words if sample_counts[w] >= TOP_SAMPLE_MIN]
    seen = set(top)
    rest_sample = [w for w in sample_words if w not in seen and sample_counts[w] >= 2]
    seen.update(rest_sample)
    rest_wn = [w for w in wn_words if w not in seen]
    # Interleave by relative position in each list, then stretch: rank = j + j^2 / J.
    key = np.r_[np.arange(len(rest_sample)) / max(len(rest_sample), 1), np.arange(len(rest_wn)) / max(len(rest_wn), 1)]
    spread_words = np.array(rest_sample + rest_wn, dtype=object)[np.argsort(key, kind="stable")]
    m = len(spread_words)
    last = REAL_LAST_RANK - len(top) - m
    J = m * m / max(last, 1)
    j = np.arange(m, dtype=float)
    real_rank = np.r_[np.arange(len(top)), len(top) + np.floor(j + j * j / J).astype(np.int64)]
    real_word_list = top + list(spread_words)
    real_rank = real_rank[real_rank < n]
    real_word = pa.array(real_word_list[: len(real_rank)], pa.string())

    # Case shares: a sample word keeps its own; others draw from the pool of their type.
    rng = _rng(seed, "case")
    kind = rng.choice(3, size=n, p=stats.type_share)
    proper = np.fromiter((w in wn_proper for w in real_word_list[: len(real_rank)]), bool, len(real_rank))
    kind[real_rank[proper]] = 1
    shares = np.empty((n, 3), np.float32)
    for t in range(3):
        sel = np.flatnonzero(kind == t)
        pool = stats.share_pool[t]
        shares[sel] = pool[rng.integers(len(pool), size=len(sel))]
    for r, w in zip(real_rank.tolist(), real_word_list):
        own = stats.own_shares.get(w)
        if own is not None:
            shares[r] = own
    # Forms that spell alike ("I" is both Capitalised and UPPER; uncased scripts) are one form.
    low, cap, up = real_word, pc.utf8_capitalize(real_word), pc.utf8_upper(real_word)
    for same, into, gone in ((pc.equal(up, cap), 1, 2), (pc.equal(cap, low), 0, 1), (pc.equal(up, low), 0, 2)):
        at = real_rank[same.to_numpy(zero_copy_only=False)]
        shares[at, into] += shares[at, gone]
        shares[at, gone] = 0

    # Document spread (metaclip): P(d >= 3 | c), sample-measured for small c.
    p10 = stats.spread[BOUND_MAX]
    p = np.where(
        counts <= BOUND_MAX,
        stats.spread[np.minimum(counts, BOUND_MAX)],
        1 - (1 - p10) * BOUND_MAX / np.maximum(counts, 1),
    )
    spread = _rng(seed, "spread").random(n) < p

    explicit = _explicit_draw(_rng(seed, "explicit"), counts, scale)
    donor = _donor_pairs(law, counts, stats, seed, scale)
    comp = _compositional_pairs(counts, stats, seed, scale)
    bound = _bound_pairs(counts, stats, seed, spread)
    explicit[bound["x"]] = explicit[bound["y"]] = True
    pairs = {k: np.r_[donor[k], comp[k], bound[k]] for k in donor}
    _, first = np.unique(pairs["x"] * len(counts) + pairs["y"], return_index=True)
    pairs = {k: v[np.sort(first)] for k, v in pairs.items()}  # a pair once, its first source wins

    # Digit tokens (clip): the lemma shape scaled to their share of the tokens.
    factor = digit / (1 - digit)
    d_all = np.rint(law.count(np.arange(1, law.vocab(0.5 / factor) + 1)) * factor).astype(np.int64)
    d_all = d_all[d_all >= 1]
    digit_counts = d_all[d_all >= EXPLICIT_MIN]
    digit_light = int(d_all[d_all < EXPLICIT_MIN].sum())
    digit_explicit = _explicit_draw(_rng(seed, "digit"), digit_counts, scale)

    world = World(
        law,
        scale,
        seed,
        counts,
        light_mass,
        explicit,
        real_rank,
        real_word,
        shares,
        spread,
        pairs,
        digit_counts,
        digit_explicit,
        digit_light,
        titles={},
        dump_titles=None,
        stats=stats,
    )
    world.titles, world.dump_titles = _titles(world, seed, scale)
    return world


def _donor_pairs(law: Law, counts: np.ndarray, stats: SampleStats, seed: int, scale: float) -> dict:
    """Pairs seen >= MIN_PAIR times: every lemma seen >= MIN_PAIR times takes a sample donor's
    pairs (in which the donor is the rarer word), keeping share a and partner ratio rho."""
    rng = _rng(seed, "pairs")
    n100 = int(np.count_nonzero(counts >= MIN_PAIR))
    c = counts[:n100].astype(float)
    dc = stats.donor_counts.astype(float)
    sample_total = dc.sum()
    target = c * sample_total / TOKENS / (1 - stats.digit_share)
    # Frequency-matched donor: a random sample word within 25% of the target count.
    lo = np.searchsorted(-dc, -target * 1.25, side="left")
    hi = np.searchsorted(-dc, -target / 1.25, side="right")
    hi = np.maximum(hi, lo + 1)
    matched = np.minimum(lo + (rng.random(n100) * (hi - lo)).astype(np.int64), len(dc) - 1)
    rare_pool = np.flatnonzero((dc >= DONOR_RARE[0]) & (dc < DONOR_RARE[1]))
    donor = np.where(target >= DONOR_MATCH_MIN, matched, rare_pool[rng.integers(len(rare_pool), size=n100)])

    dp = stats.donor_pairs
    starts = np.searchsorted(dp[:, 0], np.arange(len(dc) + 1))
    per = starts[donor + 1] - starts[donor]
    owner = np.repeat(np.arange(n100), per)
    idx = np.repeat(starts[donor], per) + np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    a, rho, left = dp[idx, 1], dp[idx, 2], dp[idx, 3].astype(bool)
    cxy = np.rint(a * c[owner])
    keep = cxy >= MIN_PAIR
    owner, a, rho, left, cxy = owner[keep], a[keep], rho[keep], left[keep], cxy[keep]
    # Partner: a lemma of count ~rho c, rank jittered +-15%, never the word itself.
    prank = law.rank_at(rho * c[owner]) * rng.uniform(0.85, 1.15, len(owner))
    partner = np.clip(np.rint(prank).astype(np.int64) - 1, 0, len(counts) - 1)
    partner = np.where(partner == owner, owner + 1, partner)
    cp = counts[partner]
    cxy = np.minimum(cxy, np.minimum(cp, c[owner])).astype(np.int64)
    x, y = np.where(left, owner, partner), np.where(left, partner, owner)
    first = np.sort(np.unique(x * len(counts) + y, return_index=True)[1])  # before thinning: scale-free
    x, y, cxy = x[first], y[first], cxy[first]
    n_tok = TOKENS * (1 - stats.digit_share)
    pmi = np.log2(n_tok * cxy / (counts[x].astype(float) * counts[y]))
    rarer = np.minimum(counts[x], counts[y])
    kind = np.where(cxy >= COLLOCATION_SHARE * rarer, 0, np.where(pmi < COMPOSITIONAL_PMI, 2, 1))
    thin = (pmi >= THIN_PMI) | (rng.random(len(x)) < scale)
    return {"x": x[thin], "y": y[thin], "c": cxy[thin], "kind": kind[thin], "pmi": pmi[thin]}


def _compositional_pairs(counts: np.ndarray, stats: SampleStats, seed: int, scale: float) -> dict:
    """Class (ii), assumed: each of the FUNCTION_WORDS most frequent lemmas is a neighbour of
    a content lemma with probability FUNCTION_PAIR_P, on a random side, with PMI uniform in
    0..COMPOSITIONAL_PMI (c(xy) at most half of c(content)). The donor pairs hold such pairs
    too, but too few for frequent words (a sample word seen 10-40 times shows few partners)."""
    rng = _rng(seed, "compositional")
    n_tok = TOKENS * (1 - stats.digit_share)
    xs, ys, cs = [], [], []
    for f in range(FUNCTION_WORDS):
        reach = int(np.count_nonzero(counts * float(counts[f]) * 2**COMPOSITIONAL_PMI / n_tok >= MIN_PAIR))
        content = np.arange(FUNCTION_WORDS, max(reach, FUNCTION_WORDS))
        content = content[rng.random(len(content)) < FUNCTION_PAIR_P]
        pmi = rng.uniform(0, COMPOSITIONAL_PMI, len(content))
        c = np.minimum(np.rint(counts[content] * float(counts[f]) * 2**pmi / n_tok), counts[content] // 2)
        keep = (c >= MIN_PAIR) & (rng.random(len(content)) < scale)  # all below THIN_PMI
        content, c = content[keep], c[keep].astype(np.int64)
        left = rng.random(len(content)) < 0.5
        xs.append(np.where(left, f, content))
        ys.append(np.where(left, content, f))
        cs.append(c)
    x = np.concatenate(xs)
    return {
        "x": x,
        "y": np.concatenate(ys),
        "c": np.concatenate(cs),
        "kind": np.full(len(x), 2, np.int64),
        "pmi": np.full(len(x), np.nan),
    }  # below THIN_PMI; not needed exactly


def _bound_pairs(counts: np.ndarray, stats: SampleStats, seed: int, spread: np.ndarray) -> dict:
    """Words of count 3..BOUND_MAX always next to the same partner (<= 4x as frequent), at
    the sample's rate per count; each word in at most one such pair. Both words share the
    pair's document spread (they occur in the same articles)."""
    rng = _rng(seed, "bound")
    # Ranks holding each count value (counts are non-increasing, so each value is a range).
    values = np.arange(EXPLICIT_MIN, 4 * BOUND_MAX + 1)
    first = len(counts) - np.searchsorted(counts[::-1], values, side="right")
    stop = len(counts) - np.searchsorted(counts[::-1], values, side="left")
    free = {int(v): rng.permutation(np.arange(a, b)) for v, a, b in zip(values, first, stop)}
    used = dict.fromkeys(free, 0)

    def take(v: int, k: int) -> np.ndarray:
        got = free[v][used[v] : used[v] + k]
        used[v] += len(got)
        return got

    bp = stats.bound_pairs
    xs, ys, cs = [], [], []
    for cr in range(EXPLICIT_MIN, BOUND_MAX + 1):
        rows = bp[bp[:, 0] == cr]
        k = int(round(stats.bound_rate[cr] * len(free[cr])))  # all of them at any scale: they are few
        if k == 0 or len(rows) == 0:
            continue
        drawn = rows[rng.integers(len(rows), size=k)]
        for cp in np.unique(drawn[:, 1]):
            sel = drawn[drawn[:, 1] == cp]
            rare = take(cr, len(sel))
            part = take(int(cp), len(rare))
            m = min(len(rare), len(part))
            rare, part, sel = rare[:m], part[:m], sel[:m]
            left = sel[:, 2].astype(bool)
            xs.append(np.where(left, rare, part))
            ys.append(np.where(left, part, rare))
            cs.append(np.full(m, cr, np.int64))
            s = spread[rare]  # the pair's spread decides both words'
            spread[part] = s
    x = np.concatenate(xs) if xs else np.zeros(0, np.int64)
    return {
        "x": x,
        "y": np.concatenate(ys) if ys else x,
        "c": np.concatenate(cs) if cs else x,
        "kind": np.full(len(x), 3, np.int64),
        "pmi": np.full(len(x), np.nan),
    }


def _phi(z: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return 0.5 * (1 + np.vectorize(erf)(np.asarray(z) / sqrt(2)))


def _titles(world: World, seed: int, scale: float) -> tuple[dict, pa.StringArray]:
    """Viewed titles (those with at least one hour >= HOURLY_MIN) and the dump's article titles."""
    rng = _rng(seed, "titles")
    total = ARTICLES / (1 - REDIRECT_SHARE - MISSING_SHARE)
    norm = math.log((total + VIEW_Q) / (1 + VIEW_Q)) + 1 / (2 * (1 + VIEW_Q))
    # Expected qualifying views by popularity rank; past ~80k no hour reaches HOURLY_MIN.
    k = np.arange(1, 400_001, dtype=float)
    lam = VIEWS_PER_HOUR / (norm * (k + VIEW_Q))
    z = (np.log(lam / HOURLY_MIN) + BURST_SIGMA**2 / 2) / BURST_SIGMA
    views = np.rint(HOURS * lam * _phi(z)).astype(np.int64)
    views = views[views >= HOURLY_MIN]
    n = len(views)
    kind = rng.choice(3, size=n, p=[1 - REDIRECT_SHARE - MISSING_SHARE, REDIRECT_SHARE, MISSING_SHARE])
    nwords = rng.choice(np.arange(1, 7), size=n, p=world.stats.title_words)
    titles = _synthetic_titles(np.arange(n), nwords)
    # One-word article titles: Capitalised lemmas, rank log-uniform in 1..ONE_WORD_TITLE_RANKS.
    one = np.flatnonzero((nwords == 1) & (kind == 0))
    ranks = np.unique(np.exp(rng.uniform(0, math.log(ONE_WORD_TITLE_RANKS), len(one))).astype(np.int64) - 1)
    ranks = rng.permutation(ranks)[: len(one)]
    one = one[: len(ranks)]
    titles = pc.replace_with_mask(titles, pa.array(np.isin(np.arange(n), one)), pc.utf8_capitalize(world.words(ranks)))
    # Half the two-word article titles: generated collocations, "Xxx yyy" / "Xxx Yyy".
    two = np.flatnonzero((nwords == 2) & (kind == 0))
    two = two[rng.random(len(two)) < 0.5]
    coll = np.flatnonzero((world.pairs["kind"] == 0) & (world.pairs["pmi"] >= THIN_PMI))  # never thinned
    pick = rng.permutation(coll)[: len(two)]
    two = two[: len(pick)]
    if len(pick):
        px, py = world.pairs["x"][pick], world.pairs["y"][pick]
        second = world.words(py)
        second = pc.if_else(pa.array(world.shares[py].argmax(1) == 1), pc.utf8_capitalize(second), second)
        names = pc.binary_join_element_wise(pc.utf8_capitalize(world.words(px)), second, " ")
        titles = pc.replace_with_mask(titles, pa.array(np.isin(np.arange(n), two)), names)
    articles = titles.filter(pa.array(kind == 0))
    others = int(round((ARTICLES - len(articles)) * scale))
    dump = pa.concat_arrays([articles, _synthetic_titles(n + np.arange(others), np.full(others, 3))])
    return {"title": titles, "views": views, "kind": kind}, dump


def _synthetic_titles(ids: np.ndarray, nwords: np.ndarray) -> pa.StringArray:
    """Distinct multi-word titles of 5-syllable words (never equal to a 4-syllable lemma):
    word i of title t is word id t * 6 + i, so titles never repeat."""
    out = None
    for i in range(int(nwords.max()) if len(nwords) else 0):
        word = synthetic(ids * 6 + i, syllables=5)
        word = pc.utf8_capitalize(word) if i == 0 else word
        if out is None:
            out = word
        else:
            out = pc.if_else(pa.array(nwords > i), pc.binary_join_element_wise(out, word, " "), out)
    return out if out is not None else pa.array([], pa.string())


@lru_cache(maxsize=4)
def world_for(seed: int, scale: float) -> World:
    return build_world(seed, scale)


# ----------------------------------------------------------------------------- spill tables


@dataclass
class Written:
    """What one recipe's tables hold, for checks independent of DuckDB: each bigram row with
    the counts of its two words as written (0: word not in the unigram table), and N."""

    bigram: pa.StringArray
    c: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    kind: np.ndarray
    tokens: int  # N as the aggregate will compute it


def _write(path: Path, table: pa.Table, parts: int = 2) -> None:
    """A table as `parts` parquet parts, as per-chunk spills would be."""
    path.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // parts) or 1
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), path / f"part-{i:03d}.parquet")


def _placeholders(mass: int, with_docs: bool) -> pa.Table:
    """Rows of PLACEHOLDER tokens each (one for the remainder) carrying `mass` tokens: below
    every count threshold, in no bigram; "#" keeps them apart from every simulated word."""
    k, rest = divmod(max(int(mass), 0), PLACEHOLDER)
    c = np.r_[np.full(k, PLACEHOLDER, np.int64), [rest] if rest else []].astype(np.int64)
    cols = {"w": pc.binary_join_element_wise("#", synthetic(np.arange(len(c)), syllables=6), ""), "c": c}
    if with_docs:
        cols["d"] = np.full(len(c), PLACEHOLDER, np.int64)
    return pa.table(cols)


def split_count(counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Integer counts per case form that add up to the lemma's count (largest remainder), so
    folding the forms gives back exactly the lemma."""
    exact = counts[:, None] * shares.astype(float) / shares.sum(1, keepdims=True)
    out = np.floor(exact).astype(np.int64)
    short = counts - out.sum(1)
    rank = np.argsort(np.argsort(-(exact - out), axis=1, kind="stable"), axis=1)
    return out + (rank < short[:, None])


def _dominant_form(world: World, ranks0: np.ndarray) -> pa.StringArray:
    """Each lemma spelled in its most frequent case form."""
    low = world.words(ranks0)
    dom = world.shares[ranks0].argmax(1)
    upper = pc.if_else(pa.array(dom == 2), pc.utf8_upper(low), low)
    return pc.if_else(pa.array(dom == 1), pc.utf8_capitalize(low), upper)


def write_counts(world: World, recipe: str, work_dir: Path) -> Written:
    """The dump's spill parts (``dump/``) and summed pageviews (``pageviews/parts``)."""
    work_dir = Path(work_dir)
    dump = work_dir / "dump"
    for sub in (dump, work_dir / "pageviews"):
        shutil.rmtree(sub, ignore_errors=True)  # ours alone: no stale parts from an earlier run
    counts, n = world.counts, len(world.counts)
    rows = np.flatnonzero(world.explicit)
    words = world.words(rows)
    px, py, pcount, kind = (world.pairs[k] for k in ("x", "y", "c", "kind"))
    if recipe == "metaclip":
        c = counts[rows]
        spread = world.spread[rows]
        d = np.where(spread, np.maximum(3, c // 2), np.minimum(c, 2))
        in_n = int(c[spread].sum())
        missing = int(counts[world.spread & ~world.explicit].sum())  # left out, would count in N
        uni = pa.concat_tables([pa.table({"w": words, "c": c, "d": d}), _placeholders(missing, True)])
        bigram = pc.binary_join_element_wise(world.words(px), world.words(py), " ")
        member = world.spread & world.explicit
        cx, cy = np.where(member[px], counts[px], 0), np.where(member[py], counts[py], 0)
        written = Written(bigram, pcount, cx, cy, kind, in_n + missing)
    else:
        forms = [words, pc.utf8_capitalize(words), pc.utf8_upper(words)]
        fc = split_count(counts[rows], world.shares[rows])
        parts = [pa.table({"w": forms[f].filter(pa.array(fc[:, f] >= 1)), "c": fc[fc[:, f] >= 1, f]}) for f in range(3)]
        dr = np.flatnonzero(world.digit_explicit)
        parts.append(pa.table({"w": pa.array(dr + 1).cast(pa.string()), "c": world.digit_counts[dr]}))
        written_mass = sum(int(t["c"].to_numpy().sum()) for t in parts)
        parts.append(_placeholders(TOKENS - written_mass, False))
        uni = pa.concat_tables(parts)
        # A pair is written in its words' dominant forms, with the smaller dominant share.
        dom = world.shares.argmax(1)
        dshare = world.shares[np.arange(n), dom]
        surface = split_count(counts, world.shares)
        form_count = np.where(world.explicit, surface[np.arange(n), dom], 0)
        bc = np.rint(pcount * np.minimum(dshare[px], dshare[py])).astype(np.int64)
        bc = np.minimum(bc, np.minimum(surface[px, dom[px]], surface[py, dom[py]]))  # never above a word
        keep = bc >= 1
        px, py, bc, kind = px[keep], py[keep], bc[keep], kind[keep]
        bigram = pc.binary_join_element_wise(_dominant_form(world, px), _dominant_form(world, py), " ")
        written = Written(bigram, bc, form_count[px], form_count[py], kind, TOKENS)
    _write(dump / "uni", uni)
    _write(dump / "bi", pa.table({"b": written.bigram, "c": written.c}))
    titles = world.dump_titles
    _write(
        dump / "titles",
        pa.table(
            {
                "title": titles,
                "chunk": pa.array(np.full(len(titles), "c000000")),
                "pos": pa.array(np.arange(len(titles), dtype=np.int32)),
            }
        ),
        parts=1,
    )
    views = pa.table({"title": world.titles["title"], "views": world.titles["views"]})
    _write(work_dir / "pageviews" / "parts", views, parts=1)
    return written


def expected_bigrams(w: Written, rules, wordnet: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rules' bigram selection computed from the written rows in numpy (not DuckDB):
    indices into `w` in selection order, and every candidate's PMI."""
    ok = (w.c >= rules.min_bigram_count) & (w.cx > 0) & (w.cy > 0)
    pmi = np.full(len(w.c), -np.inf)
    pmi[ok] = np.log2(float(w.tokens) * w.c[ok] / (w.cx[ok].astype(float) * w.cy[ok]))
    if rules.min_pmi is not None:
        ok &= pmi >= rules.min_pmi
    ok &= ~pc.is_in(w.bigram, value_set=pa.array(sorted(wordnet), pa.string())).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((-w.c[idx], -pmi[idx]))]
    cap = rules.max_bigrams
    return (order if cap is None else order[:cap]), pmi


# ----------------------------------------------------------------------------- the run


def simulate(
    recipe: str,
    work_dir,
    scale: float = 1.0,
    seed: int = 0,
    details: bool = False,
    memory_limit: str = "4GB",
    threads: int = 2,
    **rule_overrides,
) -> dict:
    """Write the simulated counts for `recipe` into `work_dir` and run the real aggregation
    and selection on them. Returns per-source `added`, `candidates` (rows passing the
    source's thresholds, before caps and dedup), the top and bottom 10 selected bigrams
    (count, PMI), the kinds of the selected bigrams, and N. `details` adds the selected
    bigram rows and the numpy-computed expectation (keys starting with "_")."""
    from pipeline.queries.aggregate import Aggregates
    from pipeline.queries.build import SOURCES, select_queries
    from pipeline.queries.recipes import metaclip_wordnet, resolve_rules
    from pipeline.queries.wordnet import read_head_words

    rules = resolve_rules(recipe, **rule_overrides)
    world = world_for(seed, float(scale))
    work_dir = Path(work_dir)
    written = write_counts(world, recipe, work_dir)
    heads = read_head_words(str(os.environ.get("WORDNET_DIR") or WORDNET)).words
    agg = Aggregates(work_dir / "dump", memory_limit=memory_limit, threads=threads)
    try:
        build = agg.build(rules.min_bigram_count, rules.min_doc_freq)
        rows, report = select_queries(agg, rules, heads, work_dir / "pageviews")
        pv = work_dir / "pageviews"
        candidates = {
            "wordnet": report["wordnet"]["considered"],
            "unigram": sum(1 for _ in agg.unigrams(rules.min_count, rules.unigram_case)),
            "bigram": sum(1 for _ in agg.bigrams(rules.min_pmi)),
            "title": sum(1 for _ in agg.viewed_titles(pv, rules.min_views, dump_articles_only=recipe == "clip")),
        }
        top_pair = next(iter(agg.bigrams(None)), None)
        by_case = None
        if recipe == "clip":
            by_case = {case: sum(1 for _ in agg.unigrams(rules.min_count, case)) for case in ("keep", "fold")}
    finally:
        agg.close()
    n = agg.total_tokens
    bigrams = [r for r in rows if r.source == "bigram"]
    chosen = pa.array([r.query for r in bigrams], pa.string())
    at = pc.index_in(chosen, value_set=written.bigram).to_numpy(zero_copy_only=False)
    kinds = written.kind[at[~np.isnan(at.astype(float))].astype(np.int64)] if len(at) else np.zeros(0, np.int64)
    wordnet = set(metaclip_wordnet(heads)) if recipe == "metaclip" else set(heads)

    def show(rs):
        return [{"bigram": r.query, "count": r.count, "pmi": round(r.pmi, 3)} for r in rs]

    result = {
        "recipe": recipe,
        "scale": scale,
        "seed": seed,
        "rules": rules.as_dict(),
        "N": n,
        "pmi30_max_ratio": n / 2**30,  # c(x)c(y)/c(xy) a pair needs for PMI >= 30
        "added": {s: report[s]["added"] for s in SOURCES},
        "duplicates_skipped": {s: report[s]["duplicates_skipped"] for s in SOURCES},
        "candidates": candidates,
        "unigram_candidates_by_case": by_case,
        "aggregate": build,
        "max_pmi": None if top_pair is None else top_pair[2],
        "selected_bigram_kinds": {k: int(np.count_nonzero(kinds == i)) for i, k in enumerate(World.KINDS)},
        # Bound rare pairs whose ratio c(x)c(y)/c(xy) allows PMI >= 30 at this N, before the
        # document-frequency filter drops the words of those in fewer than 3 articles.
        "bound_pairs_ratio_ok": int(
            np.count_nonzero(
                (world.pairs["kind"] == 3)
                & (world.counts[world.pairs["x"]] * world.counts[world.pairs["y"]] <= n / 2**30 * world.pairs["c"])
            )
        ),
        "top_bigrams": show(bigrams[:10]),
        "bottom_bigrams": show(bigrams[-10:]),
        "total": len(rows),
    }
    if details:
        expected, pmi = expected_bigrams(written, rules, wordnet)
        result["_bigrams"] = [(r.query, r.count, r.pmi) for r in bigrams]
        result["_expected"] = [
            (b, int(c), float(p))
            for b, c, p in zip(written.bigram.take(pa.array(expected)).to_pylist(), written.c[expected], pmi[expected])
        ]
        result["_written"] = written
    return result


def model_summary(world: World) -> dict:
    """The fitted and measured parameters of a world, for reports."""
    st, law = world.stats, world.law
    return {
        "tokens": TOKENS,
        "law": {
            "s1": round(law.s1, 4),
            "q": law.q,
            "r_b": round(law.rb, 1),
            "s2": round(law.s2, 4),
            "K": round(float(law.K)),
            "words_at_100": law.vocab(100),
            "words_at_5": law.vocab(5),
            "words_at_3": law.vocab(EXPLICIT_MIN),
            "words_at_1": law.vocab(1),
        },
        "sample": {
            "tokens": st.tokens,
            "digit_share": round(st.digit_share, 4),
            "case_type_share_lower_cap_upper": [round(float(v), 4) for v in st.type_share],
            "p_docs_ge_3_by_count": [round(float(v), 3) for v in st.spread],
            "bound_pairs_per_word_by_count": [round(float(v), 4) for v in st.bound_rate],
            "bound_pairs_spread_c3_4": round(st.bound_spread, 3),
            "title_words_1_to_6plus": [round(float(v), 3) for v in st.title_words],
        },
        "digit_tokens_at_100": int(np.count_nonzero(world.digit_counts >= 100)),
        "real_words_placed": int(len(world.real_rank)),
        "pairs_by_kind": {k: int(np.count_nonzero(world.pairs["kind"] == i)) for i, k in enumerate(World.KINDS)},
        "titles": {
            "viewed_at_least_one_hour": int(len(world.titles["views"])),
            "viewed_at_70": int(np.count_nonzero(world.titles["views"] >= 70)),
            "articles_viewed_at_70": int(np.count_nonzero((world.titles["views"] >= 70) & (world.titles["kind"] == 0))),
            "assumed": {
                "articles": ARTICLES,
                "redirect_share": REDIRECT_SHARE,
                "missing_share": MISSING_SHARE,
                "desktop_views_per_hour": VIEWS_PER_HOUR,
                "zipf_offset": VIEW_Q,
                "hourly_lognormal_sigma": BURST_SIGMA,
                "hours": HOURS,
            },
        },
    }
