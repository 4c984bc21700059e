"""The ``static`` family: static token embeddings + a small head (the model2vec idea).

Building the embeddings (``tokenizer="base"``): every token of the base model's vocabulary is
encoded once on its own (``[CLS] token [SEP]``, mean of the output states), the vectors are reduced
to ``dim`` dimensions by PCA, and each is scaled by its SIF weight a / (a + p), p its frequency in
the training texts (Arora et al. 2017), so frequent function words count less. A text is the mean
of its tokens' vectors; a linear or one-hidden-layer head on top is trained on the labels, with the
vectors fine-tuned too (``train_embeddings``) and early stopping on dev accuracy. The ``cnn`` head
also sees word order: filters over every window of ``width`` consecutive token vectors, max-pooled
over the text (Kim 2014), next to the mean. At prediction time a filter's product with each token
vector is a table lookup (the filter is linear before its ReLU), so it stays a few lookups per token.

``tokenizer="chars"`` (CJK text, which the default base does not cover, or ``base="none"``): tokens
are CJK characters and other words, the vocabulary is learned on the training texts and the vectors
start random, plus hashed token bigrams (fastText's recipe).

Prediction is numpy only: tokenize (Rust tokenizers), one sparse (texts x tokens) x (tokens x dim)
product (plus the cnn's table lookups), the head. Saved without pickle: ``static.safetensors``
(vectors with the SIF weights folded in, head), ``static.json`` (settings, the chars vocabulary)
and, for ``base``, ``tokenizer.json``.

The base model also makes a fine-tuned transformer's knowledge portable: ``base=<niche transformer
dir>`` distils its (fine-tuned) encoder; ``niche distill --student static`` adds its soft labels.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save_file

from ..config import StaticConfig
from ..errors import ConfigError, ModelLoadError
from ..modeldir import damaged_files, read_family_files

log = logging.getLogger(__name__)

WEIGHTS = "static.safetensors"
META = "static.json"
TOKENIZER = "tokenizer.json"
UNK = 0  # row 0 of the chars vocabulary: unknown tokens (a zero, untrained vector)
_CHARS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+|[^\w\s]", re.UNICODE)
_TOKEN_VECTORS: dict[str, tuple[np.ndarray, str]] = {}  # resolved base dir -> (vectors, tokenizer json), per process


def chars_tokens(text: str) -> list[str]:
    """CJK characters one by one, runs of other letters/digits as words, punctuation marks alone."""
    return _CHARS.findall(text.lower())


# -- the token vectors of a base model ----------------------------------------------------------

def cache_dir() -> Path:
    """Where niche caches what it computed itself: ``$NICHE_CACHE``, else ``~/.cache/niche``."""
    import os

    return Path(os.environ.get("NICHE_CACHE") or Path.home() / ".cache" / "niche")


def _cache_key(src: str) -> str | None:
    """sha256 over a local base directory's weights, config and tokenizer files (None: not a local directory)."""
    import hashlib

    d = Path(src)
    if not d.is_dir():
        return None
    h = hashlib.sha256(b"niche-static-token-vectors-v1")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        f = d / name
        if f.is_file():
            h.update(name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:32]


def base_token_vectors(base: str, batch_size: int = 512, progress: bool = False) -> tuple[np.ndarray, str]:
    """(V, hidden) output vectors of every vocabulary token of ``base`` encoded alone, and the
    tokenizer's JSON. About 25 s for MiniLM-L6 on 2 idle cores, so the result is kept per process and,
    for a local base directory, in :func:`cache_dir` (a safetensors file keyed by the sha256 of the
    base's files, written atomically; a damaged one is recomputed)."""
    import torch
    from tqdm.auto import tqdm
    from ..encoders import load_pretrained, resolve_base

    src = resolve_base(base)
    if src in _TOKEN_VECTORS:
        return _TOKEN_VECTORS[src]
    key = _cache_key(src)
    cached = cache_dir() / f"static-vectors-{key}.safetensors" if key else None
    if cached is not None and cached.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cached), framework="numpy") as f:
                result = (f.get_tensor("vectors"), f.metadata()["tokenizer"])
            _TOKEN_VECTORS[src] = result
            return result
        except Exception:  # damaged or foreign file: recompute and replace it
            log.warning("ignoring the unreadable cache file %s", cached)
    tok, model = load_pretrained(src, "the static family's base model", "Pass base= a local Hugging Face model "
                                 "directory, or base='none' for random embeddings.")
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"base {base!r} has no fast (Rust) tokenizer; the static family needs tokenizer.json.")
    model.eval()
    V = len(tok)
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    out = np.zeros((V, model.config.hidden_size), np.float32)
    with torch.inference_mode(), tqdm(total=V, desc="encoding the vocabulary", unit="token", disable=not progress,
                                      dynamic_ncols=True) as bar:
        for lo in range(0, V, batch_size):
            ids = torch.arange(lo, min(V, lo + batch_size))[:, None]
            parts = [ids]
            if cls_id is not None:
                parts.insert(0, torch.full_like(ids, cls_id))
            if sep_id is not None:
                parts.append(torch.full_like(ids, sep_id))
            x = torch.cat(parts, 1)
            h = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            out[lo:lo + len(ids)] = h.mean(1).float().numpy()
            bar.update(len(ids))
    result = (out, tok.backend_tokenizer.to_str())
    _TOKEN_VECTORS[src] = result
    if cached is not None:
        import os

        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            save_file({"vectors": out}, str(tmp), metadata={"tokenizer": result[1], "base": src})
            tmp.replace(cached)
        except OSError as e:  # a read-only or full cache only costs the recomputation next time
            log.warning("could not write the cache file %s: %s", cached, e)
    return result


def pca(X: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``X`` reduced to its top ``dim`` principal components (kept whole when it has fewer)."""
    from sklearn.decomposition import PCA

    if dim >= min(X.shape):
        return X - X.mean(0)
    return PCA(n_components=dim, random_state=seed).fit_transform(X).astype(np.float32)


# -- the model ----------------------------------------------------------------------------------

class StaticModel:
    """Fitted state of the static family (see the module docstring)."""

    def __init__(self, cfg: StaticConfig):
        self.cfg = cfg
        self._tables: tuple[list[np.ndarray], np.ndarray] | None = None  # the cnn head's, built on first use

    # -- tokens ---------------------------------------------------------------------------
    def _mode(self, texts: list[str]) -> str:
        from .sparse import cjk_share

        if self.cfg.tokenizer != "auto":
            return self.cfg.tokenizer
        if self.cfg.base.lower() == "none" or cjk_share(texts) > 0.3:
            return "chars"
        return "base"

    def unigram_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, its token ids in order, at most ``max_tokens``."""
        m = self.cfg.max_tokens
        if self.mode_ == "base":
            encs = self.tokenizer_.encode_batch(texts, add_special_tokens=False)
            return [np.asarray(e.ids[:m], dtype=np.int64) for e in encs]
        vocab = self.vocab_
        return [np.fromiter((vocab.get(t, UNK) for t in chars_tokens(x)[:m]), dtype=np.int64) for x in texts]

    def token_ids(self, texts: list[str], uni: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Per text, its token ids: the unigrams (``uni``, else tokenized here), then hashed bigrams."""
        uni = self.unigram_ids(texts) if uni is None else uni
        if not self.buckets_:
            return uni
        V, B = self.n_unigrams_, self.buckets_
        return [np.concatenate([u, V + (u[:-1] * 1_000_003 + u[1:]) % B]) if len(u) > 1 else u for u in uni]

    def bag(self, texts: list[str], uni: list[np.ndarray] | None = None) -> sp.csr_matrix:
        """(texts x rows) matrix of 1/len per token occurrence: its product with the vectors is the mean."""
        ids = self.token_ids(texts, uni)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        data = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(ids), self.rows_))

    # -- training -------------------------------------------------------------------------
    def fit(self, texts: list[str], y: np.ndarray, n_classes: int, dev_texts: list[str], dev_y: np.ndarray,
            soft: np.ndarray | None = None, progress: bool = False, init_head: bool = True) -> "StaticModel":
        """Build the vectors, then train the head (and the vectors) with early stopping on dev.

        ``soft`` (N, K): target distributions (a teacher's, for distillation) instead of ``y``.
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        self.n_classes_ = n_classes
        self.mode_ = self._mode(texts)
        rng = np.random.default_rng(cfg.seed)
        if self.mode_ == "base":
            from tokenizers import Tokenizer

            vectors, tok_json = base_token_vectors(cfg.base, progress=progress)
            self.tokenizer_ = Tokenizer.from_str(tok_json)
            self.tokenizer_.no_truncation()
            self.tokenizer_.no_padding()
            self.vocab_ = {}
            unigrams = pca(vectors, cfg.dim, cfg.seed)
            unigrams /= np.linalg.norm(unigrams, axis=1).mean()  # mean norm 1: one scale for every base
        else:
            counts: dict[str, int] = {}
            for t in texts:
                for w in chars_tokens(t):
                    counts[w] = counts.get(w, 0) + 1
            kept = sorted((w for w, c in counts.items() if c >= cfg.min_count), key=lambda w: (-counts[w], w))
            self.vocab_ = {w: i + 1 for i, w in enumerate(kept)}
            unigrams = (rng.standard_normal((len(kept) + 1, cfg.dim)) / np.sqrt(cfg.dim)).astype(np.float32)
            unigrams[UNK] = 0.0
        self.n_unigrams_, self.dim_ = unigrams.shape  # a base narrower than ``dim`` keeps its width
        self.buckets_ = (50_000 if self.mode_ == "chars" else 0) if cfg.bigram_buckets < 0 else cfg.bigram_buckets
        self.rows_ = self.n_unigrams_ + self.buckets_
        bigrams = (rng.standard_normal((self.buckets_, self.dim_)) * (0.1 / np.sqrt(self.dim_))).astype(np.float32)
        emb = np.concatenate([unigrams, bigrams]) if self.buckets_ else unigrams
        train_uni, dev_uni = self.unigram_ids(texts), self.unigram_ids(dev_texts)
        train_ids, dev_ids = self.token_ids(texts, train_uni), self.token_ids(dev_texts, dev_uni)
        freq = np.bincount(np.concatenate(train_ids) if train_ids else np.zeros(0, np.int64),
                           minlength=self.rows_).astype(np.float64)
        p = freq / max(1.0, freq.sum())
        self.sif_ = (cfg.sif / (cfg.sif + p)).astype(np.float32) if cfg.sif > 0 else np.ones(self.rows_, np.float32)
        if self.mode_ == "chars":
            self.sif_[UNK] = 0.0
        build_s = time.perf_counter() - t0
        self.history_ = self._train(emb, train_ids, [len(u) for u in train_uni], y, dev_ids,
                                    [len(u) for u in dev_uni], dev_y, soft, progress)
        self.facts_ = {"tokenizer": self.mode_, "vocabulary": self.n_unigrams_, "bigram_buckets": self.buckets_,
                       "dim": self.dim_, "build_seconds": round(build_s, 2), "epochs": self.history_}
        if cfg.head == "cnn":
            self.facts_ |= {"filters": cfg.filters, "width": cfg.width}
        return self

    def _train(self, emb: np.ndarray, train_ids: list[np.ndarray], train_uni: list[int], y: np.ndarray,
               dev_ids: list[np.ndarray], dev_uni: list[int], dev_y: np.ndarray, soft: np.ndarray | None,
               progress: bool) -> list[dict[str, float]]:
        """``*_uni``: per text, how many of its ids are unigrams (the cnn head's windows run over those)."""
        import torch
        from torch import nn
        from tqdm.auto import tqdm

        cfg = self.cfg
        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        K = self.n_classes_
        cnn = cfg.head == "cnn"
        bag = nn.EmbeddingBag(self.rows_, self.dim_, mode="sum", sparse=True)  # only the rows of a batch move
        bag.weight.data.copy_(torch.from_numpy(emb))
        bag.weight.requires_grad_(cfg.train_embeddings)
        conv = nn.Linear(cfg.width * self.dim_, cfg.filters) if cnn else None
        width_in = self.dim_ + (cfg.filters if cnn else 0)
        if cfg.head == "mlp":
            head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width_in, cfg.hidden), nn.ReLU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, K))
        else:
            head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width_in, K))
        sif = torch.from_numpy(self.sif_)
        dense = list(head.parameters()) + (list(conv.parameters()) if conv is not None else [])
        opts = [torch.optim.Adam(dense, lr=cfg.lr)]
        if cfg.train_embeddings:
            opts.append(torch.optim.SparseAdam(list(bag.parameters()), lr=cfg.lr / 3))
        target = torch.from_numpy(soft.astype(np.float32)) if soft is not None else torch.from_numpy(y.astype(np.int64))
        n = len(train_ids)

        def features(ids: list[np.ndarray], n_uni: list[int]) -> torch.Tensor:
            """The head's input: the SIF-weighted mean of the token vectors (+ the cnn's max-pooled filters)."""
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            if not cnn:
                flat = torch.from_numpy(np.concatenate(ids)) if len(ids) else torch.zeros(0, dtype=torch.long)
                offsets = torch.from_numpy(np.r_[0, np.cumsum(lengths)[:-1]])
                w = sif[flat] / torch.from_numpy(np.repeat(np.maximum(lengths, 1), lengths).astype(np.float32))
                return bag(flat, offsets, per_sample_weights=w)
            T = max(1, int(lengths.max(initial=0)))
            x = np.zeros((len(ids), T), np.int64)
            for i, a in enumerate(ids):
                x[i, :len(a)] = a
            pos = np.arange(T)
            every = torch.from_numpy(pos < lengths[:, None]).float()[..., None]          # (B, T, 1)
            uni = torch.from_numpy(pos < np.asarray(n_uni)[:, None]).float()[..., None]
            xt = torch.from_numpy(x)
            e = nn.functional.embedding(xt, bag.weight, sparse=True) * sif[xt][..., None]
            mean = (e * every).sum(1) / torch.from_numpy(np.maximum(lengths, 1).astype(np.float32))[:, None]
            eu = torch.cat([e * uni, e.new_zeros(len(ids), cfg.width - 1, self.dim_)], 1)  # zeros past the end
            windows = torch.cat([eu[:, i:i + T] for i in range(cfg.width)], 2)              # (B, T, width * dim)
            h = torch.relu(conv(windows)) * uni                                             # >= 0: 0 is neutral
            return torch.cat([mean, h.max(1).values], 1)

        def dev_accuracy() -> float:
            head.eval()
            with torch.inference_mode():
                step = 128 if cnn else 1024  # cnn: (texts x longest x width * dim) windows in memory
                pred = np.concatenate([head(features(dev_ids[i:i + step], dev_uni[i:i + step])).argmax(1).numpy()
                                       for i in range(0, len(dev_ids), step)]) if dev_ids else np.zeros(0)
            head.train()
            return float(np.mean(pred == dev_y)) if len(dev_ids) else 0.0

        def state() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            arrays = {f"head.{k}": v.clone() for k, v in head.state_dict().items()}
            if conv is not None:
                arrays |= {f"conv.{k}": v.clone() for k, v in conv.state_dict().items()}
            return bag.weight.detach().clone(), arrays

        rng = np.random.default_rng(cfg.seed)
        best, best_state, stale, history = -1.0, None, 0, []
        bar = tqdm(total=cfg.epochs, desc="static fit", unit="epoch", disable=not progress, dynamic_ncols=True)
        try:
            for epoch in range(cfg.epochs):
                order = rng.permutation(n)
                total = 0.0
                for lo in range(0, n, cfg.batch_size):
                    idx = order[lo:lo + cfg.batch_size]
                    logits = head(features([train_ids[i] for i in idx], [train_uni[i] for i in idx]))
                    t = target[idx]
                    if soft is not None:
                        loss = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
                    else:
                        loss = nn.functional.cross_entropy(logits, t)
                    for opt in opts:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for opt in opts:
                        opt.step()
                    total += float(loss.detach()) * len(idx)
                acc = dev_accuracy()
                history.append({"epoch": epoch + 1, "loss": round(total / max(1, n), 5), "dev_accuracy": round(acc, 5)})
                bar.update(1)
                bar.set_postfix(dev_acc=f"{acc:.4f}")
                if acc > best:
                    best, stale = acc, 0
                    best_state = state()
                else:
                    stale += 1
                    if stale > cfg.patience:
                        break
        finally:
            bar.close()
            torch.set_num_threads(threads)
        assert best_state is not None
        weight, arrays = best_state
        self.vectors_ = (weight.numpy() * self.sif_[:, None]).astype(np.float32)  # SIF folded in
        self._tables = None
        self.head_ = {k: v.numpy().astype(np.float32) for k, v in arrays.items()}
        return history

    # -- inference ------------------------------------------------------------------------
    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        keys = sorted({k.rsplit(".", 1)[0] for k in self.head_ if k.startswith("head.")},
                      key=lambda k: int(k.split(".")[1]))
        return [(self.head_[f"{k}.weight"], self.head_[f"{k}.bias"]) for k in keys]

    def _filters(self, uni: list[np.ndarray]) -> np.ndarray:
        """(n, filters): the cnn head's filters over every window of ``width`` consecutive token vectors
        (zeros past a text's end), ReLU, max over the windows; 0 for a text without tokens.

        The filter is linear before its ReLU, so window ``v_t .. v_t+w-1`` gives ``b + sum_i T_i[token_t+i]``
        with ``T_i = vectors @ W_i.T`` computed once per model (:meth:`_conv_tables`): a prediction looks
        rows up and adds them, no matrix product per text."""
        tables, bias = self._conv_tables()
        width = len(tables)
        lengths = np.fromiter((len(u) for u in uni), dtype=np.int64, count=len(uni))
        out = np.zeros((len(uni), len(bias)), np.float32)
        if not lengths.any():
            return out
        pad = np.full(width - 1, self.n_unigrams_, np.int64)  # the zero row of the tables
        seq = np.concatenate([np.concatenate([u, pad]) for u in uni])
        # window t of text j starts at offset_j + t: offsets in the padded sequence, positions within texts
        offsets = np.r_[0, np.cumsum(lengths + width - 1)[:-1]]
        first = np.r_[0, np.cumsum(lengths)[:-1]]
        starts = np.repeat(offsets - first, lengths) + np.arange(lengths.sum())
        h = tables[0][seq[starts]] + bias
        for i in range(1, width):
            h += tables[i][seq[starts + i]]
        np.maximum(h, 0, out=h)
        has = lengths > 0
        out[has] = np.maximum.reduceat(h, np.r_[0, np.cumsum(lengths[has])[:-1]], axis=0)
        return out

    def _conv_tables(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Per window offset i, the (unigrams + 1, filters) products of the unigram vectors with the
        filters' i-th block (last row: zeros, for positions past a text's end). Built on first use
        (MiniLM's 30,522 tokens x 256 filters x width 3: 94 MB, ~0.1 s)."""
        if self._tables is None:
            Wc, bc = self.head_["conv.weight"], self.head_["conv.bias"]
            d = self.dim_
            V = np.vstack([self.vectors_[:self.n_unigrams_], np.zeros((1, d), np.float32)])
            self._tables = ([np.ascontiguousarray(V @ Wc[:, i * d:(i + 1) * d].T) for i in range(Wc.shape[1] // d)],
                            bc)
        return self._tables

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """(n, n_classes) probabilities; ``batch_size`` is honoured for memory only."""
        step = batch_size or 4096
        parts = []
        layers = self._layers()
        cnn = "conv.weight" in self.head_
        for lo in range(0, len(texts), step):
            chunk = texts[lo:lo + step]
            uni = self.unigram_ids(chunk)
            h = np.asarray(self.bag(chunk, uni) @ self.vectors_)
            if cnn:
                h = np.hstack([h, self._filters(uni)])
            for i, (W, b) in enumerate(layers):
                h = h @ W.T + b
                if i < len(layers) - 1:
                    np.maximum(h, 0, out=h)
            h = h - h.max(1, keepdims=True)
            e = np.exp(h)
            parts.append(e / e.sum(1, keepdims=True))
            if progress is not None:
                progress.update(len(chunk))
        return np.concatenate(parts) if parts else np.zeros((0, self.n_classes_))

    # -- persistence (no pickle) ---------------------------------------------------------
    def save(self, d: Path) -> None:
        meta = {"mode": self.mode_, "n_classes": self.n_classes_, "n_unigrams": self.n_unigrams_,
                "buckets": self.buckets_, "max_tokens": self.cfg.max_tokens,
                "vocab": sorted(self.vocab_, key=self.vocab_.get) if self.mode_ == "chars" else None}
        (d / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if self.mode_ == "base":
            self.tokenizer_.save(str(d / TOKENIZER))
        save_file({"vectors": np.ascontiguousarray(self.vectors_)} | self.head_, str(d / WEIGHTS))

    @classmethod
    def load(cls, d: Path, cfg: StaticConfig) -> "StaticModel":
        fix = f"A static model needs {META}, {WEIGHTS} (and {TOKENIZER}) from the same fit; retrain or restore it."
        meta, arrays = read_family_files(d, META, WEIGHTS, fix)
        with damaged_files(d, f"{META} / {WEIGHTS}", fix):
            m = cls(cfg)
            m.mode_, m.n_classes_ = str(meta["mode"]), int(meta["n_classes"])
            m.n_unigrams_, m.buckets_ = int(meta["n_unigrams"]), int(meta["buckets"])
            m.rows_ = m.n_unigrams_ + m.buckets_
            m.vectors_ = arrays.pop("vectors")
            m.dim_ = m.vectors_.shape[1]
            m.head_ = arrays
            if m.mode_ == "base":
                from tokenizers import Tokenizer

                if not (d / TOKENIZER).is_file():
                    raise ModelLoadError(f"{d}: missing {TOKENIZER}. {fix}")
                m.tokenizer_ = Tokenizer.from_file(str(d / TOKENIZER))
                m.vocab_ = {}
                if m.tokenizer_.get_vocab_size() != m.n_unigrams_:
                    raise ModelLoadError(f"{d}: {TOKENIZER} has {m.tokenizer_.get_vocab_size()} tokens but the "
                                         f"vectors are for {m.n_unigrams_}; the files do not belong together. {fix}")
            else:
                m.vocab_ = {w: i + 1 for i, w in enumerate(meta["vocab"])}
                if len(m.vocab_) + 1 != m.n_unigrams_:
                    raise ValueError(f"vocab has {len(m.vocab_)} tokens for {m.n_unigrams_} rows")
            layers = m._layers()
        conv = m.head_.get("conv.weight")
        filters = 0 if conv is None else conv.shape[0]
        ok = conv is None or (conv.ndim == 2 and conv.shape[1] % m.dim_ == 0 and conv.shape[1] > 0
                              and m.head_.get("conv.bias", np.zeros(0)).shape == (filters,))
        dims = [m.dim_ + filters] + [W.shape[0] for W, _ in layers]
        ok = ok and bool(layers) and m.vectors_.shape[0] == m.rows_ and all(
            W.shape[1] == dims[i] for i, (W, _) in enumerate(layers))
        if not ok or dims[-1] != m.n_classes_:
            raise ModelLoadError(f"{d}: {WEIGHTS} holds vectors {m.vectors_.shape}, "
                                 f"{'conv ' + str(conv.shape) + ' and ' if conv is not None else ''}head layers "
                                 f"{[W.shape for W, _ in layers]}, which do not fit {m.rows_} token rows and "
                                 f"{m.n_classes_} classes. {fix}")
        return m


# -- the family protocol (see niche.families) ------------------------------------------------------

CONFIG = StaticConfig


def fit(cfg: StaticConfig, task: Any) -> tuple[StaticModel, dict[str, Any]]:
    model = StaticModel(cfg).fit(task.train.texts, task.y_train, len(task.labels), task.dev.texts, task.y_dev,
                                 progress=task.progress)
    return model, model.facts_


def load(path: Path, cfg: StaticConfig, info: dict[str, Any]) -> StaticModel:
    model = StaticModel.load(path, cfg)
    if model.n_classes_ != len(info["labels"]):
        raise ModelLoadError(f"{path}: {META} is for {model.n_classes_} classes but niche.json lists "
                             f"{len(info['labels'])} labels; the directory is inconsistent. Retrain it.")
    return model


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    t = info.get("training", {})
    cfg = info.get("config", {})
    if t.get("tokenizer") == "chars":
        src = "vectors learned from random initialization on CJK characters and words"
    else:
        src = f"token vectors distilled from `{cfg.get('base')}` (PCA to {t.get('dim')} dimensions, SIF-weighted)"
    facts = [f"- base: none at prediction time ({src}; {t.get('vocabulary', '?')} tokens"
             + (f" + {t['bigram_buckets']} hashed bigram buckets" if t.get("bigram_buckets") else "") + ")",
             f"- head: {cfg.get('head')}" + {"mlp": f" ({cfg.get('hidden')} hidden units)",
                                             "cnn": f" (the mean vector + {t.get('filters')} filters over windows of "
                                                    f"{t.get('width')} tokens, max-pooled)"}.get(cfg.get("head"), "")]
    return facts, []
