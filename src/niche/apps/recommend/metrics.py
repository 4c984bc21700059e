"""Ranking metrics (HR@k, NDCG@k, AUC) and the collaborative baselines (popularity, item-kNN,
ALS from the ``implicit`` library).

Ties are handled exactly as random tie-breaking would in expectation, so a constant scorer
(e.g. every baseline on never-seen items) sits at chance: AUC 0.5, HR@k = k / candidates.
"""

from __future__ import annotations

import math
import numpy as np
import scipy.sparse as sp

from ...errors import ConfigError


# -- metrics -------------------------------------------------------------------------------
def hit_ndcg_at_k(scores: np.ndarray, target: int, k: int = 10, exclude: np.ndarray | None = None) -> tuple[float, float]:
    """HR@k and NDCG@k of one held-out item in a full ranking, expected over random tie-breaking.

    Args:
        scores: (n_items,) higher is better.
        target: index of the held-out item.
        exclude: indices removed from the ranking (items the user has already seen).
    Returns:
        (hit, ndcg): with ``g`` items scored above the target and ``t`` other items tied with it,
        the target's rank is uniform on ``g+1 .. g+t+1``.
    """
    s = scores.astype(np.float64, copy=True)
    if exclude is not None and len(exclude):
        s[exclude] = -np.inf
    st = s[target]
    greater = int((s > st).sum())
    ties = int((s == st).sum()) - 1
    ranks = np.arange(greater + 1, greater + ties + 2)
    top = ranks[ranks <= k]
    hit = len(top) / len(ranks)
    ndcg = float((1.0 / np.log2(top + 1)).sum()) / len(ranks) if len(top) else 0.0
    return hit, ndcg


def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted 1/2 (Mann-Whitney U / (n_pos n_neg))."""
    if len(pos_scores) == 0 or len(neg_scores) == 0:
        return float("nan")
    allv = np.concatenate([pos_scores, neg_scores]).astype(np.float64)
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks over ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    npos, nneg = len(pos_scores), len(neg_scores)
    u = ranks[:npos].sum() - npos * (npos + 1) / 2
    return float(u / (npos * nneg))


def ndcg_multi(scores: np.ndarray, positives: np.ndarray, k: int = 10, seed: int = 0) -> float:
    """NDCG@k with several relevant items; ties broken by a seeded random permutation."""
    rng = np.random.default_rng(seed)
    jitter = rng.permutation(len(scores))
    order = np.lexsort((jitter, -scores.astype(np.float64)))[:k]
    rel = np.isin(order, positives)
    dcg = float((rel / np.log2(np.arange(2, len(order) + 2))).sum())
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(positives), k)))
    return dcg / idcg if idcg else 0.0


# -- collaborative pieces ------------------------------------------------------------------
def user_item_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) CSR matrix of interactions."""
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    m.data[:] = 1.0  # duplicates summed by the constructor count once
    return m


def popularity(items: np.ndarray, n_items: int) -> np.ndarray:
    """Interaction counts per item, (n_items,) float32."""
    return np.bincount(items, minlength=n_items).astype(np.float32)


def cooc_cosine(X: sp.csr_matrix, neighbors: int | None = None) -> sp.csr_matrix:
    """Item-item cosine over co-occurrence: C_ij / sqrt(n_i n_j), diagonal 0.

    Args:
        X: binary (users, items) matrix.
        neighbors: keep only each item's top-``neighbors`` similarities (rows), None keeps all.
    Returns:
        (n_items, n_items) CSR; row i holds the neighbours of item i.
    """
    C = (X.T @ X).tocsr().astype(np.float32)  # (I, I) co-occurrence counts
    n = np.asarray(X.sum(0)).ravel().astype(np.float32)
    inv = np.zeros_like(n)
    inv[n > 0] = 1 / np.sqrt(n[n > 0])
    S = sp.diags(inv) @ C @ sp.diags(inv)
    S = S.tocsr()
    S.setdiag(0)
    S.eliminate_zeros()
    if neighbors is not None:
        S = _top_per_row(S, neighbors)
    return S.astype(np.float32)


def _top_per_row(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    indptr, indices, data = [0], [], []
    for r in range(S.shape[0]):
        lo, hi = S.indptr[r], S.indptr[r + 1]
        d, j = S.data[lo:hi], S.indices[lo:hi]
        if len(d) > k:
            keep = np.argpartition(-d, k)[:k]
            d, j = d[keep], j[keep]
        indices.append(j)
        data.append(d)
        indptr.append(indptr[-1] + len(d))
    return sp.csr_matrix((np.concatenate(data) if data else [], np.concatenate(indices) if indices else [], indptr),
                         shape=S.shape)


class ALS:
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) from the ``implicit`` library: a baseline only."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, iterations: int = 15,
                 seed: int = 0):
        self.factors, self.regularization, self.alpha, self.iterations, self.seed = (
            factors, regularization, alpha, iterations, seed)

    def fit(self, X: sp.csr_matrix) -> "ALS":
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError:
            raise ConfigError("the ALS baseline needs the `implicit` package: pip install 'niche[recommend]' "
                              "(or pip install implicit).") from None
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns (and slows down) with multithreaded BLAS
            m = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                        iterations=self.iterations, random_state=self.seed,
                                        calculate_training_loss=False)
            m.fit(X.tocsr().astype(np.float32), show_progress=False)
        self.user_factors_ = np.asarray(m.user_factors)
        self.item_factors_ = np.asarray(m.item_factors)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T


def hit_ndcg_batch(scores: np.ndarray, targets: np.ndarray, seen: sp.csr_matrix | None, rows: np.ndarray,
                   k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`hit_ndcg_at_k` for a (B, n_items) score block.

    Args:
        targets: (B,) held-out item per row. seen: (n_users, n_items) items excluded per user; rows: (B,) user rows.
    Returns:
        (hits, ndcgs), each (B,).
    """
    s = scores.astype(np.float64, copy=True)
    if seen is not None:
        sub = seen[rows]
        r, c = sub.nonzero()
        s[r, c] = -np.inf
    st = s[np.arange(len(s)), targets][:, None]
    greater = (s > st).sum(1)
    ties = (s == st).sum(1) - 1
    hits, ndcgs = np.zeros(len(s)), np.zeros(len(s))
    for b in range(len(s)):
        ranks = np.arange(greater[b] + 1, greater[b] + ties[b] + 2)
        top = ranks[ranks <= k]
        hits[b] = len(top) / len(ranks)
        ndcgs[b] = (1.0 / np.log2(top + 1)).sum() / len(ranks) if len(top) else 0.0
    return hits, ndcgs
