"""``POST /v1/recommenders/{name}/rank``: recommender directories served next to classifiers.

``niche serve`` tells a recommender directory from a classifier by ``"kind": "recommender"`` in
its ``niche.json``. Errors go through the one status table (unknown name 404, bad body 422).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from ..apps.recommend import Recommender
from ..config import ServeConfig
from .errors import InvalidRequest, PayloadTooLarge, UnknownModel


class RankRequest(BaseModel):
    history: list[str] = Field(default_factory=list, description="Item ids the user interacted with, oldest first.",
                               examples=[["1", "260", "1196"]])
    history_text: list[str] = Field(default_factory=list,
                                    description="Instead of ids: texts of things the user liked, oldest first.")
    candidates: list[str] | None = Field(None, description="Rank only these item ids (default: all items).")
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = Field(True, description="Leave the history's items out of the ranking.")


def add_recommender_routes(app: FastAPI, paths: dict[str, Path], check_key: Callable, cfg: ServeConfig) -> Callable[[], None]:
    """Register the route; returns the loader the app's lifespan calls (in a worker thread)."""
    recs: dict[str, Recommender] = {}
    app.state.recommenders = recs

    def load_all() -> None:
        for name, path in paths.items():
            recs[name] = Recommender.load(path)

    @app.post("/v1/recommenders/{name}/rank", tags=["recommenders"], dependencies=[Depends(check_key)])
    async def rank(name: str, req: RankRequest) -> dict[str, Any]:
        rec = recs.get(name)
        if rec is None:
            raise UnknownModel(f"no recommender named {name!r}; served recommenders: {', '.join(sorted(recs)) or 'none'}")
        if bool(req.history) == bool(req.history_text):
            raise InvalidRequest("send exactly one of history (item ids) or history_text (texts), non-empty")
        n = len(req.history) + len(req.history_text) + len(req.candidates or [])
        if n > 100 * cfg.max_texts:
            raise PayloadTooLarge(f"{n} ids/texts in one request; the limit is {100 * cfg.max_texts}")
        if any(len(t) > cfg.max_chars for t in req.history_text):
            raise PayloadTooLarge(f"a history text is longer than {cfg.max_chars} characters (--max-chars)")

        def run() -> dict[str, Any]:
            return rec.rank(history=req.history or None, history_text=req.history_text or None, k=req.k,
                            candidates=req.candidates, exclude_seen=req.exclude_seen)

        res = await asyncio.get_running_loop().run_in_executor(None, run)  # text histories run the encoder
        return {"recommender": name} | res

    return load_all
