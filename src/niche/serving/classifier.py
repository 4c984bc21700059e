"""``POST /v1/models/{name}/classify``: a niche classifier directory as a servable.

Any directory with a ``niche.json`` that names no other ``kind`` is a classifier (every family,
ONNX and ensembles included); a directory no kind recognises is loaded as one too, so that
:meth:`TextClassifier.load` says what is wrong with it.
"""

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field

from ..classifier import TextClassifier
from ..config import ServeConfig
from ..errors import ModelLoadError
from ..modeldir import read_info
from .openapi import StrictRequest, documented, integral, texts_schema
from .servables import Routes, Servable, Slot

log = logging.getLogger("niche.serve")


class ClassifyRequest(StrictRequest):
    """The body of ``POST /v1/models/{name}/classify`` (the app documents ``inputs`` with its limits)."""

    inputs: str | list[str] = Field(description="One text or a list of texts.", examples=["my card has not arrived"])
    top_k: Annotated[int | None, BeforeValidator(integral)] = Field(
        None, ge=1, description="Labels per input, at least 1 (default, or more than the model has: all, sorted by score).")
    explain: bool = Field(False, description="Add the classification token's last-layer attention (transformers).")


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    labels: list[LabelScore]
    attention: dict[str, Any] | None = None


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class ClassifierServable(Servable):
    kind = "model"
    fallback = True

    def __init__(self, clf: TextClassifier, batch_size: int) -> None:
        self.clf = clf
        self.batch_size = batch_size

    @classmethod
    def recognises(cls, path: Path) -> bool:
        try:
            return "kind" not in read_info(path)
        except ModelLoadError:
            return False

    @classmethod
    def load(cls, path: Path, cfg: ServeConfig) -> "ClassifierServable":
        return cls(TextClassifier.load(path), cfg.max_batch)

    def predict_batch(self, inputs: list[str]) -> np.ndarray:
        return self.clf.predict_proba(inputs, batch_size=self.batch_size)

    def info(self) -> dict[str, Any]:
        info = self.clf.info_
        return {"family": info["family"], "runtime": info.get("runtime", "torch"),
                "precision": info.get("precision", "fp32"), "base": info.get("base"), "labels": self.clf.classes_,
                "max_len": info.get("max_len"), "metrics": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro"]["f1"]}
                                                            for k, v in info.get("metrics", {}).items()}}

    @classmethod
    def routes(cls, api: Routes) -> None:
        body = documented(ClassifyRequest, {"inputs": texts_schema(api.cfg)})

        @api.post("/v1/models/{name}/classify", (404, 422, 429, 500), tags=["models"], response_model=ClassifyResponse,
                  summary="Classify one text or a list of texts")
        async def classify(name: str, req: body) -> JSONResponse:  # type: ignore[valid-type]
            slot = api.slot(cls, name)  # taken once: this request finishes on this version even if a reload swaps it
            texts = api.check_texts(req.inputs)
            if api.cfg.log_texts:
                log.info("classify %s: %r", name, texts)
            proba = await slot.batcher.submit(texts)
            labels = slot.servable.clf.classes_
            k = min(req.top_k or len(labels), len(labels))
            order = np.argsort(-proba, axis=1, kind="stable")[:, :k].tolist()
            scores = proba.round(6).tolist()
            preds: list[dict[str, Any]] = [{"labels": [{"label": labels[j], "score": p[j]} for j in o], "attention": None}
                                           for p, o in zip(scores, order)]
            if req.explain:
                await _attend(slot, texts, preds)
            # Built as plain JSON (the response_model above documents it): per-label pydantic objects
            # cost more than the model's forward pass for short texts.
            return JSONResponse({"model": name, "predictions": preds})


async def _attend(slot: Slot, texts: list[str], preds: list[dict[str, Any]]) -> None:
    """Fill in each prediction's attention map (PyTorch attention models; others keep ``None``)."""
    from ..explain import cls_attention, has_attention

    clf = slot.servable.clf
    if not has_attention(clf):
        return
    for i, t in enumerate(texts):
        def attend(t: str = t) -> dict[str, Any]:
            return cls_attention(clf, t)

        try:
            preds[i]["attention"] = await slot.batcher.run_exclusive(attend)
        except RuntimeError:  # this model was swapped out meanwhile; its thread is gone but it is idle
            preds[i]["attention"] = await asyncio.get_running_loop().run_in_executor(None, attend)
