"""Masked-language-model pretraining: the "pretrain" half of pretrain-then-fine-tune.

Two ways to get a base model that ``niche train --base DIR`` fine-tunes:

- **from scratch**: a WordPiece tokenizer is trained on the corpus with the ``tokenizers`` library
  (CJK characters are split into single-character words first, so Chinese gets a character
  vocabulary and other scripts get WordPiece), then a small BERT learns the masked-LM objective;
- **continued** (``base=...``): domain-adaptive MLM of an existing encoder. A base without an MLM
  head (e.g. all-MiniLM-L6-v2) gets a fresh one whose decoder is tied to the input embeddings;
  optionally the vocabulary is extended with frequent corpus words the base tokenizer splits.

Masking is BERT's: 15 % of the tokens (``mlm_prob``) are chosen, of which 80 % become [MASK], 10 % a
random token and 10 % stay as they are. Choices are made per *word*: WordPiece continuations
(``##x``) go with their word (``masking="whole-word"``, the default), or Chinese characters go
with their ``jieba`` word (``masking="jieba"``); ``masking="token"`` chooses tokens independently.

The corpus is deduplicated, texts found in ``exclude`` files (evaluation sets) are dropped and
counted, 1 % (at most 2,000 texts) is held out to measure dev MLM loss. Training checkpoints
(safetensors + JSON) every ``checkpoint_every`` steps and resumes exactly: the batch order is a
function of (seed, epoch) and each step's masks a function of (seed, step).

The output is a standard Hugging Face masked-LM directory (``BertForMaskedLM`` config, weights,
tokenizer) plus ``pretrain_report.json`` and ``loss_curve.png``.

Example:
    >>> from niche.pretrain import PretrainConfig, pretrain
    >>> report = pretrain(["reviews.txt"], "runs/zh-bert", PretrainConfig(layers=4, hidden=256))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file

from .data import read_texts
from .errors import ConfigError, DataError, ResumeError

log = logging.getLogger(__name__)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
REPORT = "pretrain_report.json"


@dataclass
class PretrainConfig:
    """Settings of ``niche pretrain``; sizes apply to a model built from scratch."""

    base: str | None = None
    """None: build tokenizer and model from scratch. Else a masked-LM or encoder dir/name to continue."""
    tokenizer: Literal["wordpiece", "char"] = "wordpiece"
    """``wordpiece``: CJK characters are single tokens, everything else WordPiece. ``char``: every
    character (outside whitespace) is one token."""
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    max_len: int = 128
    """Tokens per sequence including [CLS]/[SEP]; longer texts are cut into several sequences."""
    mlm_prob: float = 0.15
    masking: Literal["whole-word", "token", "jieba"] = "whole-word"
    extend_vocab: int = 0
    """Continued pretraining only: add up to N frequent corpus words that the base tokenizer splits
    into several pieces or [UNK] (embeddings start at the mean of their pieces)."""
    epochs: int = 1
    max_steps: int = 0
    """Stop after this many optimizer steps (0: ``epochs`` decide)."""
    max_minutes: float = 0.0
    """Wall-clock budget; the learning-rate schedule follows whichever of steps or time runs out first,
    and the model is saved when it does (0: no budget)."""
    batch_size: int = 64
    lr: float = 0.0
    """Peak AdamW learning rate; 0 picks 5e-4 from scratch, 5e-5 for continued pretraining."""
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dev_texts: int = 2000
    """Held-out corpus texts for dev MLM loss (1 % of the corpus at most)."""
    eval_every: int = 500
    checkpoint_every: int = 500
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 42
    device: str = "auto"
    threads: int = 0

    def validate(self) -> None:
        for name in ("vocab_size", "min_frequency", "layers", "hidden", "heads", "intermediate", "max_len",
                     "epochs", "batch_size", "eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}); e.g. --hidden 256 --heads 4.")
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8, got {self.max_len}.")
        if not 0 < self.mlm_prob < 1:
            raise ConfigError(f"mlm_prob must be in (0, 1), got {self.mlm_prob}.")
        if self.masking not in ("whole-word", "token", "jieba"):
            raise ConfigError(f"masking must be whole-word, token or jieba; got {self.masking!r}.")
        if self.tokenizer not in ("wordpiece", "char"):
            raise ConfigError(f"tokenizer must be wordpiece or char; got {self.tokenizer!r}.")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16; got {self.precision!r}.")
        for name in ("max_steps", "extend_vocab", "dev_texts", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_minutes < 0 or self.lr < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError("max_minutes and lr must be >= 0 and warmup_ratio in [0, 1).")
        if self.extend_vocab and self.base is None:
            raise ConfigError("extend_vocab applies to continued pretraining (--base); a scratch model learns its own vocabulary.")
        if self.masking == "jieba":
            try:
                import jieba  # noqa: F401
            except ImportError:
                raise ConfigError("masking 'jieba' needs the jieba package: pip install 'niche[zh]' (or jieba).") from None

    @property
    def peak_lr(self) -> float:
        return self.lr or (5e-4 if self.base is None else 5e-5)


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
    from .families.transformer import quiet_hf

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


# -- model ------------------------------------------------------------------------------------------

def scratch_model(tokenizer: Any, cfg: PretrainConfig) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    conf = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                      max_position_embeddings=cfg.max_len, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(cfg.seed)
    return BertForMaskedLM(conf)


def load_masked_lm(src: str) -> tuple[Any, Any, bool]:
    """(model, tokenizer, head_was_created) for a local dir or hub name; safetensors only."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from .errors import ModelLoadError
    from .families.transformer import quiet_hf, resolve_base

    path = resolve_base(src)
    with quiet_hf():
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load {src!r} as a masked LM ({e}); pass a Hugging Face encoder directory "
                                 "with safetensors weights.") from None
    created = any(k.startswith(("cls.", "lm_head", "vocab_", "predictions")) for k in info.get("missing_keys", []))
    if created:
        model.tie_weights()
    return model, tok, created


def _fast_mlm_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """MLM cross-entropy computing the vocabulary projection only at the masked positions (BERT
    models; ~40 % less compute for a small model with an 8k vocabulary). Other architectures take
    the stock forward."""
    if hasattr(model, "bert") and hasattr(model, "cls"):
        hidden = model.bert(**inputs).last_hidden_state.flatten(0, 1)
        flat = labels.flatten()
        idx = (flat != -100).nonzero().flatten()
        # round the number of gathered rows up to a multiple of 64 (padding rows are ignored): a new
        # matrix shape every step makes CPU bf16 kernels re-plan each time (measured: memory grew by GBs
        # and throughput fell from 8k to 4.7k tokens/s within 800 steps)
        pad = -len(idx) % 64
        if pad:
            idx = torch.cat([idx, idx.new_zeros(pad)])
        target = flat[idx].clone()
        if pad:
            target[-pad:] = -100
        logits = model.cls(hidden[idx])
        return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=-100)
    return model(**inputs, labels=labels).loss


# -- the loop ------------------------------------------------------------------------------------------

@dataclass
class PretrainState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0
    tokens_seen: int = 0
    masked_seen: int = 0
    seconds: float = 0.0
    losses: list[list[float]] = field(default_factory=list)  # [step, mean train loss since last record]
    dev_losses: list[list[float]] = field(default_factory=list)  # [step, dev MLM loss]
    stopped_by: str = ""


def _collate(seqs: list[np.ndarray], words: list[np.ndarray], pad_id: int, multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence rounded up to ``multiple``: a few distinct shapes instead of one per
    length keeps CPU kernels (oneDNN, bf16) and the allocator from re-planning every step (measured:
    memory grew and half the CPU time went to the kernel with exact-length padding)."""
    T = -(-max(len(s) for s in seqs) // multiple) * multiple
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    w = np.full((len(seqs), T), -1, dtype=np.int64)
    for i, (s, ww) in enumerate(zip(seqs, words)):
        ids[i, : len(s)] = s
        w[i, : len(s)] = ww
    return ids, w


def _masked_batch(enc: Encoded, b: list[int], tokenizer: Any, rng: np.random.Generator, candidates: np.ndarray,
                  prob: float, device: torch.device) -> tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]:
    """Pad the sequences ``b`` of ``enc``, mask them; returns (padded ids, model inputs, labels)."""
    ids, words = _collate([enc.ids[i] for i in b], [enc.words[i] for i in b], tokenizer.pad_token_id)
    x, y = mask_tokens(ids, words, rng, tokenizer.mask_token_id, candidates, prob)
    inputs = {"input_ids": torch.as_tensor(x, device=device),
              "attention_mask": torch.as_tensor(ids != tokenizer.pad_token_id, device=device).long()}
    return ids, inputs, torch.as_tensor(y, device=device)


def _lr_factor(frac: float, warmup: float) -> float:
    if frac < warmup:
        return frac / warmup
    return max(0.0, (1 - frac) / (1 - warmup)) if warmup < 1 else 0.0


@torch.inference_mode()
def dev_loss(model: Any, enc: Encoded, tokenizer: Any, cfg: PretrainConfig, device: torch.device,
             candidates: np.ndarray) -> float:
    """Mean MLM loss per masked token over the held-out texts with fixed masks."""
    model.eval()
    rng = np.random.default_rng([cfg.seed, 999_999])
    total, n = 0.0, 0
    order = np.argsort([len(x) for x in enc.ids])
    for s in range(0, len(order), 64):
        b = order[s: s + 64]
        ids, inputs, labels = _masked_batch(enc, b, tokenizer, rng, candidates, cfg.mlm_prob, device)
        k = int((labels != -100).sum())
        if not k:
            continue
        total += float(_fast_mlm_loss(model, inputs, labels)) * k
        n += k
    model.train()
    return total / max(n, 1)


def pretrain(corpus: Sequence[str | Path], out: str | Path, cfg: PretrainConfig | None = None,
             text_col: str | None = None, exclude: Sequence[str | Path] = (), checkpoint_dir: str | Path | None = None,
             resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pretrain (or continue pretraining) a masked LM on ``corpus`` and write it to ``out`` atomically.

    Returns the report written to ``out/pretrain_report.json``.
    Raises:
        DataError: unreadable or empty corpus. ConfigError: bad settings. ResumeError: a checkpoint of
        another run is in ``checkpoint_dir`` (or one exists and ``resume`` is False).
    """
    from tqdm.auto import tqdm

    from .classifier import library_versions, write_dir_atomically
    from .families.transformer import pick_device, quiet_hf
    from .training import _load_optimizer, fingerprint, latest_checkpoint, save_checkpoint

    cfg = cfg or PretrainConfig()
    cfg.validate()
    out = Path(out)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out.with_name(out.name + ".checkpoints")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    texts, stats = build_corpus(corpus, text_col, exclude)
    rng = random.Random(cfg.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_dev = min(cfg.dev_texts, len(texts) // 100)
    dev_idx, train_idx = sorted(order[:n_dev]), sorted(order[n_dev:])
    train_texts = [texts[i] for i in train_idx]
    dev_texts = [texts[i] for i in dev_idx]
    log.info("corpus: %d texts kept (%d duplicates, %d excluded, %d empty)", stats.kept, stats.duplicates, stats.excluded, stats.empty)

    added: list[str] = []
    head_created = False
    saved_tok = ckpt_dir / "tokenizer"
    if cfg.base is None:
        if resume and (saved_tok / "tokenizer.json").is_file():  # the vocabulary the checkpoint was trained with
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(saved_tok))
        else:
            tokenizer = train_tokenizer(train_texts, cfg)
        model = scratch_model(tokenizer, cfg)
    else:
        model, tokenizer, head_created = load_masked_lm(cfg.base)
        if cfg.extend_vocab:
            added = extend_vocabulary(tokenizer, model, train_texts, cfg.extend_vocab)
        limit = getattr(model.config, "max_position_embeddings", cfg.max_len)
        if cfg.max_len > limit:
            raise ConfigError(f"max_len {cfg.max_len} exceeds the base model's {limit} positions; pass --max-len {limit} or less.")
    device = pick_device(cfg.device)
    model.to(device)
    enc = encode_corpus(tokenizer, train_texts, cfg.max_len, cfg.masking)
    dev_enc = encode_corpus(tokenizer, dev_texts, cfg.max_len, cfg.masking)
    special = set(tokenizer.all_special_ids)
    candidates = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)

    steps_per_epoch = math.ceil(len(enc.ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    fp = fingerprint(asdict(cfg) | {"threads": None, "device": None}, stats.kept, stats.characters, len(enc.ids), added)
    state = PretrainState(total_steps=total)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    decay = [p for n, p in model.named_parameters() if not n.endswith(no_decay)]
    nodecay = [p for n, p in model.named_parameters() if n.endswith(no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": nodecay, "weight_decay": 0.0}], lr=cfg.peak_lr, betas=(0.9, 0.98), eps=1e-6)

    class _Sched:  # progress-based schedule, resumable from state (see _lr_factor)
        def state_dict(self) -> dict[str, Any]:
            return {}

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(ckpt_dir)
    if cfg.base is None and last is None:
        with quiet_hf():
            tokenizer.save_pretrained(str(saved_tok))
    if last is not None and not resume:
        raise ResumeError(f"{ckpt_dir} holds a checkpoint ({last.name}) of an interrupted pretraining run. Pass --resume "
                          f"to continue it, or delete {ckpt_dir} to start over.")
    if last is not None:
        meta = json.loads((last / "state.json").read_text())
        if meta["fingerprint"] != fp:
            raise ResumeError(f"{last}: this checkpoint belongs to another corpus or other settings (fingerprint "
                              f"{meta['fingerprint']} != {fp}). Resume with the same flags, or delete {ckpt_dir}.")
        model.load_state_dict(load_file(str(last / "model.safetensors"), device=str(device)), strict=False)
        model.tie_weights()
        _load_optimizer(opt, last / "optimizer.safetensors", meta["optimizer"])
        torch.set_rng_state(load_file(str(last / "rng.safetensors"))["torch_cpu"])
        state = PretrainState(**meta["state"])
        log.info("resuming pretraining from %s (step %d of %d)", last, state.global_step, state.total_steps)

    from .training import _autocast

    autocast = _autocast(cfg.precision, device)
    budget = cfg.max_minutes * 60
    lengths = [len(x) for x in enc.ids]
    from .training import batch_order

    if last is None:
        torch.manual_seed(cfg.seed)  # dropout; a resumed run continues the checkpoint's RNG state
    model.train()
    bar = tqdm(total=state.total_steps, initial=state.global_step, desc="pretraining (MLM)", unit="step",
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - state.seconds
    loss_acc, loss_n, tok_window, t_window = 0.0, 0, 0, time.perf_counter()
    done = state.global_step >= state.total_steps
    while not done:
        batches = batch_order(lengths, cfg.batch_size, cfg.seed, state.epoch, True)
        for b in batches[state.step_in_epoch:]:
            frac = state.global_step / max(state.total_steps, 1)
            if budget:
                frac = max(frac, (time.perf_counter() - t0) / budget)
            for g in opt.param_groups:
                g["lr"] = cfg.peak_lr * _lr_factor(frac, cfg.warmup_ratio)
            ids, inputs, labels = _masked_batch(enc, b, tokenizer, np.random.default_rng([cfg.seed, state.global_step]),
                                                candidates, cfg.mlm_prob, device)
            if bool((labels != -100).any()):
                with autocast:
                    loss = _fast_mlm_loss(model, inputs, labels)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss_acc += float(loss.detach())
                loss_n += 1
            n_tok = int((ids != tokenizer.pad_token_id).sum())
            state.tokens_seen += n_tok
            state.masked_seen += int((labels != -100).sum())
            tok_window += n_tok
            state.global_step += 1
            state.step_in_epoch += 1
            if state.step_in_epoch == len(batches):
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if state.global_step % 10 == 0 and loss_n:
                now = time.perf_counter()
                state.losses.append([state.global_step, loss_acc / loss_n])
                post = {"loss": f"{loss_acc / loss_n:.3f}", "tok_s": f"{tok_window / max(now - t_window, 1e-9):,.0f}",
                        "lr": f"{opt.param_groups[0]['lr']:.1e}"}
                if budget:  # the step total is an upper bound when the time budget decides
                    post["budget_left"] = f"{max(budget - (now - t0), 0) / 60:.1f} min"
                bar.set_postfix(post)
                loss_acc, loss_n, tok_window, t_window = 0.0, 0, 0, now
            state.seconds = time.perf_counter() - t0
            over_time = bool(budget) and state.seconds >= budget
            done = state.global_step >= state.total_steps or over_time
            if done:
                state.stopped_by = "time budget" if over_time and state.global_step < state.total_steps else "steps"
            if dev_enc.ids and (state.global_step % cfg.eval_every == 0 or done):
                state.dev_losses.append([state.global_step, dev_loss(model, dev_enc, tokenizer, cfg, device, candidates)])
                bar.write(f"step {state.global_step}: dev MLM loss {state.dev_losses[-1][1]:.4f}") if progress else None
            bar.update(1)
            if state.global_step % cfg.checkpoint_every == 0 or done:
                save_checkpoint(ckpt_dir, model, opt, _Sched(), state, fp)
            if done or state.step_in_epoch == 0:
                break
    bar.close()
    model.eval()

    report = {
        "mode": "scratch" if cfg.base is None else "continued",
        "base": cfg.base,
        "config": asdict(cfg),
        "corpus": asdict(stats) | {"train_texts": len(train_texts), "dev_texts": len(dev_texts),
                                   "train_sequences": len(enc.ids), "corpus_tokens": enc.tokens},
        "vocab_size": len(tokenizer),
        "added_tokens": len(added),
        "added_examples": added[:50],
        "mlm_head_created": head_created,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "steps": state.global_step,
        "total_steps": state.total_steps,
        "epochs_done": state.global_step / max(steps_per_epoch, 1),
        "stopped_by": state.stopped_by or "steps",
        "tokens_seen": state.tokens_seen,
        "masked_tokens_seen": state.masked_seen,
        "train_seconds": round(state.seconds, 1),
        "wall_seconds_total": round(time.perf_counter() - t_start, 1),
        "tokens_per_second": round(state.tokens_seen / max(state.seconds, 1e-9), 1),
        "final_train_loss": state.losses[-1][1] if state.losses else None,
        "dev_loss": state.dev_losses,
        "train_loss": state.losses,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
    }

    def fill(d: Path) -> None:
        with quiet_hf():
            model.save_pretrained(str(d), safe_serialization=True)
            tokenizer.save_pretrained(str(d))
        (d / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        plot_losses(report, d / "loss_curve.png")

    write_dir_atomically(out, fill)
    import shutil

    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return report


def plot_losses(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if report["train_loss"]:
        s, v = zip(*report["train_loss"])
        ax.plot(s, v, lw=0.8, alpha=0.7, label="train (mean of 10 steps)")
    if report["dev_loss"]:
        s, v = zip(*report["dev_loss"])
        ax.plot(s, v, "o-", label="dev (held-out corpus)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM cross-entropy per masked token")
    ax.set_title(f"niche pretrain ({report['mode']}): {report['tokens_seen']:,} tokens seen")
    ax.grid(alpha=0.3)
    if report["train_loss"] or report["dev_loss"]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

