"""The ``ensemble`` family: a weighted probability average of niche models.

A sparse n-gram model and a transformer make different mistakes; averaging their probabilities with
weights chosen on dev data is a cheap, CPU-friendly way to beat both. The ensemble is a normal niche
model directory (members copied under ``members/``, each a complete niche directory loaded through
the family registry), so ``predict``, ``evaluate``, batch prediction and ``niche serve`` use it
unchanged.

Example:
    >>> from niche import build_ensemble
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

from ..config import EnsembleConfig
from ..data import LabeledData, check_known_labels
from ..errors import ConfigError, ModelLoadError
from ..evaluation import compute_metrics
from ..modeldir import ModelInfo
from . import align, load_model, save_model

CONFIG = EnsembleConfig


class EnsembleModel:
    """Member models and their weights; probabilities are reordered to a common label order."""

    def __init__(self, members: list[Any], member_labels: list[list[str]], weights: list[float], labels: list[str]):
        self.members = members
        self.member_labels = member_labels
        self.weights = weights
        self.labels = labels

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for m, have, w in zip(self.members, self.member_labels, self.weights):
            if w > 0:
                out += w * align(m.predict_proba(texts, batch_size=batch_size), have, self.labels)
        if progress is not None:
            progress.update(len(texts))
        return out.astype(np.float32)

    def save(self, d: Path) -> None:
        for i, (m, info) in enumerate(zip(self.members, self.member_infos)):
            save_model(d / "members" / str(i), m, info, str(i))


def _compositions(k: int, steps: int) -> list[tuple[float, ...]]:
    """All weight vectors on the simplex with entries in multiples of 1/steps."""
    out = []
    for cut in itertools.combinations(range(steps + k - 1), k - 1):
        parts = np.diff([-1, *cut, steps + k - 1]) - 1
        out.append(tuple(float(p) / steps for p in parts))
    return out


def build(members: Sequence[tuple[Any, dict[str, Any], str]], dev: LabeledData,
          cfg: EnsembleConfig | None = None) -> tuple[EnsembleModel, dict[str, Any]]:
    """Choose weights for ``members`` — ``(model, niche.json info, name)`` triples — on ``dev``: the grid
    point (multiples of 1/steps) with the highest dev accuracy, ties broken by lower log-loss.
    Returns the ensemble model and its ``niche.json`` info. (``niche.build_ensemble`` wraps this for
    directories and fitted classifiers.)"""
    cfg = cfg or EnsembleConfig()
    cfg.validate()
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least 2 models, got {len(members)}; pass --model twice or more.")
    if len(members) > 5:
        raise ConfigError(f"at most 5 members (the weight grid grows fast); got {len(members)}.")
    t0 = time.perf_counter()
    labels = list(members[0][1]["labels"])
    for _, info, name in members:
        if info["family"] == "ensemble":
            raise ConfigError(f"{name} is itself an ensemble; list its members instead.")
        if sorted(info["labels"]) != sorted(labels):
            raise ConfigError(f"{name} has labels {sorted(info['labels'])} but {members[0][2]} has {sorted(labels)}; "
                              "ensemble members must predict the same label set.")
    check_known_labels(dev, labels, "the members' training")
    y = np.array([labels.index(v) for v in dev.labels])
    probs = [align(m.predict_proba(dev.texts), info["labels"], labels) for m, info, _ in members]
    member_acc = [float((p.argmax(1) == y).mean()) for p in probs]
    best, best_key = None, None
    for w in _compositions(len(members), cfg.steps):
        p = sum(wi * pi for wi, pi in zip(w, probs))
        acc = float((p.argmax(1) == y).mean())
        ll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        key = (acc, -ll)
        if best_key is None or key > best_key:
            best, best_key = w, key
    assert best is not None  # the grid is never empty
    model = _model([m for m, _, _ in members], [info for _, info, _ in members], list(best), labels)
    pred = [labels[i] for i in model.predict_proba(dev.texts).argmax(1)]
    info = ModelInfo(
        family="ensemble", labels=labels, config={"steps": cfg.steps},
        training={"data": str(dev.source), "rows": 0, "dev": str(dev.source), "dev_rows": len(dev),
                  "seconds": round(time.perf_counter() - t0, 2),
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "weights_chosen_on": "dev accuracy, ties by log-loss, grid 1/%d" % cfg.steps},
        metrics={"dev": compute_metrics(dev.labels, pred, labels)},
        extra={"members": [{"source": name, "family": info["family"], "base": info.get("base"), "weight": w,
                            "dev_accuracy": a}
                           for (_, info, name), w, a in zip(members, best, member_acc)]},
    )
    return model, info.to_dict()


def _model(models: list[Any], infos: list[dict[str, Any]], weights: list[float], labels: list[str]) -> EnsembleModel:
    m = EnsembleModel(models, [list(i["labels"]) for i in infos], weights, labels)
    m.member_infos = infos
    return m


# -- the family protocol (see niche.families) ------------------------------------------------------

def fit(cfg: EnsembleConfig, task: Any) -> Any:
    raise ConfigError("an ensemble is built from trained models, not from data: use `niche ensemble --model A "
                      "--model B --eval dev.csv` or niche.build_ensemble([...], dev).")


def load(path: Path, cfg: EnsembleConfig, info: dict[str, Any]) -> EnsembleModel:
    models, infos = [], []
    for i, _ in enumerate(info.get("members", [])):
        d = path / "members" / str(i)
        if not d.is_dir():
            raise ModelLoadError(f"{path}: member directory members/{i} is missing; the ensemble is incomplete. "
                                 "Rebuild it with `niche ensemble`.")
        model, _, member_info = load_model(d)
        models.append(model)
        infos.append(member_info)
    if len(models) < 2:
        raise ModelLoadError(f"{path}/niche.json lists {len(models)} members; an ensemble needs at least 2.")
    return _model(models, infos, [float(m["weight"]) for m in info["members"]], list(info["labels"]))


def model_card(name: str, info: dict[str, Any]) -> str:
    """The ensemble's own card: a table of members and weights."""
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


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    return [], []
