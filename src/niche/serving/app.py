"""The HTTP service: a thin FastAPI adapter over servables (:mod:`niche.serving.servables`).

    from niche.serving.app import create_app
    app = create_app({"intents": "runs/demo/transformer"}, ServeConfig(api_key="..."))

Every directory is served as the kind that recognises it: a classifier
(``POST /v1/models/{name}/classify``), an assistant (``POST /v1/assistants/{name}/answer``) or a
recommender (``POST /v1/recommenders/{name}/rank``). Every kind also has ``GET /v1/{kind}s`` and
``POST /v1/{kind}s/{name}/reload``; SIGHUP reloads every model. Besides: ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /`` (a page to try classifiers), OpenAPI
at ``/docs``. Every error goes through the one table in :mod:`niche.serving.errors`; the OpenAPI
declares every status each route can return (:mod:`niche.serving.openapi`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.exceptions import HTTPException

from ..config import ServeConfig
from ..errors import ModelLoadError, NicheError
from .errors import InvalidRequest, Overloaded, Unauthorized, UnknownModel, status_for
from .metrics import LimitsAndMetrics, Metrics
from .kinds import SERVABLES, recognise
from .openapi import ErrorBody, Readiness, complete_openapi, json_safe, listing_model, reload_model
from .servables import Routes, Servable, Slot, load_slot

log = logging.getLogger("niche.serve")
STATIC = Path(__file__).parent / "static"


class PrometheusText(Response):
    """The Prometheus text format, version 0.0.4 (what every scraper reads)."""

    media_type = CONTENT_TYPE_PLAIN_0_0_4


class Server:
    """The served models: one registry keyed by name (every kind), loading, reloading, readiness."""

    def __init__(self, models: dict[str, Path], cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.paths = models
        self.kinds: dict[str, type[Servable]] = {name: recognise(path) for name, path in models.items()}
        self.metrics = Metrics()
        self.slots: dict[str, Slot] = {}
        self.reload_lock = asyncio.Lock()

    def slot(self, kind: type[Servable], name: str) -> Slot:
        slot = self.slots.get(name)
        if slot is None or slot.kind is not kind:
            served = ", ".join(sorted(n for n, s in self.slots.items() if s.kind is kind)) or "none"
            raise UnknownModel(f"no {kind.kind} named {name!r}; served {kind.kind}s: {served}")
        return slot

    async def _load(self, name: str) -> Slot:
        args = (self.kinds[name], name, self.paths[name], self.cfg, self.metrics)
        slot = await asyncio.get_running_loop().run_in_executor(None, load_slot, *args)
        slot.batcher.start()
        return slot

    async def reload(self, kind: type[Servable], name: str) -> dict[str, Any]:
        """Load the directory's current version, swap it in atomically; the old version finishes
        the requests it already has, then stops."""
        old = self.slot(kind, name)
        async with self.reload_lock:
            try:
                new = await self._load(name)
            except ModelLoadError as e:  # niche's own message about the directory: safe and useful to show
                raise ModelLoadError(f"{kind.kind} {name!r} was not reloaded, the previous version keeps serving: "
                                     f"{e}") from None
            self.slots[name] = new  # one assignment: new requests go to the new version from here on
            await old.batcher.drain_and_stop()
        return {kind.kind: name, "reloaded": True, "loaded_at": new.loaded_at, "load_seconds": new.load_seconds}

    async def reload_all(self) -> None:
        for name, slot in list(self.slots.items()):
            try:
                await self.reload(slot.kind, name)
                log.info("reloaded %s %s on SIGHUP", slot.kind.kind, name)
            except Exception:
                log.exception("reload of %s failed; the previous version keeps serving", name)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        loop = asyncio.get_running_loop()
        for name, path in self.paths.items():
            self.slots[name] = await self._load(name)
            log.info("loaded %s %s from %s", self.kinds[name].kind, name, path)
        try:  # SIGHUP reloads every model (only possible when serving from the main thread)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload_all()))
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass
        yield
        for slot in list(self.slots.values()):
            await slot.batcher.drain_and_stop()

    def readiness(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ready": len(self.slots) == len(self.paths)}
        for kind in SERVABLES:
            if kind.listed_when_absent or kind in self.kinds.values():
                body[f"{kind.kind}s"] = sorted(n for n, s in self.slots.items() if s.kind is kind)
        return body


def create_app(models: dict[str, str | Path], cfg: ServeConfig | None = None) -> FastAPI:
    """Build the app; models load at startup (``/readyz`` turns 200 when all are loaded).

    Each directory is served as the kind that recognises it (``niche assistant build`` and
    ``niche recommend train`` directories are told apart by their marker files); a directory no
    kind recognises is loaded as a classifier, whose loader says what is wrong with it."""
    cfg = cfg or ServeConfig()
    cfg.validate()
    if not models:
        raise InvalidRequest("give at least one model directory to serve")
    server = Server({name: Path(p) for name, p in models.items()}, cfg)
    app = FastAPI(title="niche", version="1", lifespan=server.lifespan,
                  description="Specialized text models: classify, answer, rank; list, reload, health and metrics.")
    app.state.server = server
    app.state.slots = server.slots
    app.state.metrics = server.metrics
    app.state.reload_all = server.reload_all
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    error = _add_error_handlers(app)
    app.add_middleware(LimitsAndMetrics, cfg=cfg, metrics=server.metrics, error=error)
    api = Routes(app, [Depends(_key_check(cfg))], cfg, server.slot)
    _add_health_routes(app, server)
    for kind in SERVABLES:
        _add_collection_routes(api, server, kind)
        kind.routes(api)

    @app.get("/", response_class=HTMLResponse, tags=["page"], summary="A page to try the classifiers")
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:  # FastAPI's, plus the security schemes and the served names
        if app.openapi_schema is None:
            names = {f"{k.kind}s": sorted(n for n, c in server.kinds.items() if c is k) for k in SERVABLES}
            app.openapi_schema = complete_openapi(fastapi_openapi(), cfg, names)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI) -> Any:
    """Every error becomes ``{"error", "error_type"}`` with the status of the one table."""

    def error(exc: BaseException) -> JSONResponse:
        status, kind = status_for(exc)
        shown = status != 500 or isinstance(exc, ModelLoadError)  # other 500s may carry internals
        message = str(exc) if shown else "the model failed to process this request"
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
        if status == 500:
            log.error("request failed: %r", exc)
        return JSONResponse({"error": message, "error_type": kind}, status_code=status, headers=headers)

    @app.exception_handler(NicheError)
    async def on_niche_error(request: Request, exc: NicheError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(Exception)  # anything unexpected: 500, no stack trace in the body
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]]
        return error(InvalidRequest("invalid request body: " + "; ".join(parts)))

    @app.exception_handler(HTTPException)  # no such route (404) or method (405, with its Allow header)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI cannot parse (not UTF-8): an invalid body, as in the table
            return error(InvalidRequest(f"invalid request body: {exc.detail}"))
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        return JSONResponse(ErrorBody(error=str(exc.detail), error_type=kind).model_dump(),  # type: ignore[arg-type]
                            status_code=exc.status_code, headers=exc.headers)

    return error


def _key_check(cfg: ServeConfig) -> Any:
    async def check_key(request: Request) -> None:  # async: no thread hop per request
        if cfg.api_key is None:
            return
        key = cfg.api_key.encode()
        auth = request.headers.get("authorization") or ""
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        given = (bearer, request.headers.get("x-api-key") or "")
        # either scheme (as the OpenAPI's security says); both compared, in constant time
        if not sum(hmac.compare_digest(g.encode(), key) for g in given):
            raise Unauthorized("missing or wrong API key; send `Authorization: Bearer KEY` or `X-API-Key: KEY`")

    return check_key


def _add_health_routes(app: FastAPI, server: Server) -> None:
    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: 200 once every model is loaded",
             responses={200: {"model": Readiness}, 503: {"model": Readiness, "description": "Still loading models."}})
    async def readyz() -> JSONResponse:
        body = server.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["health"], response_class=PrometheusText, summary="Prometheus metrics",
             responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}},
                              "description": "The Prometheus text format 0.0.4."}})
    async def prometheus() -> PrometheusText:
        return PrometheusText(generate_latest(server.metrics.registry))


def _add_collection_routes(api: Routes, server: Server, kind: type[Servable]) -> None:
    """``GET /v1/{kind}s`` (every loaded model of the kind) and ``POST /v1/{kind}s/{name}/reload``."""
    plural = f"{kind.kind}s"

    async def listing() -> dict[str, Any]:
        return {plural: [json_safe({"name": s.name} | s.servable.info() | {"loaded_at": s.loaded_at})
                         for s in list(server.slots.values()) if s.kind is kind]}

    async def reload(name: str) -> dict[str, Any]:
        return await server.reload(kind, name)

    # response_model=None: the bodies are built as they are (a kind's info() is its own); the models document them
    api.router.add_api_route(f"/v1/{plural}", listing, **api.options((), "GET", ok=listing_model(plural)),
                             tags=[plural], name=f"list_{plural}", summary=f"List the served {plural}",
                             response_model=None)
    failed = {422: "The directory's new version has an invalid setting.",
              500: "The directory's new version failed to load; the previous version keeps serving."}
    api.router.add_api_route(f"/v1/{plural}/{{name}}/reload", reload,
                             **api.options((404, 422, 500), "POST", failed, ok=reload_model(kind.kind)),
                             tags=[plural], name=f"reload_{kind.kind}", response_model=None,
                             summary=f"Reload a {kind.kind} from its directory")
