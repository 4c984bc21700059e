"""``POST /v1/assistants/{name}/answer``: a ``niche assistant build`` directory as a servable.

An assistant directory is told apart by its ``assistant.json``. Questions are micro-batched like
classification, with the same limits, API key and error table (404 unknown assistant, 413 too
many/too long, 422 bad body).
"""

from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..config import ServeConfig
from .openapi import StrictRequest, documented, texts_schema
from .servables import Routes, Servable


class AnswerRequest(StrictRequest):
    """The body of ``POST /v1/assistants/{name}/answer`` (the app documents ``inputs`` with its limits)."""

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
        body = documented(AnswerRequest, {"inputs": texts_schema(api.cfg)})

        @api.post("/v1/assistants/{name}/answer", (404, 422, 429, 500), tags=["assistants"],
                  response_model=AnswerResponse, summary="Answer one question or a list of questions")
        async def answer(name: str, req: body) -> JSONResponse:  # type: ignore[valid-type]
            slot = api.slot(cls, name)
            texts = api.check_texts(req.inputs)
            return JSONResponse({"assistant": name, "answers": await slot.batcher.submit(texts)})
