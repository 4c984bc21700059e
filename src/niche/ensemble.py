"""Weighted probability ensembles of niche models (``family="ensemble"``).

A sparse n-gram model and a transformer make different mistakes; averaging their probabilities with
weights chosen on dev data is a cheap, CPU-friendly way to beat both. The ensemble is a normal niche
model directory (members copied under ``members/``), so ``predict``, ``evaluate``, batch prediction
and ``niche serve`` use it unchanged.

Example:
    >>> from niche.ensemble import build_ensemble
    >>> ens = build_ensemble(["models/sparse", "models/zh-bert"], read_labeled("dev.csv"))   # doctest: +SKIP
    >>> ens.save("models/ensemble")                                                           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import LabeledData
from .errors import ConfigError, ModelLoadError


class EnsembleModel:
    """Members and their weights; probabilities are reordered to a common label order."""

    def __init__(self, members: list[Any], weights: list[float], labels: list[str]):
        self.members = members
        self.weights = weights
        self.labels = labels
        self._perm = [[list(m.classes_).index(lab) for lab in labels] for m in members]

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for m, w, perm in zip(self.members, self.weights, self._perm):
            if w > 0:
                out += w * m.predict_proba(texts, batch_size=batch_size)[:, perm]
        if progress is not None:
            progress.update(len(texts))
        return out.astype(np.float32)

    def save(self, d: Path) -> None:
        for i, m in enumerate(self.members):
            m.save(d / "members" / str(i))


def _compositions(k: int, steps: int) -> list[tuple[float, ...]]:
    """All weight vectors on the simplex with entries in multiples of 1/steps."""
    out = []
    for cut in itertools.combinations(range(steps + k - 1), k - 1):
        parts = np.diff([-1, *cut, steps + k - 1]) - 1
        out.append(tuple(float(p) / steps for p in parts))
    return out


def build_ensemble(models: Sequence[Any], dev: LabeledData, steps: int = 20) -> Any:
    """Load ``models`` (dirs or fitted TextClassifiers) and choose weights on ``dev``: the grid point
    (multiples of 1/steps) with the highest dev accuracy, ties broken by lower log-loss. Returns a
    fitted ``TextClassifier("ensemble")``."""
    from .classifier import TextClassifier, library_versions
    from .evaluation import compute_metrics

    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least 2 models, got {len(models)}; pass --model twice or more.")
    if len(models) > 5:
        raise ConfigError(f"at most 5 members (the weight grid grows fast); got {len(models)}.")
    t0 = time.perf_counter()
    members = [m if isinstance(m, TextClassifier) else TextClassifier.load(m) for m in models]
    names = [str(m) if not isinstance(m, TextClassifier) else f"member {i}" for i, m in enumerate(models)]
    labels = list(members[0].classes_)
    for n, m in zip(names, members):
        if m.family == "ensemble":
            raise ConfigError(f"{n} is itself an ensemble; list its members instead.")
        if sorted(m.classes_) != sorted(labels):
            raise ConfigError(f"{n} has labels {sorted(m.classes_)} but {names[0]} has {sorted(labels)}; "
                              "ensemble members must predict the same label set.")
    from .data import check_known_labels

    check_known_labels(dev, labels, "the members' training")
    y = np.array([labels.index(v) for v in dev.labels])
    probs = [m.predict_proba(dev.texts)[:, [list(m.classes_).index(lab) for lab in labels]] for m in members]
    member_acc = [float((p.argmax(1) == y).mean()) for p in probs]
    best, best_key = None, None
    for w in _compositions(len(members), steps):
        p = sum(wi * pi for wi, pi in zip(w, probs))
        acc = float((p.argmax(1) == y).mean())
        ll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        key = (acc, -ll)
        if best_key is None or key > best_key:
            best, best_key = w, key
    assert best is not None
    clf = TextClassifier("ensemble")
    clf.model_ = EnsembleModel(members, list(best), labels)
    clf.classes_ = labels
    clf.config_ = None
    pred = [labels[i] for i in clf.model_.predict_proba(dev.texts).argmax(1)]
    clf.info_ = {
        "format_version": 1, "family": "ensemble", "base": None, "max_len": None, "truncation": None, "labels": labels,
        "config": {"steps": steps},
        "members": [{"source": n, "family": m.family, "base": m.info_.get("base"), "weight": w, "dev_accuracy": a}
                    for n, m, w, a in zip(names, members, best, member_acc)],
        "training": {"data": str(dev.source), "rows": 0, "dev": str(dev.source), "dev_rows": len(dev),
                     "seconds": round(time.perf_counter() - t0, 2),
                     "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "weights_chosen_on": "dev accuracy, ties by log-loss, grid 1/%d" % steps},
        "metrics": {"dev": compute_metrics(dev.labels, pred, labels)},
        "versions": library_versions(),
    }
    return clf


def load_ensemble(path: Path, info: dict[str, Any]) -> Any:
    from .classifier import TextClassifier

    members = []
    for i, _ in enumerate(info.get("members", [])):
        d = path / "members" / str(i)
        if not d.is_dir():
            raise ModelLoadError(f"{path}: member directory members/{i} is missing; the ensemble is incomplete. "
                                 "Rebuild it with `niche ensemble`.")
        members.append(TextClassifier.load(d))
    if len(members) < 2:
        raise ModelLoadError(f"{path}/niche.json lists {len(members)} members; an ensemble needs at least 2.")
    clf = TextClassifier("ensemble")
    clf.model_ = EnsembleModel(members, [float(m["weight"]) for m in info["members"]], list(info["labels"]))
    clf.classes_ = list(info["labels"])
    clf.config_ = None
    clf.info_ = info
    return clf


def model_card(name: str, info: dict[str, Any]) -> str:
    dev = info["metrics"]["dev"]
    lines = [f"# {name}", "", "A weighted probability **ensemble** built with niche; weights chosen on "
             f"`{Path(info['training']['dev']).name}` ({info['training']['dev_rows']} rows).", "",
             "| member | family | base | weight | dev accuracy |", "|---|---|---|---:|---:|"]
    for i, m in enumerate(info["members"]):
        lines.append(f"| members/{i} ({Path(m['source']).name}) | {m['family']} | {m['base'] or ''} | {m['weight']:.2f} | "
                     f"{m['dev_accuracy'] * 100:.2f} |")
    lines += ["", f"Ensemble dev accuracy: {dev['accuracy'] * 100:.2f} %.", "", "```python", "from niche import TextClassifier",
              f'TextClassifier.load("{name}").predict(["some text"])', "```"]
    return "\n".join(lines) + "\n"

