"""The ``scratch`` family: small models trained from random initialization.

``arch="transformer"`` is a small BERT encoder (``BertForSequenceClassification`` built from a
config, no pretrained weights); ``arch="bilstm"`` a bidirectional LSTM with max+mean pooling over
the tokens, the classic baseline. Both use a WordPiece tokenizer learned on the training texts
(CJK: one token per character, see :func:`niche.pretrain.train_tokenizer`) and optionally start
their embeddings from static word vectors.

Both save as Hugging Face model directories (the BiLSTM as the ``niche-bilstm`` model type,
registered with the Auto classes when this module is imported), so the transformer family's
training loop, encoding, prediction, serving and distributed training apply unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..config import ScratchConfig
from ..encoders import mean_pool
from ..errors import DataError
from .transformer import TransformerModel, train_encoded

log = logging.getLogger(__name__)


class BiLSTMConfig(PretrainedConfig):
    model_type = "niche-bilstm"

    def __init__(self, vocab_size: int = 8000, embedding_dim: int = 256, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.2, pad_token_id: int = 0, max_position_embeddings: int = 100_000, **kw: Any):
        super().__init__(pad_token_id=pad_token_id, **kw)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.max_position_embeddings = max_position_embeddings


class BiLSTMForSequenceClassification(PreTrainedModel):
    """Embeddings -> BiLSTM -> [max-pool ; mean-pool] over real tokens -> dropout -> linear."""

    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(4 * config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: Any) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        x = self.dropout(self.embeddings(input_ids))
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=input_ids.shape[1])
        mean = mean_pool(h, attention_mask)
        mx = h.masked_fill(attention_mask[:, :, None] == 0, torch.finfo(h.dtype).min).amax(1)
        logits = self.classifier(self.dropout(torch.cat([mx, mean], -1)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register("niche-bilstm", BiLSTMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)


def read_vectors(path: str | Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """Vectors of the ``wanted`` tokens from a word2vec/GloVe *text* file (never a pickle);
    returns (vectors, dimension)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: vectors file not found; pass a word2vec/GloVe text file (token v1 v2 ... per line).")
    out: dict[str, np.ndarray] = {}
    dim = 0
    with p.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                continue  # word2vec header "count dim"
            if len(parts) < 3:
                continue
            if not dim:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise DataError(f"{p}, line {n}: {len(parts) - 1} numbers, expected {dim} like the first vector. "
                                "Each line must be `token v1 ... vD` with the same D.")
            if parts[0] in wanted and parts[0] not in out:
                try:
                    out[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise DataError(f"{p}, line {n}: not numbers after the token. Expected `token v1 ... vD`.") from None
    if not dim:
        raise DataError(f"{p}: no vectors found; expected lines like `token 0.1 -0.2 ...`.")
    return out, dim


def _vector_dim(path: str) -> int:
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                return int(parts[1])
            if len(parts) >= 3:
                return len(parts) - 1
    raise DataError(f"{path}: no vectors found; expected lines like `token 0.1 -0.2 ...`.")


def init_from_vectors(model: Any, tokenizer: Any, path: str) -> dict[str, Any]:
    """Copy static vectors into the input embeddings of the tokens they cover (``##x`` pieces use the
    vector of ``x`` if there is one); the others keep their random initialization."""
    vocab = tokenizer.get_vocab()
    keys = {t[2:] if t.startswith("##") else t: t for t in vocab}
    vecs, dim = read_vectors(path, set(keys))
    emb = model.get_input_embeddings().weight
    if emb.shape[1] != dim:
        raise DataError(f"{path}: vectors have {dim} dimensions but the embeddings have {emb.shape[1]}; pass "
                        f"--hidden {dim} (transformer) or leave --embedding-dim at 0 (bilstm).")
    covered = 0
    with torch.no_grad():
        scale = float(emb.std())
        all_v = np.stack(list(vecs.values())) if vecs else np.zeros((1, dim), np.float32)
        std = float(all_v.std()) or 1.0
        for word, tok in keys.items():
            v = vecs.get(word)
            if v is not None:
                emb[vocab[tok]] = torch.from_numpy(v * (scale / std))
                covered += 1
    return {"vectors": str(path), "dim": dim, "covered": covered, "vocab": len(vocab),
            "coverage": round(covered / max(len(vocab), 1), 4)}


def build_scratch(cfg: ScratchConfig, labels: list[str], texts: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, info): a tokenizer learned on ``texts`` and a randomly initialized model."""
    from transformers import BertConfig, BertForSequenceClassification

    from ..config import PretrainConfig
    from ..pretrain import train_tokenizer

    tok = train_tokenizer(texts, PretrainConfig(vocab_size=cfg.vocab_size, max_len=cfg.max_len))
    id2label = dict(enumerate(labels))
    common = {"num_labels": len(labels), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()},
              "pad_token_id": tok.pad_token_id}
    torch.manual_seed(cfg.seed)
    if cfg.arch == "transformer":
        conf = BertConfig(vocab_size=len(tok), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                          num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                          max_position_embeddings=cfg.max_len, **common)
        model = BertForSequenceClassification(conf)
    else:
        dim = cfg.embedding_dim or (_vector_dim(cfg.vectors) if cfg.vectors else cfg.hidden)
        model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=len(tok), embedding_dim=dim,
                                                             hidden_size=cfg.hidden, num_layers=cfg.layers, **common))
    model.config.problem_type = "single_label_classification"
    info: dict[str, Any] = {"arch": cfg.arch, "vocab_size": len(tok),
                            "parameters": int(sum(p.numel() for p in model.parameters()))}
    if cfg.vectors:
        info["static_vectors"] = init_from_vectors(model, tok, cfg.vectors)
    return model, tok, info


# -- the family protocol (see niche.families) ------------------------------------------------------

CONFIG = ScratchConfig
USES_BASE = False  # ScratchConfig inherits a `base` field from TransformerConfig; a scratch model has none


def fit(cfg: ScratchConfig, task: Any) -> tuple[Any, dict[str, Any]]:
    """Learn a tokenizer on the training texts, build a random model, train it with the transformer
    family's loop."""
    model, tok, info = build_scratch(cfg, task.labels, task.train.texts)
    tm, facts = train_encoded(TransformerModel(cfg, model, tok), cfg, task)
    return tm, facts | info


def load(path: Path, cfg: ScratchConfig, info: dict[str, Any]) -> Any:
    return TransformerModel.load(path, cfg)


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    arch = info["training"].get("arch", "scratch")
    return [f"- base: none (random initialization, {arch}; tokenizer learned on the training data)"], []
