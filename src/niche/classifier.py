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
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import ScratchConfig, SparseConfig, TransformerConfig, config_to_dict, make_config
from .data import LabeledData, check_known_labels, check_trainable, stratified_split
from .errors import ConfigError, DataError, ModelLoadError
from .evaluation import compute_metrics, metrics_table, write_report

META = "niche.json"


def _as_texts(X: str | Sequence[str]) -> list[str]:
    """A single string or a list of strings, handled the same way."""
    if isinstance(X, str):
        return [X]
    if isinstance(X, LabeledData):
        return X.texts
    try:
        texts = list(X)
    except TypeError:
        raise DataError(f"expected a string or a list of strings, got {type(X).__name__}.") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"input {i}: expected a string, got {type(t).__name__} ({t!r:.60}).")
    return texts


def _as_data(X: Any, y: Any, name: str) -> LabeledData:
    if isinstance(X, LabeledData):
        if y is not None:
            raise DataError(f"{name}: pass either LabeledData or (texts, labels), not both.")
        return X
    if y is None:
        raise DataError(f"{name}: labels are missing; call fit(texts, labels) or fit(read_labeled(path)).")
    texts = _as_texts(X)
    labels = [str(v) for v in (list(y) if not isinstance(y, str) else [y])]
    if len(texts) != len(labels):
        raise DataError(f"{name}: {len(texts)} texts but {len(labels)} labels; they must pair up one to one.")
    for i, t in enumerate(texts):
        if not t.strip():
            raise DataError(f"{name}: text {i} is empty or whitespace-only; remove it or give it content.")
    return LabeledData(texts, labels, name, list(range(1, len(texts) + 1)))


def library_versions() -> dict[str, str]:
    import sklearn
    import torch
    import transformers

    return {"niche": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def write_dir_atomically(out: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory in a temp sibling, then rename it into place.

    A crash at any point leaves either the previous ``out`` or the new one, never a half-written one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename a finished directory ``tmp`` to ``out`` (a sibling), replacing any previous ``out``."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class TextClassifier:
    """Train, evaluate, predict with, save and load a text classifier of any family.

    Args:
        family: ``"transformer"`` (fine-tune a Hugging Face encoder) or ``"sparse"`` (TF-IDF n-grams
            + NB-weighted logistic regression).
        **params: settings of the family's config (:class:`~niche.config.TransformerConfig` or
            :class:`~niche.config.SparseConfig`), e.g. ``base``, ``max_len``, ``epochs``.

    Attributes (after ``fit`` or ``load``):
        classes_: labels in model order (column order of ``predict_proba``).
        config_: the validated family config.
        info_: metadata written to ``niche.json``.
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
        cfg = make_config(self.family, **self.params)
        data = _as_data(X, y, "training data")
        check_trainable(data)
        if eval_data is None:
            train, dev = stratified_split(data, dev_fraction, seed=getattr(cfg, "seed", 42))
            dev_source = f"{dev_fraction:.0%} stratified split of the training data (seed {getattr(cfg, 'seed', 42)})"
        else:
            train = data
            dev = eval_data if isinstance(eval_data, LabeledData) else _as_data(*eval_data, "eval data")
            dev_source = str(dev.source)
        labels = train.classes
        check_known_labels(dev, labels)
        index = {lab: i for i, lab in enumerate(labels)}
        y_train = np.array([index[v] for v in train.labels])
        y_dev = np.array([index[v] for v in dev.labels])

        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if isinstance(cfg, SparseConfig):
            from .families.sparse import SparseModel

            self.model_ = SparseModel(cfg).fit(train.texts, y_train, len(labels), progress=progress)
            extra["analyzers"] = self.model_.kinds_
        else:
            extra = self._fit_transformer(cfg, train, dev, labels, y_train, y_dev, checkpoint_dir, resume,
                                          progress, callbacks, data.sha256())
        seconds = time.perf_counter() - t0
        self._finish(cfg, labels, str(data.source), data.sha256(), len(train), dev, dev_source, data.skipped, seconds, extra)
        return self

    def _finish(self, cfg: Any, labels: list[str], source: str, sha: str, rows: int, dev: LabeledData, dev_source: str,
                skipped: int, seconds: float, extra: dict[str, Any]) -> None:
        """Set the fitted attributes and the ``niche.json`` metadata (also used by distillation)."""
        self.config_ = cfg
        self.classes_ = labels
        dev_metrics = compute_metrics(dev.labels, self.predict(dev.texts), labels)
        self.info_ = {
            "format_version": 1,
            "family": self.family,
            "base": None if self.family == "scratch" else getattr(cfg, "base", None),
            "max_len": getattr(cfg, "max_len", None),
            "truncation": getattr(cfg, "truncation", None),
            "labels": labels,
            "config": config_to_dict(cfg),
            "training": {
                "data": source, "data_sha256": sha, "rows": rows, "dev": dev_source,
                "dev_rows": len(dev), "skipped_empty": skipped, "seconds": round(seconds, 2),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            } | extra,
            "metrics": {"dev": dev_metrics},
            "versions": library_versions(),
        }

    def _fit_transformer(self, cfg: TransformerConfig, train: LabeledData, dev: LabeledData, labels: list[str],
                         y_train: np.ndarray, y_dev: np.ndarray, checkpoint_dir: str | Path | None, resume: bool,
                         progress: bool, callbacks: tuple, data_sha: str) -> dict[str, Any]:
        from .families.transformer import TransformerModel
        from .training import fingerprint, train_transformer

        scratch_info: dict[str, Any] = {}
        if isinstance(cfg, ScratchConfig):
            from .families.scratch import build_scratch

            model, tok, scratch_info = build_scratch(cfg, labels, train.texts)
            tm = TransformerModel(cfg, model, tok)
        else:
            tm = TransformerModel.from_base(cfg, labels)
        train_ids, dev_ids = tm.encode(train.texts), tm.encode(dev.texts)
        cfg_fp = {k: v for k, v in config_to_dict(cfg).items() if k not in ("device", "threads", "checkpoint_every", "grad_accum")}
        fp = fingerprint(data_sha, dev.sha256(), labels, cfg_fp)
        tmp_ckpt = checkpoint_dir is None
        ckpt = Path(checkpoint_dir) if checkpoint_dir else Path(tempfile.mkdtemp(prefix="niche-ckpt-"))
        try:
            state = train_transformer(tm, train_ids, y_train, dev_ids, y_dev, cfg, ckpt, fp, resume=resume,
                                      progress=progress, callbacks=callbacks)
        finally:
            if tmp_ckpt:
                shutil.rmtree(ckpt, ignore_errors=True)
        self.model_ = tm
        truncated = sum(1 for x in train_ids if len(x) >= cfg.max_len)
        return {"steps": state.global_step, "total_steps": state.total_steps, "best_step": state.best_step,
                "stopped_early": state.stopped_early, "evals": state.evals, "loss_curve": state.losses,
                "train_texts_truncated": truncated, "device": str(tm.device)} | scratch_info

    # -- inference ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelLoadError("this TextClassifier is not trained; call fit(...) or TextClassifier.load(dir) first.")

    def predict_proba(self, X: str | Sequence[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """Class probabilities, shape (n_texts, n_classes), columns in ``classes_`` order."""
        self._check_fitted()
        texts = _as_texts(X)
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        if self.family == "sparse":
            p = self.model_.predict_proba(texts)
            if progress is not None:
                progress.update(len(texts))
            return p
        return self.model_.predict_proba(texts, batch_size=batch_size, progress=progress)

    def predict(self, X: str | Sequence[str], batch_size: int | None = None) -> list[str]:
        """Predicted labels, one per text (a single string gives a list of one)."""
        proba = self.predict_proba(X, batch_size=batch_size)
        return [self.classes_[i] for i in proba.argmax(1)]

    def evaluate(self, X: LabeledData | Sequence[str], y: Sequence[str] | None = None, out_dir: str | Path | None = None,
                 batch_size: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Score on labeled data; with ``out_dir``, also write the full report there.

        Raises:
            DataError: a label of the data was never seen in training.
        """
        self._check_fitted()
        data = _as_data(X, y, "evaluation data")
        check_known_labels(data, self.classes_)
        proba = self.predict_proba(data.texts, batch_size=batch_size, progress=progress)
        pred = [self.classes_[i] for i in proba.argmax(1)]
        metrics = compute_metrics(data.labels, pred, self.classes_)
        if out_dir is not None:
            write_report(Path(out_dir), data.texts, data.labels, proba, self.classes_, metrics,
                         title=f"{self.family} on {Path(str(data.source)).name}")
        return metrics

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically; returns its path."""
        self._check_fitted()
        path = Path(path)

        def fill(d: Path) -> None:
            self.model_.save(d)
            (d / META).write_text(json.dumps(self.info_, indent=2, ensure_ascii=False), encoding="utf-8")
            (d / "README.md").write_text(self._model_card(path.name), encoding="utf-8")

        write_dir_atomically(path, fill)
        return path

    def _model_card(self, name: str) -> str:
        info = self.info_
        if info["family"] == "ensemble":
            from .ensemble import model_card

            return model_card(name, info)
        tr = info["training"]
        dev = info["metrics"]["dev"]
        lines = [
            f"# {name}", "",
            f"A **{info['family']}** text classifier trained with [niche](https://example.invalid/niche) "
            f"on `{Path(tr['data']).name}` ({tr['rows']} rows; dev: {tr['dev']}, {tr['dev_rows']} rows).", "",
            f"- base: `{info['base']}`" if info["base"] and info["family"] != "scratch" else (
                f"- base: none (random initialization, {tr.get('arch', 'scratch')}; tokenizer learned on the training data)"
                if info["family"] == "scratch" else "- base: none (TF-IDF n-grams + NB-weighted logistic regression)"),
            f"- labels ({len(info['labels'])}): " + ", ".join(f"`{lab}`" for lab in info["labels"][:30])
            + (" ..." if len(info["labels"]) > 30 else ""),
        ]
        if info["max_len"]:
            lines.append(f"- max_len {info['max_len']}, long-text policy `{info['truncation']}`")
        lines += [f"- training data sha256 `{tr['data_sha256']}`; trained in {tr['seconds']} s", "",
                  "## Evaluation (dev)", "", metrics_table(dev)]
        for split, m in info["metrics"].items():
            if split != "dev":
                lines += [f"## Evaluation ({split})", "", metrics_table(m)]
        lines += ["## Use", "", "```python", "from niche import TextClassifier",
                  f'clf = TextClassifier.load("{name}")', 'clf.predict(["some text"])', "```"]
        if info["family"] == "transformer":
            lines += ["", "Or with plain transformers:", "", "```python",
                      "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                      f'model = AutoModelForSequenceClassification.from_pretrained("{name}")', "```"]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "TextClassifier":
        """Load a directory written by :meth:`save`."""
        path = Path(path)
        if not path.is_dir():
            raise ModelLoadError(f"{path}: model directory not found. Train one with `niche train --out {path}`.")
        meta_path = path / META
        if not meta_path.is_file():
            hint = (" It looks like a plain Hugging Face model; fine-tune it with `niche train --base "
                    f"{path}`." if (path / "config.json").exists() else "")
            raise ModelLoadError(f"{path}: no {META}; this is not a niche model directory.{hint}")
        try:
            info = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{meta_path}: corrupt JSON ({e}). Retrain or restore the directory.") from None
        family = info.get("family")
        if family == "ensemble":
            from .ensemble import load_ensemble

            return load_ensemble(path, info)
        try:
            cfg = make_config(family, **info.get("config", {}))
        except ConfigError as e:
            raise ModelLoadError(f"{meta_path}: {e}") from None
        self = cls(family, **info.get("config", {}))
        if family == "sparse":
            from .families.sparse import SparseModel

            self.model_ = SparseModel.load(path, cfg)
        elif info.get("runtime", "torch") == "onnx":
            from .families.onnx import OnnxTransformerModel

            self.model_ = OnnxTransformerModel.load(path, cfg)
        else:
            if family == "scratch":
                from .families import scratch  # noqa: F401  (registers the niche-bilstm model type)
            from .families.transformer import TransformerModel

            self.model_ = TransformerModel.load(path, cfg)
        if family != "sparse":
            if self.model_.labels != info["labels"]:
                raise ModelLoadError(f"{path}: config.json labels differ from {META} labels; the directory is inconsistent.")
        self.config_ = cfg
        self.classes_ = list(info["labels"])
        self.info_ = info
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"TextClassifier({self.family!r}{', ' + params if params else ''})"
