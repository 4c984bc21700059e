"""The two towers and their training loop.

Item tower: the base encoder over the item text, mean-pooled, a linear adapter, L2-normalized.
User tower: the last ``history`` items of the user (their normalized pooled encoder outputs, from a
cache: no gradient into the encoder), attention-pooled with a learned query plus a learned
per-position (recency) bias, a linear map into the item space, L2-normalized.
Score = cosine(user, item) + a text-derived item prior.

Training (next-item prediction in time order) is in two phases, see :func:`train_towers`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...config import DEFAULT_BASE
from ...encoders import mean_pool, pad_batch, plan_batches
from ...errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class RecommendConfig:
    """Settings of ``niche recommend train``; defaults train on MovieLens-small in ~8-15 min on 2 CPU cores."""

    base: str = DEFAULT_BASE
    """Base encoder (local dir or alias); resolved like the classifier's ``--base``."""
    max_len: int = 64
    """Tokens per item text; MovieLens titles + genres + tags average ~30."""
    history: int = 20
    """N: the user is their last N interacted items."""
    tower_epochs: int = 3
    """Phase 1: epochs over all (history, next item) pairs training the towers on a frozen item cache."""
    tower_batch_size: int = 512
    negatives: int = 2048
    """Uniformly sampled negatives per step (besides the batch's other next items), scored from the cache."""
    steps: int = 0
    """Phase 2: optimizer steps fine-tuning the encoder's top layers; 0 (default) keeps the base encoder.
    Measured on MovieLens (leave-last-out): 150 steps lowered NDCG@10 of the text score from 0.0520 to
    0.0316 (blended 0.0661 -> 0.0583), so it is off unless asked for (docs/recommend.md)."""
    batch_size: int = 64
    """(history, next item) pairs per fine-tuning step (their next items are encoded live)."""
    temperature: float = 0.05
    lr: float = 5e-5
    """Encoder learning rate (top layers only)."""
    head_lr: float = 2e-3
    """Learning rate of the towers' small parameters (adapter, attention, recency bias)."""
    train_layers: int = 2
    """Top encoder layers fine-tuned; the embeddings and lower layers stay frozen (CPU budget)."""
    refresh_every: int = 1000
    """Re-encode the negatives' item cache every N fine-tuning steps (one pass over all items costs
    ~1-2 min on 2 cores, so by default the cache stays the base encoder's for the short phase 2)."""
    max_minutes: float = 30.0
    """Training stops after this many minutes even if ``steps`` are not done (the budget)."""
    cooc_neighbors: int = 200
    """Item-item co-occurrence neighbours kept per item for the collaborative part."""
    blend: bool = True
    """Blend the text score with co-occurrence and popularity, weights picked on a validation split."""
    eval_batch_size: int = 128
    seed: int = 0
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default."""

    def validate(self) -> None:
        for k in ("max_len", "history", "tower_batch_size", "batch_size", "negatives", "refresh_every", "cooc_neighbors", "eval_batch_size"):
            v = getattr(self, k)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{k} must be a positive integer, got {v!r}.")
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8 tokens, got {self.max_len}.")
        if not 0 < self.temperature <= 1:
            raise ConfigError(f"temperature must be in (0, 1], got {self.temperature}.")
        if min(self.steps, self.tower_epochs, self.train_layers, self.threads) < 0:
            raise ConfigError("steps, tower_epochs, train_layers and threads must be >= 0.")
        if not self.lr > 0 or not self.head_lr > 0 or not self.max_minutes > 0:
            raise ConfigError("lr, head_lr and max_minutes must be > 0.")


class Towers(torch.nn.Module):
    """The small trainable heads of both towers (the encoder lives outside)."""

    def __init__(self, dim: int, history: int):
        super().__init__()
        self.item_adapter = torch.nn.Linear(dim, dim)
        self.user_map = torch.nn.Linear(dim, dim)
        for lin in (self.item_adapter, self.user_map):  # start as the identity: the base space is already good
            torch.nn.init.eye_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        self.query = torch.nn.Parameter(torch.zeros(dim))
        self.item_bias = torch.nn.Linear(dim, 1)  # text-derived prior (e.g. what kind of item is popular)
        torch.nn.init.zeros_(self.item_bias.weight)
        torch.nn.init.zeros_(self.item_bias.bias)
        # recency prior: position 0 = most recent; starts as a gentle decay
        self.recency = torch.nn.Parameter(-0.1 * torch.arange(history, dtype=torch.float32))

    def items(self, pooled: torch.Tensor) -> torch.Tensor:
        """(n, d) pooled encoder outputs -> (n, d) unit item vectors."""
        return F.normalize(self.item_adapter(pooled), dim=-1)

    def bias(self, pooled: torch.Tensor) -> torch.Tensor:
        """(n, d) pooled encoder outputs -> (n,) text-derived logit bias."""
        return self.item_bias(pooled).squeeze(-1)

    def users(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hist (B, N, d) unit pooled encoder outputs of the history, most recent first (not through the
        item adapter: ``user_map`` maps into the item space, which keeps a step cheap); mask (B, N)
        True = real item -> (B, d) unit user vectors."""
        logits = hist @ self.query + self.recency[: hist.shape[1]]  # (B, N)
        logits = logits.masked_fill(~mask, float("-inf"))
        w = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all-masked rows -> zeros
        pooled = (w.unsqueeze(-1) * hist).sum(1)  # (B, d)
        return F.normalize(self.user_map(pooled), dim=-1)


class ItemEncoder:
    """Tokenizer + ``AutoModel`` with mean pooling; one encoding path for training, caching and serving."""

    def __init__(self, model: Any, tokenizer: Any, max_len: int, source: str = ""):
        self.model, self.tokenizer, self.max_len, self.source = model, tokenizer, max_len, source

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_len, verbose=False)["input_ids"]

    def pooled(self, ids: list[list[int]]) -> torch.Tensor:
        """(n, d) masked mean of the last hidden states (sentence-transformers pooling)."""
        inp, mask = (torch.from_numpy(a) for a in pad_batch(ids, self.tokenizer.pad_token_id or 0))
        h = self.model(input_ids=inp, attention_mask=mask).last_hidden_state  # (n, T, d)
        return mean_pool(h, mask)

    @torch.inference_mode()
    def pooled_all(self, ids: list[list[int]], batch_size: int = 128, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Pooled outputs of many texts, batched by length (little padding), in input order."""

        was = self.model.training
        self.model.eval()
        out = torch.zeros((len(ids), self.model.config.hidden_size))
        for idx in plan_batches([len(x) for x in ids], batch_size, 64):
            out[torch.as_tensor(idx.copy())] = self.pooled([ids[i] for i in idx]).float()
            if progress:
                progress(len(idx))
        self.model.train(was)
        return out

    def freeze_below(self, train_layers: int) -> list[torch.nn.Parameter]:
        """Freeze embeddings and all but the top ``train_layers`` layers; returns the trainable params."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        layers = _layers(self.model)
        trainable = []
        for layer in layers[len(layers) - train_layers:] if train_layers else []:
            for p in layer.parameters():
                p.requires_grad_(True)
                trainable.append(p)
        return trainable


def _layers(model: Any) -> Any:
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}; pass --train-layers 0.")


def history_batch(seqs: list[np.ndarray], pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For (user, position) pairs, the up-to-``n`` items before the position, most recent first.

    Returns:
        (hist, mask): (B, n) item codes (0 where padded) and (B, n) bool.
    """
    hist = np.zeros((len(pairs), n), dtype=np.int64)
    mask = np.zeros((len(pairs), n), dtype=bool)
    for r, (u, t) in enumerate(pairs):
        h = seqs[u][max(0, t - n):t][::-1]
        hist[r, : len(h)] = h
        mask[r, : len(h)] = True
    return hist, mask


_BASE_CACHE: dict[tuple, torch.Tensor] = {}


def base_cache(enc: ItemEncoder, token_ids: list[list[int]], batch_size: int = 128) -> torch.Tensor:
    """The base encoder's pooled outputs (I, d) for these items, computed once per process: the two
    fits of ``evaluate`` and the final embedding of an un-fine-tuned model reuse them. Only valid
    before ``enc`` is fine-tuned (keyed by the encoder's source directory)."""
    key = (enc.source, enc.max_len, hash(tuple(map(tuple, token_ids))))
    if key not in _BASE_CACHE:
        _BASE_CACHE.clear()
        _BASE_CACHE[key] = enc.pooled_all(token_ids, batch_size).clone()  # clone: a normal (non-inference) tensor
    return _BASE_CACHE[key]


def _candidates(rng: np.random.Generator, targets: np.ndarray, n_items: int, negatives: int) -> tuple[np.ndarray, torch.Tensor]:
    """The batch's distinct next items followed by up to ``negatives`` uniformly sampled other items.

    Returns:
        (cand, tgt): item codes (C,) and, per example, the position of its next item in ``cand``.
    """
    uniq, inv = np.unique(targets, return_inverse=True)
    neg = rng.choice(n_items, size=min(negatives, n_items), replace=False)
    neg = neg[~np.isin(neg, uniq)]
    return np.concatenate([uniq, neg]), torch.as_tensor(inv)


def _softmax_loss(user_vec: torch.Tensor, items: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """Sampled-softmax cross-entropy: logits = cos(u, v) / T + b(text) over the candidates.
    Uniform negatives need no log-Q correction (it is a constant), so b learns popularity."""
    return F.cross_entropy(user_vec @ items.T / temperature + bias, targets)


def train_towers(enc: ItemEncoder, towers: Towers, token_ids: list[list[int]], seqs: list[np.ndarray],
                 cfg: RecommendConfig, progress: Callable[[str], None] | None = None,
                 after_phase1: Callable[[torch.Tensor], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Next-item training in two phases (``after_phase1(cache)`` may measure the model in between). ``seqs``: per user, item codes in time order.

    1. Towers only (``tower_epochs`` over every (history, next item) pair), encoder frozen: item
       vectors come from one cache of pooled encoder outputs, so a full softmax over all items costs
       one (B, d) x (d, I) product. This learns the adapter, the recency attention and a text-derived
       item bias (what kind of item is popular) in about a minute.
    2. Encoder fine-tuning (``steps``, top ``train_layers`` layers): the batch's next items are encoded
       live with gradient; every other item is a negative scored from the cache, which is refreshed
       every ``refresh_every`` steps. Stops at ``max_minutes``.

    Returns:
        training stats: steps per phase, seconds, loss curves, whether the budget stopped it.
    """
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pairs = np.array([(u, t) for u, s in enumerate(seqs) for t in range(1, len(s))], dtype=np.int64)
    if len(pairs) == 0:

        raise DataError("no user has two or more interactions, so there is no next item to learn from; "
                        "recommendation needs interaction histories.")
    t0 = time.perf_counter()
    enc_params = enc.freeze_below(cfg.train_layers)
    cache = base_cache(enc, token_ids, cfg.eval_batch_size).clone()  # (I, d)
    unit = F.normalize(cache, dim=-1)  # history inputs of the user tower
    if progress:
        progress(f"encoded {len(token_ids)} items ({time.perf_counter() - t0:.0f} s)")
    targets_all = np.array([seqs[u][t] for u, t in pairs])
    n_items = len(token_ids)

    # phase 1: towers on the frozen cache, full softmax
    opt = torch.optim.AdamW(towers.parameters(), lr=cfg.head_lr, weight_decay=0.0)
    curve1: list[float] = []
    bs = cfg.tower_batch_size
    for epoch in range(cfg.tower_epochs):
        order = rng.permutation(len(pairs))
        losses = []
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            hist, mask = history_batch(seqs, pairs[idx], cfg.history)
            cand, tgt = _candidates(rng, targets_all[idx], n_items, cfg.negatives)  # (C,), (B,) positions in cand
            user_vec = towers.users(unit[torch.as_tensor(hist)], torch.as_tensor(mask))  # (B, d)
            pooled = cache[torch.as_tensor(cand)]
            loss = _softmax_loss(user_vec, towers.items(pooled), towers.bias(pooled), tgt, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curve1.append(round(float(np.mean(losses)), 4))
        if progress:
            progress(f"towers epoch {epoch + 1}/{cfg.tower_epochs}: loss {curve1[-1]:.3f} ({time.perf_counter() - t0:.0f} s)")

    phase1 = after_phase1(cache) if after_phase1 else {}

    # phase 2: fine-tune the encoder's top layers with the towers
    groups = [{"params": list(towers.parameters()), "lr": cfg.head_lr / 10}]
    if enc_params:
        groups.append({"params": enc_params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    steps = cfg.steps if enc_params else 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.05, 1 - s / max(steps, 1)))
    curve2, window, done, budget_hit = [], [], 0, False
    for step in range(steps):
        if step and step % cfg.refresh_every == 0:
            cache = enc.pooled_all(token_ids, cfg.eval_batch_size).clone()
            unit = F.normalize(cache, dim=-1)
        enc.model.train()
        idx = rng.choice(len(pairs), size=min(cfg.batch_size, len(pairs)), replace=False)
        hist, mask = history_batch(seqs, pairs[idx], cfg.history)
        cand, tgt = _candidates(rng, targets_all[idx], n_items, cfg.negatives)
        n_live = len(np.unique(targets_all[idx]))  # cand starts with the batch's distinct next items
        live = enc.pooled(token_ids_of(token_ids, cand[:n_live]))  # (U, d), gradient into the top layers
        pooled = torch.cat([live, cache[torch.as_tensor(cand[n_live:])]])  # negatives from the cache
        user_vec = towers.users(unit[torch.as_tensor(hist)], torch.as_tensor(mask))
        loss = _softmax_loss(user_vec, towers.items(pooled), towers.bias(pooled), tgt, cfg.temperature)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        done = step + 1
        window.append(loss.item())
        if len(window) == 10:
            curve2.append(round(float(np.mean(window)), 4))
            window = []
            if progress:
                progress(f"fine-tune step {done}/{steps}: loss {curve2[-1]:.3f} ({time.perf_counter() - t0:.0f} s)")
        if time.perf_counter() - t0 > 60 * cfg.max_minutes:
            log.warning("fine-tuning stopped by the %.1f-minute budget after %d steps", cfg.max_minutes, done)
            budget_hit = True
            break
    if window:
        curve2.append(round(float(np.mean(window)), 4))
    return {"pairs": len(pairs), "tower_epochs": cfg.tower_epochs, "tower_loss_curve": curve1, "after_phase1": phase1,
            "finetune_steps": done, "finetune_loss_curve": curve2, "stopped_by_budget": budget_hit,
            "seconds": round(time.perf_counter() - t0, 1)}


def token_ids_of(token_ids: list[list[int]], idx: np.ndarray) -> list[list[int]]:
    return [token_ids[i] for i in idx]
