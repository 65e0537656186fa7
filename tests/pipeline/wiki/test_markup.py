import time

import pytest

from pipeline.wiki.markup import clean_wikitext

INFOBOX_LEAD = """{{Short description|Capital of France}}
{{Infobox settlement
| name = Paris
| image_skyline = {{Photomontage|photo1a=Eiffel.jpg|size=250}}
| population_total = 2,165,423<ref name="pop">{{cite web|url=https://insee.fr|title=Pop}}</ref>
| website = {{URL|paris.fr}}
}}
'''Paris''' ({{IPA-fr|paʁi|lang}}) is the [[capital city|capital]] and most populous city of \
[[France]].<ref>{{cite book |last=Smith |title=Paris |year=2010}}</ref> It is a [[commune \
(France)|commune]].<ref name="insee"/>"""

ARTICLE_BODY = """[[File:Paris Night.jpg|thumb|upright=1.2|The [[Eiffel Tower]] at night, \
seen from the [[Trocadéro|Place du Trocadéro]]]]
The city is a major [[railway]] hub.

== History ==
=== Origins ===
The [[Parisii (Gaul)|Parisii]], a sub-tribe of the [[Celts|Celtic]] [[Senones]], \
inhabited the area.<ref name="Lawrence"/>

{| class="wikitable sortable"
|+ Population
! Year !! Population
|-
| 1801 || {{formatnum:547756}}
|-
| 2015 || 2,206,488
|}
* [[Louvre]] museum
# Notre-Dame
: indented text
; Term : definition

[[Category:Paris| ]]
[[Category:Capitals in Europe]]
[[fr:Paris]]
[[zh-min-nan:Paris]]"""


def test_infobox_templates_and_refs_removed():
    assert clean_wikitext(INFOBOX_LEAD) == (
        "Paris () is the capital and most populous city of France. It is a commune."
    )


def test_article_body_file_table_headings_lists_categories():
    assert clean_wikitext(ARTICLE_BODY).split("\n") == [
        "The city is a major railway hub.",
        "History",
        "Origins",
        "The Parisii, a sub-tribe of the Celtic Senones, inhabited the area.",
        "Louvre museum",
        "Notre-Dame",
        "indented text",
        "Term : definition",
    ]


@pytest.mark.parametrize(
    "wikitext, expected",
    [
        # comments, also unterminated
        ("a <!-- hidden\ncomment --> b", "a b"),
        ("a <!-- runs to the end [[x]]", "a"),
        # refs: with templates inside, self-closing, with attributes
        ('x<ref group="n">{{cite web|url=http://a.b|title=T}} see [[Y]]</ref> y', "x y"),
        ('x<ref name="a" /> y<ref name=b/>.', "x y."),
        # nested templates, parser functions, parameters
        ("a {{outer|{{inner|{{deep}}}}|x=1}} b", "a b"),
        ("a {{#if:{{{1|}}}|{{{1}}}|none}} b", "a b"),
        ("a {{{param|default}}} b", "a b"),
        ("a {{lang|fr|{{math|x^{2}}}}} b", "a b"),
        # nested tables, and a template spanning a table
        ("a\n{|\n| x\n{|\n| y\n|}\n| z\n|}\nb", "a\nb"),
        ("a\n{{box|\n{|\n| cell\n|}\n}}\nb", "a\nb"),
        # hidden links
        ("a [[image:X.png|left|200px|alt]] b", "a b"),
        ("a [[ File : X.png|thumb|See [[A]] and [[B|b]]]] b", "a b"),
        ("a [[File:X.png|thumb|Bicyclo[1.1.0]butane, [http://x.org site]]] b", "a b"),
        ("a [[Media:Sound.ogg|listen]] b", "a b"),
        ("a [[Category:Foo|sort]] b", "a b"),
        ("a [[de:Paris]] [[pt-br:Paris]] [[simple:Paris]] b", "a b"),
        # visible links
        ("[[Target|label]]", "label"),
        ("[[Target]]", "Target"),
        ("[[bus]]es and [[train|rail]]way", "buses and railway"),
        ("[[Paris, Texas|]]", "Paris, Texas"),
        ("[[:Category:Foo|x]] and [[:fr:Paris|Paris]]", "x and Paris"),
        ("[[wikt:word|word]] and [[s:Text|text]]", "word and text"),
        ("[[Paris#History|history of Paris]]", "history of Paris"),
        # external links
        ("see [https://x.org Some text] and [https://y.org] now", "see Some text and now"),
        ("[//example.org/a?b=c protocol relative]", "protocol relative"),
        ("visit http://example.org/x?y=1 today", "visit today"),
        # HTML tags
        ("<small>a</small> <sup>2</sup> <span style='x'>b</span>", "a 2 b"),
        ("line one<br />line two<br>three", "line one\nline two\nthree"),
        ("a <nowiki>[[x]]</nowiki> b", "a x b"),
        ("the <code>ls</code> command", "the ls command"),
        ("a <blockquote>quoted text</blockquote> b", "a\nquoted text\nb"),
        ("x < y and a <b> c", "x < y and a c"),
        ("a <500g> b", "a <500g> b"),
        # non-prose elements
        ("a <math>\\frac{1}{2}</math> b", "a b"),
        ("a <chem>H2O</chem> <ce>CO2</ce> b", "a b"),
        ("a\n<gallery>\nFile:A.jpg|Caption\n</gallery>\nb", "a\nb"),
        ('a <syntaxhighlight lang="python">print(1)</syntaxhighlight> b', "a b"),
        ("a\n<pre>\ncode here\n</pre>\nb", "a\nb"),
        ("a <timeline>\nImageSize = width:100\n</timeline> b", "a b"),
        ("a\n<references />\nb", "a\nb"),
        ("a\n<references>\n<ref name=x>y</ref>\n</references>\nb", "a\nb"),
        ("a <poem>\nroses are red\n</poem> b", "a\nroses are red\nb"),
        # bold/italic
        ("'''bold''' ''italic'' '''''both'''''", "bold italic both"),
        ("''The Times'''s editor", "The Times's editor"),
        ("don't and O'Brien's", "don't and O'Brien's"),
        # headings, lists, rules, magic words
        ("== History ==\ntext", "History\ntext"),
        ("==Early life==", "Early life"),
        ("* one\n** two\n#: three\n; term", "one\ntwo\nthree\nterm"),
        ("a\n----\nb", "a\nb"),
        ("__TOC__\n__NOTOC__ a", "a"),
        # entities
        ("a&nbsp;b &ndash; c &amp; d &lt;e&gt; &#8212; &eacute;", "a b – c & d <e> — é"),
        # whitespace
        ("a  \t b\n\n\n\nc   ", "a b\nc"),
        # redirect
        ("#REDIRECT [[Paris]]", ""),
        ("#redirect[[Paris]] {{R from move}}", ""),
    ],
)
def test_clean(wikitext, expected):
    assert clean_wikitext(wikitext) == expected


@pytest.mark.parametrize(
    "wikitext, expected",
    [
        # an unclosed template loses its opener, its parameter lines (they start with |)
        # go, the prose after it stays
        ("{{Infobox person\n| name = X\n| born = 1900\nX was a painter.", "Infobox person\nX was a painter."),
        ("a {{cite web|title=T b {{done}} c", "a cite web|title=T b c"),
        ("a }} b {{x}} c }}", "a b c"),
        # an unclosed table: only its opener line goes
        ('{| class="wikitable"\n| cell\nProse after.', "Prose after."),
        ("a\n|}\nb", "a\nb"),
        # an unclosed link: its [[ goes, the rest stays
        ("a [[Paris b [[Lyon]] c", "a Paris b Lyon c"),
        ("[[File:X.jpg|thumb|caption\n\nNext.", "File:X.jpg|thumb|caption\nNext."),
        # stray closers
        ("a ]] b ]]] c", "a b ] c"),
        ("a</ref> b</math>", "a b"),
        # an element without a closer loses its opening tag only; with a later closer of
        # its name it runs to that closer, as in MediaWiki
        ("a<ref>note b\n\nMore prose.", "anote b\nMore prose."),
        ("x <math>y\n\nMore <math>z</math>. End", "x . End"),
    ],
)
def test_unbalanced_markup_stays_local(wikitext, expected):
    assert clean_wikitext(wikitext) == expected


MB = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "{" * MB,
        "}" * MB,
        "{{{{{{" * (MB // 6),
        "{{a " * (MB // 4),
        "{{a|" * (MB // 8) + "}}" * (MB // 8),
        "[[" * (MB // 2),
        "[[a " * (MB // 4),
        "[[File:a.jpg|thumb|" * (MB // 20),
        "[[File:a|" * (MB // 20) + "]]" * (MB // 20),
        "{|\n" * (MB // 3),
        "|}\n" * (MB // 3),
        "<ref>" * (MB // 5),
        "<math>x " * (MB // 8),
        "<!--" * (MB // 4),
        "<" * MB,
        "<b " * (MB // 3),
        "[http://x.org " * (MB // 14),
        "'" * MB,
        "=" * MB + "x",
        "= a" + " " * MB + "b",
        "&" * MB,
        "word " * (MB // 5),
        "a [[b]] {{c}} <ref>d</ref> '''e''' " * (MB // 40),
    ],
    ids=lambda text: repr(text[:12]),
)
def test_malformed_input_is_linear(text):
    start = time.process_time()  # CPU time: other load on the machine does not count
    clean_wikitext(text)
    assert time.process_time() - start < 2.0


def test_deep_nesting_is_linear():
    text = "{{a|" * 100_000 + "x" + "}}" * 100_000 + " after"
    start = time.process_time()  # CPU time: other load on the machine does not count
    assert clean_wikitext(text) == "after"
    assert time.process_time() - start < 2.0
