"""The worldwide recipe's words: our token rule in every language, a segmenter where words
are not separated by spaces.

A spaced language (German, Russian, Hindi...) is counted exactly as the clip recipe counts
English (`tokens.count_chunk`: case kept, phrases end at punctuation). MetaCLIP 2 splits
such text on whitespace and makes each punctuation character a token of its own; both give
the same words and the same bigram-breaking at punctuation, except that ours also strips a
possessive ``'s`` and keeps ``state-of-the-art`` whole.

In a language written without spaces (`codes.NO_SPACE`: Chinese, Japanese, Thai...) each
token that is not plain ASCII is cut by the language's segmenter
(`pipeline.lang.segment`), and the pieces of a phrase stay adjacent, so ``东京大学`` gives
the bigram ``东京 大学``. Bigrams are stored with a space between their words, as in every
language (the PMI joins on it); the query list joins a no-space language's bigrams without
one (``东京大学``), as MetaCLIP 2's build_metadata.py does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ..lang.codes import no_space
from ..lang.segment import JOINERS, segmenter
from .tokens import ChunkCounts, bigram_table, count_chunk, encode_words, phrases


def segmented_phrases(text: str, lang: str) -> list[list[str]]:
    """The phrases of `text` (runs of adjacent tokens), each token of a no-space script cut
    into the language's words."""
    cut = segmenter(lang)
    for joiner in JOINERS.get(lang, ""):
        text = text.replace(joiner, " ")
    out = []
    for phrase in phrases(text):
        words: list[str] = []
        for token in phrase:
            if cut is not None and not token.isascii():
                words.extend(w for w in cut(token) if w and not w.isspace())
            else:
                words.append(token)
        if words:
            out.append(words)
    return out


def count_chunk_worldwide(texts: Sequence[str], lang: str) -> ChunkCounts:
    """Unigram and bigram counts of `texts` in language `lang` (wiki code)."""
    if not no_space(lang) or segmenter(lang) is None:
        return count_chunk(texts)
    lists = pa.array(segmented_phrases("\n".join(texts), lang), pa.list_(pa.string()))
    words, ids = encode_words(lists)
    unigrams = pa.table({"w": words, "c": np.bincount(ids, minlength=len(words))})
    return ChunkCounts(unigrams, bigram_table(lists, words, ids), len(ids))
