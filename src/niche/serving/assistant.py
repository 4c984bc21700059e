"""``POST /v1/assistants/{name}/answer``: a ``niche assistant build`` directory as a servable.

An assistant directory is told apart by its ``assistant.json``. Questions are micro-batched like
classification, with the same limits, API key and error table (404 unknown assistant, 413 too
many/too long, 422 bad body).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..config import ServeConfig
from .servables import Routes, Servable


class AnswerRequest(BaseModel):
    inputs: str | list[str] = Field(description="One question or a list of questions.", examples=["what's my balance"])


class Answer(BaseModel):
    intent: str = Field(description="The classifier's intent (also when declined).")
    answer: str = Field(description="The intent's canned answer, or the fallback when out of scope.")
    confidence: float
    similarity: float = Field(description="Cosine similarity to the nearest in-scope training utterance.")
    matched_example: str
    in_scope: bool


class AnswerResponse(BaseModel):
    assistant: str
    answers: list[Answer]


class AssistantServable(Servable):
    kind = "assistant"

    def __init__(self, bot: Any) -> None:
        self.bot = bot

    @classmethod
    def recognises(cls, path: Path) -> bool:
        from ..apps.assistant import is_assistant_dir

        return is_assistant_dir(path)

    @classmethod
    def load(cls, path: Path, cfg: ServeConfig) -> "AssistantServable":
        from ..apps.assistant import Assistant

        return cls(Assistant.load(path))

    def predict_batch(self, inputs: list[str]) -> list[dict[str, Any]]:
        return self.bot.answer(inputs)

    def info(self) -> dict[str, Any]:
        info = self.bot.info
        return {"intents": info.get("intents", self.bot.classifier.classes_), "examples": info.get("examples"),
                "oos_examples": info.get("oos_examples"), "family": self.bot.config.family,
                "thresholds": info.get("thresholds"), "created": info.get("created")}

    @classmethod
    def routes(cls, api: Routes) -> None:
        @api.router.post("/v1/assistants/{name}/answer", tags=["assistants"], response_model=AnswerResponse,
                         dependencies=api.auth)
        async def answer(name: str, req: AnswerRequest) -> JSONResponse:
            slot = api.slot(cls, name)
            texts = api.check_texts(req.inputs)
            return JSONResponse({"assistant": name, "answers": await slot.batcher.submit(texts)})
