"""WordNet head words: parsing rules on tiny inline databases, layouts, errors, and the
figures of the real WordNet 3.0 (found through $WORDNET_DIR; missing -> failure)."""

from __future__ import annotations

import os
import string

import fsspec
import pytest

from pipeline.errors import InputError
from pipeline.queries.wordnet import read_head_words

HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
    "  3   \n"
)
DATA = {
    "noun": [
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04431553 n 0000 | that which is perceived",
        "00001930 03 n 02 physical_entity 0 thing 1 001 @ 00001740 n 0000 | an entity that has physical existence",
        "00002000 18 n 01 Einstein 0 000 | physicist",
        "00002100 23 n 01 einstein 0 000 | a unit of light (case differs: a distinct word)",
        "00002200 03 n 02 thing 0 entity 0 000 | repeated head word: counted once",
    ],
    "verb": [
        "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 001 + 00003142 n 0303 02 + 08 00 + 02 00 | draw air",
    ],
    "adj": [
        "00001740 00 a 01 able 0 001 ! 00002098 a 0101 | having the necessary means",
        "00002098 00 s 02 outback(a) 0 remote 0 000 | inaccessible",
        "00002200 00 a 01 used_to(p) 0 000 | in the habit",
        "00002300 00 a 01 elect(ip) 0 000 | elected but not yet in office",
    ],
    "adv": [
        "00001740 02 r 01 entity 0 000 | already seen as a noun: not repeated",
        "00001837 02 r 02 a_cappella 0 without_accompaniment 0 000 | without instruments",
    ],
}


def write_db(folder, data=DATA, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    for pos, lines in data.items():
        if pos not in skip:
            (folder / f"data.{pos}").write_text(HEADER + "".join(line + "  \n" for line in lines))
    return folder


def test_head_words_rules(tmp_path):
    r = read_head_words(str(write_db(tmp_path / "wn")))
    assert r.words == [
        "entity",
        "physical entity",
        "Einstein",
        "einstein",
        "thing",  # nouns, file order
        "breathe",
        "able",
        "outback",
        "used to",
        "elect",  # markers (a) (p) (ip) removed
        "a cappella",  # "entity" (adv) already seen
    ]
    assert r.synsets == 12
    assert r.synsets_by_pos == {"noun": 5, "verb": 1, "adj": 4, "adv": 2}
    names = [os.path.basename(p) for p in r.files]
    assert names == ["data.noun", "data.verb", "data.adj", "data.adv"]


@pytest.mark.parametrize("sub", ["", "usr/share/wordnet", "corpora/wordnet", "wordnet", "dict"])
def test_layouts(tmp_path, sub):
    write_db(tmp_path / sub if sub else tmp_path)
    r = read_head_words(str(tmp_path))
    assert r.synsets == 12
    assert r.files[0] == str(tmp_path / sub / "data.noun")


def test_fsspec_url():
    fs = fsspec.filesystem("memory")
    for pos, lines in DATA.items():
        text = HEADER + "".join(line + "\n" for line in lines)
        fs.pipe(f"/wn-test/corpora/wordnet/data.{pos}", text.encode())
    try:
        assert read_head_words("memory://wn-test").synsets == 12
    finally:
        fs.rm("/wn-test", recursive=True)


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    all_four = "data.noun, data.verb, data.adj, data.adv"
    with pytest.raises(InputError, match=f"nope.*does not exist.*{all_four}"):
        read_head_words(str(missing))


def test_folder_without_data(tmp_path):
    (tmp_path / "index.noun").write_text("x")
    with pytest.raises(InputError, match="no WordNet data files found"):
        read_head_words(str(tmp_path))


def test_missing_some_data_files(tmp_path):
    write_db(tmp_path / "dict", skip=("verb", "adv"))
    with pytest.raises(InputError) as e:
        read_head_words(str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "dict") in msg and "data.verb, data.adv" in msg and "data.noun" not in msg


@pytest.mark.parametrize(
    "line, why",
    [
        ("garbage", "too few fields"),
        ("0000174x 03 n 01 entity 0 000 | x", "not numeric"),
        ("00001740 03 q 01 entity 0 000 | x", "synset type"),
        ("00001740 03 n zz entity 0 000 | x", "2 hex digits"),
        ("00001740 03 n 00 entity 0 000 | x", "2 hex digits"),
        ("00001740 03 n 02 entity 0 000 | x", "pointer count not found"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, why):
    data = dict(DATA, noun=DATA["noun"][:2] + [line])
    write_db(tmp_path, data)
    with pytest.raises(InputError, match=why) as e:
        read_head_words(str(tmp_path))
    # line 6: 3 header lines, 2 good synsets, then the bad one
    assert str(e.value).startswith(f"{tmp_path / 'data.noun'}:6: malformed synset line")


def test_verb_satellite_type_mismatch(tmp_path):
    """A satellite ("s") is only valid in data.adj."""
    data = dict(DATA, verb=["00001740 29 s 01 breathe 0 000 | x"])
    write_db(tmp_path, data)
    with pytest.raises(InputError, match=r"data\.verb:4: .*synset type 's'"):
        read_head_words(str(tmp_path))


def test_not_utf8(tmp_path):
    write_db(tmp_path)
    p = tmp_path / "data.adv"
    p.write_bytes(p.read_bytes() + b"00002000 02 r 01 caf\xe9 0 000 | x\n")
    with pytest.raises(InputError, match=r"data\.adv:6: not UTF-8"):
        read_head_words(str(tmp_path))


# ---- the real WordNet 3.0 ----------------------------------------------------------


def real_wordnet():
    folder = os.environ.get("WORDNET_DIR")
    if not folder:
        pytest.fail(
            "WORDNET_DIR is not set: it must name a WordNet 3.0 database folder "
            "(e.g. Debian's /usr/share/wordnet or nltk_data/corpora/wordnet)"
        )
    try:
        return read_head_words(folder)
    except InputError as e:
        pytest.fail(f"WORDNET_DIR={folder!r} is not a usable WordNet 3.0 database: {e}")


@pytest.mark.sample
def test_real_wordnet_counts():
    r = real_wordnet()
    assert r.synsets == 117_659
    assert r.synsets_by_pos == {"noun": 82_115, "verb": 13_767, "adj": 18_156, "adv": 3_621}
    assert len(r.words) == 87_379  # exact-string distinct, case kept
    assert len({w.lower() for w in r.words}) == 86_571
    assert not [w for w in r.words if "_" in w or w.endswith(("(a)", "(p)", "(ip)"))]
    assert {"entity", "dog", "Einstein", "a cappella"} <= set(r.words)


@pytest.mark.sample
def test_real_wordnet_reproduces_metaclip_count():
    """MetaCLIP's 86,654: nltk's lowercased synset name cut at its first '.', plus the
    100 entries "0".."99" its set starts with (see the wordnet module docstring)."""
    entries = {str(i) for i in range(100)}
    for w in real_wordnet().words:
        name = w.lower().split(".", 1)[0]
        if name and name not in set(string.punctuation):
            entries.add(name)
    assert len(entries) == 86_654
