"""The worldwide recipe's query list: languages of dumps, segmentation, per-language rules."""

from __future__ import annotations

import bz2
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.lang.codes import bucket, no_space, wiki_code
from pipeline.queries.build import QueryParams, build_queries
from pipeline.queries.omw import read_lemmas
from pipeline.queries.pageviews import file_title_views
from pipeline.queries.worldwide import resolve
from pipeline.wiki.sites import dump_languages
from pipeline.wiki.tokens import count_chunk
from pipeline.wiki.worldwide_words import count_chunk_worldwide, segmented_phrases

ROOT = Path(__file__).resolve().parents[3]


# German Wikipedia's names of its Media, File and Category namespaces, as its header lists them
DE_NAMESPACES = (
    '<namespaces><namespace key="-2" case="first-letter">Medium</namespace>'
    '<namespace key="0" case="first-letter" />'
    '<namespace key="6" case="first-letter">Datei</namespace>'
    '<namespace key="14" case="first-letter">Kategorie</namespace></namespaces>'
)


def dump_bytes(dbname: str | None, pages: list[tuple[str, str]], xml_lang: str = "de") -> bytes:
    site = f"<dbname>{dbname}</dbname>" if dbname else ""
    if dbname == "dewiki":
        site += DE_NAMESPACES
    head = (
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="{xml_lang}">'
        f"<siteinfo><sitename>Wikipedia</sitename>{site}</siteinfo>\n"
    )
    body = "".join(
        f"<page><title>{t}</title><ns>0</ns><id>{i + 1}</id><revision><text>{x}</text></revision></page>\n"
        for i, (t, x) in enumerate(pages)
    )
    return (head + body + "</mediawiki>\n").encode()


def write_dump(folder: Path, name: str, dbname: str | None, pages: list[tuple[str, str]]) -> Path:
    path = folder / name
    path.write_bytes(bz2.compress(dump_bytes(dbname, pages)))
    return path


# Word frequencies differ by language so that the caps cut somewhere real.
DE = [
    ("Hund", "Der Hund läuft schnell. Der Hund bellt laut. Die Katze schläft. " * 30),
    ("Katze", "Die Katze schläft im Haus. Der Hund und die Katze. Ein Vogel singt. " * 20),
    (
        "Vogel",
        "Ein Vogel singt im Baum. Der Baum ist grün. " * 12 + "[[Kategorie:Tiere]] [[Datei:V.jpg|mini|Vogelbild]]",
    ),
]
ZH = [
    ("北京", "我们在北京大学学习。北京大学很好。东京大学也很好。" * 30),
    ("东京", "东京是日本的首都。我们喜欢东京。" * 20),
]
ZH_YUE = [("香港", "香港係一個城市。我哋鍾意香港。北京大学很好。" * 10)]
TH = [("ภาษาไทย", "ฉันรักภาษาไทย เพราะมันสวยงาม ภาษาไทยมีวรรณยุกต์ " * 30)]
PAGEVIEWS = (
    "de Hund 100 0\n"
    "de.m Katze 50 0\n"
    "de Wikipedia:Hauptseite 900 0\n"
    "de Berliner_Mauer 40 0\n"
    "de.b Kochbuch 700 0\n"
    "zh 北京 80 0\n"
    "zh.m 东京 10 0\n"
    "zh-yue 維多利亞港 7 0\n"
    "fr Paris 99 0\n"
    "fr.m Lyon 9 0\n"
    "ko 서울 12 0\n"
    "th ภาษาไทย 5 0\n"
)


@pytest.fixture
def wikis(tmp_path: Path) -> Path:
    folder = tmp_path / "wikis"
    folder.mkdir()
    write_dump(folder, "dewiki-20240501-pages-articles.xml.bz2", "dewiki", DE)
    write_dump(folder, "zhwiki-20240501-pages-articles.xml.bz2", "zhwiki", ZH)
    write_dump(folder, "zh_yuewiki-20240501-pages-articles.xml.bz2", "zh_yuewiki", ZH_YUE)
    write_dump(folder, "thwiki-20240501-pages-articles.xml.bz2", "thwiki", TH)
    (tmp_path / "pageviews-20240501-000000").write_text(PAGEVIEWS, encoding="utf-8")
    omw = tmp_path / "omw" / "tha"
    omw.mkdir(parents=True)
    (omw / "wn-data-tha.tab").write_text(
        "# Thai\tth\thttp://example.org\tCC BY\n"
        "02084071-n\ttha:lemma\tหมา\n"
        "02084071-n\ttha:lemma\tสุนัข\n"
        "02084071-n\ttha:def\tสัตว์เลี้ยง\n"
        "02121620-n\ttha:lemma\tแมว_บ้าน\n"
        "02121620-n\ttha:lemma\tหมา\n",
        encoding="utf-8",
    )
    (tmp_path / "omw" / "wn-data-fra.tab").write_text("# French\n02084071-n\tfra:lemma\tchien\n", encoding="utf-8")
    (tmp_path / "omw" / "wn-data-qqq.tab").write_text("# ?\n02084071-n\tqqq:lemma\tx\n", encoding="utf-8")
    return tmp_path


def test_codes_fold_variants_into_their_language():
    assert wiki_code("zh-yue") == "zh_yue"
    assert bucket("zh_yue") == "zh" and bucket("zh_classical") == "zh" and bucket("be_tarask") == "be"
    assert bucket("roa_rup") == "roa_rup"  # no Wikipedia "roa" to fold into
    assert no_space("zh_yue") and no_space("th") and not no_space("zh_min_nan") and not no_space("de")
    with pytest.raises(InputError, match="unknown language code 'xx'"):
        wiki_code("xx")


def test_dump_language_comes_from_name_siteinfo_or_argument(tmp_path: Path):
    de = write_dump(tmp_path, "dewiki-20240501-pages-articles.xml.bz2", "dewiki", DE[:1])
    plain = write_dump(tmp_path, "sample.xml.bz2", "ruwiki", DE[:1])
    assert dump_languages([str(de), str(plain)]) == [("de", str(de)), ("ru", str(plain))]
    assert dump_languages([f"de={de}"]) == [("de", str(de))]
    liar = write_dump(tmp_path, "frwiki-20240501-pages-articles.xml.bz2", "dewiki", DE[:1])
    with pytest.raises(InputError, match=r"ambiguous: file name says 'fr', <siteinfo> says 'de'"):
        dump_languages([str(liar)])
    with pytest.raises(InputError, match=r"argument says 'ru', file name says 'de'"):
        dump_languages([f"ru={de}"])
    anonymous = write_dump(tmp_path, "pages.xml.bz2", None, DE[:1])
    with pytest.raises(InputError, match="no language in the file name"):
        dump_languages([str(anonymous)])
    assert dump_languages([f"sv={anonymous}"]) == [("sv", str(anonymous))]
    with pytest.raises(InputError, match="unknown language code in --wiki-dump xx="):
        dump_languages([f"xx={anonymous}"])


def test_no_space_languages_are_segmented_and_keep_adjacency():
    assert segmented_phrases("我们在北京大学学习。东京大学很好", "zh") == [
        ["我们", "在", "北京大学", "学习"],
        ["东京大学", "很", "好"],
    ]
    assert segmented_phrases("東京タワーに行きました", "ja") == [["東京", "タワー", "に", "行き", "まし", "た"]]
    assert segmented_phrases("ฉันรักภาษาไทย เพราะมันสวยงาม", "th") == [["ฉัน", "รัก", "ภาษาไทย", "เพราะ", "มัน", "สวยงาม"]]
    counts = count_chunk_worldwide(["北京大学很好", "北京大学"], "zh")
    assert dict(zip(*counts.unigrams.to_pydict().values())) == {"北京大学": 2, "很": 1, "好": 1}
    assert dict(zip(*counts.bigrams.to_pydict().values())) == {"北京大学 很": 1, "很 好": 1}
    # a spaced language is counted exactly as the clip recipe counts English
    text = ["Der Hund läuft. Die Katze's Haus, state-of-the-art"]
    ours, clip = count_chunk_worldwide(text, "de"), count_chunk(text)
    assert ours.unigrams.equals(clip.unigrams) and ours.bigrams.equals(clip.bigrams)


def test_pageviews_by_domain_keep_each_language_apart(tmp_path: Path):
    path = tmp_path / "pageviews-20240501-000000"
    path.write_text(PAGEVIEWS, encoding="utf-8")
    domains = ("de", "de.m", "zh", "zh.m")
    views, stats = file_title_views(str(path), domains, min_hourly_views=1, by_domain=True)
    assert views == {
        "de Hund": 100,
        "de.m Katze": 50,
        "de Wikipedia:Hauptseite": 900,
        "de Berliner_Mauer": 40,
        "zh 北京": 80,
        "zh.m 东京": 10,
    }
    assert stats["other_domains"] == {"de.b": 1, "fr": 1, "fr.m": 1, "ko": 1, "th": 1, "zh-yue": 1}
    assert stats["lines"] == 12 and stats["other_domain_lines"] == 6 and stats["kept_lines"] == 6


def test_omw_lemmas_per_wikipedia(wikis: Path):
    omw = read_lemmas(str(wikis / "omw"), {"th", "de"})
    assert omw.lemmas == {"th": ["หมา", "สุนัข", "แมว บ้าน"]}  # defs skipped, '_' -> ' ', distinct
    assert omw.no_dump == ["fra"] and omw.unmapped == ["qqq"]


def _build(wikis: Path, out: str, **kw) -> dict:
    params = QueryParams(
        wiki_dump=[str(wikis / "wikis")],
        pageviews=[str(wikis / "pageviews-20240501-000000")],
        omw=str(wikis / "omw"),
        out=str(wikis / out),
        recipe="worldwide",
        quiet=True,
        **kw,
    )
    return build_queries(params)


def test_worldwide_list_selects_each_language_by_its_own_rules(wikis: Path):
    build = _build(wikis, "q1", workers=1, unigram_share=0.5)
    table = pq.read_table(wikis / "q1" / "queries.parquet")
    rows = table.to_pylist()
    assert table.column_names == ["query", "source", "count", "pmi", "views", "lang", "wiki"]
    by_lang = Counter(r["lang"] for r in rows)
    assert set(by_lang) == {"de", "th", "zh"}  # zh_yue folded into zh
    for lang in by_lang:  # every language has the numbers first
        numbers = [r["query"] for r in rows if r["lang"] == lang and r["source"] == "number"]
        assert numbers == [str(i) for i in range(100)]
    langs = build["languages"]
    for lang, info in langs.items():
        unigrams = [r for r in rows if r["wiki"] == lang and r["source"] == "unigram"]
        # half the distinct words, most frequent first (ties by string)
        assert info["caps"]["unigram"] == int(0.5 * info["distinct_unigrams"]) == info["sources"]["unigram"]["added"]
        if lang == "zh_yue":
            continue  # its rows lost what zh already had (below)
        assert len(unigrams) == info["caps"]["unigram"], lang
        assert [r["count"] for r in unigrams] == sorted((r["count"] for r in unigrams), reverse=True)
        # ranked bigrams: seen at least as often as the last kept word, best PMI first
        bigrams = [r for r in rows if r["wiki"] == lang and r["source"] == "bigram"]
        assert info["bigram_floor"] == unigrams[-1]["count"]
        assert all(r["count"] >= info["bigram_floor"] for r in bigrams)
        assert len(bigrams) <= info["caps"]["bigram"] == int(0.4 * info["caps"]["unigram"])
        assert [r["pmi"] for r in bigrams] == sorted((r["pmi"] for r in bigrams), reverse=True)
        assert info["pmi_ceiling"] == pytest.approx(math.log2(info["tokens_in_unigram_table"]), abs=1e-3)
    zh_bigrams = [r["query"] for r in rows if r["wiki"] == "zh" and r["source"] == "bigram"]
    de_bigrams = [r["query"] for r in rows if r["wiki"] == "de" and r["source"] == "bigram"]
    assert zh_bigrams and all(" " not in b for b in zh_bigrams)  # joined without the space
    assert de_bigrams and all(" " in b for b in de_bigrams)
    # zh_yue's words are selected on its own, then those zh already has are dropped
    yue = [r["query"] for r in rows if r["wiki"] == "zh_yue"]
    assert "香港" in yue and "北京大学" not in yue and "0" not in yue
    assert build["buckets"]["zh"]["editions"] == ["zh", "zh_yue"]
    assert build["buckets"]["zh"]["duplicates_across_editions"] >= 100
    # titles: Wikipedia desktop and mobile lines of the language; ':' titles and Wikibooks dropped
    de_titles = {r["query"]: r["views"] for r in rows if r["wiki"] == "de" and r["source"] == "title"}
    assert langs["de"]["titles_considered"] == 3  # Hund, Katze (mobile), Berliner Mauer
    assert langs["de"]["caps"]["title"] == int(0.76 * 3) == 2
    # Hund and Katze are already unigrams: skipped without using the cap (MetaCLIP 2's
    # "dedup newly added cap"), so the third title gets in
    assert de_titles == {"Berliner Mauer": 40}
    assert langs["de"]["sources"]["title"]["duplicates_skipped"] == 2
    assert build["pageviews"]["lines_of_languages_without_a_dump"] == {"fr": 2, "ko": 1}
    # OMW: Thai lemmas enter as wordnet entries; French's file has no dump and is counted
    th_wordnet = [r["query"] for r in rows if r["wiki"] == "th" and r["source"] == "wordnet"]
    assert th_wordnet == ["หมา", "สุนัข", "แมว บ้าน"]
    assert build["omw"]["skipped_no_dump"] == ["fra"] and build["omw"]["skipped_no_wikipedia_mapping"] == ["qqq"]
    assert build["unsegmented_languages"] == []
    assert langs["th"]["segmenter"] is True and langs["de"]["segmenter"] is None


def test_worldwide_list_is_the_same_for_any_worker_count(wikis: Path):
    _build(wikis, "w1", workers=1, chunk_mb=0.001)
    _build(wikis, "w2", workers=2, chunk_mb=0.001)
    for name in ("queries.parquet", "queries.txt"):
        assert (wikis / "w1" / name).read_bytes() == (wikis / "w2" / name).read_bytes(), name


def test_metaclip2_bigram_rule_admits_nothing_below_its_pmi_ceiling(wikis: Path):
    build = _build(wikis, "m2", workers=1, bigram_rule="metaclip2")
    for lang, info in build["languages"].items():
        assert info["pmi_ceiling"] < 30
        assert info["sources"]["bigram"]["added"] == 0, lang
        assert info["caps"]["bigram"] == 100_646 and info["bigram_floor"] == 1
    assert build["parameters"]["bigram_rule"] == "metaclip2"


def test_worldwide_options_are_checked():
    with pytest.raises(InputError, match="--min-count does not apply to --recipe worldwide"):
        resolve({"min_count": 100})
    with pytest.raises(InputError, match="--min-pmi does not apply to --bigram-rule metaclip2"):
        resolve({"bigram_rule": "metaclip2", "min_pmi": 5.0})
    rules = resolve({"max_unigrams": "none", "title_share": 0.5})
    assert rules.max_unigrams is None and rules.title_share == 0.5 and rules.max_bigrams == 100_646


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "clip", "--wordnet", "w", "--omw", "x"], "--omw applies to --recipe worldwide only"),
        (["--recipe", "clip"], "--wordnet is required by --recipe clip"),
        (["--recipe", "worldwide", "--min-count", "5"], "--min-count does not apply to --recipe worldwide"),
    ],
)
def test_cli_refuses_options_of_another_recipe(wikis: Path, args: list[str], message: str):
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "queries", "--wiki-dump", str(wikis / "wikis"), "--out", str(wikis / "o")]
        + args,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_build_json_reports_every_language(wikis: Path):
    _build(wikis, "b", workers=1)
    build = json.loads((wikis / "b" / "build.json").read_text())
    assert sorted(build["languages"]) == ["de", "th", "zh", "zh_yue"]
    assert [d["lang"] for d in build["inputs"]["wiki_dump"]] == ["de", "th", "zh", "zh_yue"]
    assert build["languages"]["zh_yue"]["bucket"] == "zh"
    assert build["languages"]["de"]["dump"]["articles"] == 3
    assert build["total"] == len(pq.read_table(wikis / "b" / "queries.parquet"))


def test_links_to_a_wikis_own_file_and_category_namespaces_are_hidden(tmp_path: Path):
    folder = tmp_path / "de"
    folder.mkdir()
    write_dump(folder, "dewiki-20240501-pages-articles.xml.bz2", "dewiki", DE)
    params = QueryParams(
        wiki_dump=[str(folder)], out=str(tmp_path / "q"), recipe="worldwide", unigram_share=1.0, quiet=True
    )
    build_queries(params)
    words = set(pq.read_table(tmp_path / "q" / "queries.parquet").column("query").to_pylist())
    assert {"Vogel", "Baum", "grün"} <= words  # every word kept at share 1
    assert not words & {"Kategorie", "Tiere", "Datei", "Vogelbild", "mini"}


def test_lao_khmer_burmese_and_tibetan_are_segmented():
    assert segmented_phrases("ພາສາລາວເປັນພາສາທີ່ສວຍງາມ", "lo") == [["ພາສາລາວ", "ເປັນ", "ພາສາ", "ທີ່", "ສວຍງາມ"]]
    assert segmented_phrases("ខ្ញុំចូលចិត្តភាសាខ្មែរណាស់", "km") == [["ខ្ញុំ", "ចូលចិត្ត", "ភាសា", "ខ្មែរ", "ណាស់"]]
    # Burmese by syllable: a stacked consonant (after ္) or a killed one (before ်) starts none
    assert segmented_phrases("မြန်မာနိုင်ငံ မင်္ဂလာပါ", "my") == [["မြန်", "မာ", "နိုင်", "ငံ", "မင်္ဂ", "လာ", "ပါ"]]
    # Tibetan by syllable; the tsheg joins a phrase's syllables, the shad (།) ends the phrase
    assert segmented_phrases("བོད་ཀྱི་སྐད་ཡིག། ཡག་པོ་", "bo") == [["བོད", "ཀྱི", "སྐད", "ཡིག"], ["ཡག", "པོ"]]


def test_a_tibetan_bigram_keeps_its_tsheg_and_matches_tibetan_text(tmp_path: Path):
    from pipeline.collect.match import WorldwideMatcher

    folder = tmp_path / "bo"
    folder.mkdir()
    write_dump(folder, "bowiki-20240501-pages-articles.xml.bz2", "bowiki", [("བོད", "བོད་ཀྱི་སྐད་ཡིག། " * 20)])
    params = QueryParams(wiki_dump=[str(folder)], out=str(tmp_path / "q"), recipe="worldwide", quiet=True)
    params.unigram_share = params.bigram_share = 1.0
    build_queries(params)
    table = pq.read_table(tmp_path / "q" / "queries.parquet")
    bigrams = [
        q for q, s in zip(table.column("query").to_pylist(), table.column("source").to_pylist()) if s == "bigram"
    ]
    assert bigrams and all("\u0f0b" in b and " " not in b for b in bigrams)
    queries, langs = table.column("query").to_pylist(), table.column("lang").to_pylist()
    found = {queries[i] for i in WorldwideMatcher(queries, langs).match("ང་བོད་ཀྱི་སྐད་ཡིག་ཤེས།", "bo")}
    assert "བོད་ཀྱི" in found and "སྐད་ཡིག" in found


def test_worldwide_counting_resumes_per_language(wikis: Path):
    """A chunk whose stats marker is gone is counted again, in its own language's folder,
    and nothing else is; the totals come out as before."""
    from pipeline.queries.counting import count_dumps

    pairs = dump_languages([str(wikis / "wikis")])
    urls, langs = [u for _, u in pairs], [lang for lang, _ in pairs]
    work = wikis / "work"
    first = count_dumps(urls, work, chunk_mb=0.001, recipe="worldwide", langs=langs)
    assert sorted(first["languages"]) == ["de", "th", "zh", "zh_yue"]
    markers = sorted((work / "de" / "stats").glob("*.json"))
    assert len(markers) > 1  # several chunks in de alone
    markers[-1].unlink()
    before = {p: p.stat().st_mtime_ns for p in work.glob("*/uni/*.parquet")}
    again = count_dumps(urls, work, chunk_mb=0.001, recipe="worldwide", langs=langs)
    assert again == first
    redone = [p for p in work.glob("*/uni/*.parquet") if p.stat().st_mtime_ns != before[p]]
    assert [(p.parent.parent.name, p.stem) for p in redone] == [("de", markers[-1].stem)]
