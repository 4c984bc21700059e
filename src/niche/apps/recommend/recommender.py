"""``Recommender``: text-aware personalized recommendation with a two-tower model.

Example:
    >>> from niche.apps.recommend import Recommender
    >>> from niche.apps.recommend.data import load
    >>> data = load("interactions.csv", "items.csv", text_cols=["title", "genres", "tags"])  # doctest: +SKIP
    >>> rec = Recommender().fit(data)                                                        # doctest: +SKIP
    >>> rec.save("runs/movies")                                                               # doctest: +SKIP
    >>> Recommender.load("runs/movies").rank(history=["1", "260"], k=5)["items"][0]          # doctest: +SKIP
    {'item_id': '1196', 'score': 0.91, 'text': 0.62, 'cooc': 0.24, 'pop': 0.05, 'item_text': '...'}

Score of an item = ``text + cooc + pop``: ``text`` is the cosine between the user tower (the last
N items, attention-pooled with a recency bias) and the item tower (the encoder over the item
text and a trained adapter; the encoder's top layers are fine-tuned only with ``steps > 0``), plus a prior the item tower reads off the item text alone; ``cooc`` is the blend weight times the recency-weighted item-item co-occurrence
cosine with the user's recent items; ``pop`` the blend weight times log-popularity. Blend weights
are picked on a validation split (each user's last training interaction). New items get
``cooc = pop = 0`` until retraining, so they are ranked by text alone (cold start).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from ...errors import DataError, ModelLoadError
from ...modeldir import META, library_versions, write_dir_atomically, write_info
from . import metrics as rm
from .data import Interactions, leave_last_out
from .model import ItemEncoder, RecommendConfig, Towers, base_cache, train_towers

KIND = "recommender"  # the marker in niche.json that tells a recommender dir from a classifier dir
BLEND_GRID = {"cooc": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), "pop": (0.0, 0.05, 0.1, 0.2, 0.4, 0.8),
              "decay": (1.0, 0.9, 0.8, 0.65, 0.5)}


def is_recommender_dir(path: str | Path) -> bool:
    meta = Path(path) / META
    try:
        return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError):
        return False


def _load_encoder(src: str, max_len: int) -> ItemEncoder:
    from ...encoders import load_pretrained

    tok, model = load_pretrained(src, "the item encoder", "Pass --base with a local Hugging Face model directory "
                                 "(config.json, model.safetensors, tokenizer files).")
    return ItemEncoder(model, tok, max_len, source=src)


class Recommender:
    """Train, rank with, extend, save and load a two-tower text recommender.

    Args:
        **params: fields of :class:`~niche.apps.recommend.model.RecommendConfig`.

    Attributes (after ``fit`` or ``load``): ``item_ids_``, ``item_texts_``, ``vectors_`` (I, d) unit
    item vectors, ``towers_``, ``cooc_`` (I, I) CSR, ``pop_`` (I,), ``blend_``, ``users_`` (user id
    -> item ids in time order), ``info_``.
    """

    def __init__(self, **params: Any):
        self.params = params

    # -- training -------------------------------------------------------------------------
    def fit(self, data: Interactions, progress: Callable[[str], None] | None = None) -> "Recommender":
        from ...encoders import resolve_base

        cfg = RecommendConfig(**self.params)
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.config_ = cfg
        self._enc = _load_encoder(resolve_base(cfg.base), cfg.max_len)
        # validation = each user's last training interaction, unseen by the towers and the blend statistics
        fit_data, val_users, val_items = leave_last_out(data) if cfg.blend else (data, None, None)
        token_ids = self._enc.tokenize(data.item_texts)
        self.towers_ = Towers(self._enc.model.config.hidden_size, cfg.history)
        self.item_ids_, self.item_texts_ = list(data.item_ids), list(data.item_texts)
        self._index = {iid: k for k, iid in enumerate(self.item_ids_)}

        def measure(cache: torch.Tensor) -> dict[str, Any]:
            """Validation NDCG@10 of the text score after phase 1 (frozen encoder), to show what phase 2 adds."""
            if not cfg.blend or not len(val_users):
                return {}
            self.vectors_, self.prior_, self.hvectors_ = self._embed_tokens(token_ids, cache)
            seqs = fit_data.sequences()
            seen = rm.user_item_matrix(fit_data.users, fit_data.items, fit_data.n_users, len(self.item_ids_))
            _, nd = rm.hit_ndcg_batch(self._text_scores([seqs[u] for u in val_users]), val_items, seen, val_users)
            if progress:
                progress(f"after phase 1: validation NDCG@10 (text) {nd.mean():.4f}")
            return {"validation_ndcg@10_text": round(float(nd.mean()), 4)}

        stats = train_towers(self._enc, self.towers_, token_ids, fit_data.sequences(), cfg, progress, measure)
        if progress:
            progress("embedding all items")
        unchanged = stats["finetune_steps"] == 0  # then the encoder is the base one: reuse its item outputs
        self.vectors_, self.prior_, self.hvectors_ = self._embed_tokens(token_ids, base_cache(self._enc, token_ids)
                                                                        if unchanged else None)
        self.blend_ = {"cooc": 0.0, "pop": 0.0, "decay": 1.0}
        val = {}
        if cfg.blend and len(val_users):
            self._set_collaborative(fit_data)
            self.blend_, val = self._tune_blend(fit_data, val_users, val_items)
        self._set_collaborative(data)
        seqs = data.sequences()
        self.users_ = {data.user_ids[u]: [self.item_ids_[i] for i in s] for u, s in enumerate(seqs)}
        self.info_ = {
            "kind": KIND, "format_version": 1, "base": cfg.base, "config": dataclasses.asdict(cfg),
            "blend": self.blend_, "validation": val,
            "training": stats | {"users": data.n_users, "items": data.n_items, "interactions": len(data.users),
                                 "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
            "data_report": dataclasses.asdict(data.report), "versions": library_versions(),
        }
        return self

    def _embed_tokens(self, token_ids: list[list[int]], pooled: torch.Tensor | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids -> ((n, d) unit item vectors, (n,) text prior in cosine units: T * bias,
        (n, d) unit pooled outputs: the user tower's input)."""
        if pooled is None:
            pooled = self._encoder().pooled_all(token_ids, self.config_.eval_batch_size)
        with torch.no_grad():
            vecs = self.towers_.items(pooled).numpy().astype(np.float32)
            prior = (self.config_.temperature * self.towers_.bias(pooled)).numpy().astype(np.float32)
            unit = torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
        return vecs, prior, unit

    def _set_collaborative(self, data: Interactions) -> None:
        X = rm.user_item_matrix(data.users, data.items, data.n_users, len(self.item_ids_))
        self.cooc_ = rm.cooc_cosine(X, self.config_.cooc_neighbors)
        self.pop_ = rm.popularity(data.items, len(self.item_ids_))

    def _tune_blend(self, fit_data: Interactions, users: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
        """Grid-search the blend weights for NDCG@10 on the validation targets (full ranking)."""
        seqs = fit_data.sequences()
        hists = [seqs[u] for u in users]
        seen = rm.user_item_matrix(fit_data.users, fit_data.items, fit_data.n_users, len(self.item_ids_))
        text = self._text_scores(hists)
        pop = self._pop_part()
        best, results = (-1.0, None), {}
        for decay in BLEND_GRID["decay"]:
            cooc = self._cooc_part(hists, decay)
            for a in BLEND_GRID["cooc"]:
                for b in BLEND_GRID["pop"]:
                    _, nd = rm.hit_ndcg_batch(text + a * cooc + b * pop, targets, seen, users)
                    results[(decay, a, b)] = float(nd.mean())
                    if results[(decay, a, b)] > best[0]:
                        best = (results[(decay, a, b)], {"cooc": a, "pop": b, "decay": decay})
        return best[1], {"users": int(len(users)), "ndcg@10_text_only": round(results[(1.0, 0.0, 0.0)], 4),
                         "ndcg@10_blended": round(best[0], 4)}

    # -- scoring --------------------------------------------------------------------------
    def _user_vectors(self, hists: Sequence[np.ndarray]) -> np.ndarray:
        """Item-code histories (oldest first) -> (B, d) unit user vectors."""
        n = self.config_.history
        H = np.zeros((len(hists), n), dtype=np.int64)
        M = np.zeros((len(hists), n), dtype=bool)
        for r, h in enumerate(hists):
            h = np.asarray(h)[-n:][::-1]
            H[r, : len(h)], M[r, : len(h)] = h, True
        return self._users_from_vectors(torch.as_tensor(self.hvectors_[H]), torch.as_tensor(M))

    def _users_from_vectors(self, hv: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.towers_.users(hv, mask).numpy()

    def _text_scores(self, hists: Sequence[np.ndarray]) -> np.ndarray:
        return self._user_vectors(hists) @ self.vectors_.T + self.prior_  # (B, I) cosine + text prior

    def _cooc_part(self, hists: Sequence[np.ndarray], decay: float) -> np.ndarray:
        """Recency-weighted mean co-occurrence cosine with the last N items: (B, I)."""
        n = self.config_.history
        rows, cols, vals = [], [], []
        for r, h in enumerate(hists):
            h = np.asarray(h)[-n:][::-1]
            w = decay ** np.arange(len(h))
            rows += [r] * len(h)
            cols += h.tolist()
            vals += (w / max(w.sum(), 1e-9)).tolist()
        W = sp.csr_matrix((vals, (rows, cols)), shape=(len(hists), len(self.item_ids_)), dtype=np.float32)
        return np.asarray((W @ self.cooc_).todense())

    def _pop_part(self) -> np.ndarray:
        return (np.log1p(self.pop_) / np.log1p(max(self.pop_.max(), 1.0))).astype(np.float32)

    def score_parts(self, hists: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Per history (item codes, oldest first) the weighted parts and their sum, each (B, I)."""
        text = self._text_scores(hists)
        cooc = self.blend_["cooc"] * self._cooc_part(hists, self.blend_["decay"]) if self.blend_["cooc"] else 0 * text
        pop = self.blend_["pop"] * self._pop_part()[None, :] + 0 * text
        return {"score": text + cooc + pop, "text": text, "cooc": cooc, "pop": pop}

    # -- the public ranking surface -------------------------------------------------------
    def codes(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Item ids -> (known codes, unknown ids)."""
        known = [self._index[str(i)] for i in ids if str(i) in self._index]
        return np.array(known, dtype=np.int64), [str(i) for i in ids if str(i) not in self._index]

    def rank(self, *, user: str | None = None, history: Sequence[str] | None = None,
             history_text: Sequence[str] | None = None, k: int = 10, candidates: Sequence[str] | None = None,
             exclude_seen: bool = True) -> dict[str, Any]:
        """Top-``k`` items for a known ``user``, a ``history`` of item ids (oldest first), or raw
        ``history_text`` (texts of things the user liked, oldest first).

        Returns:
            ``{"items": [{"item_id", "score", "text", "cooc", "pop", "item_text"}, ...],
            "unknown_history": [...], "unknown_candidates": [...]}``.
        Raises:
            DataError: unknown user, or no usable history.
        """
        self._check_fitted()
        given = sum(x is not None for x in (user, history, history_text))
        if given != 1:
            raise DataError("give exactly one of: a known user, a history of item ids, or history texts.")
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}.")
        unknown_hist: list[str] = []
        if user is not None:
            if str(user) not in self.users_:
                raise DataError(f"unknown user {user!r}: not in the training interactions; pass their history "
                                "with --history id1,id2 or --history-text instead.")
            history = self.users_[str(user)]
        if history is not None:
            hist, unknown_hist = self.codes(history)
            if not len(hist):
                raise DataError(f"none of the {len(unknown_hist)} history items is a known item id "
                                f"(e.g. {unknown_hist[:3]}); add them with `niche recommend add-items` first.")
            parts = {k_: v[0] for k_, v in self.score_parts([hist]).items()}
            seen = hist
        else:
            texts = [t for t in (history_text or []) if t and t.strip()]
            if not texts:
                raise DataError("history_text is empty; give at least one non-empty text.")
            _, _, vecs = self._embed_tokens(self._encoder().tokenize(texts[-self.config_.history:][::-1]))
            u = self._users_from_vectors(torch.as_tensor(vecs)[None], torch.ones((1, len(vecs)), dtype=torch.bool))
            text = (u @ self.vectors_.T)[0] + self.prior_
            pop = self.blend_["pop"] * self._pop_part()
            parts = {"score": text + pop, "text": text, "cooc": np.zeros_like(text), "pop": pop}
            seen = np.zeros(0, dtype=np.int64)
        unknown_cand: list[str] = []
        if candidates is not None:
            pool, unknown_cand = self.codes(candidates)
        else:
            pool = np.arange(len(self.item_ids_))
        if exclude_seen and len(seen):
            pool = pool[~np.isin(pool, seen)]
        s = parts["score"][pool]
        top = pool[np.argsort(-s, kind="stable")[:k]] if len(pool) > k else pool[np.argsort(-s, kind="stable")]
        items = [{"item_id": self.item_ids_[i], "score": round(float(parts["score"][i]), 5),
                  "text": round(float(parts["text"][i]), 5), "cooc": round(float(parts["cooc"][i]), 5),
                  "pop": round(float(parts["pop"][i]), 5), "item_text": self.item_texts_[i]} for i in top]
        return {"items": items, "unknown_history": unknown_hist, "unknown_candidates": unknown_cand}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit item-tower vectors (n, d) for raw texts (loads the encoder on first use)."""
        self._check_fitted()
        return self._embed_tokens(self._encoder().tokenize(list(texts)))[0]

    def add_items(self, ids: Sequence[str], texts: Sequence[str]) -> dict[str, int]:
        """Embed new items (no retraining). Existing ids get their text and vector replaced.
        New items have no co-occurrence or popularity yet, so they are ranked by text."""
        self._check_fitted()
        if len(ids) != len(texts):
            raise DataError(f"{len(ids)} item ids but {len(texts)} texts; they must pair up.")
        if not len(ids):
            return {"added": 0, "updated": 0, "items": len(self.item_ids_)}
        vecs, prior, unit = self._embed_tokens(self._encoder().tokenize(list(texts)))
        added = updated = 0
        new: list[int] = []
        for r, (iid, text) in enumerate(zip(ids, texts)):
            iid = str(iid)
            if iid in self._index:
                j = self._index[iid]
                self.vectors_[j], self.prior_[j], self.hvectors_[j] = vecs[r], prior[r], unit[r]
                self.item_texts_[j] = text
                updated += 1
            else:
                self._index[iid] = len(self.item_ids_)
                self.item_ids_.append(iid)
                self.item_texts_.append(text)
                new.append(r)
                added += 1
        if added:
            self.vectors_ = np.concatenate([self.vectors_, vecs[new]])
            self.prior_ = np.concatenate([self.prior_, prior[new]])
            self.hvectors_ = np.concatenate([self.hvectors_, unit[new]])
            n = len(self.item_ids_)
            self.pop_ = np.concatenate([self.pop_, np.zeros(added, np.float32)])
            c = self.cooc_
            self.cooc_ = sp.csr_matrix((c.data, c.indices, np.concatenate([c.indptr, np.full(added, c.indptr[-1])])),
                                       shape=(n, n))
        self.info_.setdefault("added_items", 0)
        self.info_["added_items"] += added
        return {"added": added, "updated": updated, "items": len(self.item_ids_)}

    # -- persistence ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            raise ModelLoadError("this Recommender is not trained; call fit(...) or Recommender.load(dir) first.")

    def _encoder(self) -> ItemEncoder:
        if getattr(self, "_enc", None) is None:
            self._enc = _load_encoder(str(self._path / "encoder"), self.config_.max_len)
        return self._enc

    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically (safetensors weights and caches, JSON metadata)."""
        from safetensors.numpy import save_file
        from safetensors.torch import save_file as save_torch

        self._check_fitted()
        path = Path(path)
        enc = self._encoder()

        def fill(d: Path) -> None:
            from ...encoders import quiet_hf

            with quiet_hf():
                enc.model.save_pretrained(str(d / "encoder"), safe_serialization=True)
                enc.tokenizer.save_pretrained(str(d / "encoder"))
            save_torch({k: v.contiguous() for k, v in self.towers_.state_dict().items()}, str(d / "towers.safetensors"))
            save_file({"vectors": self.vectors_, "prior": self.prior_, "history_vectors": self.hvectors_,
                       "popularity": self.pop_}, str(d / "items.safetensors"))
            c = self.cooc_.tocsr()
            save_file({"indptr": c.indptr.astype(np.int64), "indices": c.indices.astype(np.int64),
                       "data": c.data.astype(np.float32)}, str(d / "cooc.safetensors"))
            (d / "items.json").write_text(json.dumps({"ids": self.item_ids_, "texts": self.item_texts_},
                                                     ensure_ascii=False), encoding="utf-8")
            (d / "users.json").write_text(json.dumps(self.users_, ensure_ascii=False), encoding="utf-8")
            write_info(d, self.info_)  # its "kind" key: written as it is

        write_dir_atomically(path, fill)
        self._path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load a directory written by :meth:`save`; the encoder itself loads lazily (only
        ``history_text`` and ``add_items`` need it)."""
        from safetensors.numpy import load_file
        from safetensors.torch import load_file as load_torch

        path = Path(path)
        if not is_recommender_dir(path):
            raise ModelLoadError(f"{path}: not a niche recommender directory (no {META} with kind "
                                 f"{KIND!r}); train one with `niche recommend train --out {path}`.")
        try:
            info = json.loads((path / META).read_text(encoding="utf-8"))
            self = cls(**info["config"])
            self.config_ = RecommendConfig(**info["config"])
            self.info_, self.blend_, self._path, self._enc = info, info["blend"], path, None
            items = json.loads((path / "items.json").read_text(encoding="utf-8"))
            self.item_ids_, self.item_texts_ = items["ids"], items["texts"]
            self._index = {iid: k for k, iid in enumerate(self.item_ids_)}
            arrays = load_file(str(path / "items.safetensors"))
            self.vectors_, self.prior_, self.pop_ = arrays["vectors"], arrays["prior"], arrays["popularity"]
            self.hvectors_ = arrays["history_vectors"]
            c = load_file(str(path / "cooc.safetensors"))
            n = len(self.item_ids_)
            self.cooc_ = sp.csr_matrix((c["data"], c["indices"], c["indptr"]), shape=(n, n))
            self.users_ = json.loads((path / "users.json").read_text(encoding="utf-8"))
            self.towers_ = Towers(self.vectors_.shape[1], self.config_.history)
            self.towers_.load_state_dict(load_torch(str(path / "towers.safetensors")))
            self.towers_.eval()
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{path}: incomplete or inconsistent recommender directory ({e}); retrain it.") from None
        if len(self.vectors_) != n:
            raise ModelLoadError(f"{path}: {len(self.vectors_)} item vectors for {n} items; the directory is inconsistent.")
        return self
