"""``niche recommend evaluate``: two protocols, niche against three baselines in one run.

1. **leave-last-out**: each user's last interaction by time is held out; every model ranks all
   items the user has not seen in training; HR@k and NDCG@k.
2. **cold-start**: a seeded 10 % of the interacted items is removed from all training
   interactions; for every user who interacted with some of them, the cold items are ranked and
   scored with AUC and NDCG@k. Collaborative baselines know nothing about those items, so they sit
   at chance (ties count as random order), which the report shows.

Baselines: popularity, item-kNN (cosine over co-occurrence, whole history) and implicit ALS
(hyperparameters picked on a validation split, each user's last training interaction).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError
from . import metrics as rm
from .data import Interactions, cold_start, leave_last_out

ALS_GRID = [dict(factors=f, regularization=r, alpha=a) for f in (64, 128) for r in (0.05, 0.5) for a in (1.0, 5.0)]


def _als_tuned(train: Interactions, n_items: int, seed: int) -> tuple[rm.ALS, dict[str, Any]]:
    """Pick ALS hyperparameters by NDCG@10 on each user's last training interaction, refit on all of train."""
    fit, vu, vi = leave_last_out(train)
    Xf = rm.user_item_matrix(fit.users, fit.items, train.n_users, n_items)
    best = (-1.0, ALS_GRID[0])
    for p in ALS_GRID:
        m = rm.ALS(**p, seed=seed).fit(Xf)
        _, nd = rm.hit_ndcg_batch(m.scores(vu), vi, Xf, vu)
        if nd.mean() > best[0]:
            best = (float(nd.mean()), p)
    X = rm.user_item_matrix(train.users, train.items, train.n_users, n_items)
    return rm.ALS(**best[1], seed=seed).fit(X), best[1] | {"validation_ndcg@10": round(best[0], 4)}


def _baseline_scorers(train: Interactions, n_items: int, seed: int, use_als: bool) -> tuple[dict[str, Callable], dict]:
    """name -> scores(users) -> (B, n_items), plus notes (e.g. ALS's chosen hyperparameters)."""
    X = rm.user_item_matrix(train.users, train.items, train.n_users, n_items)
    pop = rm.popularity(train.items, n_items)
    S = rm.cooc_cosine(X)
    scorers: dict[str, Callable] = {
        "popularity": lambda users: np.tile(pop, (len(users), 1)),
        "item-knn": lambda users: np.asarray((X[users] @ S).todense()),
    }
    notes: dict[str, Any] = {}
    if use_als:
        als, notes["als"] = _als_tuned(train, n_items, seed)
        scorers["als"] = als.scores
    return scorers, notes


def _niche_scorers(rec: Any, train: Interactions) -> Callable:
    seqs = train.sequences()
    cache: dict[tuple, dict] = {}

    def parts(users: np.ndarray) -> dict[str, np.ndarray]:
        key = tuple(users.tolist())
        if key not in cache:
            cache.clear()
            cache[key] = rec.score_parts([seqs[u] for u in users])
        return cache[key]

    return parts


def leave_last_out_eval(data: Interactions, params: dict[str, Any], k: int = 10, seed: int = 0, use_als: bool = True,
                        progress: Callable[[str], None] | None = None, batch: int = 128) -> dict[str, Any]:
    from .recommender import Recommender

    train, users, targets = leave_last_out(data)
    X = rm.user_item_matrix(train.users, train.items, data.n_users, data.n_items)
    scorers, notes = _baseline_scorers(train, data.n_items, seed, use_als)
    t0 = time.perf_counter()
    rec = Recommender(**params).fit(train, progress=progress)
    train_s = time.perf_counter() - t0
    parts = _niche_scorers(rec, train)
    scorers["niche (text)"] = lambda u: parts(u)["text"]
    if rec.blend_["cooc"] or rec.blend_["pop"]:
        scorers["niche (blended)"] = lambda u: parts(u)["score"]
    res: dict[str, Any] = {}
    for name, fn in scorers.items():
        hits, ndcgs = [], []
        for s in range(0, len(users), batch):
            u = users[s:s + batch]
            h, n = rm.hit_ndcg_batch(fn(u), targets[s:s + batch], X, u, k)
            hits.append(h)
            ndcgs.append(n)
        res[name] = {f"hr@{k}": round(float(np.concatenate(hits).mean()), 4),
                     f"ndcg@{k}": round(float(np.concatenate(ndcgs).mean()), 4)}
        if progress:
            progress(f"leave-last-out {name}: {res[name]}")
    pop = rm.popularity(train.items, data.n_items)
    return {"users": int(len(users)), "items": data.n_items, "results": res, "baseline_notes": notes,
            "heldout_items_without_training_interactions": round(float((pop[targets] == 0).mean()), 4),
            "niche": {"train_seconds": round(train_s, 1), "blend": rec.blend_, "validation": rec.info_["validation"],
                      "training": rec.info_["training"]}, "model": rec}


def cold_start_eval(data: Interactions, params: dict[str, Any], k: int = 10, fraction: float = 0.1, seed: int = 0,
                    use_als: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from .recommender import Recommender

    train, cold, held = cold_start(data, fraction, seed)
    users = np.array(sorted(held), dtype=np.int64)
    if not len(users):
        raise ConfigError("cold-start: no user has both training interactions and interactions with the cold items; "
                          "use more data or a larger fraction.")
    scorers, notes = _baseline_scorers(train, data.n_items, seed, use_als)
    t0 = time.perf_counter()
    rec = Recommender(**params).fit(train, progress=progress)
    train_s = time.perf_counter() - t0
    parts = _niche_scorers(rec, train)
    scorers["niche (text)"] = lambda u: parts(u)["text"]
    if rec.blend_["cooc"] or rec.blend_["pop"]:
        scorers["niche (blended)"] = lambda u: parts(u)["score"]
    res: dict[str, Any] = {}
    for name, fn in scorers.items():
        aucs, ndcgs = [], []
        for s in range(0, len(users), 128):
            block = users[s:s + 128]
            sc = fn(block)[:, cold]  # (B, n_cold)
            for row, u in zip(sc, block):
                pos = np.flatnonzero(np.isin(cold, held[int(u)]))
                neg = np.setdiff1d(np.arange(len(cold)), pos)
                aucs.append(rm.auc(row[pos], row[neg]))
                ndcgs.append(rm.ndcg_multi(row, pos, k, seed=int(u)))
        res[name] = {"auc": round(float(np.nanmean(aucs)), 4), f"ndcg@{k}": round(float(np.mean(ndcgs)), 4)}
        if progress:
            progress(f"cold-start {name}: {res[name]}")
    return {"users": int(len(users)), "cold_items": int(len(cold)), "fraction": fraction, "seed": seed,
            "heldout_interactions": int(sum(len(v) for v in held.values())), "results": res, "baseline_notes": notes,
            "niche": {"train_seconds": round(train_s, 1), "blend": rec.blend_, "training": rec.info_["training"]}}


def evaluate(data: Interactions, params: dict[str, Any] | None = None, k: int = 10, cold_fraction: float = 0.1,
             seed: int = 0, protocols: tuple[str, ...] = ("leave-last-out", "cold-start"), use_als: bool = True,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the protocols; returns JSON-ready results (the leave-last-out model under ``_model``)."""
    params = dict(params or {})
    out: dict[str, Any] = {"k": k, "data_report": data.report.lines()}
    unknown = set(protocols) - {"leave-last-out", "cold-start"}
    if unknown:
        raise ConfigError(f"unknown protocol(s) {sorted(unknown)}; expected leave-last-out and/or cold-start.")
    if "leave-last-out" in protocols:
        r = leave_last_out_eval(data, params, k, seed, use_als, progress)
        out["_model"] = r.pop("model")
        out["leave_last_out"] = r
    if "cold-start" in protocols:
        out["cold_start"] = cold_start_eval(data, params, k, cold_fraction, seed, use_als, progress)
    return out
