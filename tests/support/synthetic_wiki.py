"""Synthetic MediaWiki ``pages-articles`` XML dumps for scale tests and benchmarks.

The dumps imitate the structure of real English Wikipedia dumps (export schema 0.10):
a ``<siteinfo>`` header with the namespace table, then ``<page>`` elements with title,
namespace, id, optional ``<redirect title=.../>`` and one ``<revision>`` (id, parentid,
timestamp, contributor, comment, model, format, ``<text xml:space="preserve" bytes=...>``,
sha1). Text is escaped the way MediaWiki escapes it (``&lt;ref&gt;``, ``&quot;``).

Content is generated, not copied:

* Prose words are drawn independently from a Zipf distribution (s = 1.1) over a large
  vocabulary (default 5 million ranks) of pronounceable pseudo-words. The most frequent
  ranks are real English function words; the others are built from syllables, by rank, on
  demand (a bijection of the rank, so words are unique), shuffled by the seed. Because the
  vocabulary is far larger than what a dump uses, the number of distinct words and bigrams
  keeps growing with dump size (roughly like N^0.9), as in real text.
* Sentences start with a capital, end with a full stop; paragraphs, sections and
  sub-sections; recurring multi-word names (a fixed Zipf-weighted set of "famous" names,
  plus article titles that are linked again and again) give bigrams with high PMI.
* Wikitext markup in moderation: ``[[links|label]]``, ``{{templates|with=params}}``
  (nested ones, infoboxes, citation templates), ``<ref>`` / ``<ref name=... />``,
  ``== headings ==``, ``'''bold'''``, ``''italic''``, lists, ``{| tables |}``,
  ``[[File:...|thumb|caption with [[link]]]]``, ``[[Category:...]]``, HTML comments,
  ``&nbsp;`` and a little non-ASCII text (en dashes, diacritics).
* Page mix similar to enwiki: articles (ns 0), redirects (``#REDIRECT [[Target]]`` plus
  ``<redirect title=.../>``, mostly ns 0, some templates), and pages in other namespaces
  (Wikipedia: 4, File: 6, Template: 10, Category: 14, Portal: 100, Draft: 118, Module: 828
  with the Scribunto content model). Titles are unique.

Output is byte-for-byte deterministic for the same arguments (gzip without file name and
with mtime 0). Compression is chosen by the extension: ``.xml``, ``.xml.gz``,
``.xml.bz2``. With ``multistream=True`` (``.xml.bz2`` only) the layout is Wikipedia's
"multistream" one: a first bz2 stream with the ``<mediawiki>`` header and ``<siteinfo>``,
one stream per ``pages_per_stream`` pages, a last stream with ``</mediawiki>``, and an
index ``X-multistream-index.txt.bz2`` next to ``X-multistream.xml.bz2`` with lines
``offset:page_id:title`` (offset = byte offset in the compressed file of the stream that
holds the page). The decompressed XML does not depend on ``multistream`` or
``pages_per_stream``: only on size, seed and vocabulary size.

Sizes are in MB = 10**6 bytes of uncompressed XML; generation stops at the first page
boundary at or past the target, so the XML is at most one page larger than asked.

CLI::

    python -m tests.support.synthetic_wiki OUT.xml.bz2 --mb 50 [--seed 0] [--multistream]
        [--pages-per-stream 100] [--vocab-size 5000000]

prints a one-line JSON summary (the DumpInfo fields plus seconds and xml_mb_per_s).
"""

from __future__ import annotations

import argparse
import bz2
import collections
import concurrent.futures
import dataclasses
import gzip
import hashlib
import itertools
import json
import math
import os
import queue
import random
import sys
import threading
import time

__all__ = ["DumpInfo", "write_dump", "index_path_for", "Vocabulary", "main"]

MB = 1_000_000
ZIPF_S = 1.1
DEFAULT_VOCAB_SIZE = 5_000_000

_HEAD = 1 << 16  # ranks tabulated exactly; ranks beyond: power-law tail
_SLOTS = 1 << 20  # size of the fast sampling table
_CHUNK = 1 << 20  # bytes handed to the writer thread at a time (single stream)

# --------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------

# Most frequent English words, in rough frequency order: ranks 0.. of the vocabulary.
FUNCTION_WORDS = (
    "the of and in to a was is for as on by with he that at from his it an were are "
    "which this also be has or had first its new after who one their not but they two "
    "her she been other when there all during into school time may years more most only "
    "over city some world would where later up such used many can state about national "
    "out known university united then made"
).split()
_FUNCTION_SET = frozenset(FUNCTION_WORDS)

# Syllable = onset (consonants, non-empty except in the first syllable) + nucleus (vowels);
# a word = syllables + optional coda (consonants). Consonant and vowel letters are
# disjoint, so a word splits back into its parts in exactly one way: distinct digit
# strings give distinct words.
_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "ch",
    "dr",
    "gr",
    "kl",
    "pr",
    "sh",
    "st",
    "th",
    "tr",
)
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ia", "io", "ou")
_CODAS = ("", "n", "r", "s", "l", "t", "m", "k", "nd", "st", "rt", "x")


class Vocabulary:
    """Pseudo-words by rank, deterministic from the seed, generated on demand.

    Rank 0 is the most frequent word. Ranks below ``len(FUNCTION_WORDS)`` are English
    function words (when ``function_words``); the others are 1-, 2-, 3-, ... syllable
    pseudo-words, shorter ones for frequent ranks, each length class scrambled by a
    seed-dependent affine bijection so neighbouring ranks do not look alike.
    """

    def __init__(self, seed: int, size: int, function_words: bool = True):
        rng = random.Random(f"vocab:{seed}:{int(function_words)}")
        self.size = size
        self.prefix = list(FUNCTION_WORDS) if function_words else []
        syl = [o + n for o in _ONSETS for n in _NUCLEI]
        rng.shuffle(syl)
        first = syl + list(_NUCLEI)
        rng.shuffle(first)
        codas = list(_CODAS)
        rng.shuffle(codas)
        self._syl, self._first, self._codas = syl, first, codas
        self._pairs = [f + t for f in first for t in syl]  # first two syllables
        # length classes: (n_words, syllables, multiplier, offset)
        self._classes = []
        nsyl = 1
        covered = len(self.prefix)
        while covered < size:
            n = len(codas) * len(first) * len(syl) ** (nsyl - 1)
            a = rng.randrange(n // 3, n) | 1
            while math.gcd(a, n) != 1:
                a += 2
            self._classes.append((n, nsyl, a, rng.randrange(n)))
            covered += n
            nsyl += 1

    def __len__(self) -> int:
        return self.size

    def word(self, rank: int) -> str:
        if rank < 0 or rank >= self.size:
            raise IndexError(rank)
        return self.words([rank])[0]

    def words(self, ranks) -> list:
        """Words for a sequence of valid ranks (the fast path for the sampler's tail)."""
        prefix, classes, first, pairs, syl, codas = (
            self.prefix,
            self._classes,
            self._first,
            self._pairs,
            self._syl,
            self._codas,
        )
        npre, nc, npairs, ns = len(prefix), len(codas), len(pairs), len(syl)
        out = []
        for rank in ranks:
            if rank < npre:
                out.append(prefix[rank])
                continue
            r = rank - npre
            for n, nsyl, a, b in classes:  # noqa: B007 - the matching class is used after the break
                if r < n:
                    break
                r -= n
            x, c = divmod((a * r + b) % n, nc)
            if nsyl == 1:
                w = first[x] + codas[c]
            else:
                x, p = divmod(x, npairs)
                w = pairs[p]
                for _ in range(nsyl - 2):
                    x, t = divmod(x, ns)
                    w += syl[t]
                w += codas[c]
            # never shadow a function word ("the", "to", ...); "ff" is not a coda, so the
            # result still cannot equal another generated word
            out.append(w + "ff" if w in _FUNCTION_SET else w)
        return out


class _ZipfWords:
    """Draws words with P(rank k) proportional to k**-s (k = 1..size), exactly.

    Speed: a table of ``_SLOTS`` entries holds each head word floor(p * _SLOTS) times, so
    most draws are one unweighted ``choices`` pick; the slots left over (None) stand for
    the residual distribution (fractional parts of the head plus the tail), sampled with
    cumulative weights, and the tail beyond the head by the inverse CDF of k**-s.
    """

    def __init__(self, vocab: Vocabulary, rng: random.Random, s: float = ZIPF_S, head: int = _HEAD, transform=None):
        self.vocab, self.rng, self.s = vocab, rng, s
        self.transform = transform
        k = min(head, vocab.size)
        words = [vocab.word(r) for r in range(k)]
        if transform is not None:
            words = [transform(w) for w in words]
        weights = [i**-s for i in range(1, k + 1)]
        self.head_n = k
        tail = 0.0
        if k < vocab.size:  # continuous approximation of the tail mass, ranks k+1..size
            lo, hi = k + 0.5, vocab.size + 0.5
            if abs(s - 1.0) < 1e-9:
                tail = math.log(hi / lo)
            else:
                tail = (lo ** (1 - s) - hi ** (1 - s)) / (s - 1)
            self._a, self._b = lo ** (1 - s), hi ** (1 - s)
        scale = _SLOTS / (sum(weights) + tail)
        table: list = []
        resid_pop, resid_w = [], []
        for w, x in zip(words, weights):
            x *= scale
            c = int(x)
            if c:
                table += [w] * c
            if x > c:
                resid_pop.append(w)
                resid_w.append(x - c)
        if tail:
            resid_pop.append(None)
            resid_w.append(tail * scale)
        table += [None] * (_SLOTS - len(table))
        self.table = table
        self.resid_pop = resid_pop
        self.resid_cum = list(itertools.accumulate(resid_w))

    def _tail_words(self, m: int) -> list:
        """m words with ranks >= head_n, by the inverse CDF of the power-law tail."""
        rnd = self.rng.random
        lo, hi = self.head_n, self.vocab.size - 1
        if abs(self.s - 1.0) < 1e-9:
            base, ratio = lo + 0.5, (hi + 1.5) / (lo + 0.5)
            xs = [base * ratio ** rnd() for _ in range(m)]
        else:
            a, d, e = self._a, self._a - self._b, 1.0 / (1 - self.s)
            xs = [(a - rnd() * d) ** e for _ in range(m)]
        ranks = [lo if r < lo else hi if r > hi else r for r in [int(x + 0.5) - 1 for x in xs]]
        words = self.vocab.words(ranks)
        if self.transform is not None:
            words = [self.transform(w) for w in words]
        return words

    def draw(self, n: int) -> list:
        rng = self.rng
        toks = rng.choices(self.table, k=n)
        m = toks.count(None)
        if m:
            extra = rng.choices(self.resid_pop, cum_weights=self.resid_cum, k=m)
            t = extra.count(None)
            if t:
                tail = iter(self._tail_words(t))
                extra = [w if w is not None else next(tail) for w in extra]
            index = toks.index
            i = -1
            for w in extra:
                i = index(None, i + 1)
                toks[i] = w
        return toks

    def one(self) -> str:
        return self.draw(1)[0]


# --------------------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------------------

_NAMESPACES = [
    (-2, "first-letter", "Media"),
    (-1, "first-letter", "Special"),
    (0, "first-letter", ""),
    (1, "first-letter", "Talk"),
    (2, "first-letter", "User"),
    (3, "first-letter", "User talk"),
    (4, "first-letter", "Wikipedia"),
    (5, "first-letter", "Wikipedia talk"),
    (6, "first-letter", "File"),
    (7, "first-letter", "File talk"),
    (8, "first-letter", "MediaWiki"),
    (9, "first-letter", "MediaWiki talk"),
    (10, "first-letter", "Template"),
    (11, "first-letter", "Template talk"),
    (12, "first-letter", "Help"),
    (13, "first-letter", "Help talk"),
    (14, "first-letter", "Category"),
    (15, "first-letter", "Category talk"),
    (100, "first-letter", "Portal"),
    (101, "first-letter", "Portal talk"),
    (108, "first-letter", "Book"),
    (109, "first-letter", "Book talk"),
    (118, "first-letter", "Draft"),
    (119, "first-letter", "Draft talk"),
    (446, "first-letter", "Education Program"),
    (447, "first-letter", "Education Program talk"),
    (710, "first-letter", "TimedText"),
    (711, "first-letter", "TimedText talk"),
    (828, "first-letter", "Module"),
    (829, "first-letter", "Module talk"),
    (2300, "first-letter", "Gadget"),
    (2301, "first-letter", "Gadget talk"),
    (2302, "case-sensitive", "Gadget definition"),
    (2303, "case-sensitive", "Gadget definition talk"),
    (2600, "first-letter", "Topic"),
]
NAMESPACE_PREFIX = {k: name for k, _, name in _NAMESPACES}


def _header() -> str:
    ns = []
    for key, case, name in _NAMESPACES:
        if name:
            ns.append(f'      <namespace key="{key}" case="{case}">{name}</namespace>\n')
        else:
            ns.append(f'      <namespace key="{key}" case="{case}" />\n')
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
        'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n'
        "  <siteinfo>\n"
        "    <sitename>Wikipedia</sitename>\n"
        "    <dbname>enwiki</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.27.0-wmf.22</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n" + "".join(ns) + "    </namespaces>\n"
        "  </siteinfo>\n"
    )


_FOOTER = "</mediawiki>\n"


def _esc(s: str) -> str:
    """Escape like MediaWiki's XML dumps: &, <, > and double quotes (not apostrophes)."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if '"' in s:
        s = s.replace('"', "&quot;")
    return s


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _sha1_base36(data: bytes) -> str:
    n = int.from_bytes(hashlib.sha1(data).digest(), "big")
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out)).rjust(31, "0")


# --------------------------------------------------------------------------------------
# page generator
# --------------------------------------------------------------------------------------

_HEADINGS = (
    "History",
    "Early life",
    "Career",
    "Geography",
    "Demographics",
    "Reception",
    "Legacy",
    "Personal life",
    "Background",
    "Description",
    "Etymology",
    "Economy",
    "Culture",
    "Biography",
    "Overview",
    "Works",
    "Structure",
    "Distribution",
    "Production",
    "Release",
    "Politics",
    "Education",
    "Transport",
    "Notes",
)
_SUB_HEADINGS = (
    "Early years",
    "Later years",
    "Origins",
    "Modern era",
    "Awards",
    "Critical response",
    "Climate",
    "Population",
    "Development",
    "Impact",
)
_DISAMBIG = (
    "band",
    "album",
    "film",
    "river",
    "village",
    "novel",
    "song",
    "ship",
    "surname",
    "company",
    "footballer",
    "politician",
    "mountain",
    "play",
)
_INFOBOXES = {
    "Infobox person": (
        "birth_date",
        "birth_place",
        "death_date",
        "occupation",
        "known_for",
        "spouse",
        "nationality",
        "years_active",
    ),
    "Infobox settlement": (
        "settlement_type",
        "subdivision_name",
        "established_date",
        "area_total_km2",
        "population_total",
        "elevation_m",
        "timezone",
    ),
    "Infobox album": ("type", "artist", "released", "recorded", "genre", "length", "label", "producer"),
    "Infobox river": ("source1", "mouth", "length", "discharge1_avg", "basin_size", "tributaries_left"),
    "Infobox company": (
        "type",
        "industry",
        "founded",
        "founder",
        "hq_location",
        "key_people",
        "num_employees",
        "website",
    ),
    "Infobox film": (
        "director",
        "producer",
        "starring",
        "music",
        "released",
        "runtime",
        "country",
        "language",
        "budget",
    ),
}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_COMMENTS = (
    "",
    "",
    "",
    "/* History */ copyedit",
    "Reverted edits by [[Special:Contributions/{ip}|{ip}]] ([[User talk:{ip}|talk]]) to last version by {user}",
    "rm unsourced claim",
    "fix <ref> formatting & typos",
    "Bot: adding [[Category:{cat}]]",
    "/* {head} */ expand",
    "ce",
    'added "citation needed" tag',
    "link [[{link}]]",
)
_TLDS = ("org", "com", "net", "gov", "edu", "co.uk", "de")


def _cap(w: str) -> str:
    return w[:1].upper() + w[1:]


_ACCENTS = {"a": "á", "e": "é", "o": "ö", "u": "ü", "i": "í"}


class _PageMaker:
    """Produces pages (as XML strings) one at a time; all randomness from one RNG."""

    def __init__(self, seed: int, vocab_size: int):
        self.rng = rng = random.Random(seed)
        self.vocab = Vocabulary(seed, vocab_size, function_words=True)
        self.words = _ZipfWords(self.vocab, rng)
        name_vocab = Vocabulary(seed + 7919, max(20_000, vocab_size // 10), function_words=False)

        def name_form(w: str) -> str:
            w = _cap(w)
            # a few names with diacritics, deterministic per word
            if len(w) > 4 and _fnv1a(w) % 29 == 0:
                for v, acc in _ACCENTS.items():
                    if v in w[1:]:
                        i = w.index(v, 1)
                        return w[:i] + acc + w[i + 1 :]
            return w

        self.names = _ZipfWords(name_vocab, rng, s=1.05, head=20_000, transform=name_form)
        # recurring "famous" multi-word names, mentioned with Zipf weights
        nf = 5000
        self.famous = []
        seen = set()
        while len(self.famous) < nf:
            name = self._new_name()
            if name not in seen:
                seen.add(name)
                self.famous.append(name)
        self.famous_cum = list(itertools.accumulate(1.0 / i for i in range(1, nf + 1)))
        self.famous_next = 0
        self.users = []
        for _ in range(3000):
            u = self.names.one() + (self.names.one() if rng.random() < 0.4 else "")
            if rng.random() < 0.2:
                u += str(rng.randrange(1, 2000))
            if rng.random() < 0.02:
                u += "Bot"
            self.users.append((u, rng.randrange(1, 40_000_000)))
        self.users_cum = list(itertools.accumulate(1.0 / i for i in range(1, len(self.users) + 1)))

        self.titles: set[str] = set()
        self.articles: list[str] = []  # ns 0 non-redirect titles, in order
        self.categories: list[str] = []  # category names used by pages
        self._category_set: set[str] = set()
        self.cat_made = 0  # categories[:cat_made] have a Category: page
        self.templates: list[str] = list(_INFOBOXES)
        self.tpl_made = 0
        self.files: list[str] = []
        self._file_set: set[str] = set()
        self.template_titles: list[str] = []  # titles of created (non-redirect) templates
        self.file_made = 0
        self.page_id = 10 + rng.randrange(0, 3)
        self.rev_id = 300_000_000 + rng.randrange(0, 1_000_000)
        self.prose_words = 0
        # counters
        self.pages = self.n_articles = self.n_redirects = self.article_words = 0

    # ---- small pieces ----------------------------------------------------------------

    def _new_name(self) -> str:
        rng = self.rng
        k = 2 if rng.random() < 0.7 else 3
        return " ".join(self.names.draw(k))

    def _famous(self) -> str:
        return self.rng.choices(self.famous, cum_weights=self.famous_cum)[0]

    def _popular(self, items: list):
        """An item biased towards the start of the list (popular = early)."""
        return items[int(len(items) * self.rng.random() ** 3)]

    def _year(self) -> int:
        return 1800 + int(224 * self.rng.random() ** 0.5)

    def _date(self) -> str:
        rng = self.rng
        return f"{rng.randrange(1, 29)} {rng.choice(_MONTHS)} {self._year()}"

    def _unique(self, title: str) -> str:
        rng = self.rng
        if title not in self.titles:
            self.titles.add(title)
            return title
        base = title
        for attempt in itertools.count():
            if attempt < 3:
                t = f"{base} ({rng.choice(_DISAMBIG)})"
            else:
                t = f"{base} ({self._year()} {rng.choice(_DISAMBIG)})" if attempt < 6 else f"{base} ({attempt})"
            if t not in self.titles:
                self.titles.add(t)
                return t

    def _article_title(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.3 and self.famous_next < len(self.famous):
            t = self.famous[self.famous_next]
            self.famous_next += 1
        elif r < 0.65:
            t = self._new_name()
        else:
            t = _cap(" ".join(self._content_words(1 + int(rng.random() * 3))))
        if rng.random() < 0.06:
            t = f"{t} ({rng.choice(_DISAMBIG)})"
        return self._unique(t)

    def _content_words(self, k: int) -> list:
        """k words that are not function words (for titles and names of things)."""
        out: list = []
        while len(out) < k:
            out += [w for w in self.words.draw(k) if w not in _FUNCTION_SET]
        return out[:k]

    def _category_name(self) -> str:
        rng = self.rng
        if self.categories and rng.random() < 0.85:
            return self._popular(self.categories)
        r = rng.random()
        if r < 0.25:
            c = f"{self._year()} births"
        elif r < 0.5:
            c = f"{_cap(self._content_words(1)[0])} of {self.names.one()}"
        elif r < 0.75:
            c = f"{self.names.one()} {self._content_words(1)[0]}"
        else:
            c = _cap(" ".join(self._content_words(2)))
        if c not in self._category_set:
            self._category_set.add(c)
            self.categories.append(c)
        return c

    def _link_target(self) -> str:
        if self.articles and self.rng.random() < 0.7:
            return self._popular(self.articles)
        return self._famous()

    def _link(self, word: str) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return f"[[{self._link_target()}|{word}]]"
        if r < 0.75:
            return f"[[{word}]]"
        if r < 0.9:
            return f"[[{_cap(word)}|{word}]]"
        return f"[[{word}]]s"

    def _url(self) -> str:
        rng = self.rng
        return (
            f"http://www.{self._content_words(1)[0]}.{rng.choice(_TLDS)}/"
            f"{self._content_words(1)[0]}/{rng.randrange(1, 99999)}.html"
        )

    def _cite(self) -> str:
        rng = self.rng
        r = rng.random()
        title = _cap(" ".join(self.words.draw(2 + int(rng.random() * 6))))
        if r < 0.45:
            return (
                f"{{{{cite web |url={self._url()} |title={title} "
                f"|publisher={self._famous()} |accessdate={self._date()}}}}}"
            )
        if r < 0.75:
            last, first = self.names.one(), self.names.one()
            return (
                f"{{{{cite book |last={last} |first={first} |title={title} "
                f"|publisher={self.names.one()} & {self.names.one()} "
                f"|year={self._year()} |page={rng.randrange(1, 600)} "
                f"|isbn=978-{rng.randrange(0, 10)}-{rng.randrange(100, 999)}-"
                f"{rng.randrange(10000, 99999)}-{rng.randrange(0, 10)}}}}}"
            )
        if r < 0.9:
            return (
                f"{{{{cite news |title={title} |newspaper=''The {self.names.one()}'' "
                f"|date={self._date()} |url={self._url()}}}}}"
            )
        return (
            f"{self.names.one()}, {self.names.one()[:1]}. ({self._year()}). "
            f"''{title}''. p.&nbsp;{rng.randrange(1, 400)}."
        )

    def _ref(self, refs: list) -> str:
        rng = self.rng
        if refs and rng.random() < 0.25:
            return f'<ref name="{rng.choice(refs)}" />'
        if rng.random() < 0.3:
            name = f"{self._content_words(1)[0]}{len(refs)}"
            refs.append(name)
            return f'<ref name="{name}">{self._cite()}</ref>'
        return f"<ref>{self._cite()}</ref>"

    # ---- prose -----------------------------------------------------------------------

    def _prose(self, n: int, refs: list | None = None, lead: str | None = None) -> str:
        """About n vocabulary words as sentences, with names, links, years and refs."""
        rng = self.rng
        rnd = rng.random
        n = max(n, 3)
        toks = self.words.draw(n)
        self.prose_words += n
        out = []
        pos = 0
        while pos < n:
            ln = 4 + int(rng.expovariate(1 / 14))
            if n - pos < ln + 3:
                ln = n - pos
            s = toks[pos : pos + ln]
            pos += ln
            if lead is not None:
                s.insert(0, f"'''{lead}'''")
                lead = None
            else:
                s[0] = _cap(s[0])
            m = len(s)
            if m > 2:
                if rnd() < 0.45:  # a recurring name
                    j = rng.randrange(1, m)
                    s.insert(j, self._famous() if rnd() < 0.75 else self._link_target())
                    m += 1
                if rnd() < 0.45:  # a link on a (content) word
                    j = rng.randrange(1, m)
                    if s[j] in _FUNCTION_SET:
                        j = rng.randrange(1, m)
                    if s[j] not in _FUNCTION_SET and s[j][:1] != "[":
                        s[j] = self._link(s[j])
                if rnd() < 0.06:
                    j = rng.randrange(1, m)
                    s[j] = f"''{s[j]}''"
                if rnd() < 0.35:
                    s[rng.randrange(1, m - 1)] += ","
                if rnd() < 0.18:
                    y = self._year()
                    s.insert(rng.randrange(1, m), str(y) if rnd() < 0.7 else f"{y}–{y + rng.randrange(1, 60)}")
            sent = " ".join(s) + "."
            if refs is not None and rnd() < 0.12:
                sent += self._ref(refs)
            out.append(sent)
        return " ".join(out)

    # ---- pages -----------------------------------------------------------------------

    def _infobox(self, title: str, refs: list) -> str:
        rng = self.rng
        kind = rng.choice(list(_INFOBOXES))
        fields = _INFOBOXES[kind]
        lines = [f"{{{{{kind}", f"| name = {title}"]
        if rng.random() < 0.6:
            f = self._file_name()
            lines.append(f"| image = {f}")
            lines.append(f"| caption = {_cap(' '.join(self.words.draw(3 + int(rng.random() * 6))))}")
        for fld in rng.sample(fields, rng.randrange(2, len(fields) + 1)):
            r = rng.random()
            if fld.endswith("date") or fld in ("released", "founded"):
                y = self._year()
                v = (
                    f"{{{{birth date and age|{y}|{rng.randrange(1, 13)}|{rng.randrange(1, 29)}}}}}"
                    if r < 0.5
                    else f"{{{{start date|{y}}}}}"
                )
            elif r < 0.3:
                v = f"[[{self._link_target()}]]"
            elif r < 0.45:
                v = f"{{{{convert|{rng.randrange(1, 5000)}|km|mi|abbr=on}}}}"
            elif r < 0.55:
                items = "\n".join(f"* [[{self._link_target()}]]" for _ in range(rng.randrange(2, 5)))
                v = f"{{{{plainlist|\n{items}\n}}}}"
            elif r < 0.65:
                v = f"{rng.randrange(1, 10_000_000):,}{self._ref(refs)}"
            elif r < 0.72:
                v = f"{self.names.one()}<br />{self.names.one()}"
            else:
                v = " ".join(self.words.draw(1 + int(rng.random() * 4)))
            lines.append(f"| {fld} = {v}")
        lines.append("}}")
        return "\n".join(lines)

    def _file_name(self) -> str:
        rng = self.rng
        if self.files and rng.random() < 0.3:
            return self._popular(self.files)
        f = (
            f"{_cap(' '.join(self._content_words(1 + int(rng.random() * 3))))} {rng.randrange(1, 999)}."
            f"{rng.choice(('jpg', 'jpg', 'jpg', 'png', 'svg'))}"
        )
        if f not in self._file_set:
            self._file_set.add(f)
            self.files.append(f)
        return f

    def _image(self) -> str:
        rng = self.rng
        cap = _cap(" ".join(self.words.draw(3 + int(rng.random() * 8))))
        words = cap.split(" ")
        j = rng.randrange(0, len(words))
        words[j] = f"[[{self._link_target()}|{words[j]}]]" if rng.random() < 0.5 else f"[[{words[j]}]]"
        opts = rng.choice(("thumb", "thumb|right", "thumb|left", "thumb|upright=1.2", "thumb|220px"))
        return f"[[File:{self._file_name()}|{opts}|{' '.join(words)}]]"

    def _list(self, refs: list) -> str:
        rng = self.rng
        bullet = "*" if rng.random() < 0.8 else "#"
        items = []
        for _ in range(rng.randrange(3, 9)):
            r = rng.random()
            if r < 0.4:
                items.append(f"{bullet} [[{self._link_target()}]] ({self._year()})")
            else:
                items.append(f"{bullet} {self._prose(4 + int(rng.random() * 12))}")
        return "\n".join(items)

    def _table(self) -> str:
        rng = self.rng
        cols = rng.randrange(2, 5)
        heads = [_cap(w) for w in self._content_words(cols)]
        heads[0] = "Year"
        rows = ['{| class="wikitable sortable"', "|-", "! " + " !! ".join(heads)]
        for _ in range(rng.randrange(2, 9)):
            cells = [str(self._year())]
            for _ in range(cols - 1):
                cells.append(
                    f"''[[{self._link_target()}]]''"
                    if rng.random() < 0.4
                    else " ".join(self.words.draw(1 + int(rng.random() * 3)))
                )
            rows += ["|-", "| " + " || ".join(cells)]
        rows.append("|}")
        return "\n".join(rows)

    def _article_text(self, title: str) -> str:
        rng = self.rng
        n_words = int(math.exp(rng.gauss(6.2, 0.9)))
        n_words = min(max(n_words, 40), 20_000)
        refs: list = []
        parts = []
        if rng.random() < 0.3:
            parts.append(f"{{{{Short description|{_cap(' '.join(self.words.draw(3)))}}}}}")
        if rng.random() < 0.1:
            parts.append(f"{{{{About|the {rng.choice(_DISAMBIG)}|other uses|{title} (disambiguation)}}}}")
        if rng.random() < 0.15:
            parts.append(f"{{{{Use dmy dates|date={rng.choice(_MONTHS)} {self._year()}}}}}")
        if n_words > 150 and rng.random() < 0.35:
            parts.append(self._infobox(title, refs))
        if rng.random() < 0.04:
            parts.append(f"<!-- {' '.join(self.words.draw(6))} -->")
        lead_n = min(n_words, 40 + int(rng.random() * 120))
        parts.append(self._prose(lead_n, refs, lead=title))
        left = n_words - lead_n
        while left > 0:
            sec = min(left, 80 + int(rng.random() * 300))
            left -= sec
            heading = rng.choice(_HEADINGS) if rng.random() < 0.7 else _cap(" ".join(self._content_words(2)))
            parts.append(f"== {heading} ==")
            if rng.random() < 0.12:
                parts.append(self._image())
            while sec > 0:
                p = min(sec, 40 + int(rng.random() * 120))
                sec -= p
                r = rng.random()
                if r < 0.08:
                    parts.append(f"=== {rng.choice(_SUB_HEADINGS)} ===")
                parts.append(self._prose(p, refs))
                if r > 0.93:
                    parts.append(self._list(refs))
            if rng.random() < 0.04:
                parts.append(self._table())
        if rng.random() < 0.2 and self.articles:
            parts.append(
                "== See also ==\n" + "\n".join(f"* [[{self._link_target()}]]" for _ in range(rng.randrange(1, 5)))
            )
        if refs:
            parts.append("== References ==\n" + rng.choice(("{{Reflist}}", "{{reflist|30em}}", "<references />")))
        if rng.random() < 0.25:
            parts.append(
                "== External links ==\n"
                + "\n".join(
                    f"* [{self._url()} {_cap(' '.join(self.words.draw(2 + int(rng.random() * 4))))}]"
                    for _ in range(rng.randrange(1, 4))
                )
            )
        tail = []
        if self.tpl_made > len(_INFOBOXES) and rng.random() < 0.2:
            tail.append(f"{{{{{self._popular(self.templates[len(_INFOBOXES) : self.tpl_made])}}}}}")
        if rng.random() < 0.15:
            tail.append("{{Authority control}}")
        words = title.split(" ")
        if len(words) > 1 and rng.random() < 0.3:
            tail.append(f"{{{{DEFAULTSORT:{words[-1]}, {' '.join(words[:-1])}}}}}")
        for _ in range(rng.randrange(1, 6)):
            tail.append(f"[[Category:{self._category_name()}]]")
        if n_words < 120:
            tail.append(f"{{{{{self.names.one()}-stub}}}}")
        parts.append("\n".join(tail))
        return "\n\n".join(parts)

    def _redirect_title(self, target: str) -> str:
        """A new title that plausibly redirects to target (a variant, or another name)."""
        rng = self.rng
        base = target[: target.rindex(" (")] if target.endswith(")") and " (" in target else target
        words = base.split(" ")
        variants = [f"{base}s"]
        if base != target:
            variants.append(base)
        if len(words) > 1:
            variants += [
                words[0] + " " + " ".join(w.lower() for w in words[1:]),
                _cap(words[-1]),
                f"{words[0][:1]}. {' '.join(words[1:])}",
                _cap(" ".join(words[1:] + words[:1])),
            ]
        rng.shuffle(variants)
        for t in variants[:3]:
            if t not in self.titles:
                self.titles.add(t)
                return t
        return self._unique(_cap(" ".join(self._content_words(1 + int(rng.random() * 2)))))

    def _page(
        self,
        title: str,
        ns: int,
        text: str,
        redirect: str | None = None,
        model: str = "wikitext",
        fmt: str = "text/x-wiki",
    ) -> str:
        rng = self.rng
        self.page_id += 1 + (rng.randrange(1, 40) if rng.random() < 0.3 else 0)
        self.rev_id += rng.randrange(1, 5000)
        self.pages += 1
        data = text.encode("utf-8")
        out = [
            "  <page>\n    <title>",
            _esc(title),
            "</title>\n    <ns>",
            str(ns),
            "</ns>\n    <id>",
            str(self.page_id),
            "</id>\n",
        ]
        if redirect is not None:
            out += ['    <redirect title="', _esc(redirect), '" />\n']
        out += ["    <revision>\n      <id>", str(self.rev_id), "</id>\n"]
        if rng.random() < 0.9:
            out += ["      <parentid>", str(self.rev_id - rng.randrange(1, 10_000_000)), "</parentid>\n"]
        out += [
            "      <timestamp>",
            f"{rng.randrange(2008, 2025)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            "</timestamp>\n      <contributor>\n",
        ]
        ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        user = rng.choices(self.users, cum_weights=self.users_cum)[0]
        if rng.random() < 0.2:
            out += ["        <ip>", ip, "</ip>\n"]
        else:
            out += ["        <username>", _esc(user[0]), "</username>\n        <id>", str(user[1]), "</id>\n"]
        out.append("      </contributor>\n")
        if rng.random() < 0.3:
            out.append("      <minor />\n")
        c = rng.choice(_COMMENTS)
        if c:
            c = c.format(
                ip=ip,
                user=user[0],
                cat=self.categories[-1] if self.categories else "Stubs",
                head=rng.choice(_HEADINGS),
                link=self._link_target(),
            )
            out += ["      <comment>", _esc(c), "</comment>\n"]
        out += [
            "      <model>",
            model,
            "</model>\n      <format>",
            fmt,
            "</format>\n",
            '      <text xml:space="preserve" bytes="',
            str(len(data)),
            '">',
            _esc(text),
            "</text>\n      <sha1>",
            _sha1_base36(data),
            "</sha1>\n    </revision>\n  </page>\n",
        ]
        return "".join(out)

    # Share of each page kind (cumulative thresholds on one uniform draw), roughly enwiki's
    # pages-articles mix; anything left over is an article.
    _KINDS = (
        (0.30, "_redirect_page"),
        (0.36, "_category_page"),
        (0.40, "_template_page"),
        (0.43, "_file_page"),
        (0.45, "_project_page"),
        (0.46, "_portal_page"),
        (0.47, "_draft_page"),
        (0.475, "_module_page"),
    )

    def next_page(self) -> tuple[int, str, str]:
        """(page id, title, page XML) of the next page."""
        r = self.rng.random()
        method = "_article_page"
        for threshold, name in self._KINDS:
            if r < threshold:
                method = name
                break
        if method == "_redirect_page" and not self.articles:
            method = "_article_page"  # nothing to redirect to yet
        title, ns, text, kw = getattr(self, method)()
        xml = self._page(title, ns, text, **kw)
        return self.page_id, title, xml

    def _article_page(self):
        title = self._article_title()
        before = self.prose_words
        text = self._article_text(title)
        self.articles.append(title)
        self.n_articles += 1
        self.article_words += self.prose_words - before
        return title, 0, text, {}

    def _redirect_page(self):
        rng = self.rng
        target = self.articles[int(len(self.articles) * rng.random() ** 1.5)]
        title = self._redirect_title(target)
        frag = f"#{rng.choice(_HEADINGS)}" if rng.random() < 0.05 else ""
        rcat = rng.choice(
            (
                "{{R from alternative spelling}}",
                "{{R from surname}}",
                "{{Redr|move|from other capitalisation}}",
                "{{R from short name}}",
                "{{R to section}}",
                "",
            )
        )
        text = f"#REDIRECT [[{target}{frag}]]" + (f"\n\n{rcat}" if rcat else "")
        self.n_redirects += 1
        return title, 0, text, {"redirect": target}

    def _category_page(self):
        rng = self.rng
        while self.cat_made >= len(self.categories):
            self._category_name()
        name = self.categories[self.cat_made]
        self.cat_made += 1
        title = self._unique(f"Category:{name}")
        parts = []
        if rng.random() < 0.5:
            parts.append(self._prose(10 + int(rng.random() * 40)))
        if rng.random() < 0.3:
            parts.append(f"{{{{Commons category|{name}}}}}")
        parts += [f"[[Category:{self._category_name()}]]" for _ in range(rng.randrange(1, 4))]
        return title, 14, "\n".join(parts), {}

    def _template_page(self):
        rng = self.rng
        if self.tpl_made >= len(self.templates) and rng.random() < 0.3:
            target = self._popular(self.template_titles)  # a template redirect
            kind = rng.choice(("box", "nav", "infobox"))
            title = self._unique(f"Template:{_cap(self._content_words(1)[0])} {kind}")
            self.n_redirects += 1
            text = f"#REDIRECT [[{target}]]\n\n{{{{R from move}}}}"
            return title, 10, text, {"redirect": target}
        if self.tpl_made >= len(self.templates):
            kind = rng.choice(("navbox", "sidebar", "footer"))
            self.templates.append(f"{self._new_name()} {kind}")
        name = self.templates[self.tpl_made]
        self.tpl_made += 1
        title = self._unique(f"Template:{name}")
        self.template_titles.append(title)
        if name in _INFOBOXES:  # the infobox templates themselves: parameters in {{{...}}}
            params = "\n".join(
                f"| label{i} = {f.replace('_', ' ').capitalize()}\n| data{i} = {{{{{{{f}|}}}}}}"
                for i, f in enumerate(_INFOBOXES[name], 1)
            )
            text = (
                "{{Infobox\n| bodyclass = vcard\n| above = {{{name|{{PAGENAME}}}}}\n"
                "| image = {{#if:{{{image|}}}|[[File:{{{image}}}|220px]]}}\n"
                f"{params}\n}}}}<noinclude>\n{{{{Documentation}}}}\n</noinclude>"
            )
        else:
            groups = "\n".join(
                f"| group{i} = {_cap(self._content_words(1)[0])}\n| list{i} = "
                + " &middot; ".join(f"[[{self._link_target()}]]" for _ in range(rng.randrange(2, 7)))
                for i in range(1, rng.randrange(2, 5))
            )
            text = (
                f"{{{{Navbox\n| name = {name}\n| title = [[{self._link_target()}]]\n"
                f"{groups}\n}}}}<noinclude>\n[[Category:{self._category_name()}]]\n"
                "</noinclude>"
            )
        return title, 10, text, {}

    def _file_page(self):
        rng = self.rng
        while self.file_made >= len(self.files):
            self._file_name()
        name = self.files[self.file_made]
        self.file_made += 1
        title = self._unique(f"File:{name}")
        author = self.users[int(len(self.users) * rng.random())][0]
        text = (
            "== Summary ==\n{{Information\n| description = "
            + self._prose(8 + int(rng.random() * 20))
            + f"\n| source = {{{{own}}}}\n| date = {self._year()}-0{rng.randrange(1, 10)}-"
            f"1{rng.randrange(0, 10)}\n| author = [[User:{author}]]\n}}}}\n\n"
            "== Licensing ==\n" + rng.choice(("{{cc-by-sa-4.0}}", "{{PD-self}}", "{{Non-free album cover}}"))
        )
        return title, 6, text, {}

    def _project_page(self):
        rng = self.rng
        words = self._content_words(1 + int(rng.random() * 3))
        title = self._unique(f"Wikipedia:{_cap(' '.join(words))}")
        text = (
            f"{{{{Wikipedia how-to|WP:{self._content_words(1)[0].upper()}}}}}\n"
            + self._prose(30 + int(rng.random() * 200))
            + "\n\n== See also ==\n* [[Wikipedia:Manual of Style]]"
        )
        return title, 4, text, {}

    def _portal_page(self):
        title = self._unique(f"Portal:{self._link_target()}")
        text = (
            f"{{{{Portal header|title={title[7:]}}}}}\n{{{{Box-header|Introduction}}}}\n"
            + self._prose(20 + int(self.rng.random() * 80))
            + "\n{{Box-footer}}"
        )
        return title, 100, text, {}

    def _draft_page(self):
        title = self._unique(f"Draft:{self._new_name()}")
        text = "{{AfC submission|||ts=2023}}\n" + self._prose(50 + int(self.rng.random() * 300), [])
        return title, 118, text, {}

    def _module_page(self):
        title = self._unique(f"Module:{_cap(self._content_words(1)[0])}")
        css = self._content_words(1)[0]
        text = (
            "-- " + self._prose(8) + "\nlocal p = {}\n\nfunction p.main(frame)\n"
            "\tlocal args = frame.args\n\tif #args < 2 and args[1] ~= nil then\n"
            f"\t\treturn '<span class=\"{css}\">' .. args[1] .. '</span>'\n"
            '\tend\n\treturn ""\nend\n\nreturn p\n'
        )
        return title, 828, text, {"model": "Scribunto", "fmt": "text/plain"}


def _fnv1a(s: str) -> int:
    """A small deterministic string hash (Python's hash() is salted per process)."""
    h = 2166136261
    for ch in s:
        h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DumpInfo:
    path: str
    index_path: str | None
    pages: int  # all <page> elements
    articles: int  # ns 0, not redirects
    redirects: int  # pages with <redirect/> (any namespace)
    words: int  # vocabulary words drawn for article prose (not names, numbers, markup)
    bytes_xml: int  # uncompressed XML size
    bytes_file: int = 0  # size of the written file
    streams: int = 0  # bz2 streams in a multistream file (0 otherwise)


_SUFFIXES = (".xml.bz2", ".xml.gz", ".xml")


def _kind(path: str) -> str:
    low = path.lower()
    for suf in _SUFFIXES:
        if low.endswith(suf):
            return suf
    raise ValueError(f"{path}: output name must end with .xml, .xml.gz or .xml.bz2")


def index_path_for(path: str) -> str:
    """Wikipedia's index name: X-multistream.xml.bz2 -> X-multistream-index.txt.bz2."""
    if not path.lower().endswith(".xml.bz2"):
        raise ValueError(f"{path}: a multistream dump must end with .xml.bz2")
    return path[: -len(".xml.bz2")] + "-index.txt.bz2"


class _BackgroundWriter:
    """Writes chunks to a file object in a thread, so (de)compression, which releases the
    GIL, overlaps with page generation."""

    def __init__(self, fobj):
        self._fobj = fobj
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._err: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._err is None:
                try:
                    self._fobj.write(item)
                except BaseException as e:  # reported by put()/close()
                    self._err = e

    def put(self, data: bytes):
        if self._err is not None:
            raise self._err
        self._q.put(data)

    def close(self):
        self._q.put(None)
        self._t.join()
        if self._err is not None:
            raise self._err


def write_dump(
    path: str,
    size_mb: float,
    seed: int = 0,
    multistream: bool = False,
    pages_per_stream: int = 100,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
) -> DumpInfo:
    """Write a synthetic pages-articles dump of about ``size_mb`` MB (10**6 bytes) of XML.

    The compression follows the extension (.xml, .xml.gz, .xml.bz2). The decompressed XML
    depends only on ``size_mb``, ``seed`` and ``vocab_size``. The file is written under a
    temporary name and renamed when complete.
    """
    path = os.fspath(path)
    kind = _kind(path)
    if not (size_mb > 0 and math.isfinite(size_mb)):
        raise ValueError(f"size_mb must be a positive number, got {size_mb}")
    if pages_per_stream < 1:
        raise ValueError(f"pages_per_stream must be >= 1, got {pages_per_stream}")
    if vocab_size < 1000:
        raise ValueError(f"vocab_size must be >= 1000, got {vocab_size}")
    index_path = index_path_for(path) if multistream else None
    target = int(size_mb * MB)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    maker = _PageMaker(seed, vocab_size)
    header = _header().encode("utf-8")
    footer = _FOOTER.encode("utf-8")
    total = len(header) + len(footer)

    def pages():
        nonlocal total
        while True:
            pid, title, xml = maker.next_page()
            data = xml.encode("utf-8")
            total += len(data)
            yield pid, title, data
            if total >= target:
                return

    tmp = path + ".partial"
    index_tmp = index_path + ".partial" if index_path else None
    streams = 0
    try:
        if multistream:
            streams = _write_multistream(tmp, index_tmp, header, footer, pages(), pages_per_stream)
        else:
            _write_single(tmp, kind, header, footer, pages())
    except BaseException:
        for t in (tmp, index_tmp):
            if t and os.path.exists(t):
                os.remove(t)
        raise
    if index_tmp:
        os.replace(index_tmp, index_path)
    os.replace(tmp, path)
    return DumpInfo(
        path=path,
        index_path=index_path,
        pages=maker.pages,
        articles=maker.n_articles,
        redirects=maker.n_redirects,
        words=maker.article_words,
        bytes_xml=total,
        bytes_file=os.path.getsize(path),
        streams=streams,
    )


def _write_single(tmp: str, kind: str, header: bytes, footer: bytes, pages) -> None:
    with open(tmp, "wb") as raw:
        if kind == ".xml.gz":
            fobj = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
        elif kind == ".xml.bz2":
            fobj = bz2.BZ2File(raw, "wb", compresslevel=9)
        else:
            fobj = raw
        w = _BackgroundWriter(fobj)
        try:
            w.put(header)
            buf, size = [], 0
            for _, _, data in pages:
                buf.append(data)
                size += len(data)
                if size >= _CHUNK:
                    w.put(b"".join(buf))
                    buf, size = [], 0
            buf.append(footer)
            w.put(b"".join(buf))
        finally:
            w.close()
        if fobj is not raw:
            fobj.close()


def _write_multistream(tmp: str, index_tmp: str, header: bytes, footer: bytes, pages, per_stream: int) -> int:
    workers = max(1, min(4, os.cpu_count() or 1))
    pending: collections.deque = collections.deque()
    streams = 0
    with (
        open(tmp, "wb") as out,
        bz2.BZ2File(index_tmp, "wb", compresslevel=9) as index,
        concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool,
    ):

        def drain(keep: int):
            nonlocal streams
            while len(pending) > keep:
                fut, entries = pending.popleft()
                offset = out.tell()
                out.write(fut.result())
                streams += 1
                if entries:
                    index.write("".join(f"{offset}:{pid}:{title}\n" for pid, title in entries).encode("utf-8"))

        pending.append((pool.submit(bz2.compress, header, 9), None))
        group, entries = [], []
        for pid, title, data in pages:
            group.append(data)
            entries.append((pid, title))
            if len(group) == per_stream:
                pending.append((pool.submit(bz2.compress, b"".join(group), 9), entries))
                group, entries = [], []
                drain(2 * workers)
        if group:
            pending.append((pool.submit(bz2.compress, b"".join(group), 9), entries))
        pending.append((pool.submit(bz2.compress, footer, 9), None))
        drain(0)
    return streams


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.synthetic_wiki",
        description="Write a synthetic MediaWiki pages-articles XML dump (Zipf-distributed "
        "pseudo-words, realistic wikitext markup) for scale tests and benchmarks. "
        "Prints a one-line JSON summary.",
    )
    p.add_argument("out", metavar="OUT", help="output file; compression by extension: .xml, .xml.gz or .xml.bz2")
    p.add_argument(
        "--mb", type=float, default=50.0, help="approximate uncompressed XML size in MB (10^6 bytes; default 50)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (default 0); same arguments give byte-identical files"
    )
    p.add_argument(
        "--multistream",
        action="store_true",
        help="Wikipedia multistream layout (.xml.bz2 only): one bz2 stream per "
        "--pages-per-stream pages, plus OUT with .xml.bz2 replaced by "
        "-index.txt.bz2 holding offset:page_id:title lines",
    )
    p.add_argument(
        "--pages-per-stream", type=int, default=100, help="pages per bz2 stream with --multistream (default 100)"
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help=f"vocabulary size (Zipf ranks; default {DEFAULT_VOCAB_SIZE})",
    )
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        info = write_dump(
            a.out,
            a.mb,
            seed=a.seed,
            multistream=a.multistream,
            pages_per_stream=a.pages_per_stream,
            vocab_size=a.vocab_size,
        )
    except ValueError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{p.prog}: error: {a.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    summary = dataclasses.asdict(info)
    summary["seconds"] = round(dt, 3)
    summary["xml_mb_per_s"] = round(info.bytes_xml / MB / dt, 2) if dt > 0 else None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
