"""``TextClassifier``: one scikit-learn-like API over every model family.

Example:
    >>> from niche import TextClassifier
    >>> clf = TextClassifier("sparse").fit(["good", "great", "bad", "awful"], ["pos", "pos", "neg", "neg"])
    >>> clf.predict("really great")                                  # doctest: +SKIP
    ['pos']
    >>> clf.save("runs/toy")                                         # doctest: +SKIP
    >>> TextClassifier.load("runs/toy").predict_proba(["bad"]).shape  # doctest: +SKIP
    (1, 2)
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import families
from .config import config_to_dict
from .data import LabeledData, check_known_labels, check_trainable, stratified_split
from .errors import DataError, ModelLoadError
from .evaluation import compute_metrics, write_report
from .families import FitTask
from .modeldir import ModelInfo, write_dir_atomically

def unpaired_surrogate(text: str) -> int | None:
    """Index of the first unpaired UTF-16 surrogate in ``text``, or None.

    JSON can carry one (``"\\ud800"``) and Python keeps it in a ``str``, but it is not a character: it
    cannot be encoded as UTF-8, and tokenizers refuse it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def as_texts(X: str | Sequence[str]) -> list[str]:
    """A single string or a list of strings, handled the same way."""
    if isinstance(X, str):
        texts = [X]
    elif isinstance(X, LabeledData):
        return X.texts
    else:
        try:
            texts = list(X)
        except TypeError:
            raise DataError(f"expected a string or a list of strings, got {type(X).__name__}.") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"input {i}: expected a string, got {type(t).__name__} ({t!r:.60}).")
        j = unpaired_surrogate(t)
        if j is not None:
            raise DataError(f"input {i}: an unpaired surrogate {t[j]!r} at character {j} is not text; remove it "
                            "or fix how the text was decoded (a lone half of a UTF-16 pair).")
    return texts


def as_data(X: Any, y: Any, name: str) -> LabeledData:
    if isinstance(X, LabeledData):
        if y is not None:
            raise DataError(f"{name}: pass either LabeledData or (texts, labels), not both.")
        return X
    if y is None:
        raise DataError(f"{name}: labels are missing; call fit(texts, labels) or fit(read_labeled(path)).")
    texts = as_texts(X)
    labels = [str(v) for v in (list(y) if not isinstance(y, str) else [y])]
    if len(texts) != len(labels):
        raise DataError(f"{name}: {len(texts)} texts but {len(labels)} labels; they must pair up one to one.")
    for i, t in enumerate(texts):
        if not t.strip():
            raise DataError(f"{name}: text {i} is empty or whitespace-only; remove it or give it content.")
    return LabeledData(texts, labels, name, list(range(1, len(texts) + 1)))


class TextClassifier:
    """Train, evaluate, predict with, save and load a text classifier of any family.

    Args:
        family: a registered family (:data:`niche.families.FAMILIES`): ``"transformer"`` (fine-tune a
            Hugging Face encoder), ``"sparse"`` (TF-IDF n-grams + NB-weighted logistic regression),
            ``"scratch"`` (a small model from random initialization); ``"ensemble"`` models come from
            :func:`build_ensemble`.
        **params: settings of the family's config (:class:`~niche.config.TransformerConfig`,
            :class:`~niche.config.SparseConfig`, ...), e.g. ``base``, ``max_len``, ``epochs``.

    Attributes (after ``fit``, ``load`` or ``from_model``):
        classes_: labels in model order (column order of ``predict_proba``).
        config_: the validated family config.
        model_: the family's fitted model.
        info_: metadata written to ``niche.json`` (:class:`~niche.modeldir.ModelInfo` as a dict).
    """

    def __init__(self, family: str = "transformer", **params: Any):
        self.family = family
        self.params = params

    # -- training -------------------------------------------------------------------------
    def fit(
        self,
        X: LabeledData | Sequence[str],
        y: Sequence[str] | None = None,
        *,
        eval_data: LabeledData | tuple[Sequence[str], Sequence[str]] | None = None,
        dev_fraction: float = 0.1,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
        callbacks: tuple[Callable[[Any], None], ...] = (),
    ) -> "TextClassifier":
        """Train on ``X``/``y`` (or a :class:`LabeledData`).

        Args:
            eval_data: dev set for early stopping and the reported dev metrics. When ``None``, a
                seeded stratified ``dev_fraction`` of the training data is held out.
            checkpoint_dir: where the transformer family keeps resumable checkpoints
                (default: a temporary directory removed afterwards).
            resume: continue an interrupted run from ``checkpoint_dir``.
        Returns:
            ``self``.
        """
        cfg = families.make_config(self.family, **self.params)
        data = as_data(X, y, "training data")
        check_trainable(data)
        seed = getattr(cfg, "seed", 42)
        if eval_data is None:
            train, dev = stratified_split(data, dev_fraction, seed=seed)
            dev_source = f"{dev_fraction:.0%} stratified split of the training data (seed {seed})"
        else:
            train = data
            dev = eval_data if isinstance(eval_data, LabeledData) else as_data(*eval_data, "eval data")
            dev_source = str(dev.source)
        labels = train.classes
        check_known_labels(dev, labels)
        index = {lab: i for i, lab in enumerate(labels)}
        task = FitTask(train=train, dev=dev, labels=labels, y_train=np.array([index[v] for v in train.labels]),
                       y_dev=np.array([index[v] for v in dev.labels]), data_sha256=data.sha256(),
                       checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, callbacks=callbacks)
        if self.family in families.SEARCHES:
            return self._adopt(families.get(self.family).search(cfg, task, type(self)))
        t0 = time.perf_counter()
        model, facts = families.get(self.family).fit(cfg, task)
        training = {"data": str(data.source), "data_sha256": data.sha256(), "rows": len(train), "dev": dev_source,
                    "dev_rows": len(dev), "skipped_empty": data.skipped, "seconds": round(time.perf_counter() - t0, 2)}
        self._set_model(model, labels, cfg)
        self.info_ = self.describe(training | facts, dev)
        return self

    def _adopt(self, result: Any) -> "TextClassifier":
        """Become the winner of a search (:data:`niche.families.SEARCHES`): its family, model and metadata,
        plus the search's record; the search's files (leaderboard, plot) are saved with the model."""
        win = result.winner
        self.family, self.params = win.family, config_to_dict(win.config_) if win.config_ is not None else {}
        self._set_model(win.model_, win.classes_, win.config_)
        self.info_ = dict(win.info_)
        self.info_["training"] = dict(self.info_["training"]) | {"auto": result.summary}
        self.leaderboard_ = result.leaderboard
        self.files_ = dict(result.files)
        return self

    @classmethod
    def from_model(cls, family: str, model: Any, labels: Sequence[str], config: Any = None,
                   info: dict[str, Any] | None = None) -> "TextClassifier":
        """Wrap a model built outside :meth:`fit` (distillation, ensembles, your own training code).

        Args:
            model: a family model (``predict_proba(texts)`` and ``save(dir)``, see :mod:`niche.families`).
            labels: its labels in column order.
            config: the family config it was built with.
            info: its ``niche.json`` metadata; without it, call :meth:`describe` before :meth:`save`.
        """
        clf = cls(family, **(config_to_dict(config) if config is not None else {}))
        clf._set_model(model, list(labels), config)
        if info is not None:
            clf.info_ = dict(info)
        return clf

    def _set_model(self, model: Any, labels: list[str], config: Any) -> None:
        self.model_ = model
        self.classes_ = list(labels)
        self.config_ = config

    def describe(self, training: dict[str, Any], dev: LabeledData) -> dict[str, Any]:
        """The ``niche.json`` metadata of this fitted model: ``training`` facts (data, sha256, rows, dev
        split, seconds, ...) plus its metrics on ``dev``; also stored as ``info_``."""
        self._check_fitted()
        cfg = self.config_
        proba = self.predict_proba(dev.texts)
        dev_metrics = compute_metrics(dev.labels, [self.classes_[i] for i in proba.argmax(1)], self.classes_, proba)
        training = training | {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.info_ = ModelInfo(
            family=self.family, labels=self.classes_, config=config_to_dict(cfg) if cfg is not None else {},
            training=training, metrics={"dev": dev_metrics},
            base=getattr(cfg, "base", None) if getattr(families.get(self.family), "USES_BASE", True) else None,
            max_len=getattr(cfg, "max_len", None), truncation=getattr(cfg, "truncation", None),
        ).to_dict()
        return self.info_

    # -- inference ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelLoadError("this TextClassifier is not trained; call fit(...) or TextClassifier.load(dir) first.")

    def predict_proba(self, X: str | Sequence[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """Class probabilities, shape (n_texts, n_classes), columns in ``classes_`` order."""
        self._check_fitted()
        texts = as_texts(X)
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return self.model_.predict_proba(texts, batch_size=batch_size, progress=progress)

    def predict(self, X: str | Sequence[str], batch_size: int | None = None) -> list[str]:
        """Predicted labels, one per text (a single string gives a list of one)."""
        proba = self.predict_proba(X, batch_size=batch_size)
        return [self.classes_[i] for i in proba.argmax(1)]

    def score(self, X: LabeledData | Sequence[str], y: Sequence[str] | None = None,
              batch_size: int | None = None) -> float:
        """Accuracy on labeled data (scikit-learn's ``ClassifierMixin.score``); :meth:`evaluate` for the
        full report.

        Raises:
            DataError: a label of the data was never seen in training.
        """
        return float(self.evaluate(X, y, batch_size=batch_size)["accuracy"])

    def evaluate(self, X: LabeledData | Sequence[str], y: Sequence[str] | None = None, out_dir: str | Path | None = None,
                 batch_size: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Score on labeled data; with ``out_dir``, also write the full report there.

        Raises:
            DataError: a label of the data was never seen in training.
        """
        self._check_fitted()
        data = as_data(X, y, "evaluation data")
        check_known_labels(data, self.classes_)
        proba = self.predict_proba(data.texts, batch_size=batch_size, progress=progress)
        pred = [self.classes_[i] for i in proba.argmax(1)]
        metrics = compute_metrics(data.labels, pred, self.classes_, proba)
        if out_dir is not None:
            write_report(Path(out_dir), data.texts, data.labels, proba, self.classes_, metrics,
                         title=f"{self.family} on {Path(str(data.source)).name}")
        return metrics

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically; returns its path."""
        self._check_fitted()
        if not hasattr(self, "info_"):
            raise ModelLoadError("this TextClassifier has no metadata yet; call describe(training, dev) first.")
        path = Path(path)

        def fill(d: Path) -> None:
            families.save_model(d, self.model_, self.info_, path.name)
            for name, data in getattr(self, "files_", {}).items():  # a search's leaderboard and plot
                (d / name).write_bytes(data)
            if "leaderboard.md" in getattr(self, "files_", {}):
                board = self.files_["leaderboard.md"].decode("utf-8").split("\n", 1)[1]
                with (d / "README.md").open("a", encoding="utf-8") as f:
                    f.write("\n## How this model was chosen (niche auto)\n" + board)

        write_dir_atomically(path, fill)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TextClassifier":
        """Load a directory written by :meth:`save` (any family or runtime).

        Raises:
            ModelLoadError: not a niche model directory, or a damaged one; the message says the fix.
        """
        model, cfg, info = families.load_model(path)
        return cls.from_model(info["family"], model, info["labels"], cfg, info)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"TextClassifier({self.family!r}{', ' + params if params else ''})"


def build_ensemble(models: Sequence[str | Path | TextClassifier], dev: LabeledData, steps: int = 20) -> TextClassifier:
    """A weighted probability ensemble of 2-5 models (directories or fitted classifiers), weights
    chosen on ``dev`` (see :mod:`niche.families.ensemble`)."""
    from .config import EnsembleConfig
    from .families import ensemble

    members = []
    for i, m in enumerate(models):
        clf = m if isinstance(m, TextClassifier) else TextClassifier.load(m)
        members.append((clf.model_, clf.info_, str(m) if not isinstance(m, TextClassifier) else f"member {i}"))
    model, info = ensemble.build(members, dev, EnsembleConfig(steps=steps))
    return TextClassifier.from_model("ensemble", model, info["labels"], EnsembleConfig(steps=steps), info)
