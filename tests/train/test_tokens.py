"""train/tokens.py: the batch tokenizer gives open_clip's token ids, on ordinary captions and
on the texts where its shortcuts could go wrong."""

from __future__ import annotations

import random

import open_clip
import torch

from train.tokens import WORD_CACHE, BatchTokenizer, batch_tokenizer

TRICKY = [
    "",
    "   ",
    "A Photo of a CAT",
    "tabs\tand\nnew lines\r\nand  double  spaces ",
    "Tom's dog isn't here, we'll see; they've gone & come back",
    "fish &amp; chips &lt;b&gt; &#39;quoted&#39; &amp;amp;",
    "curly \u201cquotes\u201d and \u2018apostrophes\u2019",
    "mojibake: caf\u00c3\u00a9 and \u00e2\u20ac\u201cdash",
    "ligatures \ufb01sh \ufb02ower, full width \uff21\uff22\uff23",
    "control \x1b[31mred\x1b[0m and \x07 bell and \x00 nul",
    "Ελληνικά, русский, 中文字符, 日本語のテキスト, emoji 🐱🐶",
    "numbers 12345 and 3.14159, dates 2026-12-07",
    "<start_of_text> special <end_of_text> tokens inside",
    "word " * 200,  # truncated to the context length, eot last
    "ʻokina and ǃXóõ clicks; Zürich, Ærø, Œuvre",
]


def test_same_ids_as_open_clip_on_tricky_and_random_texts():
    inner = open_clip.get_tokenizer("ViT-B-32")
    fast = batch_tokenizer(open_clip.get_tokenizer("ViT-B-32"))
    assert isinstance(fast, BatchTokenizer)
    rng = random.Random(0)
    alphabet = "abcdefghij KLMNOP.,;'&\t\n-éü中🐱0123456789\"<>/\x1b"
    texts = TRICKY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(300)]
    want = inner(texts)
    got = fast(texts)
    assert got.dtype == torch.long and got.shape == want.shape == (len(texts), 77)
    for text, a, b in zip(texts, got, want):
        assert torch.equal(a, b), text
    assert torch.equal(fast(texts), want)  # again, from the word cache
    assert torch.equal(fast("one text"), inner("one text"))
    assert torch.equal(fast(texts[:3], context_length=5), inner(texts[:3], context_length=5))


def test_the_word_cache_is_bounded_and_other_tokenizers_pass_through(monkeypatch):
    import train.tokens as tokens

    fast = BatchTokenizer(open_clip.get_tokenizer("ViT-B-32"))
    monkeypatch.setattr(tokens, "WORD_CACHE", 3)
    fast(["one two three four five six"])
    assert len(fast._words) <= 3 and WORD_CACHE > 1000
    assert torch.equal(fast(["one two three four five six"]), fast.inner(["one two three four five six"]))

    class Other:
        pass

    other = Other()
    assert batch_tokenizer(other) is other
