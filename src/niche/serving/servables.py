"""One protocol for everything ``niche serve`` serves: a *servable*.

A kind of servable (a classifier, an assistant, a recommender) is one :class:`Servable` subclass,
listed in :data:`niche.serving.kinds.SERVABLES`. It says which directories it :meth:`~Servable.recognises`,
:meth:`~Servable.load` s one, answers a batch of inputs with :meth:`~Servable.predict_batch` (run
by the micro-batcher on the model's thread), describes a loaded one with :meth:`~Servable.info`
(``GET /v1/{kind}s``) and adds its own routes with :meth:`~Servable.routes`. The app
(:mod:`niche.serving.app`) knows no kind by name: one registry of loaded servables keyed by name,
one recogniser loop, one loader, one reload path (``POST /v1/{kind}s/{name}/reload``, SIGHUP),
the same micro-batching and metrics for every kind.

A new kind is a module with a subclass plus one entry in ``SERVABLES`` (:mod:`niche.serving.kinds`)::

    class EchoServable(Servable):
        kind = "echo"                         # routes under /v1/echos, responses say {"echo": name}

        @classmethod
        def recognises(cls, path): return (path / "echo.json").is_file()
        @classmethod
        def load(cls, path, cfg): return cls()
        def predict_batch(self, inputs): return [x.upper() for x in inputs]
        def info(self): return {}
        @classmethod
        def routes(cls, api): ...             # @api.post(path, statuses): api.slot(cls, name).batcher.submit(...)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from ..classifier import unpaired_surrogate
from ..config import ServeConfig
from .batching import MicroBatcher
from .errors import InvalidRequest, PayloadTooLarge
from .openapi import is_blank, route_options


class Servable(ABC):
    """A loaded model directory that ``niche serve`` can answer requests with."""

    kind: ClassVar[str]
    """Singular name: routes live under ``/v1/{kind}s/``; responses name the model as ``{kind: name}``."""
    fallback: ClassVar[bool] = False
    """Load directories that no kind recognises as this one (its ``load`` says what is wrong)."""
    listed_when_absent: ClassVar[bool] = True
    """``/readyz`` lists ``{kind}s`` (maybe empty) even when none is served."""
    """Position among the kinds in ``/readyz`` and the recogniser loop (lower first)."""

    @classmethod
    @abstractmethod
    def recognises(cls, path: Path) -> bool:
        """Whether ``path`` is a directory of this kind (cheap: reads a marker file at most)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, cfg: ServeConfig) -> "Servable":
        """Load the directory's current version (in a worker thread; raises ``ModelLoadError``)."""

    @abstractmethod
    def predict_batch(self, inputs: list[Any]) -> Sequence[Any]:
        """One output per input, in order (a list, or an array with one row per input).

        Runs on the model's thread through the micro-batcher, with the inputs of several requests
        together. An exception instance in place of an output fails only that input's request."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What ``GET /v1/{kind}s`` says about this model (``name`` and ``loaded_at`` are added)."""

    @classmethod
    @abstractmethod
    def routes(cls, api: "Routes") -> None:
        """Add this kind's own routes to ``api.router`` (listing and reload are added for every kind)."""


@dataclass
class Slot:
    """One served name: the loaded servable and its micro-batcher, swapped together on reload."""

    name: str
    path: Path
    kind: type[Servable]
    servable: Servable
    batcher: MicroBatcher = field(repr=False)
    loaded_at: float
    load_seconds: float


def check_text(what: str, t: str, cfg: ServeConfig) -> None:
    """One request text within ``--max-chars`` (413), not blank and valid Unicode (422). Checked before
    batching, so a bad text cannot fail the other requests of its batch."""
    if len(t) > cfg.max_chars:
        raise PayloadTooLarge(f"{what} has {len(t)} characters; the limit is {cfg.max_chars} (--max-chars)")
    if is_blank(t):
        raise InvalidRequest(f"{what} is empty or whitespace-only")
    j = unpaired_surrogate(t)
    if j is not None:
        raise InvalidRequest(f"{what} has an unpaired surrogate ({t[j]!r}) at character {j}; send valid Unicode text")


@dataclass
class Routes:
    """What a servable's :meth:`~Servable.routes` gets: the router to add routes to, the API-key
    dependency, the limits, and the one way to find a served model.

    A handler takes the slot once (``api.slot(kind, name)``, a 404 for an unknown name) and submits
    to its batcher: the request finishes on that version even if a reload swaps it meanwhile."""

    router: Any
    auth: list[Any]
    cfg: ServeConfig
    slot: Callable[[type[Servable], str], Slot]

    def check_texts(self, inputs: str | list[str]) -> list[str]:
        """The request's texts as a list, within ``--max-texts`` and ``--max-chars``, none blank."""
        texts = [inputs] if isinstance(inputs, str) else inputs
        cfg = self.cfg
        if not texts:
            raise InvalidRequest("inputs is empty; send a text or a non-empty list of texts")
        if len(texts) > cfg.max_texts:
            raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {cfg.max_texts} (--max-texts)")
        for i, t in enumerate(texts):
            check_text(f"input {i}", t, cfg)
        return texts

    def options(self, statuses: Iterable[int], method: str = "POST", descriptions: dict[int, str] | None = None,
                ok: type[BaseModel] | None = None) -> dict[str, Any]:
        """Keyword arguments of a route under the API key that can return ``statuses`` of the error
        table (declared in the OpenAPI with the security schemes; 401 is added when a key is
        configured, 413 to a POST for the body limit; ``descriptions`` replace the general ones;
        ``ok`` documents the 200 body of a route whose ``response_model`` is None)."""
        extra = {413} if method == "POST" else set()
        options = {"dependencies": self.auth, "methods": [method]} | route_options(self.cfg, {*statuses, *extra},
                                                                                   descriptions)
        if ok is not None:
            options["responses"] = {200: {"model": ok}} | options["responses"]
        return options

    def post(self, path: str, statuses: Iterable[int], descriptions: dict[int, str] | None = None,
             **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: ``@api.post(path, statuses, ...)`` adds a POST route with :meth:`options`."""
        return self.router.api_route(path, **self.options(statuses, "POST", descriptions), **kwargs)


def load_slot(kind: type[Servable], name: str, path: Path, cfg: ServeConfig, metrics: Any) -> Slot:
    """Load ``path`` as ``kind`` and give it a micro-batcher and its metrics (in a worker thread;
    the caller starts the batcher on the event loop)."""
    t0 = time.perf_counter()
    servable = kind.load(path, cfg)
    seconds = time.perf_counter() - t0
    metrics.load.labels(name).set(seconds)
    forward = metrics.forward.labels(name)

    def predict(inputs: list[Any]) -> Sequence[Any]:
        with forward.time():
            return servable.predict_batch(inputs)

    batcher = MicroBatcher(predict, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                           on_batch=metrics.batch.labels(name).observe)
    metrics.queue.labels(name).set_function(lambda: batcher.depth)
    return Slot(name, path, kind, servable, batcher, time.time(), seconds)
