"""Sentence embeddings from an encoder: mean pooling over tokens, L2-normalized.

This is how all-MiniLM-L6-v2 was trained to be used (sentence-transformers), so cosine
similarity between two embeddings is a meaningful similarity of the two texts.

    enc = SentenceEncoder.load("all-MiniLM-L6-v2")
    E = enc.embed(["where is my card", "I lost my card"])   # (2, 384), rows of unit length
    E @ E.T                                                  # cosine similarities
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from ..families.transformer import pick_device, plan_batches, quiet_hf, resolve_base


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
        from transformers import AutoModel, AutoTokenizer

        src = resolve_base(str(name_or_dir))
        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(src)
                model = AutoModel.from_pretrained(src)
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"cannot load the sentence encoder {name_or_dir!r} ({src}): {e}") from None
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
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            hidden = self.model(input_ids=input_ids.to(self.device),
                                attention_mask=mask.to(self.device)).last_hidden_state  # (B, T, H)
            m = mask.to(self.device).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H) mean over real tokens
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[np.asarray(idx)] = pooled.float().cpu().numpy()
        return out
