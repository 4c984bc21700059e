"""``POST /v1/recommenders/{name}/rank``: a ``niche recommend train`` directory as a servable.

A recommender directory is told apart by ``"kind": "recommender"`` in its ``niche.json``. Each
rank request is one input of the micro-batcher (a batch ranks its queries one after another on
the model's thread; text histories run the encoder there). Errors go through the one status table
(unknown name 404, bad body or unknown history 422).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..config import ServeConfig
from ..errors import NicheError
from .errors import InvalidRequest, ModelFailure, PayloadTooLarge
from .servables import Routes, Servable

log = logging.getLogger("niche.serve")


class RankRequest(BaseModel):
    history: list[str] = Field(default_factory=list, description="Item ids the user interacted with, oldest first.",
                               examples=[["1", "260", "1196"]])
    history_text: list[str] = Field(default_factory=list,
                                    description="Instead of ids: texts of things the user liked, oldest first.")
    candidates: list[str] | None = Field(None, description="Rank only these item ids (default: all items).")
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = Field(True, description="Leave the history's items out of the ranking.")


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
        cfg = api.cfg

        @api.router.post("/v1/recommenders/{name}/rank", tags=["recommenders"], dependencies=api.auth)
        async def rank(name: str, req: RankRequest) -> dict[str, Any]:
            slot = api.slot(cls, name)
            if bool(req.history) == bool(req.history_text):
                raise InvalidRequest("send exactly one of history (item ids) or history_text (texts), non-empty")
            n = len(req.history) + len(req.history_text) + len(req.candidates or [])
            if n > 100 * cfg.max_texts:
                raise PayloadTooLarge(f"{n} ids/texts in one request; the limit is {100 * cfg.max_texts}")
            if any(len(t) > cfg.max_chars for t in req.history_text):
                raise PayloadTooLarge(f"a history text is longer than {cfg.max_chars} characters (--max-chars)")
            (res,) = await slot.batcher.submit([req])
            return {"recommender": name} | res
