"""Wikitext -> plain prose, for word and bigram counting over all of English Wikipedia.

Why hand-written regexes and not mwparserfromhell or a MediaWiki renderer: the input is
~90 GB of wikitext and only the words a reader sees matter, not a faithful rendering. A
dozen linear `re` passes plus one delimiter scan for nested ``{{ }}`` and ``{| |}`` need
no parse tree per article and run at over 10 MB/s per core on real articles.

Removed entirely (not running prose):

* comments ``<!-- -->`` (an unterminated one runs to the end of the text, as in MediaWiki);
* templates, parser functions and parameters ``{{...}}`` / ``{{{...}}}``, nested, brace
  runs balanced by count (infoboxes, citations, navboxes; also inline ones such as
  ``{{convert}}`` or ``{{lang}}``, whose text is lost);
* tables ``{| ... |}``, nested; a line starting with ``|`` outside any table (a row of an
  unclosed table, a parameter of an unclosed template) is dropped too;
* ``[[File:]]``, ``[[Image:]]``, ``[[Media:]]`` (any case, caption included, even with
  links inside), ``[[Category:]]`` and interlanguage links ``[[fr:Paris]]`` (a lowercase
  2-3 letter code with optional ``-variant`` parts, or ``simple:``);
* the content of ref, references, math, chem, ce, gallery, timeline, syntaxhighlight,
  source, pre, score, hiero, imagemap, graph, mapframe, maplink, templatedata, inputbox and
  categorytree elements (citations, formulas, code blocks, media, widgets). ``<code>``
  (mostly inline words), ``<nowiki>``, ``<poem>``, ``<blockquote>`` and other HTML tags
  lose only their tags;
* magic words (``__TOC__``), horizontal rules, bold/italic quote runs, external link URLs,
  bare URLs.

Kept: link text (``[[T|label]]`` -> label, ``[[T]]`` -> T, ``[[bus]]es`` -> buses, pipe
trick ``[[T|]]`` -> T, ``[[:Category:X|x]]`` -> x), interwiki links such as
``[[wikt:word|word]]`` (they show inline, so their label or target stays), external link
labels, headings and list items (each on its own line, markers removed), HTML entities
(unescaped; NBSP becomes a space). ``<br>`` and block tags become line breaks.

Malformed markup costs linear time and stays local: an unmatched ``{{``, ``}}`` or ``{|``
line is deleted on its own and the text after it is kept (roughly what MediaWiki shows);
an element with no closing tag after it (``<ref>`` and no ``</ref>``) loses only its
opening tag, one with a later closer runs to that closer (as in MediaWiki); an unclosed
link loses its ``[[`` and its target text stays (``File:x.jpg|thumb|caption``). A
redirect page gives "".
"""

import functools
import html
import re

_REDIRECT = re.compile(r"\s*#redirect", re.I)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)

_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|syntaxhighlight|source|pre|score|hiero"
    "|imagemap|graph|mapframe|maplink|templatedata|inputbox|categorytree"
)
# [^<>] ends every attempt at the next angle bracket, so the scan stays linear.
_DROP_OPEN = re.compile(r"<(%s)\b[^<>]*?(/?)>" % _DROP_TAGS, re.I)
_DROP_CLOSE = {name: re.compile(r"</%s\s*>" % name, re.I) for name in _DROP_TAGS.split("|")}

# Group 1 = opener, group 2 = closer.
_BRACES = re.compile(r"(\{\{+)|(\}\}+)")
_TABLES = re.compile(r"^[ \t:]*(\{\|)[^\n]*|^[ \t]*(\|\})", re.M)

_BRACKETS = re.compile(r"(\[\[+)|(\]\]+)")
# Links that do not show in the text: files, categories, interlanguage links.
_HIDDEN = r"\[\[[ \t]*(?:(?i:file|image|media|category)[ \t]*:|(?:[a-z]{2,3}(?:-[a-z]+)*|simple):)"
_HIDDEN_START = re.compile(_HIDDEN)
_HIDDEN_FLAT = re.compile(_HIDDEN + r"[^\[\]]*\]\]")  # the common case, no brackets inside


@functools.cache
def _hidden_patterns(local: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    """(start, flat) patterns hiding also links to the namespaces named `local` (another
    Wikipedia's names of its File, Media and Category namespaces: ``Kategorie``, ``Файл``)."""
    if not local:
        return _HIDDEN_START, _HIDDEN_FLAT
    names = "|".join(re.escape(n).replace("\\ ", "[ _]") for n in sorted(set(local), key=len, reverse=True))
    pattern = _HIDDEN.replace("(?i:file|image|media|category)", f"(?i:file|image|media|category|{names})")
    return re.compile(pattern), re.compile(pattern + r"[^\[\]]*\]\]")


_LINK = re.compile(r"\[\[([^\[\]|\n]*)(?:\|([^\[\]]*))?\]\]([a-z]*)")
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:|//)[^\s\[\]]*(?:[ \t]+([^\[\]\n]*))?\]|(?:https?|ftp)://[^\s\[\]<>\"|]+")

# Tags removed keeping their content; block ones become a line break. Stray tags of the
# dropped elements (a </ref> with no opener) go too.
_BLOCK_TAGS = frozenset(
    "br p div li ul ol dl dd dt tr td th table caption blockquote hr center poem h1 h2 h3 h4 h5 h6".split()
)
_INLINE_TAGS = frozenset(
    "b i u s em strong small big sub sup span font code tt kbd var samp cite q abbr dfn"
    " del ins strike mark ruby rb rt rp bdi bdo wbr nowiki onlyinclude includeonly"
    " noinclude section templatestyles time data".split()
) | frozenset(_DROP_TAGS.split("|"))
_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*>")
# Quote runs, magic words, stray [[ ]]. Group 1: ''' + s after a word is an italic close
# followed by a possessive, ''The Times'''s -> The Times's. Every alternative starts with
# a literal character, which keeps the scan fast.
_NOISE = re.compile(r"(')(?<=\w')''(?=s\b)|'{2,}|__[A-Z]+__|\[\[|\]\]")
# Line starts: list/indent markers, stray table-row/template-parameter lines, headings
# (group 1), horizontal rules.
_LINE_START = re.compile(r"^[ \t]*(?:[*#:;][*#:; \t]*|\|[^\n]*|=+([^\n]*)|-{4,})", re.M)


def _nested_spans(text, delims, unit, pos=0, wanted=None):
    """Spans to delete for nested constructs, from one left-to-right delimiter scan.

    A delimiter run weighs len // unit, so with unit=1 brace runs balance by count
    (``{{a|{{{b}}}}}``) and with unit=2 ``]]]]`` closes two links. Balanced pairs give
    their whole extent; an unmatched delimiter gives only itself, so it cannot swallow the
    rest of the article. With `wanted`, only the pairs whose opener matches it are given.
    """
    spans, stack = [], []  # stack entries: [start, weight left, end of opener]
    for m in delims.finditer(text, pos):
        opener, closer = m.group(1, 2)
        if opener is not None:
            stack.append([m.start(), len(opener) // unit, m.end()])
            continue
        n = len(closer) // unit
        while n and stack:
            top = stack[-1]
            k = min(n, top[1])
            top[1] -= k
            n -= k
            if not top[1]:
                stack.pop()
                if wanted is None or wanted.match(text, top[0]):
                    spans.append((top[0], m.end()))
        if n and wanted is None:
            spans.append((m.start(), m.end()))
    if wanted is None:
        spans.extend((start, end) for start, _, end in stack)
    return spans


def _cut(text, spans):
    """`text` without the given (possibly nested or overlapping) spans."""
    if not spans:
        return text
    out, pos = [], 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        if start > pos:
            out.append(text[pos:start])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _drop_elements(text):
    """Remove non-prose elements with their content; a missing closer drops the opener only.

    `unclosed` remembers tags with no closer after some point, so many unterminated
    openers cost one scan in all, not one scan to the end each.
    """
    out, pos, unclosed = [], 0, set()
    while (m := _DROP_OPEN.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        pos = m.end()
        name = m.group(1).lower()
        if m.group(2) or name in unclosed:
            continue
        close = _DROP_CLOSE[name].search(text, pos)
        if close is None:
            unclosed.add(name)
        else:
            pos = close.end()
    out.append(text[pos:])
    return "".join(out)


def _drop_hidden_links(text, local: tuple[str, ...] = ()):
    """Remove file, category and interlanguage links, captions with nested links included."""
    start, flat = _hidden_patterns(local)
    text = flat.sub("", text)
    m = start.search(text)
    if m is None:
        return text
    return _cut(text, _nested_spans(text, _BRACKETS, 2, m.start(), start))


def _link_text(m):
    target, label, trail = m.group(1, 2, 3)
    if not label or label.isspace():  # [[T]] or the pipe trick [[T|]]
        label = target.strip().lstrip(":")
    return label + trail


def _tag(m):
    name = m.group(1).lower()
    if name in _INLINE_TAGS:
        return ""
    return "\n" if name in _BLOCK_TAGS else m.group()  # not a tag: "a <b and c> d"


def _noise(m):
    return m.group(1) or ""


def _line_start(m):
    heading = m.group(1)
    return "" if heading is None else heading.strip().rstrip("=").strip()


def clean_wikitext(text: str, local_namespaces: tuple[str, ...] = ()) -> str:
    """Plain prose of an article's wikitext: one paragraph, heading or list item a line.
    `local_namespaces`: the wiki's own names of its File, Media and Category namespaces
    (from its dump's <siteinfo>), hidden like the English ones."""
    if _REDIRECT.match(text):
        return ""
    text = _COMMENT.sub("", text)
    text = _drop_elements(text)
    text = _cut(text, _nested_spans(text, _BRACES, 1))
    text = _cut(text, _nested_spans(text, _TABLES, 2))
    text = _drop_hidden_links(text, local_namespaces)
    text = _LINK.sub(_link_text, text)
    text = _EXTERNAL.sub(r"\1", text)
    text = _TAG.sub(_tag, text)
    text = _NOISE.sub(_noise, text)
    text = _LINE_START.sub(_line_start, text)
    if "&" in text:
        text = html.unescape(text)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)
