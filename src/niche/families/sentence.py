"""The ``sentence`` family: a sentence encoder + a logistic-regression head (SetFit's recipe).

A text is the mean of the encoder's output states over its tokens, scaled to unit length (the
sentence-transformers pooling of the default all-MiniLM-L6-v2). With ``pair_steps > 0`` the encoder
is first tuned contrastively, as SetFit does (Tunstall et al. 2022): pairs of training texts are
drawn (per text and iteration one of the same label, target cosine 1, and one of another label,
target 0) and the squared error between the pair's cosine and its target is minimised. Then a
multinomial logistic regression is fitted on the (frozen) vectors of the training texts, its ``C``
chosen on dev log-loss. With a handful of labels per class this is the strong recipe: the encoder
already places similar sentences together, and the head has only ``dim x classes`` weights to learn.

The saved directory is a plain Hugging Face encoder directory (``config.json``, ``model.safetensors``,
tokenizer files; ``AutoModel.from_pretrained(dir)`` opens it) plus ``sentence.json`` (settings) and
``head.safetensors`` (the head's weight and bias). Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SentenceConfig
from ..errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

META = "sentence.json"
HEAD = "head.safetensors"
C_GRID = (0.1, 1.0, 10.0, 100.0)


@dataclass
class PairState:
    """What the callbacks of a fit see after each contrastive step (the fields the transformer's
    training state shares: ``global_step``, ``total_steps``, ``stopped_early``)."""

    global_step: int = 0
    total_steps: int = 0
    stopped_early: bool = False
    losses: list[float] = field(default_factory=list)


def draw_pairs(y: np.ndarray, iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's pair pool: for each iteration and each text, one partner of the same label (target 1)
    and one of another label (target 0), shuffled. A label with one text pairs it with itself."""
    rng = random.Random(seed)
    by: dict[int, list[int]] = {}
    for i, lab in enumerate(y.tolist()):
        by.setdefault(lab, []).append(i)
    others = {lab: [i for i in range(len(y)) if y[i] != lab] for lab in by}
    pairs = []
    for _ in range(iterations):
        for i, lab in enumerate(y.tolist()):
            same = by[lab]
            pairs.append((i, _other(rng, same, i) if len(same) > 1 else i, 1.0))
            if others[lab]:
                pairs.append((i, rng.choice(others[lab]), 0.0))
    rng.shuffle(pairs)
    return pairs


def _other(rng: random.Random, pool: list[int], i: int) -> int:
    while True:
        j = rng.choice(pool)
        if j != i:
            return j


class SentenceModel:
    """A :class:`~niche.encoders.SentenceEncoder` and a softmax head ``W x + b`` on its vectors."""

    def __init__(self, cfg: SentenceConfig, encoder: Any, weight: np.ndarray, bias: np.ndarray):
        self.cfg = cfg
        self.encoder = encoder
        self.weight_ = np.asarray(weight, dtype=np.float32)  # (n_classes, dim)
        self.bias_ = np.asarray(bias, dtype=np.float32)  # (n_classes,)

    @property
    def n_classes(self) -> int:
        return int(self.weight_.shape[0])

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, cfg: SentenceConfig, task: Any) -> tuple["SentenceModel", dict[str, Any]]:
        import torch

        from ..encoders import SentenceEncoder

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        enc = SentenceEncoder.load(cfg.base, max_len=cfg.max_len, device=cfg.device)
        facts: dict[str, Any] = {"encoder": "frozen" if not cfg.pair_steps else "contrastive", "dim": enc.dim}
        t0 = time.perf_counter()
        if cfg.pair_steps:
            facts |= _contrastive(enc, cfg, task)
        facts["encoder_seconds"] = round(time.perf_counter() - t0, 2)
        X = enc.embed(task.train.texts)
        Xd = enc.embed(task.dev.texts) if len(task.dev) else np.zeros((0, enc.dim), np.float32)
        weight, bias, head = fit_head(X, task.y_train, Xd, task.y_dev, len(task.labels), cfg)
        return cls(cfg, enc, weight, bias), facts | head

    # -- inference --------------------------------------------------------------------------
    def embed(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(n, dim) unit-length text vectors."""
        return self.encoder.embed(list(texts), batch_size=batch_size or 128)

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        step = max(batch_size or 256, 1)
        parts = []
        for lo in range(0, len(texts), step):
            z = self.embed(texts[lo:lo + step], batch_size) @ self.weight_.T + self.bias_
            z -= z.max(1, keepdims=True)
            e = np.exp(z)
            parts.append(e / e.sum(1, keepdims=True))
            if progress is not None:
                progress.update(min(step, len(texts) - lo))
        return np.concatenate(parts) if parts else np.zeros((0, self.n_classes), dtype=np.float32)

    # -- persistence (no pickle) ----------------------------------------------------------------
    def save(self, d: Path) -> None:
        from safetensors.numpy import save_file

        self.encoder.save(d)
        save_file({"weight": np.ascontiguousarray(self.weight_), "bias": self.bias_}, str(d / HEAD))
        (d / META).write_text(json.dumps({"n_classes": self.n_classes, "dim": int(self.weight_.shape[1]),
                                          "max_len": self.cfg.max_len, "pooling": "mean", "normalize": True}),
                              encoding="utf-8")

    @classmethod
    def load(cls, d: Path, cfg: SentenceConfig) -> "SentenceModel":
        from ..encoders import SentenceEncoder, load_pretrained
        from ..modeldir import check_safetensors, damaged_files, read_family_files
        from .transformer import check_tokenizer_files, check_vocab

        fix = f"A sentence model needs {META}, {HEAD}, config.json, model.safetensors and its tokenizer files from " \
              "the same fit; retrain or restore it."
        meta, arrays = read_family_files(d, META, HEAD, fix)
        check_safetensors(d / "model.safetensors", fix)
        check_tokenizer_files(d)
        tok, net = load_pretrained(str(d), "the sentence encoder", fix)
        check_vocab(d, tok, net.get_input_embeddings().num_embeddings)
        with damaged_files(d, f"{META} / {HEAD}", fix):
            weight, bias = arrays["weight"], arrays["bias"]
            n, dim = int(meta["n_classes"]), int(meta["dim"])
        if weight.shape != (n, dim) or bias.shape != (n,) or dim != net.config.hidden_size:
            raise ModelLoadError(f"{d}: {HEAD} holds a head {weight.shape} + {bias.shape}, which does not fit {n} "
                                 f"classes on the encoder's {net.config.hidden_size} dimensions. {fix}")
        return cls(cfg, SentenceEncoder(net, tok, cfg.max_len, cfg.device), weight, bias)


def _contrastive(enc: Any, cfg: SentenceConfig, task: Any) -> dict[str, Any]:
    """Tune ``enc`` in place on pairs of training texts (see the module docstring); returns facts."""
    import torch
    from tqdm.auto import tqdm

    from ..encoders import mean_pool, pad_batch
    from ..train.optim import adamw

    y = np.asarray(task.y_train)
    if len(set(y.tolist())) < 2:
        raise ConfigError("the sentence family's contrastive steps need at least two labels in the training data; "
                          "pass pair_steps=0 for a frozen encoder.")
    pairs = draw_pairs(y, cfg.pair_iterations, cfg.seed)
    ids = enc.tokenizer(list(task.train.texts), truncation=True, max_length=cfg.max_len)["input_ids"]
    pad = enc.tokenizer.pad_token_id or 0
    net = enc.model
    steps, bs = cfg.pair_steps, cfg.batch_size
    warm = max(1, int(0.1 * steps))
    opt = adamw(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / steps))
    state = PairState(total_steps=steps)
    net.train()
    bar = tqdm(total=steps, desc="contrastive pairs", unit="step", disable=not task.progress, dynamic_ncols=True)
    try:
        for s in range(steps):
            batch = [pairs[(s * bs + k) % len(pairs)] for k in range(bs)]
            idx = [p[0] for p in batch] + [p[1] for p in batch]
            a, m = (torch.from_numpy(t).to(enc.device) for t in pad_batch([ids[i] for i in idx], pad, multiple=8))
            v = torch.nn.functional.normalize(mean_pool(net(input_ids=a, attention_mask=m).last_hidden_state, m), dim=-1)
            cos = (v[:bs] * v[bs:]).sum(-1)
            loss = torch.nn.functional.mse_loss(cos, torch.tensor([p[2] for p in batch], device=cos.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            state.global_step = s + 1
            state.losses.append(round(float(loss.detach()), 5))
            bar.update(1)
            for cb in task.callbacks:
                cb(state)
            if state.stopped_early:
                break
    finally:
        bar.close()
        net.eval()
    curve = state.losses[:: max(1, len(state.losses) // 50)]
    return {"pair_steps_done": state.global_step, "pairs": len(pairs), "stopped_early": state.stopped_early,
            "loss_curve": curve}


def fit_head(X: np.ndarray, y: np.ndarray, Xd: np.ndarray, yd: np.ndarray, n_classes: int,
             cfg: SentenceConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The logistic-regression head ``(weight (K, dim), bias (K,), facts)`` on the vectors ``X``; ``C``
    from ``cfg`` or chosen on dev log-loss (cross-validated log-loss on ``X`` without dev)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    present = np.unique(y)

    def fit(C: float, Xf: np.ndarray, yf: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=2000, random_state=cfg.seed).fit(Xf, yf)

    def full(lr: LogisticRegression, Xs: np.ndarray) -> np.ndarray:  # probabilities over all n_classes
        p = np.full((len(Xs), n_classes), 1e-12)
        p[:, lr.classes_] = lr.predict_proba(Xs)
        return p / p.sum(1, keepdims=True)

    if len(present) < 2:
        raise ConfigError(f"the sentence family needs at least two labels in the training data; found {len(present)}.")
    tried: dict[str, float] = {}
    if cfg.C:
        C, how = cfg.C, "set"
    else:
        if len(Xd):
            for c in C_GRID:
                tried[str(c)] = round(float(log_loss(yd, full(fit(c, X, y), Xd), labels=list(range(n_classes)))), 5)
            how = "dev log-loss"
        else:
            k = int(min(5, np.bincount(y)[present].min()))
            if k >= 2:
                folds = list(StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(X, y))
                for c in C_GRID:
                    tried[str(c)] = round(float(np.mean([log_loss(y[te], full(fit(c, X[tr], y[tr]), X[te]),
                                                                  labels=list(range(n_classes)))
                                                         for tr, te in folds])), 5)
                how = f"{k}-fold cross-validated log-loss"
        C = float(min(tried, key=tried.get)) if tried else 1.0
        how = how if tried else "default (too few texts per label to cross-validate)"
    lr = fit(C, X, y)
    weight = np.zeros((n_classes, X.shape[1]), dtype=np.float32)
    bias = np.full(n_classes, -30.0, dtype=np.float32)  # a label absent from training is never predicted
    if len(lr.classes_) == 2:  # sklearn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
        weight[lr.classes_[1]], bias[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
        bias[lr.classes_[0]] = 0.0
    else:
        weight[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
    return weight, bias, {"C": C, "C_chosen_by": how, "C_tried": tried}


# -- the family protocol (see niche.families) ------------------------------------------------------

CONFIG = SentenceConfig


def fit(cfg: SentenceConfig, task: Any) -> tuple[SentenceModel, dict[str, Any]]:
    return SentenceModel.fit(cfg, task)


def load(path: Path, cfg: SentenceConfig, info: dict[str, Any]) -> SentenceModel:
    model = SentenceModel.load(path, cfg)
    if model.n_classes != len(info["labels"]):
        raise ModelLoadError(f"{path}: {HEAD} is for {model.n_classes} classes but niche.json lists "
                             f"{len(info['labels'])} labels; the directory is inconsistent. Retrain it.")
    return model


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    t = info.get("training", {})
    cfg = info.get("config", {})
    enc = (f"tuned contrastively for {t.get('pair_steps_done', cfg.get('pair_steps'))} steps of "
           f"{cfg.get('batch_size')} pairs" if cfg.get("pair_steps") else "frozen")
    facts = [f"- base: `{info.get('base')}` (mean-pooled, unit-length sentence vectors; encoder {enc})",
             f"- head: logistic regression, C={t.get('C', cfg.get('C'))}"]
    usage = ["", "The encoder is a plain Hugging Face directory (`AutoModel.from_pretrained(dir)`); the head is",
             "`head.safetensors` (`weight`, `bias`: softmax(W v + b) of the mean-pooled, normalised vector v)."]
    return facts, usage
