"""The ``sparse`` family: TF-IDF n-grams + a linear model tuned on the dev split.

Trains in seconds on a CPU and needs no pretrained weights. Chinese gets char n-grams, plus jieba
word n-grams when ``niche[zh]`` is installed and they help on dev. Saved without pickle:
vocabularies and settings as JSON, arrays as safetensors.

Tuning (``loss="auto"``, ``C=0``): the feature matrices are built once; every loss that applies
(NB-weighted logistic regression for binary tasks, logistic regression, linear SVM) is fitted for a
small grid of ``C`` on the same matrices, and the best on dev accuracy (ties: macro-F1, then the
earlier, cheaper candidate) is kept. On small data (train + dev <= ``CV_MAX_ROWS`` texts, dev under
``CV_MAX_DEV``) the grid is scored by ``cv_folds``-fold cross-validation over train + dev instead, then the
chosen setting is fitted on train. All of it is recorded in ``niche.json["training"]["tuning"]``.

NB weighting (Wang & Manning 2012, "Baselines and Bigrams"): each feature is scaled by the
log-count ratio r = log((p / |p|_1) / (q / |q|_1)) of its class-conditional counts. For K > 2 classes
every loss is one-vs-rest: K binary models whose scores are turned into probabilities.

Calibration: the scores s are mapped to probabilities by sigmoid(a*s + b) (two classes, Platt
scaling) or softmax(a*s) (K classes, temperature scaling), with a and b fitted to the dev split by
log-loss. Temperature scaling does not change which label wins; Platt's bias b moves the two-class
threshold from s = 0 to s = -b/a, so a text scored between the two may change label.
"""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save_file
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

from ..config import SparseConfig
from ..errors import ConfigError, ModelLoadError
from ..modeldir import damaged_files, read_family_files

WEIGHTS = "sparse.safetensors"
VOCAB = "sparse_vocab.json"
C_GRID = {"nblr": (3.0, 10.0, 30.0, 100.0), "lr": (3.0, 10.0, 30.0, 100.0), "svm": (0.1, 0.3, 1.0, 3.0)}
MANY_CLASSES = 20
"""Above this many classes one logistic-regression fit is one liblinear run per class (150 for CLINC150),
so its C sweep starts at 10 (many classes, few texts each, want little regularization: banking77's
sweep chose C=30) -- one fit fewer of the costliest kind."""
SHORT_TEXT_CHARS = 200
"""With ``min_df=0`` (auto), training texts this short on average also try ``min_df=1`` on dev."""
C_DEFAULT = {"nblr": 30.0, "lr": 10.0, "svm": 0.3}
CV_MAX_ROWS = 5000
"""Up to this many labelled texts (train + dev) ..."""
CV_MAX_DEV = 1000
"""... and a dev split under this many texts, the grid is chosen by cross-validation (``cv_folds``): a
larger dev split already tells grid points apart, and k folds cost k fits per point (banking77 at 16
texts per class, 77 one-vs-rest classes: over 15 min on 2 busy cores instead of ~3)."""
KINDS = {"word+char": ["word", "char_wb"], "char": ["char"], "char+words": ["char", "jieba"], "word": ["word"]}


def c_grid(loss: str, n_classes: int) -> tuple[float, ...]:
    """The C values tried on dev for ``loss`` (ascending; a sweep stops when dev accuracy falls)."""
    grid = C_GRID[loss]
    return tuple(c for c in grid if c >= 10.0) if loss == "lr" and n_classes > MANY_CLASSES else grid


def cjk_share(texts: list[str], sample: int = 2000) -> float:
    """Fraction of letters that are CJK ideographs in (a sample of) ``texts``."""
    cjk = letters = 0
    for t in texts[:sample]:
        for ch in t:
            if ch.isalpha():
                letters += 1
                if "CJK" in unicodedata.name(ch, ""):
                    cjk += 1
    return cjk / letters if letters else 0.0


def have_jieba() -> bool:
    try:
        import jieba  # noqa: F401
    except ImportError:
        return False
    return True


def jieba_words(text: str) -> list[str]:
    """Chinese words of ``text`` (jieba's precise mode), blanks dropped."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.lcut(text) if w.strip()]


def mean_chars(texts: list[str], sample: int = 2000) -> float:
    head = texts[:sample]
    return sum(len(t) for t in head) / max(1, len(head))


def _vectorizer_params(kind: str, cfg: SparseConfig) -> dict[str, Any]:
    if kind == "word":
        return {"analyzer": "word", "ngram_range": tuple(cfg.word_ngrams), "lowercase": True,
                "token_pattern": r"(?u)\b\w+\b"}
    if kind == "char_wb":
        return {"analyzer": "char_wb", "ngram_range": tuple(cfg.char_ngrams), "lowercase": True}
    if kind == "jieba":
        return {"analyzer": "word", "ngram_range": tuple(cfg.cjk_word_ngrams), "lowercase": True,
                "token_pattern": None}
    return {"analyzer": "char", "ngram_range": tuple(cfg.cjk_char_ngrams), "lowercase": True}


def _make_vectorizer(kind: str, params: dict[str, Any], **kw: Any) -> CountVectorizer:
    if kind == "jieba":
        if not have_jieba():
            raise ModelLoadError("this sparse model uses jieba word n-grams, but jieba is not installed; "
                                 "install it with: pip install 'niche[zh]'.")
        kw["tokenizer"] = jieba_words
    return CountVectorizer(dtype=np.float32, **params, **kw)


def _dev_key(scores: np.ndarray, y: np.ndarray, binary: bool) -> tuple[float, float]:
    """(dev accuracy, dev macro-F1) of decision ``scores``: what the tuning grid maximises, in that order."""
    pred = (scores[:, 0] > 0).astype(int) if binary else scores.argmax(1)
    return float(np.mean(pred == y)), float(f1_score(y, pred, average="macro"))


def _unit_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ X).tocsr()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_calibration(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimizing the dev log-loss of sigmoid(a*s + b) (one score column) or softmax(a*s)."""
    from scipy.optimize import minimize

    s = scores.astype(np.float64)
    if s.shape[1] == 1:
        t = y.astype(np.float64)

        def nll(p: np.ndarray) -> float:
            z = p[0] * s[:, 0] + p[1]
            return float(np.mean(np.logaddexp(0.0, z) - t * z))
        r = minimize(nll, x0=np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(1e-3, 1e3), (-50, 50)])
        return float(r.x[0]), float(r.x[1])

    def nll_k(p: np.ndarray) -> float:
        z = p[0] * s
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))
    r = minimize(nll_k, x0=np.array([1.0]), method="L-BFGS-B", bounds=[(1e-3, 1e3)])
    return float(r.x[0]), 0.0


class SparseModel:
    """Fitted state of the sparse family (see module docstring)."""

    def __init__(self, cfg: SparseConfig):
        self.cfg = cfg
        self.calibration_: tuple[str, float, float] | None = None  # (kind, a, b)

    # -- features -------------------------------------------------------------------------
    def candidate_analyzers(self, texts: list[str]) -> list[str]:
        """Analyzer names to try, in order (the first is the cheaper default)."""
        a = self.cfg.analyzer
        if a != "auto":
            if a == "char+words" and not have_jieba():
                raise ConfigError("analyzer 'char+words' needs jieba; install it with: pip install 'niche[zh]', "
                                  "or use analyzer='char'.")
            return [a]
        if cjk_share(texts) > 0.3:
            return ["char", "char+words"] if have_jieba() else ["char"]
        # long documents: word 1-3-grams alone are as accurate and 3x faster to fit (IMDB)
        return ["word"] if mean_chars(texts) > 400 else ["word+char"]

    def _block(self, i: int, texts: list[str]) -> sp.csr_matrix:
        X = self.vectorizers_[i].transform(texts).astype(np.float32)
        X.data = 1.0 + np.log(X.data)  # sublinear tf
        return _unit_rows(X @ sp.diags(self.idf_[i]))

    @staticmethod
    def _stack(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
        if len(blocks) == 1:
            return blocks[0].astype(np.float32)
        X = sp.hstack(blocks, format="csr") * (1.0 / np.sqrt(len(blocks)))  # keep unit norm overall
        return X.astype(np.float32)

    def _transform(self, texts: list[str]) -> sp.csr_matrix:
        return self._stack([self._block(i, texts) for i in range(len(self.vectorizers_))])

    def _fit_vectorizer(self, kind: str, texts: list[str], min_df: int) -> None:
        n = len(texts)
        vec = _make_vectorizer(kind, _vectorizer_params(kind, self.cfg), min_df=min(min_df, max(1, n // 2)),
                               max_features=self.cfg.max_features)
        X = vec.fit_transform(texts)
        df = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
        self.vectorizers_.append(vec)
        self.idf_.append((np.log((1 + n) / (1 + df)) + 1.0).astype(np.float32))

    # -- training -------------------------------------------------------------------------
    def fit(self, texts: list[str], y: np.ndarray, n_classes: int, progress: bool = False,
            soft: np.ndarray | None = None, dev_texts: list[str] | None = None,
            dev_y: np.ndarray | None = None) -> "SparseModel":
        """Fit on hard labels ``y``, or, with ``soft`` (N, K) target distributions (distillation from
        a teacher; unlabeled texts welcome), on the soft cross-entropy: each binary model sees every
        text twice, as positive with weight p_k and as negative with weight 1 - p_k.

        With ``dev_texts``/``dev_y`` the analyzer (CJK), loss and ``C`` left on ``auto`` are chosen on
        dev and the probabilities calibrated there; without, the defaults are used uncalibrated.
        """
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.n_classes_ = n_classes
        binary = n_classes == 2
        tune = dev_texts is not None and dev_y is not None and len(dev_texts) > 0 and soft is None
        analyzers = self.candidate_analyzers(texts) if tune else self.candidate_analyzers(texts)[:1]
        losses = self._losses(binary, soft is not None)
        if not tune:
            losses = losses[:1]  # nothing to choose on: the first (NB-LR for two classes, else LR)
        grid = [(a, loss, C) for a in analyzers for loss in losses
                for C in ((cfg.C,) if cfg.C else c_grid(loss, n_classes) if tune else (C_DEFAULT[loss],))]
        cv_rows: list[dict[str, Any]] = []
        fixed: dict[str, Any] = {}
        points = self._cv_points(texts, dev_texts, n_classes, analyzers, losses) if tune else []
        if points:
            fixed, cv_rows = self._cv_choice(texts, y, dev_texts, dev_y, n_classes, analyzers, points, progress)
            if fixed:
                analyzers, losses = [fixed["analyzer"]], [fixed["loss"]]
                grid = [(fixed["analyzer"], fixed["loss"], fixed["C"])]
        kinds = list(dict.fromkeys(k for a in analyzers for k in KINDS[a]))
        bar = tqdm(total=len(kinds) + len(grid), desc="sparse fit", unit="stage", disable=not progress,
                   dynamic_ncols=True)
        self.vectorizers_, self.idf_ = [], []
        train_blocks, dev_blocks = {}, {}
        min_df = fixed.get("min_df") or cfg.min_df or 2
        for i, kind in enumerate(kinds):
            self._fit_vectorizer(kind, texts, min_df)
            train_blocks[kind] = self._block(i, texts)
            if tune:
                dev_blocks[kind] = self._block(i, dev_texts)
            bar.update(1)
        tried: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], dict[str, Any], Any] | None = None
        last: dict[tuple[str, str], float] = {}
        for a, loss, C in grid:
            if last.get((a, loss)) == -1.0:
                continue  # dev accuracy fell with the previous, larger C: the rest of this sweep is skipped
            X = self._stack([train_blocks[k] for k in KINDS[a]])
            t0 = time.perf_counter()
            params = self._fit_linear(X, y, n_classes, loss, C, soft)
            row: dict[str, Any] = {"analyzer": a, "loss": loss, "C": C, "seconds": round(time.perf_counter() - t0, 2)}
            if tune:
                scores = self._scores(self._stack([dev_blocks[k] for k in KINDS[a]]), *params)
                key = _dev_key(scores, dev_y, binary)
                row |= {"dev_accuracy": round(key[0], 5), "dev_macro_f1": round(key[1], 5)}
                if best is None or key > best[0]:
                    best = (key, row, (params, scores))
                prev = last.get((a, loss))
                last[(a, loss)] = -1.0 if prev is not None and key[0] < prev else key[0]
            else:
                best = ((0.0, 0.0), row, (params, None))
            tried.append(row)
            bar.update(1)
        bar.close()
        assert best is not None
        _, row, (params, dev_scores) = best
        keep = [kinds.index(k) for k in KINDS[row["analyzer"]]]
        self.kinds_ = [kinds[i] for i in keep]
        self.vectorizers_ = [self.vectorizers_[i] for i in keep]
        self.idf_ = [self.idf_[i] for i in keep]
        row = dict(row, min_df=min_df)
        if tune and not fixed and not cfg.min_df and mean_chars(texts) <= SHORT_TEXT_CHARS:
            # short texts: n-grams seen once can carry the label (TNEWS headlines); one more fit decides on dev
            vecs, idf = self.vectorizers_, self.idf_
            self.vectorizers_, self.idf_ = [], []
            for kind in self.kinds_:
                self._fit_vectorizer(kind, texts, 1)
            t0 = time.perf_counter()
            params1 = self._fit_linear(self._transform(texts), y, n_classes, row["loss"], row["C"], soft)
            scores1 = self._scores(self._transform(dev_texts), *params1)
            key1 = _dev_key(scores1, dev_y, binary)
            row1 = {k: row[k] for k in ("analyzer", "loss", "C")} | {
                "min_df": 1, "seconds": round(time.perf_counter() - t0, 2), "dev_accuracy": round(key1[0], 5),
                "dev_macro_f1": round(key1[1], 5)}
            tried.append(row1)
            if key1 > best[0]:
                row, params, dev_scores = row1, params1, scores1
            else:
                self.vectorizers_, self.idf_ = vecs, idf
        self.coef_, self.intercept_, self.ratio_ = params
        self.choice_ = {k: row[k] for k in ("analyzer", "loss", "C", "min_df")}
        if fixed:
            self.choice_["cv_folds"] = cv_rows[0]["cv_folds"]
        self.tuning_ = cv_rows + tried if tune else []
        if tune and cfg.calibrate:
            a, b = fit_calibration(dev_scores, dev_y)
            self.calibration_ = ("platt" if binary else "temperature", a, b)
        return self

    def _min_dfs(self, texts: list[str]) -> list[int]:
        """The min_df values the grid tries: the configured one, else 2 (and 1 for short texts)."""
        if self.cfg.min_df:
            return [self.cfg.min_df]
        return [2, 1] if mean_chars(texts) <= SHORT_TEXT_CHARS else [2]

    def _cv_points(self, texts: list[str], dev_texts: list[str], n_classes: int, analyzers: list[str],
                   losses: list[str]) -> list[tuple[int, str, str, float]]:
        """The grid points (min_df, analyzer, loss, C) that cross-validation scores, or ``[]`` when the grid
        is chosen on dev: cross-validation needs ``cv_folds`` > 1, at most :data:`CV_MAX_ROWS` labelled
        texts, a dev split under :data:`CV_MAX_DEV` texts, and more than one setting to choose from."""
        if not (self.cfg.cv_folds > 1 and len(texts) + len(dev_texts) <= CV_MAX_ROWS and len(dev_texts) < CV_MAX_DEV):
            return []
        points = [(m, a, loss, C) for m in self._min_dfs(texts) for a in analyzers for loss in losses
                  for C in ((self.cfg.C,) if self.cfg.C else c_grid(loss, n_classes))]
        return points if len(points) > 1 else []

    def cv_fits(self, texts: list[str], dev_texts: list[str], n_classes: int) -> int:
        """Linear fits that cross-validation makes when :meth:`fit` tunes on these texts (0: none, the grid
        is chosen on dev); the auto search's probe scales its estimate by it."""
        points = self._cv_points(texts, dev_texts, n_classes, self.candidate_analyzers(texts),
                                 self._losses(n_classes == 2, False))
        return len(points) * self.cfg.cv_folds

    def _cv_choice(self, texts: list[str], y: np.ndarray, dev_texts: list[str], dev_y: np.ndarray, n_classes: int,
                   analyzers: list[str], points: list[tuple[int, str, str, float]],
                   progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The one of ``points`` with the best out-of-fold (accuracy, macro-F1) over train + dev, and a row
        for each; ``({}, [])`` when the rarest label has fewer than 2 texts. Each fold fits its own
        vectorizers (per min_df) on its training part, as the final model will."""
        from sklearn.model_selection import StratifiedKFold
        from tqdm.auto import tqdm

        texts_all = list(texts) + list(dev_texts)
        y_all = np.concatenate([np.asarray(y), np.asarray(dev_y)])
        counts = np.bincount(y_all, minlength=n_classes)
        folds = int(min(self.cfg.cv_folds, counts[counts > 0].min()))
        if folds < 2:
            return {}, []
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=self.cfg.seed).split(texts_all, y_all))
        binary = n_classes == 2
        kinds = list(dict.fromkeys(k for a in analyzers for k in KINDS[a]))
        scores = {p: np.zeros((len(y_all), 1 if binary else n_classes)) for p in points}
        seconds = dict.fromkeys(points, 0.0)
        bar = tqdm(total=len(points) * folds, desc=f"sparse {folds}-fold cv", unit="fit", disable=not progress,
                   dynamic_ncols=True)
        for m in dict.fromkeys(p[0] for p in points):
            for fit_idx, held in splits:
                part = [texts_all[i] for i in fit_idx]
                self.vectorizers_, self.idf_ = [], []
                for kind in kinds:
                    self._fit_vectorizer(kind, part, m)
                fit_blocks = {k: self._block(i, part) for i, k in enumerate(kinds)}
                held_blocks = {k: self._block(i, [texts_all[j] for j in held]) for i, k in enumerate(kinds)}
                for p in (p for p in points if p[0] == m):
                    _, a, loss, C = p
                    t0 = time.perf_counter()
                    params = self._fit_linear(self._stack([fit_blocks[k] for k in KINDS[a]]), y_all[fit_idx],
                                              n_classes, loss, C, None)
                    scores[p][held] = self._scores(self._stack([held_blocks[k] for k in KINDS[a]]), *params)
                    seconds[p] += time.perf_counter() - t0
                    bar.update(1)
        bar.close()
        self.vectorizers_, self.idf_ = [], []
        rows: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], dict[str, Any]] | None = None
        for p in points:
            key = _dev_key(scores[p], y_all, binary)
            row = {"analyzer": p[1], "loss": p[2], "C": p[3], "min_df": p[0], "cv_folds": folds,
                   "seconds": round(seconds[p], 2), "cv_accuracy": round(key[0], 5), "cv_macro_f1": round(key[1], 5)}
            rows.append(row)
            if best is None or key > best[0]:
                best = (key, row)
        assert best is not None
        return {k: best[1][k] for k in ("analyzer", "loss", "C", "min_df")}, rows

    def _losses(self, binary: bool, soft: bool) -> list[str]:
        cfg = self.cfg
        if cfg.loss != "auto":
            if cfg.loss == "nblr" and not binary:
                raise ConfigError("loss='nblr' is for two classes; this data has more. Use 'lr', 'svm' or 'auto'.")
            if soft and cfg.loss == "svm":
                raise ConfigError("distilling into a sparse student needs a logistic loss; use loss='lr' or 'auto'.")
            return [cfg.loss]
        if soft:
            return ["nblr" if binary and cfg.nb else "lr"]
        # NB weighting helps binary sentiment (IMDB +1.6 points) but hurt many-class intents (banking77)
        return (["nblr"] if binary and cfg.nb else []) + ["lr", "svm"]

    def _fit_linear(self, X: sp.csr_matrix, y: np.ndarray, n_classes: int, loss: str, C: float,
                    soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coef (K', F), intercept (K',), ratio (K', F)) with K' = 1 for two classes."""
        targets = [1] if n_classes == 2 else list(range(n_classes))
        F = X.shape[1]
        ones = np.ones(F, dtype=np.float32)
        if loss == "svm" and soft is None and len(np.unique(y)) > 1:
            svc = LinearSVC(C=C, max_iter=self.cfg.max_iter, random_state=self.cfg.seed).fit(X, y)
            coef, b = svc.coef_.astype(np.float32), svc.intercept_.astype(np.float32)
            if n_classes > 2 and coef.shape[0] != n_classes:  # classes absent from training: never predicted
                full, fb = np.zeros((n_classes, F), np.float32), np.full(n_classes, -20.0, np.float32)
                full[svc.classes_], fb[svc.classes_] = coef, b
                coef, b = full, fb
            return coef, b, np.tile(ones, (len(targets), 1))
        def one(k: int) -> tuple[np.ndarray, float, np.ndarray]:
            if soft is not None:
                return self._fit_soft(X, soft[:, k].astype(np.float64), loss == "nblr", C)
            return self._fit_binary(X, (y == k).astype(np.int64), loss == "nblr", C)

        # one after another: fits in two threads were no faster on 2 idle cores (banking77 one-vs-rest)
        coefs, intercepts, ratios = zip(*(one(k) for k in targets))
        return np.stack(coefs), np.asarray(intercepts, dtype=np.float32), np.stack(ratios)

    def _fit_binary(self, X: sp.csr_matrix, yk: np.ndarray, use_nb: bool, C: float) -> tuple[np.ndarray, float, np.ndarray]:
        r = self._nb_ratio(X, yk) if use_nb else np.ones(X.shape[1], dtype=np.float32)
        if yk.min() == yk.max():  # a class absent from this training set: never predict it
            return np.zeros(X.shape[1], np.float32), (20.0 if yk[0] == 1 else -20.0), r
        lr = LogisticRegression(C=C, max_iter=self.cfg.max_iter, solver="liblinear", random_state=self.cfg.seed)
        lr.fit(X @ sp.diags(r) if use_nb else X, yk)
        return lr.coef_.ravel().astype(np.float32), float(lr.intercept_[0]), r

    def _fit_soft(self, X: sp.csr_matrix, pk: np.ndarray, use_nb: bool, C: float) -> tuple[np.ndarray, float, np.ndarray]:
        if use_nb:
            Xb = X.copy()
            Xb.data = np.ones_like(Xb.data)
            p = 1.0 + np.asarray(Xb.T @ pk).ravel()
            q = 1.0 + np.asarray(Xb.T @ (1 - pk)).ravel()
            r = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
            Xk = X @ sp.diags(r)
        else:
            r = np.ones(X.shape[1], dtype=np.float32)
            Xk = X
        n = X.shape[0]
        w = np.r_[pk, 1 - pk]
        yd = np.r_[np.ones(n, np.int64), np.zeros(n, np.int64)]
        keep = w > 1e-4  # rows with ~zero weight change nothing
        if yd[keep].min() == yd[keep].max():
            return np.zeros(X.shape[1], np.float32), (20.0 if yd[keep][0] == 1 else -20.0), r
        lr = LogisticRegression(C=C, max_iter=self.cfg.max_iter, solver="liblinear", random_state=self.cfg.seed)
        lr.fit(sp.vstack([Xk, Xk], format="csr")[keep], yd[keep], sample_weight=w[keep])
        return lr.coef_.ravel().astype(np.float32), float(lr.intercept_[0]), r

    @staticmethod
    def _nb_ratio(X: sp.csr_matrix, yk: np.ndarray, alpha: float = 1.0) -> np.ndarray:
        Xb = X.copy()
        Xb.data = np.ones_like(Xb.data)  # binarized counts, as in NBSVM
        p = alpha + np.asarray(Xb[yk == 1].sum(axis=0)).ravel()
        q = alpha + np.asarray(Xb[yk == 0].sum(axis=0)).ravel()
        return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)

    # -- inference ------------------------------------------------------------------------
    @staticmethod
    def _scores(X: sp.csr_matrix, coef: np.ndarray, intercept: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        # score_k = (x * r_k) . w_k + b_k = x . (r_k * w_k) + b_k
        return np.asarray(X @ (ratio * coef).T) + intercept

    def decision_function(self, texts: list[str]) -> np.ndarray:
        return self._scores(self._transform(texts), self.coef_, self.intercept_, self.ratio_)

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """(n, n_classes) probabilities; ``batch_size`` is ignored (one sparse product does all)."""
        s = self.decision_function(texts).astype(np.float64)
        if self.calibration_ is not None:
            _, a, b = self.calibration_
            if self.n_classes_ == 2:
                p1 = 1.0 / (1.0 + np.exp(-(a * s[:, 0] + b)))
                p = np.stack([1 - p1, p1], axis=1)
            else:
                p = _softmax(a * s)
        elif self.n_classes_ == 2:
            p1 = 1.0 / (1.0 + np.exp(-s[:, 0]))
            p = np.stack([1 - p1, p1], axis=1)
        else:  # models saved before calibration: normalized one-vs-rest sigmoids
            p = 1.0 / (1.0 + np.exp(-s))
            p = p / p.sum(axis=1, keepdims=True)
        if progress is not None:
            progress.update(len(texts))
        return p

    # -- persistence (no pickle) ---------------------------------------------------------
    def save(self, d: Path) -> None:
        vocab = []
        for kind, vec in zip(self.kinds_, self.vectorizers_):
            vocabulary = getattr(vec, "vocabulary_", None) or vec.vocabulary  # fitted, or loaded from a directory
            terms = [None] * len(vocabulary)
            for term, i in vocabulary.items():
                terms[i] = term
            vocab.append({"kind": kind, "params": _jsonable(_vectorizer_params(kind, self.cfg)), "terms": terms})
        meta: dict[str, Any] = {"n_classes": self.n_classes_, "vectorizers": vocab}
        if self.calibration_ is not None:
            kind, a, b = self.calibration_
            meta["calibration"] = {"kind": kind, "a": a, "b": b}
        (d / VOCAB).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        arrays = {"coef": self.coef_, "intercept": self.intercept_, "ratio": self.ratio_}
        arrays |= {f"idf_{i}": idf for i, idf in enumerate(self.idf_)}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(d / WEIGHTS))

    @classmethod
    def load(cls, d: Path, cfg: SparseConfig) -> "SparseModel":
        fix = f"A sparse model needs {VOCAB} and {WEIGHTS} from the same fit; retrain it or restore the directory."
        meta, arrays = read_family_files(d, VOCAB, WEIGHTS, fix)
        with damaged_files(d, f"{VOCAB} and {WEIGHTS}", fix):
            m = cls(cfg)
            m.n_classes_ = int(meta["n_classes"])
            m.kinds_, m.vectorizers_, m.idf_ = [], [], []
            for i, v in enumerate(meta["vectorizers"]):
                params = dict(v["params"])
                params["ngram_range"] = tuple(params["ngram_range"])
                vec = _make_vectorizer(v["kind"], params, vocabulary={t: j for j, t in enumerate(v["terms"])})
                m.kinds_.append(v["kind"])
                m.vectorizers_.append(vec)
                m.idf_.append(arrays[f"idf_{i}"])
                if arrays[f"idf_{i}"].shape != (len(v["terms"]),):
                    raise ValueError(f"idf_{i} has shape {arrays[f'idf_{i}'].shape} for {len(v['terms'])} terms")
            m.coef_, m.intercept_, m.ratio_ = arrays["coef"], arrays["intercept"], arrays["ratio"]
            if "calibration" in meta:
                c = meta["calibration"]
                m.calibration_ = (str(c["kind"]), float(c["a"]), float(c["b"]))
        m._check_shapes(d, fix)
        return m

    def _check_shapes(self, d: Path, fix: str) -> None:
        features = sum(len(v.vocabulary) for v in self.vectorizers_)
        k = 1 if self.n_classes_ == 2 else self.n_classes_
        want = {"coef": (k, features), "ratio": (k, features), "intercept": (k,)}
        for name, shape in want.items():
            if getattr(self, f"{name}_").shape != shape:
                raise ModelLoadError(f"{d}: {WEIGHTS} holds {name} of shape {getattr(self, f'{name}_').shape}, but "
                                     f"{VOCAB} describes {shape} ({features} n-grams, {self.n_classes_} classes); "
                                     f"the two files do not belong together. {fix}")


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


# -- the family protocol (see niche.families) ------------------------------------------------------

CONFIG = SparseConfig


def fit(cfg: SparseConfig, task: Any) -> tuple[SparseModel, dict[str, Any]]:
    model = SparseModel(cfg).fit(task.train.texts, task.y_train, len(task.labels), progress=task.progress,
                                 dev_texts=task.dev.texts, dev_y=task.y_dev)
    facts: dict[str, Any] = {"analyzers": model.kinds_, "chosen": model.choice_, "tuning": model.tuning_}
    if model.calibration_ is not None:
        facts["calibration"] = dict(zip(("kind", "a", "b"), model.calibration_))
    return model, facts


def load(path: Path, cfg: SparseConfig, info: dict[str, Any]) -> SparseModel:
    model = SparseModel.load(path, cfg)
    if model.n_classes_ != len(info["labels"]):
        raise ModelLoadError(f"{path}: {VOCAB} is for {model.n_classes_} classes but niche.json lists "
                             f"{len(info['labels'])} labels; the directory is inconsistent. Retrain it.")
    return model


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    chosen = info.get("training", {}).get("chosen")
    names = {"nblr": "NB-weighted logistic regression", "lr": "logistic regression", "svm": "linear SVM"}
    if not chosen:
        return ["- base: none (TF-IDF n-grams + NB-weighted logistic regression)"], []
    facts = [f"- base: none (TF-IDF {chosen['analyzer']} n-grams + {names.get(chosen['loss'], chosen['loss'])}, "
             f"C={chosen['C']:g}, chosen " + (f"by {chosen['cv_folds']}-fold cross-validation on train + dev)"
                                              if chosen.get("cv_folds") else "on the dev split)")]
    if info.get("training", {}).get("calibration"):
        facts.append("- probabilities calibrated on the dev split")
    return facts, []
