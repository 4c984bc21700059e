"""Encoding a corpus into fixed-length sequences with word ids, and BERT masking by word."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoders import quiet_hf


# -- encoding and masking --------------------------------------------------------------------------

@dataclass
class Encoded:
    """Token ids per sequence (with [CLS]/[SEP]) and, per token, its word number (-1 for specials)."""

    ids: list[np.ndarray]
    words: list[np.ndarray]

    @property
    def tokens(self) -> int:
        return int(sum(len(x) for x in self.ids))


def _jieba_spans(text: str) -> list[tuple[int, int]]:
    import jieba

    spans, pos = [], 0
    for w in jieba.cut(text):
        spans.append((pos, pos + len(w)))
        pos += len(w)
    return spans


def encode_corpus(tokenizer: Any, texts: Sequence[str], max_len: int, masking: str = "whole-word",
                  batch: int = 2000) -> Encoded:
    """Tokenize ``texts``; a text longer than ``max_len`` becomes several sequences."""

    body = max_len - 2
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids_out: list[np.ndarray] = []
    words_out: list[np.ndarray] = []
    for s in range(0, len(texts), batch):
        chunk = list(texts[s: s + batch])
        with quiet_hf():  # long texts are cut below, not by the tokenizer: its length warning does not apply
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=masking == "jieba",
                            return_attention_mask=False, return_token_type_ids=False)
        for j, toks in enumerate(enc["input_ids"]):
            if not toks:
                continue
            if masking == "jieba":
                spans = _jieba_spans(chunk[j])
                starts = np.array([a for a, _ in spans])
                offs = np.array([o[0] for o in enc["offset_mapping"][j]])
                word = np.searchsorted(starts, offs, side="right") - 1
            elif masking == "whole-word":
                pieces = tokenizer.convert_ids_to_tokens(toks)
                word = np.cumsum([0 if p.startswith("##") else 1 for p in pieces]) - 1
            else:
                word = np.arange(len(toks))
            toks_a = np.asarray(toks, dtype=np.int64)
            for a in range(0, len(toks_a), body):
                piece, w = toks_a[a: a + body], word[a: a + body]
                ids_out.append(np.concatenate([[cls_id], piece, [sep_id]]))
                words_out.append(np.concatenate([[-1], w - w.min(), [-1]]))
    return Encoded(ids_out, words_out)


def mask_tokens(ids: np.ndarray, words: np.ndarray, rng: np.random.Generator, mask_id: int,
                candidates: np.ndarray, prob: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of a padded batch.

    Args:
        ids: (B, T) token ids. words: (B, T) word number per token within its row, -1 for special and
            padding positions (never chosen). candidates: token ids a random replacement is drawn from.
    Each word is chosen with probability ``prob``; a sequence where none was gets one at random (as
    BERT's data generator, which masks max(1, round(n * prob)) tokens).

    Returns:
        ``(inputs, labels)``: inputs with the chosen tokens replaced (80 % [MASK], 10 % random, 10 % kept),
        labels = the original id at chosen positions and -100 elsewhere.
    """
    B, T = ids.shape
    valid = words >= 0
    n_words = np.where(valid, words, -1).max(1) + 1  # words per row
    offsets = np.concatenate([[0], np.cumsum(n_words)[:-1]])
    gid = np.where(valid, words + offsets[:, None], 0)
    chosen_word = rng.random(int(n_words.sum())) < prob
    # as BERT's data generator: at least one word per sequence (max(1, round(n * prob)) there)
    counts = np.add.reduceat(chosen_word, offsets) if len(offsets) and n_words.all() else None
    if counts is None:
        counts = np.array([chosen_word[o: o + k].sum() for o, k in zip(offsets, n_words)])
    empty = np.flatnonzero((counts == 0) & (n_words > 0))
    if len(empty):
        chosen_word[offsets[empty] + (rng.random(len(empty)) * n_words[empty]).astype(np.int64)] = True
    chosen = valid & chosen_word[gid]
    labels = np.where(chosen, ids, -100)
    r = rng.random((B, T))
    inputs = ids.copy()
    inputs[chosen & (r < 0.8)] = mask_id
    rand = chosen & (r >= 0.8) & (r < 0.9)
    inputs[rand] = candidates[rng.integers(0, len(candidates), int(rand.sum()))]
    return inputs, labels
