"""Serving errors and the ONE table that maps every error type to an HTTP status.

Every error response is JSON ``{"error": message, "error_type": name}``; a model failure is a
500 with a generic message (the stack trace goes to the log, never to the client).
"""

from __future__ import annotations

from ..errors import ConfigError, DataError, ModelLoadError, NicheError


class ServeError(NicheError):
    """Base of errors raised by the HTTP layer."""


class UnknownModel(ServeError):
    pass


class PayloadTooLarge(ServeError):
    pass


class Unauthorized(ServeError):
    pass


class Overloaded(ServeError):
    """The request queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ModelFailure(ServeError):
    pass


class InvalidRequest(ServeError):
    pass


# error type -> (HTTP status, error_type name in the body). Checked in order (subclasses first).
STATUS_TABLE: list[tuple[type[BaseException], int, str]] = [
    (InvalidRequest, 422, "invalid_request"),
    (DataError, 422, "invalid_request"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (UnknownModel, 404, "unknown_model"),
    (Unauthorized, 401, "unauthorized"),
    (Overloaded, 429, "overloaded"),
    (ConfigError, 422, "invalid_request"),
    (ModelLoadError, 500, "model_failure"),
    (ModelFailure, 500, "model_failure"),
]


def status_for(exc: BaseException) -> tuple[int, str]:
    for typ, status, name in STATUS_TABLE:
        if isinstance(exc, typ):
            return status, name
    return 500, "model_failure"
