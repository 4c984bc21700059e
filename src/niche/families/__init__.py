"""The registry of model families: one name, one module, one small protocol.

:class:`~niche.TextClassifier` never asks *which* family it holds; it looks the family up here
and calls the module's functions. A family module provides (see :class:`Family`):

- ``CONFIG``: its settings dataclass (from :mod:`niche.config`), or ``None`` for a runtime;
- ``fit(cfg, task) -> (model, facts)``: train on a :class:`FitTask`; ``facts`` go to
  ``niche.json["training"]``;
- ``load(path, cfg, info) -> model``: open a saved directory;
- ``card_facts(info, name) -> (facts, usage)``: the family's lines of the model card;
- optionally ``USES_BASE = False`` when the config's ``base`` field means nothing for the family
  (``niche.json`` then records no base), and ``model_card(name, info)`` for a card of its own.

The fitted model object has ``predict_proba(texts, batch_size=None, progress=None)`` (an
(n, n_classes) float array in ``labels`` order) and ``save(dir)``.

Adding a family is one new module with those four names plus one line in :data:`FAMILIES`
(docs/architecture.md walks through it). Modules are imported on first use, so a sparse-only
user never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ..config import build_config
from ..data import LabeledData
from ..errors import ConfigError, ModelLoadError
from ..modeldir import CARD, ModelInfo, model_card, read_info, write_info

FAMILIES: dict[str, str] = {
    "transformer": "niche.families.transformer",
    "sparse": "niche.families.sparse",
    "scratch": "niche.families.scratch",
    "static": "niche.families.static",
    "sentence": "niche.families.sentence",
    "ensemble": "niche.families.ensemble",
}
"""Trainable families (``TextClassifier(family)``) and the module implementing each."""

RUNTIMES: dict[str, str] = {
    "onnx": "niche.families.onnx",
}
"""Inference runtimes: a directory whose ``niche.json`` says ``"runtime": NAME`` is loaded by this module
(its config is still the one of the family it was exported from)."""


SEARCHES: dict[str, str] = {
    "auto": "niche.families.auto",
}
"""Searches: ``TextClassifier(name)`` trains several families and keeps the best. The module has
``CONFIG`` and ``search(cfg, task) -> SearchResult`` (the winner, a fitted classifier of its own family,
plus files saved beside it); a search writes no directory of its own kind."""


class Model(Protocol):
    """What a fitted family model offers the classifier."""

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray: ...

    def save(self, d: Path) -> None: ...


@dataclass
class FitTask:
    """Everything a family's ``fit`` may use: the split data, label indices, and run options."""

    train: LabeledData
    dev: LabeledData
    labels: list[str]
    y_train: np.ndarray
    y_dev: np.ndarray
    data_sha256: str
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool = False
    callbacks: tuple[Callable[[Any], None], ...] = field(default_factory=tuple)


class Family(Protocol):
    """The module-level names of a family module."""

    CONFIG: type | None

    def fit(self, cfg: Any, task: FitTask) -> tuple[Model, dict[str, Any]]: ...

    def load(self, path: Path, cfg: Any, info: dict[str, Any]) -> Model: ...

    def card_facts(self, info: dict[str, Any], name: str) -> tuple[list[str], list[str]]: ...


def names() -> list[str]:
    """Registered family names (runtimes excluded)."""
    return list(FAMILIES)


def get(name: str) -> Family:
    """The module of family (or runtime) ``name``."""
    path = FAMILIES.get(name) or RUNTIMES.get(name) or SEARCHES.get(name)
    if path is None:
        raise ConfigError(f"unknown family {name!r}; expected one of: {', '.join([*FAMILIES, *SEARCHES])}.")
    module: ModuleType = importlib.import_module(path)
    return module  # type: ignore[return-value]


def make_config(family: str, **params: Any) -> Any:
    """The validated config of ``family`` built from keyword settings (``None`` for a family without one)."""
    cls = get(family).CONFIG
    if cls is None:
        if params:
            raise ConfigError(f"the {family} family takes no settings; got {', '.join(sorted(params))}.")
        return None
    return build_config(cls, family, **params)


def module_for(info: dict[str, Any]) -> Family:
    """The module that loads a directory described by ``info``: its runtime if it has one, else its family."""
    runtime = info.get("runtime", "torch")
    if runtime != "torch":
        if runtime not in RUNTIMES:
            raise ModelLoadError(f"niche.json names runtime {runtime!r}; this niche knows torch and "
                                 f"{', '.join(RUNTIMES)}. Upgrade niche or re-export the model.")
        return get(runtime)
    if info["family"] not in FAMILIES:
        raise ModelLoadError(f"niche.json names family {info['family']!r}; this niche knows "
                             f"{', '.join(FAMILIES)}. Upgrade niche or retrain the model.")
    return get(info["family"])


def load_model(path: str | Path) -> tuple[Model, Any, dict[str, Any]]:
    """Open the model directory ``path``: ``(model, config, info)``.

    Raises:
        ModelLoadError: not a niche directory, damaged ``niche.json``, or files the family needs are
            missing; the message says which and how to fix it.
    """
    path = Path(path)
    info = read_info(path)
    ModelInfo.from_dict(info, where=str(path / "niche.json"))  # validates the common fields
    module = module_for(info)
    try:
        cfg = make_config(info["family"], **info.get("config", {}))
    except (ConfigError, TypeError) as e:
        raise ModelLoadError(f"{path}/niche.json: {e}") from None
    model = module.load(path, cfg, info)
    labels = getattr(model, "labels", None)
    if labels is not None and list(labels) != list(info["labels"]):
        raise ModelLoadError(f"{path}: config.json labels differ from niche.json labels; the directory is inconsistent.")
    return model, cfg, info


def align(proba: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """Reorder the columns of ``proba`` from label order ``have`` to ``want``."""
    index = {lab: i for i, lab in enumerate(have)}
    return proba[:, [index[lab] for lab in want]]


def render_card(name: str, info: dict[str, Any]) -> str:
    """The model card (``README.md``) of a directory described by ``info``: the common template with
    the family's ``card_facts``, or the family's own ``model_card(name, info)`` where it has one."""
    module = module_for(info)
    own = getattr(module, "model_card", None)
    if own is not None:
        return own(name, info)
    facts, usage = module.card_facts(info, name)
    return model_card(name, info, facts, usage)


def save_model(d: Path, model: Model, info: dict[str, Any], name: str) -> None:
    """Fill the (temporary) directory ``d``: the family's files, ``niche.json`` and the model card."""
    d.mkdir(parents=True, exist_ok=True)
    model.save(d)
    write_info(d, info)
    (d / CARD).write_text(render_card(name, info), encoding="utf-8")
