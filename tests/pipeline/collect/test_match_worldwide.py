"""The worldwide matcher against a literal reading of MetaCLIP 2's substr_matching.py."""

from __future__ import annotations

import string

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.collect.match import WorldwideMatcher, worldwide_key

# ---- MetaCLIP 2's metaclip/curation/substr_matching.py, transcribed as it reads ----------
ADDITIONAL_PUNCTUATION = {k: 0 for k in "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"}


def is_punctuation(char):
    return char in string.punctuation or char in ADDITIONAL_PUNCTUATION


def is_cjk_or_similar(char):
    cp = ord(char)
    if (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0x2CEB0 <= cp <= 0x2EBEF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2E80 <= cp <= 0x2EFF
        or 0x2F00 <= cp <= 0x2FDF
        or 0x2FF0 <= cp <= 0x2FFF
    ):
        return True
    elif (
        0x0E00 <= cp <= 0x0E7F
        or 0x0E80 <= cp <= 0x0EFF
        or 0x1000 <= cp <= 0x109F
        or 0x1780 <= cp <= 0x17FF
        or 0x0F00 <= cp <= 0x0FFF
    ):
        return True
    elif is_punctuation(char):
        return True
    return False


def spacing(text):
    spaced_text = f" {text} "
    for punct_to_wrap in [",", ".", ";", ":", "?", "!", "`"]:
        spaced_text = spaced_text.replace(punct_to_wrap, f" {punct_to_wrap} ")
    for char_to_space in ["\t", "\n", "\r"]:
        spaced_text = spaced_text.replace(char_to_space, " ")
    return spaced_text


def get_spaced_metadata(metadata):
    spaced_metadata = []
    for idx, entry in enumerate(metadata):
        spaced_entry = entry
        if not is_cjk_or_similar(spaced_entry[0]):
            spaced_entry = f" {spaced_entry}"
        if not is_cjk_or_similar(spaced_entry[-1]):
            spaced_entry = f"{spaced_entry} "
        spaced_metadata.append((idx, spaced_entry))
    return spaced_metadata


def reference_match(metadata, txt):
    automaton = ahocorasick.Automaton()
    for idx, key in get_spaced_metadata(metadata):
        automaton.add_word(key, (idx, key))
    automaton.make_automaton()
    return sorted({entry_id for _, (entry_id, _) in automaton.iter(spacing(txt.strip()))})


# ---- adversarial entries and captions per script -------------------------------------------
ENTRIES = {
    "zh": ["东京", "东京大学", "大学", "北京", "iPhone", "手机", "《红楼梦》", "红楼梦", "C++", "3D打印", "的"],
    "ja": ["東京", "タワー", "東京タワー", "ラーメン", "すし", "カメラ", "日本", "ポケモンGO"],
    "th": ["ภาษาไทย", "ไทย", "แมว", "สวยงาม", "กรุงเทพ", "iPad"],
    "de": ["Hund", "Katze", "St. Louis", "Yahoo!", "New York", "York", "U.S.", "dog", "(dog)", "E-Mail", "Café"],
    "ru": ["Москва", "кошка", "Санкт-Петербург", "Петербург"],
}
CAPTIONS = {
    "zh": [
        "我在东京大学学习",  # no spaces: 东京, 东京大学, 大学 all match inside
        "我 在 东京 大学",  # spaced CJK
        "iPhone手机很好",  # Latin entry touching Han: not padded on the right? "iPhone" needs spaces
        "新款 iPhone 手机",
        "读《红楼梦》很好",  # full-width brackets at entry edges
        "学习C++编程",
        "3D打印机",
        "东京，北京。",  # full-width punctuation
        "东京,北京.大学",  # wrapped ASCII punctuation
        "\t东京\n大学\r",
    ],
    "ja": [
        "東京タワーに行きました",
        "東京 タワー",
        "すしとラーメン",  # kana edges need a space: no match
        "すし と ラーメン",
        "カメラ、日本製",
        "ポケモンGOで遊ぶ",
        "ポケモンGO!",
    ],
    "th": ["ฉันรักภาษาไทย", "แมวสวยงามมาก", "กรุงเทพ, ไทย", "ใช้ iPad ที่กรุงเทพ", "iPadแมว"],
    "de": [
        "Der Hund und die Katze.",
        "Hund's Haus",  # no boundary logic: Hund needs a space after
        "(dog) in St. Louis",  # "St. Louis" has a wrapped '.': never matches
        "Yahoo! News",
        "Trip to New York City",
        "U.S. Army",
        "E-Mail an Café",
        "Hund,Katze;dog:York?",
        "  Hund  ",
    ],
    "ru": ["Москва и Санкт-Петербург", "кошка.", "Санкт-Петербург,Москва"],
}


def _flat():
    queries, langs = [], []
    for lang, entries in ENTRIES.items():
        queries += entries
        langs += [lang] * len(entries)
    return queries, langs


@pytest.mark.parametrize("lang", sorted(CAPTIONS))
def test_matches_equal_metaclip2s_literal_rule(lang: str):
    queries, langs = _flat()
    matcher = WorldwideMatcher(queries, langs)
    offset = queries.index(ENTRIES[lang][0])
    hits = 0
    for caption in CAPTIONS[lang]:
        expected = [offset + i for i in reference_match(ENTRIES[lang], caption)]
        assert matcher.match(caption, lang) == expected, caption
        hits += len(expected)
    assert hits > 0


def test_the_rule_is_script_aware():
    queries, langs = _flat()
    m = WorldwideMatcher(queries, langs)
    found = lambda text, lang: {queries[i] for i in m.match(text, lang)}  # noqa: E731
    assert found("我在东京大学学习", "zh") == {"东京", "东京大学", "大学"}
    assert found("新款 iPhone 手机", "zh") == {"iPhone", "手机"}
    assert found("iPhone手机很好", "zh") == {"手机"}  # Latin edge padded, the Han side is not
    assert found("すしとラーメン", "ja") == set()  # kana is not in MetaCLIP 2's ranges
    assert found("ฉันรักภาษาไทย", "th") == {"ภาษาไทย", "ไทย"}
    assert found("(dog) in St. Louis", "de") == {"(dog)"}
    assert (
        worldwide_key("东京") == "东京"
        and worldwide_key("iPhone") == " iPhone "
        and worldwide_key("3D打印") == " 3D打印"
    )


def test_each_text_is_matched_against_its_own_language_only():
    queries, langs = _flat()
    m = WorldwideMatcher(queries, langs)
    assert m.match("Der Hund in 东京 ", "de") == [queries.index("Hund")]
    assert m.match("Der Hund in 东京 ", "zh") == [queries.index("东京")]
    # a language without entries goes to "other", which is empty unless buckets are pooled
    assert m.match("Der Hund", "fr") == []
    pooled = WorldwideMatcher(queries, langs, answerable={"de", "zh", "ja", "th"})
    assert pooled.bucket_of("ru") == "other" and pooled.bucket_of("fr") == "other"
    assert pooled.match("кошка и Москва", "fr") == sorted([queries.index("кошка"), queries.index("Москва")])
    assert pooled.match("кошка", "de") == []


def test_worldwide_matching_needs_a_worldwide_list(tmp_path):
    from pipeline.collect.config import MatchConfig
    from pipeline.collect.match import match_pool
    from pipeline.distribute import Engine
    from pipeline.errors import InputError

    pool = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"uid": ["0" * 16], "text": ["a dog"]}), pool)
    queries = tmp_path / "q.parquet"
    pq.write_table(pa.table({"query": ["dog"]}), queries)
    with pytest.raises(InputError, match="needs a query list with a lang column"):
        match_pool(str(pool), str(queries), str(tmp_path / "m"), MatchConfig(recipe="worldwide"), Engine(workers=1))
    with pytest.raises(InputError, match="--ignore-case cannot be used with --recipe worldwide"):
        match_pool(
            str(pool), str(queries), str(tmp_path / "m"), MatchConfig(recipe="worldwide", ignore_case=True), Engine()
        )
    # with a lang column, each text is identified and matched in its language
    pq.write_table(pa.table({"query": ["dog", "Hund"], "lang": ["en", "de"]}), queries)
    pq.write_table(
        pa.table(
            {"uid": ["0" * 15 + str(i) for i in range(3)], "text": ["a dog on grass", "ein Hund im Garten", "a Hund"]}
        ),
        pool,
    )
    stats = match_pool(
        str(pool), str(queries), str(tmp_path / "m2"), MatchConfig(recipe="worldwide"), Engine(workers=1)
    )
    out = pq.read_table(tmp_path / "m2" / "part-00000.parquet").to_pylist()
    assert [(r["query_ids"], r["lang"]) for r in out] == [([0], "en"), ([1], "de")]
    assert stats["languages"]["en"]["matched"] == 1 and stats["languages"]["de"]["matched"] == 1
    assert sum(v["rows"] for v in stats["languages"].values()) == 3 and stats["language_identifier"] == "py3langid"
