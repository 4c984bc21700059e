"""The kinds ``niche serve`` knows, in the order their recognisers are asked (the explicit registry:
adding a kind is one entry here)."""

from __future__ import annotations

from pathlib import Path

from .assistant import AssistantServable
from .classifier import ClassifierServable
from .recommend import RecommenderServable
from .servables import Servable

SERVABLES: tuple[type[Servable], ...] = (ClassifierServable, AssistantServable, RecommenderServable)
"""Every kind; the classifier is the fallback for a directory no other kind recognises (its loader
says what is wrong with it)."""


def recognise(path: str | Path, kinds: tuple[type[Servable], ...] = SERVABLES) -> type[Servable]:
    """The kind that recognises the directory ``path``; the fallback kind when none does."""
    for cls in kinds:
        if cls.recognises(Path(path)):
            return cls
    return next(c for c in kinds if c.fallback)
