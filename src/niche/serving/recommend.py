"""``POST /v1/recommenders/{name}/rank``: a ``niche recommend train`` directory as a servable.

A recommender directory is told apart by ``"kind": "recommender"`` in its ``niche.json``. Each
rank request is one input of the micro-batcher (a batch ranks its queries one after another on
the model's thread; text histories run the encoder there). Errors go through the one status table
(unknown name 404, bad body or unknown history 422, a list over its limit 413).
"""

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..config import ServeConfig
from ..errors import NicheError
from .errors import InvalidRequest, ModelFailure, PayloadTooLarge
from .openapi import StrictRequest, documented, integral, text_schema
from .servables import Routes, Servable, check_text

log = logging.getLogger("niche.serve")


ONE_HISTORY = [{"required": ["history"], "properties": {"history": {"minItems": 1}, "history_text": {"maxItems": 0}}},
               {"required": ["history_text"], "properties": {"history_text": {"minItems": 1}, "history": {"maxItems": 0}}}]
"""Exactly one of ``history`` and ``history_text`` is given and non-empty (else 422)."""


class RankRequest(StrictRequest):
    """The body of ``POST /v1/recommenders/{name}/rank`` (the app documents the lists with their limits).

    The history's ids must include one of the served model's item ids (else 422, a condition of the
    model's data that no schema states)."""

    model_config = ConfigDict(strict=True, json_schema_extra={"oneOf": ONE_HISTORY})

    history: list[str] = Field(default_factory=list, description="Item ids the user interacted with, oldest first.",
                               examples=[["1", "260", "1196"]])
    history_text: list[str] = Field(default_factory=list,
                                    description="Instead of ids: texts of things the user liked, oldest first.")
    candidates: list[str] | None = Field(None, description="Rank only these item ids (default: all items).")
    k: Annotated[int, BeforeValidator(integral)] = Field(10, ge=1, le=1000, description="Items to return.")
    exclude_seen: bool = Field(True, description="Leave the history's items out of the ranking.")


class RankedItem(BaseModel):
    item_id: str
    score: float = Field(description="text + cooc + pop.")
    text: float
    cooc: float
    pop: float
    item_text: str


class RankResponse(BaseModel):
    recommender: str
    items: list[RankedItem]
    unknown_history: list[str] = Field(description="History ids the model does not know (left out).")
    unknown_candidates: list[str] = Field(description="Candidate ids the model does not know (left out).")


def rank_request(cfg: ServeConfig) -> type[BaseModel]:
    """:class:`RankRequest` documented with the limits of ``cfg``: ``--max-texts`` history texts of at most
    ``--max-chars`` characters, none blank; 100 x ``--max-texts`` ids in the history and in the candidates."""
    ids = 100 * cfg.max_texts
    id_list = {"type": "array", "items": {"type": "string"}, "maxItems": ids,
               "description": f"At most {ids} (413 beyond)."}
    texts = {"type": "array", "items": text_schema(cfg), "maxItems": cfg.max_texts,
             "description": f"At most {cfg.max_texts} texts of at most {cfg.max_chars} characters (413 beyond); "
                            "none empty or whitespace-only (422)."}
    return documented(RankRequest, {"history": id_list, "history_text": texts,
                                    "candidates": {"anyOf": [id_list, {"type": "null"}]}})


def check_rank(req: RankRequest, cfg: ServeConfig) -> None:
    """What :func:`rank_request` documents, with the statuses of the error table."""
    if bool(req.history) == bool(req.history_text):
        raise InvalidRequest("send exactly one of history (item ids) or history_text (texts), non-empty")
    ids = 100 * cfg.max_texts
    for field, n, limit in (("history", len(req.history), ids), ("history_text", len(req.history_text), cfg.max_texts),
                            ("candidates", len(req.candidates or []), ids)):
        if n > limit:
            raise PayloadTooLarge(f"{n} entries in {field}; the limit is {limit}")
    for i, t in enumerate(req.history_text):
        check_text(f"history_text {i}", t, cfg)


class RecommenderServable(Servable):
    kind = "recommender"
    listed_when_absent = False

    def __init__(self, rec: Any) -> None:
        self.rec = rec

    @classmethod
    def recognises(cls, path: Path) -> bool:
        from ..apps.recommend import is_recommender_dir

        return is_recommender_dir(path)

    @classmethod
    def load(cls, path: Path, cfg: ServeConfig) -> "RecommenderServable":
        from ..apps.recommend import Recommender

        return cls(Recommender.load(path))

    def predict_batch(self, inputs: list[RankRequest]) -> list[dict[str, Any] | Exception]:
        out: list[dict[str, Any] | Exception] = []
        for req in inputs:  # one failed query fails its own request only
            try:
                out.append(self.rec.rank(history=req.history or None, history_text=req.history_text or None, k=req.k,
                                         candidates=req.candidates, exclude_seen=req.exclude_seen))
            except NicheError as e:
                out.append(e)
            except Exception as e:
                log.exception("recommender failure on one query")
                out.append(ModelFailure(f"the recommender failed on this query ({type(e).__name__})"))
        return out

    def info(self) -> dict[str, Any]:
        info = self.rec.info_
        return {"items": len(self.rec.item_ids_), "users": len(self.rec.users_), "base": info.get("base"),
                "blend": self.rec.blend_, "created": info.get("training", {}).get("created")}

    @classmethod
    def routes(cls, api: Routes) -> None:
        body = rank_request(api.cfg)
        unknown = {422: "Invalid body (a missing or mistyped field, k out of range, an empty history text, "
                        "both or neither history), or none of the history's ids is an item of the model."}

        @api.post("/v1/recommenders/{name}/rank", (404, 422, 429, 500), tags=["recommenders"],
                  descriptions=unknown, response_model=RankResponse,
                  summary="Rank items for a history of item ids or texts")
        async def rank(name: str, req: body) -> JSONResponse:  # type: ignore[valid-type]
            slot = api.slot(cls, name)
            check_rank(req, api.cfg)
            (res,) = await slot.batcher.submit([req])
            return JSONResponse({"recommender": name} | res)
