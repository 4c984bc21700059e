"""The HTTP service: a thin FastAPI adapter over ``TextClassifier`` and the micro-batcher.

    from niche.serving.app import create_app
    app = create_app({"intents": "runs/demo/transformer"}, ServeConfig(api_key="..."))

Routes: ``POST /v1/models/{name}/classify``, ``GET /v1/models``, ``POST /v1/models/{name}/reload``,
``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /`` (a page to try models),
OpenAPI at ``/docs``. Every error goes through the one table in :mod:`niche.serving.errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from ..classifier import TextClassifier
from ..config import ServeConfig
from ..errors import NicheError
from .batching import MicroBatcher
from .errors import InvalidRequest, Overloaded, PayloadTooLarge, Unauthorized, UnknownModel, status_for

log = logging.getLogger("niche.serve")
STATIC = Path(__file__).parent / "static"


class ClassifyRequest(BaseModel):
    inputs: str | list[str] = Field(description="One text or a list of texts.", examples=["my card has not arrived"])
    top_k: int | None = Field(None, ge=1, description="Labels per input (default: all, sorted by score).")
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


@dataclass
class Slot:
    """One served model: the current classifier and its batcher, swapped together on reload."""

    name: str
    path: Path
    clf: TextClassifier
    batcher: MicroBatcher
    loaded_at: float


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("niche_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("niche_request_seconds", "HTTP request latency", ["route", "method", "status"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("niche_batch_texts", "Texts per model forward pass", ["model"], registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.forward = Histogram("niche_batch_seconds", "Seconds per model forward pass (one batch)", ["model"],
                                 registry=self.registry, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.queue = Gauge("niche_queue_depth", "Requests waiting for the model", ["model"], registry=self.registry)
        self.load = Gauge("niche_model_load_seconds", "Seconds the last (re)load took", ["model"], registry=self.registry)


class LimitsAndMetrics:
    """Pure ASGI middleware: body-size limit (also for chunked uploads) and per-route request
    metrics. (Starlette's ``BaseHTTPMiddleware`` costs a task group per request.)"""

    def __init__(self, app: Any, cfg: ServeConfig, metrics: Metrics, error: Any) -> None:
        self.app, self.cfg, self.metrics, self.error = app, cfg, metrics, error

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        limit = self.cfg.max_body_bytes
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        try:
            if length is not None and length.isdigit() and int(length) > limit:
                err = PayloadTooLarge(f"request body is {int(length)} bytes; the limit is {limit}")
                await self.error(err)(scope, receive, send_and_note)
            elif scope["method"] == "POST" and length is None:  # chunked upload: count as we read
                chunks, size, more = [], 0, True
                while more and size <= limit:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
                if size > limit:
                    err = PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                    await self.error(err)(scope, receive, send_and_note)
                else:
                    body, replayed = b"".join(chunks), False

                    async def replay() -> dict:
                        nonlocal replayed
                        if not replayed:
                            replayed = True
                            return {"type": "http.request", "body": body, "more_body": False}
                        return await receive()

                    await self.app(scope, replay, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            labels = (path, scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - t0)


def _load(name: str, path: Path, cfg: ServeConfig, metrics: Metrics) -> Slot:
    t0 = time.perf_counter()
    clf = TextClassifier.load(path)
    metrics.load.labels(name).set(time.perf_counter() - t0)
    forward = metrics.forward.labels(name)

    def predict(texts: list[str]):
        with forward.time():
            return clf.predict_proba(texts, batch_size=cfg.max_batch)

    batcher = MicroBatcher(predict, cfg.max_batch,
                           cfg.max_wait_ms, cfg.max_queue, on_batch=metrics.batch.labels(name).observe)
    metrics.queue.labels(name).set_function(lambda: batcher.depth)
    return Slot(name, path, clf, batcher, time.time())


def _load_assistant(name: str, path: Path, cfg: ServeConfig, metrics: Metrics) -> Slot:
    from ..apps.assistant import Assistant

    t0 = time.perf_counter()
    bot = Assistant.load(path)
    metrics.load.labels(name).set(time.perf_counter() - t0)
    forward = metrics.forward.labels(name)

    def answer(texts: list[str]) -> list[dict[str, Any]]:
        with forward.time():
            return bot.answer(texts)

    batcher = MicroBatcher(answer, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                           on_batch=metrics.batch.labels(name).observe)
    metrics.queue.labels(name).set_function(lambda: batcher.depth)
    return Slot(name, path, bot, batcher, time.time())


def create_app(models: dict[str, str | Path], cfg: ServeConfig | None = None) -> FastAPI:
    """Build the app; models load at startup (``/readyz`` turns 200 when all are loaded).

    A directory written by ``niche assistant build`` is served as an assistant
    (``POST /v1/assistants/{name}/answer``); every other one as a classifier."""
    from ..apps.assistant import is_assistant_dir

    cfg = cfg or ServeConfig()
    cfg.validate()
    if not models:
        raise InvalidRequest("give at least one model directory to serve")
    from ..apps.recommend import is_recommender_dir  # recommender dirs: serving/recommend.py

    rec_paths = {n: Path(p) for n, p in models.items() if is_recommender_dir(p)}
    models = {n: p for n, p in models.items() if n not in rec_paths}
    metrics = Metrics()
    slots: dict[str, Slot] = {}
    bots: dict[str, Slot] = {}  # assistants
    reload_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, load_recommenders)
        for name, path in models.items():
            kind = "assistant" if is_assistant_dir(path) else "model"
            loader = _load_assistant if kind == "assistant" else _load
            slot = await loop.run_in_executor(None, loader, name, Path(path), cfg, metrics)
            slot.batcher.start()
            (bots if kind == "assistant" else slots)[name] = slot
            log.info("loaded %s %s from %s", kind, name, path)
        try:  # SIGHUP reloads every model (only possible when serving from the main thread)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_all()))
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass
        yield
        for slot in list(slots.values()) + list(bots.values()):
            await slot.batcher.drain_and_stop()

    app = FastAPI(title="niche", version="1", lifespan=lifespan,
                  description="Specialized text classifiers: classify, list models, reload, health and metrics.")
    app.state.slots = slots
    app.state.metrics = metrics
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    def error(exc: BaseException) -> JSONResponse:
        status, kind = status_for(exc)
        message = str(exc) if status != 500 else "the model failed to process this request"
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

    app.add_middleware(LimitsAndMetrics, cfg=cfg, metrics=metrics, error=error)

    async def check_key(request: Request) -> None:  # async: no thread hop per request
        if cfg.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise Unauthorized("missing or wrong API key; send `Authorization: Bearer KEY` or `X-API-Key: KEY`")

    from .recommend import add_recommender_routes

    load_recommenders = add_recommender_routes(app, rec_paths, check_key, cfg)

    def slot_for(name: str) -> Slot:
        slot = slots.get(name)
        if slot is None:
            raise UnknownModel(f"no model named {name!r}; served models: {', '.join(sorted(slots)) or 'none yet'}")
        return slot

    def check_texts(texts: list[str]) -> list[str]:
        if not texts:
            raise InvalidRequest("inputs is empty; send a text or a non-empty list of texts")
        if len(texts) > cfg.max_texts:
            raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {cfg.max_texts} (--max-texts)")
        for i, t in enumerate(texts):
            if len(t) > cfg.max_chars:
                raise PayloadTooLarge(f"input {i} has {len(t)} characters; the limit is {cfg.max_chars} (--max-chars)")
            if not t.strip():
                raise InvalidRequest(f"input {i} is empty or whitespace-only")
        return texts

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        ready = len(slots) + len(bots) == len(models) and len(app.state.recommenders) == len(rec_paths)
        body = {"ready": ready, "models": sorted(slots), "assistants": sorted(bots)}
        if rec_paths:
            body["recommenders"] = sorted(app.state.recommenders)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(check_key)])
    async def list_models() -> dict[str, Any]:
        out = []
        for s in slots.values():
            info = s.clf.info_
            out.append({"name": s.name, "family": info["family"], "runtime": info.get("runtime", "torch"),
                        "precision": info.get("precision", "fp32"), "base": info.get("base"), "labels": s.clf.classes_,
                        "max_len": info.get("max_len"), "metrics": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro"]["f1"]}
                                                                    for k, v in info.get("metrics", {}).items()},
                        "loaded_at": s.loaded_at})
        return {"models": out}

    @app.post("/v1/models/{name}/classify", tags=["models"], response_model=ClassifyResponse,
              dependencies=[Depends(check_key)])
    async def classify(name: str, req: ClassifyRequest) -> JSONResponse:
        slot = slot_for(name)  # taken once: this request finishes on this model even if a reload swaps it
        texts = check_texts([req.inputs] if isinstance(req.inputs, str) else req.inputs)
        if cfg.log_texts:
            log.info("classify %s: %r", name, texts)
        proba = await slot.batcher.submit(texts)
        labels = slot.clf.classes_
        k = min(req.top_k or len(labels), len(labels))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k].tolist()
        scores = proba.round(6).tolist()
        preds: list[dict[str, Any]] = [{"labels": [{"label": labels[j], "score": p[j]} for j in o], "attention": None}
                                       for p, o in zip(scores, order)]
        if req.explain:
            from ..explain import cls_attention, has_attention

            if has_attention(slot.clf):  # PyTorch attention models; others answer attention: null
                for i, t in enumerate(texts):
                    def attend(t: str = t) -> dict[str, Any]:
                        return cls_attention(slot.clf, t)

                    try:
                        preds[i]["attention"] = await slot.batcher.run_exclusive(attend)
                    except RuntimeError:  # this model was swapped out meanwhile; its thread is gone but it is idle
                        preds[i]["attention"] = await asyncio.get_running_loop().run_in_executor(None, attend)
        # Built as plain JSON (the response_model above documents it): per-label pydantic objects
        # cost more than the model's forward pass for short texts.
        return JSONResponse({"model": name, "predictions": preds})

    @app.post("/v1/assistants/{name}/answer", tags=["assistants"], response_model=AnswerResponse,
              dependencies=[Depends(check_key)])
    async def answer(name: str, req: AnswerRequest) -> JSONResponse:
        slot = bots.get(name)
        if slot is None:
            raise UnknownModel(f"no assistant named {name!r}; served assistants: {', '.join(sorted(bots)) or 'none'}")
        texts = check_texts([req.inputs] if isinstance(req.inputs, str) else req.inputs)
        return JSONResponse({"assistant": name, "answers": await slot.batcher.submit(texts)})

    @app.post("/v1/models/{name}/reload", tags=["models"], dependencies=[Depends(check_key)])
    async def reload(name: str) -> dict[str, Any]:
        return await reload_model(name)

    async def reload_model(name: str) -> dict[str, Any]:
        """Load the directory's current version, swap it in atomically; the old model finishes
        the requests it already has, then stops."""
        old = slot_for(name)
        async with reload_lock:
            new = await asyncio.get_running_loop().run_in_executor(None, _load, name, old.path, cfg, metrics)
            new.batcher.start()
            slots[name] = new  # one assignment: new requests go to the new model from here on
            await old.batcher.drain_and_stop()
        return {"model": name, "reloaded": True, "loaded_at": new.loaded_at,
                "load_seconds": metrics.load.labels(name)._value.get()}

    async def reload_all() -> None:
        for name in list(slots):
            try:
                await reload_model(name)
                log.info("reloaded %s on SIGHUP", name)
            except Exception:
                log.exception("reload of %s failed; the previous version keeps serving", name)

    app.state.reload_model = reload_model

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    return app
