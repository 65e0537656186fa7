"""open_clip's CLIP tokenizer, per batch and faster, with the same token ids.

open_clip's `SimpleTokenizer` spends most of a caption's ~85 us outside the BPE merges it
caches: per word it re-encodes the bytes, looks the merged word up, splits it and maps each
piece to an id, and per caption it builds a tensor row with `torch.tensor`. At 2,000-3,000
samples/s per GPU that is a tenth of a loader core. `BatchTokenizer` keeps the tokenizer
(its vocabulary, regex, cleaning and BPE) and adds a word -> ids cache and a numpy batch;
for plain printable ASCII without `&` it skips ftfy and HTML unescaping, which leave such
text unchanged. Tokenizers it does not know (other open_clip tokenizers, a reduction mask)
are used as they are. `tests/train/test_tokens.py` checks the ids equal open_clip's.
"""

from __future__ import annotations

import numpy as np
import torch

WORD_CACHE = 500_000  # words kept; cleared when full (a web-scale vocabulary would not fit)


class BatchTokenizer:
    """Callable like open_clip's tokenizer: texts -> long [len(texts), context_length]."""

    def __init__(self, inner):
        self.inner = inner
        self.context_length = inner.context_length
        self._words: dict[str, tuple[int, ...]] = {}
        from open_clip.tokenizer import _clean_lower

        self._lower = inner.clean_fn is _clean_lower  # CLIP's cleaning: the fast path gives its result

    def clean(self, text: str) -> str:
        if self._lower and text.isascii() and text.isprintable() and "&" not in text:
            return " ".join(text.split()).lower()  # what ftfy, unescape and clean_lower leave of it
        return self.inner.clean_fn(text)

    def encode(self, text: str) -> list[int]:
        inner, words = self.inner, self._words
        ids: list[int] = []
        for word in inner.pat.findall(self.clean(text)):
            got = words.get(word)
            if got is None:
                token = "".join(inner.byte_encoder[b] for b in word.encode("utf-8"))
                got = tuple(inner.encoder[piece] for piece in inner.bpe(token).split(" "))
                if len(words) >= WORD_CACHE:
                    words.clear()
                words[word] = got
            ids.extend(got)
        return ids

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        sot, eot = self.inner.sot_token_id, self.inner.eot_token_id
        out = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [sot, *self.encode(text), eot]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = eot
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)


def batch_tokenizer(tokenizer):
    """`BatchTokenizer` over open_clip's `SimpleTokenizer` (without a reduction mask); any
    other tokenizer unchanged."""
    from open_clip.tokenizer import SimpleTokenizer

    if type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None:
        return BatchTokenizer(tokenizer)
    return tokenizer
