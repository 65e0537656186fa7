"""CLI for `python -m pipeline queries`."""

from __future__ import annotations

import argparse
import json

from ..options import MEMORY_LIMIT, add_engine_args, memory_limit, positive_float, positive_int
from ..workers import default_workers
from .recipes import DEFAULTS, NONE, RECIPES, UNIGRAM_CASES
from .worldwide import BIGRAM_RULES

EPILOG = """\
sources, in order (a query already taken by an earlier source is skipped):
  1. wordnet  head word of every WordNet synset (underscores -> spaces, (a)/(p)/(ip) dropped)
  2. unigram  words of namespace-0 article text (markup removed) seen >= --min-count times,
              most frequent first
  3. bigram   adjacent word pairs with count >= --min-bigram-count, ranked by
              PMI = log2(N c(xy) / (c(x) c(y))) (N = tokens in the unigram table), kept
              while >= --min-pmi
  4. title    article titles with summed pageviews >= --min-views (an hour counts only
              with >= --min-hourly-views views), ':' titles dropped, most viewed first;
              without --pageviews, the dump's titles in dump order
  Each source stops at its cap; the list is capped at --size.

recipe clip (default):
  Tokens: maximal runs of Unicode letters/digits, optionally joined by single internal
  hyphens or apostrophes (state-of-the-art, don't, O'Brien); a possessive 's is not part
  of it (Einstein's -> Einstein). Two tokens form a bigram only when separated by
  spaces/tabs alone: punctuation and line breaks end a phrase. Case is kept ('Gas' and
  'gas' are two unigrams) unless --unigram-case fold. PMI 30 is out of reach for any pair
  seen 100 times in Wikipedia (log2(4.5e9/100) = 25.4), so there is no PMI floor by
  default: the cap keeps the highest-PMI frequent pairs. Titles: desktop and
  pageview_complete lines of English Wikipedia, percent-escapes decoded, only titles of
  the dump's articles.

recipe metaclip (MetaCLIP v1's rules, exactly):
  wordnet  "0".."99", then every synset's first lemma lowercased and cut at its first '.'
  unigram  text lowercased, split on [^\\w\\-'], words with a digit dropped, words in fewer
           than --min-doc-freq (3) articles dropped; count >= 100, no cap
  bigram   pairs adjacent in that word sequence (across punctuation, not across articles)
           whose words are both in the unigram table; no count floor, PMI >= 30, no cap
  title    hourly pageview files only, "en " lines only, '_' -> space, no
           percent-decoding, redirects and missing pages kept; >= 70 views, no cap
  Entries that are empty or one punctuation character are dropped; no cap on the list.
  Match its list with `pipeline shards --recipe metaclip`.

recipe worldwide (MetaCLIP 2's per-language rules; one list, a lang column):
  Per Wikipedia edition: number "0".."99"; wordnet = its OMW lemmas (--omw; English:
  --wordnet); unigram = the top 10% of its distinct words, at most 251,465; bigram
  (ranked) = pairs seen as often as its last kept word, by PMI, at most 40% of its words
  kept and 100,646 (--bigram-rule metaclip2: PMI > 30, at most 100,646); title = the top
  76% of its viewed titles, at most 61,235. Entries up to 256 characters, punctuation-only
  ones dropped. Chinese, Japanese, Thai, Lao and Khmer words come from jieba, MeCab
  (fugashi + unidic-lite), PyThaiNLP, LaoNLP and khmer-nltk, Burmese and Tibetan ones are
  syllables; their bigrams are joined without a space (Tibetan: with the tsheg). zh_yue,
  zh_classical... fold into zh (lang), the edition is kept (wiki). build.json reports
  every language's counts, caps, bigram floor and PMI ceiling.

dumps:
  Plain, .bz2 or .gz pages-articles XML, local or any fsspec URL, globs allowed. For a
  multistream .bz2 whose -index.txt.bz2 lies beside it, every worker decompresses its
  own byte ranges, so decompression runs in parallel too.

outputs (in --out):
  queries.parquet  query, source, count, pmi, views; row order = query id
  queries.txt      one query per line, same order
  build.json       inputs, parameters, per-source counts, dump statistics, timings
  Counting is spilled to --work-dir in chunks; a killed run resumes where it stopped.
  --out and --work-dir may be fsspec URLs (s3://bucket/q), so that on a Ray cluster the
  workers on every node share the spilled chunks; the final aggregation runs on this
  machine, on its local disk.
"""


def cap(text: str) -> int | str:
    """A positive count, or 'none' for no cap."""
    return NONE if text.strip().lower() == NONE else positive_int(text)


def pmi_floor(text: str) -> float | str:
    """A PMI (any finite number), or 'none' for no floor."""
    if text.strip().lower() == NONE:
        return NONE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or 'none')") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def share(text: str) -> float:
    """A fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="build CLIP's query list from Wikipedia, pageviews and WordNet",
        description="Build CLIP's query list (up to 500,000 queries) from a Wikipedia dump, "
        "Wikipedia pageviews and WordNet, as described in the CLIP paper (sec. 2.2).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i = p.add_argument_group("inputs (path, glob or fsspec URL)")
    i.add_argument(
        "--wiki-dump",
        action="append",
        required=True,
        metavar="PATH",
        help="MediaWiki pages-articles XML dump (.xml, .bz2, .gz); repeatable. worldwide: also "
        "LL=PATH (LL a Wikipedia code) or a folder of LLwiki-*.xml.bz2 dumps; the language "
        "comes from LL=, the file name or <siteinfo>, which must agree",
    )
    i.add_argument(
        "--wordnet",
        metavar="DIR",
        help="WordNet 3.0 database folder (Debian /usr/share/wordnet or nltk_data corpora/wordnet); "
        "required by clip and metaclip, English's WordNet in worldwide",
    )
    i.add_argument(
        "--omw",
        metavar="DIR",
        help="worldwide: Open Multilingual WordNet 1.4 folder (wn-data-LLL.tab files, any depth)",
    )
    i.add_argument(
        "--pageviews",
        action="append",
        default=[],
        metavar="PATH",
        help="Wikimedia pageview files: hourly pageviews-*.gz or daily/monthly "
        "pageview_complete; only en / en.wikipedia lines are used (worldwide: every dump "
        "language's desktop and mobile lines); repeatable",
    )
    i.add_argument("--out", default="query_lists", help="output folder, local or fsspec URL (default: %(default)s)")

    p.add_argument(
        "--recipe",
        choices=(*RECIPES, "worldwide"),
        default="clip",
        help="clip: our reading of the paper (bigrams: top --max-bigrams by PMI among pairs seen "
        ">= --min-bigram-count times); metaclip: MetaCLIP v1's released rules, exactly "
        "(see below); worldwide: every dump's language by MetaCLIP 2's per-language rules, "
        "a lang column in the list (see below) (default: %(default)s)",
    )
    t = p.add_argument_group(
        "thresholds and caps (defaults per recipe: clip / metaclip; a cap or the PMI floor may be 'none')"
    )
    d = {name: (DEFAULTS["clip"][name], DEFAULTS["metaclip"][name]) for name in DEFAULTS["clip"]}

    def dflt(name: str) -> str:
        def show(v):
            return "none" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))

        return f"(default: {show(d[name][0])} / {show(d[name][1])})"

    t.add_argument("--min-count", type=positive_int, help=f"unigram minimum count {dflt('min_count')}")
    t.add_argument("--max-unigrams", type=cap, help=dflt("max_unigrams"))
    t.add_argument(
        "--unigram-case",
        choices=UNIGRAM_CASES,
        help="clip only: keep = each surface form on its own; fold = case variants summed, "
        "spelled as the most frequent (pair with --ignore-case matching) (default: keep)",
    )
    t.add_argument(
        "--min-doc-freq", type=positive_int, help="metaclip only: articles a word must occur in (default: 3)"
    )
    t.add_argument(
        "--min-bigram-count",
        type=positive_int,
        help=f"bigram minimum count before PMI is considered {dflt('min_bigram_count')}",
    )
    t.add_argument("--min-pmi", type=pmi_floor, help=f"bigram minimum PMI, log base 2 {dflt('min_pmi')}")
    t.add_argument("--max-bigrams", type=cap, help=dflt("max_bigrams"))
    t.add_argument("--min-views", type=positive_int, help=f"title minimum summed views {dflt('min_views')}")
    t.add_argument(
        "--min-hourly-views",
        type=positive_int,
        help=f"an hour's views count only at or above this {dflt('min_hourly_views')}",
    )
    t.add_argument("--max-titles", type=cap, help=dflt("max_titles"))
    t.add_argument("--size", type=cap, help=f"cap on the whole list {dflt('size')}")
    w = p.add_argument_group("worldwide recipe (per language; see below)")
    w.add_argument(
        "--bigram-rule",
        choices=BIGRAM_RULES,
        help="ranked: pairs seen as often as the last kept word, best PMI first; metaclip2: "
        "MetaCLIP 2's PMI > 30, which admits nothing below ~1e9 tokens (default: ranked)",
    )
    w.add_argument("--unigram-share", type=share, help="share of a language's distinct words kept (default: 0.1)")
    w.add_argument("--bigram-share", type=share, help="ranked: bigram cap as a share of the words kept (default: 0.4)")
    w.add_argument("--title-share", type=share, help="share of a language's viewed titles kept (default: 0.76)")

    r = p.add_argument_group("resources")
    r.add_argument(
        "--memory-limit",
        type=memory_limit,
        default=MEMORY_LIMIT,
        help="DuckDB memory limit for aggregation; it spills to disk beyond it (default: %(default)s)",
    )
    r.add_argument(
        "--chunk-mb",
        type=positive_float,
        default=8.0,
        help="MB of article text per counting chunk; bounds each worker's memory (default: %(default)s)",
    )
    r.add_argument(
        "--work-dir",
        default=None,
        help="where spilled counts go, local or fsspec URL; on a cluster, a store every "
        "node reaches (default: OUT/.work, removed after success)",
    )
    r.add_argument("--keep-work", action="store_true", help="keep OUT/.work after success")
    r.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr")
    add_engine_args(p, default_workers())
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .build import QueryParams, build_queries

    params = QueryParams(**{k: v for k, v in vars(args).items() if k in QueryParams.__dataclass_fields__})
    build = build_queries(params)
    if not args.quiet:
        print(json.dumps({"total": build["total"], "sources": {k: v["added"] for k, v in build["sources"].items()}}))
    return 0
