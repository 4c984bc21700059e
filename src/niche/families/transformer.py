"""The ``transformer`` family: a Hugging Face encoder with a sequence-classification head.

The saved directory is a plain Hugging Face model directory (``config.json`` with
``id2label``/``label2id``, ``model.safetensors``, tokenizer files), so
``AutoModelForSequenceClassification.from_pretrained(dir)`` loads it without niche.

One encoding function (:meth:`TransformerModel.encode`) applies the long-text policy, so
training, evaluation, prediction and serving all see the same tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TransformerConfig
from ..encoders import load_pretrained, pad_batch, pick_device, plan_batches, quiet_hf
from ..errors import ConfigError, ModelLoadError
from ..modeldir import check_safetensors

log = logging.getLogger(__name__)


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
        from transformers import AutoModelForSequenceClassification

        id2label = dict(enumerate(labels))
        label2id = {v: k for k, v in id2label.items()}
        torch.manual_seed(cfg.seed)  # the new head's initialization is part of the seeded run
        tok, model = load_pretrained(
            cfg.base, "base model", "Pass --base with a local Hugging Face model directory (config.json, "
            "model.safetensors, tokenizer files); hub names need network access.",
            AutoModelForSequenceClassification, num_labels=len(labels), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True)
        if cfg.max_len > getattr(model.config, "max_position_embeddings", 10**9):
            raise ConfigError(
                f"max_len {cfg.max_len} exceeds the base model's {model.config.max_position_embeddings} positions; "
                f"pass --max-len {model.config.max_position_embeddings} or less."
            )
        model.config.problem_type = "single_label_classification"
        if cfg.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return cls(cfg, model, tok)

    @classmethod
    def load(cls, d: Path, cfg: TransformerConfig) -> "TransformerModel":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (d / "model.safetensors").is_file():
            pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
            found = (f" It has {', '.join(pickles)}: pickle files, which niche never opens (unpickling can run "
                     "any code)." if pickles else "")
            raise ModelLoadError(
                f"{d}: no model.safetensors; niche loads safetensors weights only (never pickle).{found} "
                "Re-save the model with save_pretrained(..., safe_serialization=True) where you trust it."
            )
        check_safetensors(d / "model.safetensors")
        check_tokenizer_files(d)
        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(str(d))
                model = AutoModelForSequenceClassification.from_pretrained(str(d), use_safetensors=True)
            except Exception as e:  # transformers raises OSError, ValueError, RuntimeError, KeyError, ...
                raise ModelLoadError(
                    f"{d}: cannot load the transformer model ({type(e).__name__}: {str(e)[:300]}). config.json, "
                    "model.safetensors and the tokenizer files must come from the same model; retrain or restore "
                    "the directory."
                ) from None
        check_vocab(d, tok, model.get_input_embeddings().num_embeddings)
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
        ids, mask = pad_batch(batch, self.tokenizer.pad_token_id or 0)
        return {"input_ids": torch.from_numpy(ids).to(self.device), "attention_mask": torch.from_numpy(mask).to(self.device)}

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


PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
"""Weight files that are pickles: reported when a directory has them instead of safetensors, never opened."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def check_tokenizer_files(d: Path) -> None:
    """A model directory must carry its tokenizer (transformers would otherwise build an empty one)."""
    if not any((d / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{d}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); the "
                             "directory is incomplete. Restore the tokenizer the model was trained with, or retrain.")


def check_vocab(d: Path, tok: Any, rows: int) -> None:
    """The tokenizer must fit the embedding matrix (``rows`` token ids): no id beyond it, and not a
    tokenizer that covers under half of it (real models pad the matrix by a few rows, never double it)."""
    top = max(tok.get_vocab().values(), default=-1) + 1
    n = len(tok)
    fix = ("The tokenizer files do not belong to this model; restore the tokenizer it was trained with "
           "(or retrain).")
    if max(top, n) > rows:
        raise ModelLoadError(f"{d}: the tokenizer has token ids up to {max(top, n) - 1} but the model's embedding "
                             f"matrix has {rows} rows (vocab_size). {fix}")
    if n < rows // 2:
        raise ModelLoadError(f"{d}: the tokenizer has {n} tokens but the model's embedding matrix has {rows} rows. "
                             f"{fix}")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- the family protocol (see niche.families) ------------------------------------------------------

CONFIG = TransformerConfig

RUN_ONLY = ("device", "threads", "checkpoint_every", "grad_accum")
"""Settings that change how a run executes but not its result: left out of the resume fingerprint."""


def fit(cfg: TransformerConfig, task: Any) -> tuple[TransformerModel, dict[str, Any]]:
    """Fine-tune a fresh head on ``cfg.base`` (see :class:`niche.families.FitTask`)."""
    return train_encoded(TransformerModel.from_base(cfg, task.labels), cfg, task)


def train_encoded(tm: TransformerModel, cfg: TransformerConfig, task: Any, loss: Any = None,
                  fp: str | None = None, train_texts: list[str] | None = None,
                  ) -> tuple[TransformerModel, dict[str, Any]]:
    """Run the fine-tuning loop (:func:`niche.train.train_classifier`) on ``tm``; shared by the
    transformer and scratch families and by distillation, which passes its own ``loss`` and
    ``train_texts`` (labeled + unlabeled transfer texts, ``task.y_train`` -100 for the latter) and the
    resume fingerprint ``fp`` of its run."""
    import dataclasses
    import shutil
    import tempfile

    from ..train import fingerprint, train_classifier

    train_ids = tm.encode(train_texts if train_texts is not None else task.train.texts)
    dev_ids = tm.encode(task.dev.texts)
    if fp is None:
        cfg_fp = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY}
        fp = fingerprint(task.data_sha256, task.dev.sha256(), task.labels, cfg_fp)
    tmp_ckpt = task.checkpoint_dir is None
    ckpt = Path(task.checkpoint_dir) if task.checkpoint_dir else Path(tempfile.mkdtemp(prefix="niche-ckpt-"))
    try:
        state = train_classifier(tm, train_ids, task.y_train, dev_ids, task.y_dev, cfg, ckpt, fp, resume=task.resume,
                                 progress=task.progress, callbacks=task.callbacks, loss=loss)
    finally:
        if tmp_ckpt:
            shutil.rmtree(ckpt, ignore_errors=True)
    truncated = sum(1 for x in train_ids if len(x) >= cfg.max_len)
    return tm, {"steps": state.global_step, "total_steps": state.total_steps, "best_step": state.best_step,
                "stopped_early": state.stopped_early, "evals": state.evals, "loss_curve": state.losses,
                "train_texts_truncated": truncated, "device": str(tm.device)}


def load(path: Path, cfg: TransformerConfig, info: dict[str, Any]) -> TransformerModel:
    return TransformerModel.load(path, cfg)


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    usage = ["", "Or with plain transformers:", "", "```python",
             "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
             f'model = AutoModelForSequenceClassification.from_pretrained("{name}")', "```"]
    return [f"- base: `{info['base']}`"], usage
