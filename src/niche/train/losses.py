"""Losses the training loops take as an argument: cross-entropy, distillation, masked-LM.

A classification loss sees one micro-batch at a time but is normalized by the *global* batch
(``norms``), so that gradients summed over processes and micro-batches equal the single-process
gradient of the whole batch (see :mod:`niche.train.loop`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency of the labeled rows (``y >= 0``), mean 1 over rows."""
    known = y[y >= 0]
    counts = np.bincount(known, minlength=n_classes).astype(np.float64)
    return len(known) / (n_classes * np.maximum(counts, 1))


class CrossEntropy:
    """(Optionally class-weighted) cross-entropy over the labels ``y`` (rows labeled -100 are ignored).

    Args:
        y: label index per training row.
        weight: per-class weights (:func:`class_weights`), or None.
    """

    def __init__(self, y: np.ndarray, weight: np.ndarray | None = None):
        self.y = y
        self.weight = weight
        self._w: torch.Tensor | None = None

    def norms(self, batch: list[int]) -> tuple[float, float]:
        """Normalizers of the *global* batch: total class weight of its labeled rows (the denominator
        of a weighted-mean cross-entropy) and its row count (KL ``batchmean``)."""
        y = self.y[batch]
        y = y[y >= 0]
        return (float(self.weight[y].sum()) if self.weight is not None else float(len(y))), float(len(batch))

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor, ce_norm: float) -> torch.Tensor | None:
        if ce_norm <= 0 or not bool((labels >= 0).any()):
            return None
        if self.weight is not None and (self._w is None or self._w.device != logits.device):
            self._w = torch.tensor(self.weight, dtype=torch.float32, device=logits.device)
        return F.cross_entropy(logits, labels, weight=self._w if self.weight is not None else None,
                               ignore_index=-100, reduction="sum") / ce_norm

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, rows: list[int], norms: tuple[float, float]) -> torch.Tensor:
        """This micro-batch's share of the global-batch loss."""
        ce = self.cross_entropy(logits, labels, norms[0])
        return ce if ce is not None else logits.sum() * 0.0


class Distillation(CrossEntropy):
    """``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)`` (Hinton et al. 2015).

    Rows labeled -100 (unlabeled transfer texts) contribute the KL term only.

    Args:
        soft: teacher logits, shape (N, K), one row per training row.
    """

    def __init__(self, y: np.ndarray, soft: np.ndarray, alpha: float = 0.5, temperature: float = 2.0,
                 weight: np.ndarray | None = None):
        super().__init__(y, weight)
        self.soft, self.alpha, self.temperature = soft, alpha, temperature

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, rows: list[int], norms: tuple[float, float]) -> torch.Tensor:
        ce_norm, kl_norm = norms
        ce = self.cross_entropy(logits, labels, ce_norm)
        T = self.temperature
        teacher = torch.as_tensor(self.soft[rows], dtype=torch.float32, device=logits.device) / T
        kl = F.kl_div(torch.log_softmax(logits / T, -1), torch.log_softmax(teacher, -1),
                      log_target=True, reduction="sum") * (T * T) / kl_norm
        if self.alpha >= 1 or ce_norm == 0:
            return kl
        return (1 - self.alpha) * (ce if ce is not None else kl * 0.0) + self.alpha * kl


class MaskedLM:
    """Masked-LM cross-entropy computing the vocabulary projection only at the masked positions (BERT
    models; ~40 % less compute for a small model with an 8k vocabulary). Other architectures take
    the stock forward.

    Called as ``loss(model, inputs, labels)`` with ``labels`` -100 at unmasked positions.
    """

    def __call__(self, model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
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
            return F.cross_entropy(logits.float(), target, ignore_index=-100)
        return model(**inputs, labels=labels).loss
