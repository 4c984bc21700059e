"""Prometheus metrics of the service and the ASGI middleware that records them per request.

Per route (the route template, e.g. ``/v1/recommenders/{name}/rank``): ``niche_requests_total``
and ``niche_request_seconds``. Per served name, whatever its kind: ``niche_batch_texts`` (inputs
per forward pass), ``niche_batch_seconds``, ``niche_queue_depth``, ``niche_model_load_seconds``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..config import ServeConfig
from .errors import PayloadTooLarge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("niche_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("niche_request_seconds", "HTTP request latency", ["route", "method", "status"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("niche_batch_texts", "Inputs (texts or queries) per model forward pass", ["model"],
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.forward = Histogram("niche_batch_seconds", "Seconds per model forward pass (one batch)", ["model"],
                                 registry=self.registry, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.queue = Gauge("niche_queue_depth", "Requests waiting for the model", ["model"], registry=self.registry)
        self.load = Gauge("niche_model_load_seconds", "Seconds the last (re)load took", ["model"], registry=self.registry)


class LimitsAndMetrics:
    """Pure ASGI middleware: body-size limit of POST requests (also for chunked uploads) and per-route
    request metrics. (Starlette's ``BaseHTTPMiddleware`` costs a task group per request.)"""

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
        post = scope["method"] == "POST"  # the only routes that read a body (and declare 413)
        try:
            if post and length is not None and length.isdigit() and int(length) > limit:
                err = PayloadTooLarge(f"request body is {int(length)} bytes; the limit is {limit}")
                await self.error(err)(scope, receive, send_and_note)
            elif post and length is None:  # chunked upload: count as we read
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
