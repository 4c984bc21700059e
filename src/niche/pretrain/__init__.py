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

from ..config import PretrainConfig
from .corpus import CorpusStats, build_corpus, extend_vocabulary, normalize_text, train_tokenizer
from .fillmask import FillMask, masked_probes, topk_accuracy
from .loop import REPORT, load_masked_lm, pretrain, scratch_model
from .masking import Encoded, encode_corpus, mask_tokens

__all__ = ["PretrainConfig", "pretrain", "build_corpus", "train_tokenizer", "extend_vocabulary", "normalize_text",
           "CorpusStats", "encode_corpus", "mask_tokens", "Encoded", "load_masked_lm", "scratch_model", "REPORT",
           "FillMask", "masked_probes", "topk_accuracy"]
