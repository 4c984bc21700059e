"""The pretraining corpus (read, normalize, deduplicate, exclude evaluation texts) and its tokenizer."""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainConfig
from ..data import read_texts
from ..errors import DataError

log = logging.getLogger(__name__)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# -- corpus ---------------------------------------------------------------------------------------

def normalize_text(t: str) -> str:
    """The key used for deduplication and exclusion: NFKC, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", t).split())


@dataclass
class CorpusStats:
    files: list[str]
    read: int = 0
    empty: int = 0
    duplicates: int = 0
    excluded: int = 0
    exclude_files: list[str] = field(default_factory=list)
    exclude_texts: int = 0
    kept: int = 0
    characters: int = 0


def build_corpus(paths: Sequence[str | Path], text_col: str | None = None,
                 exclude: Sequence[str | Path] = (), exclude_col: str = "text") -> tuple[list[str], CorpusStats]:
    """Read, drop empty texts, deduplicate (first occurrence kept) and drop every text that also
    appears in an ``exclude`` file (column ``exclude_col``; compared after :func:`normalize_text`)."""
    if not paths:
        raise DataError("no corpus given; pass --corpus FILE (one text per line, or CSV/JSONL with --text-col).")
    stats = CorpusStats(files=[str(p) for p in paths], exclude_files=[str(p) for p in exclude])
    banned: set[str] = set()
    for p in exclude:
        banned.update(normalize_text(t) for t in read_texts(p, exclude_col) if t.strip())
    stats.exclude_texts = len(banned)
    seen: set[str] = set()
    kept: list[str] = []
    for p in paths:
        for t in read_texts(p, text_col):
            stats.read += 1
            key = normalize_text(t)
            if not key:
                stats.empty += 1
                continue
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            if key in banned:
                stats.excluded += 1
                continue
            kept.append(t.strip())
    if not kept:
        raise DataError(f"the corpus is empty after removing {stats.empty} empty, {stats.duplicates} duplicate and "
                        f"{stats.excluded} excluded texts; check --corpus/--exclude.")
    stats.kept = len(kept)
    stats.characters = sum(len(t) for t in kept)
    return kept, stats


# -- tokenizer ------------------------------------------------------------------------------------

def train_tokenizer(texts: Iterable[str], cfg: PretrainConfig) -> Any:
    """A BERT-style tokenizer (``PreTrainedTokenizerFast``) learned on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=cfg.lowercase)
    if cfg.tokenizer == "char":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Split(Regex("."), behavior="isolated")])
    else:
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                        special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=cfg.max_len)


def extend_vocabulary(tokenizer: Any, model: Any, texts: Sequence[str], n: int) -> list[str]:
    """Add up to ``n`` frequent corpus words that ``tokenizer`` splits into several pieces or maps to
    [UNK]; each new embedding starts at the mean of the word's old pieces. Returns the added words."""
    from tokenizers import AddedToken

    pre = tokenizer.backend_tokenizer.pre_tokenizer
    norm = tokenizer.backend_tokenizer.normalizer
    counts: Counter[str] = Counter()
    for t in texts:
        s = norm.normalize_str(t) if norm is not None else t
        counts.update(w for w, _ in (pre.pre_tokenize_str(s) if pre is not None else [(x, None) for x in s.split()]))
    vocab = tokenizer.get_vocab()
    unk = tokenizer.unk_token
    gains = []
    for w, c in counts.items():
        if c < 2 or w in vocab or not any(ch.isalnum() for ch in w):
            continue
        pieces = tokenizer.tokenize(w)
        if len(pieces) > 1 or pieces == [unk]:
            gains.append((c * max(len(pieces) - 1, 1), w, pieces))
    gains.sort(key=lambda g: (-g[0], g[1]))
    chosen = gains[:n]
    if not chosen:
        return []
    emb = model.get_input_embeddings().weight.detach().clone()
    tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for _, w, _ in chosen])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new = model.get_input_embeddings().weight
    with torch.no_grad():
        for _, w, pieces in chosen:
            ids = tokenizer.convert_tokens_to_ids(pieces)
            new[tokenizer.convert_tokens_to_ids(w)] = emb[ids].mean(0)
    return [w for _, w, _ in chosen]
