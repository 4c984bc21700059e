"""What the OpenAPI of ``niche serve`` declares, kept equal to what the server does.

* Every route lists the statuses of the error table (:mod:`niche.serving.errors`) it can return,
  each with the :class:`ErrorBody` model (429 with its ``Retry-After`` header); 401 and the
  security schemes (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, either one) only when
  an API key is configured.
* Request models are validated strictly (``"1"`` is not an integer, ``1`` is not a boolean) and
  their text fields carry the limits the server enforces (:func:`text_schema`,
  :func:`texts_schema`): at most ``--max-texts`` texts of at most ``--max-chars`` characters, none
  empty or whitespace-only. The server refuses them with its own statuses (413 beyond a limit,
  422 for an empty text), so what the schema forbids the server refuses, and what it allows the
  server accepts.
* A route's ``{name}`` lists the names served of its kind (:func:`complete_openapi`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model
from pydantic.fields import FieldInfo

from ..config import ServeConfig

WHITESPACE = "\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Exactly the characters of ``str.isspace`` (as a regex class body), spelled out rather than ``\\s``,
whose meaning differs between regex engines (Python's, a validator's in Rust or JavaScript)."""
NONBLANK = f"[^{WHITESPACE}]"
"""The schema's pattern for a text: it has a character that is not whitespace."""
_NONBLANK = re.compile(NONBLANK)


def is_blank(text: str) -> bool:
    """Empty or whitespace-only, by the same pattern the schema declares (``not text.strip()``)."""
    return _NONBLANK.search(text) is None


ErrorType = Literal["invalid_request", "payload_too_large", "unknown_model", "unauthorized", "overloaded",
                    "model_failure", "not_found", "method_not_allowed"]


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="What went wrong (a model failure says only that; the details go to the log).")
    error_type: ErrorType = Field(description="The error's type in the error table (not_found and "
                                              "method_not_allowed: no such route or method).")


ERRORS: dict[int, str] = {
    401: "Missing or wrong API key (send `Authorization: Bearer KEY` or `X-API-Key: KEY`).",
    404: "No model of this kind is served under this name.",
    413: "Too many texts (--max-texts), a text too long (--max-chars), or the body too large (--max-body-bytes).",
    422: "Invalid body: not JSON, a missing or mistyped field, a value out of range, an empty text.",
    429: "Overloaded: the model's queue is full (--max-queue); retry after Retry-After seconds.",
    500: "The model failed on this request.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer KEY` (--api-key-file)"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: KEY` (--api-key-file)"},
}
SECURITY = [{"bearer": []}, {"apiKey": []}]  # either one


def error_responses(statuses: Iterable[int], cfg: ServeConfig, descriptions: dict[int, str] | None = None
                    ) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can return ``statuses`` (401 added when a key is configured)."""
    wanted = set(statuses) | ({401} if cfg.api_key is not None else set())
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(wanted):
        out[status] = {"model": ErrorBody, "description": (descriptions or {}).get(status, ERRORS[status])}
        if status == 429:
            out[status]["headers"] = RETRY_AFTER
    return out


def route_options(cfg: ServeConfig, statuses: Iterable[int], descriptions: dict[int, str] | None = None
                  ) -> dict[str, Any]:
    """Keyword arguments of a ``/v1`` route: its error responses and, with a key, its security."""
    options: dict[str, Any] = {"responses": error_responses(statuses, cfg, descriptions)}
    if cfg.api_key is not None:
        options["openapi_extra"] = {"security": SECURITY}
    return options


class StrictRequest(BaseModel):
    """A request body as JSON types it: no ``"3"`` for an integer or ``1`` for a boolean (a float
    with no fractional part is an integer, as in JSON Schema: see :func:`integral`)."""

    model_config = ConfigDict(strict=True)


def integral(value: Any) -> Any:
    """``3.0`` -> ``3`` (JSON Schema counts it an integer); everything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def documented(model: type[BaseModel], schemas: dict[str, dict[str, Any]]) -> type[BaseModel]:
    """A subclass of ``model`` (same name) whose fields in ``schemas`` are documented by those JSON
    schemas; validation stays the model's, so that the route refuses with its own statuses and messages."""
    fields: dict[str, Any] = {}
    for name, schema in schemas.items():
        field = model.model_fields[name]
        if "description" in schema:  # the field's own description would win over the schema's
            field = FieldInfo.merge_field_infos(field, description=f"{field.description or ''} {schema['description']}".strip())
        fields[name] = (Annotated[field.annotation, WithJsonSchema(schema)], field)
    return create_model(model.__name__, __base__=model, __module__=model.__module__, **fields)


def text_schema(cfg: ServeConfig, description: str = "") -> dict[str, Any]:
    """One text: non-empty, not whitespace-only, at most ``max_chars`` characters."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": cfg.max_chars, "pattern": NONBLANK}
    return schema | ({"description": description} if description else {})


def texts_schema(cfg: ServeConfig) -> dict[str, Any]:
    """``inputs``: one text or a list of 1 to ``max_texts`` of them."""
    text = text_schema(cfg)
    return {"anyOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": cfg.max_texts}],
            "description": f"At most {cfg.max_texts} texts of at most {cfg.max_chars} characters (413 beyond); "
                           "none empty or whitespace-only (422)."}


def complete_openapi(schema: dict[str, Any], cfg: ServeConfig, names: dict[str, list[str]]) -> dict[str, Any]:
    """Add what FastAPI does not know: the security schemes (with a key); in each ``/v1/{kind}s/{name}/...``
    route, the names served of that kind (``names``: plural -> names; a kind none of whose is served keeps
    a free name, which is always a 404); and links from a kind's listing and reload to its routes (the
    name a response gives is one those routes take)."""
    if cfg.api_key is not None:
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    paths = schema.get("paths", {})
    for path, operations in paths.items():
        parts = path.split("/")
        if len(parts) < 4 or parts[1] != "v1" or parts[3] != "{name}":
            continue
        plural = parts[2]
        served = names.get(plural, [])
        if served:
            _link(paths.get(f"/v1/{plural}", {}).get("get"), operations, f"$response.body#/{plural}/0/name")
            _link(paths.get(f"/v1/{plural}/{{name}}/reload", {}).get("post"), operations,
                  f"$response.body#/{plural[:-1]}")
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "path" and param.get("name") == "name":
                    if served:
                        param["schema"] = param.get("schema", {}) | {"enum": served}
                        param["description"] = f"A served name: {', '.join(served)}."
                    else:
                        param["description"] = "No model of this kind is served here: every name is a 404."
    return schema


def _link(source: dict[str, Any] | None, targets: dict[str, Any], name: str) -> None:
    """Link ``source``'s 200 response to each operation of ``targets``, passing ``name`` as their ``{name}``."""
    if source is None or "200" not in source.get("responses", {}):
        return
    links = source["responses"]["200"].setdefault("links", {})
    for target in targets.values():
        if "operationId" in target:
            links[target["operationId"]] = {"operationId": target["operationId"], "parameters": {"name": name}}


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an unused threshold of ``-inf``) as None: JSON has no infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class Readiness(BaseModel):
    """``GET /readyz``: 200 when every model is loaded, else 503; the names served of each kind."""

    model_config = ConfigDict(extra="allow")
    ready: bool
    models: list[str] | None = Field(None, description="Served classifiers (also assistants, recommenders).")


class Listed(BaseModel):
    """One served model in ``GET /v1/{kind}s``: its name, when it was loaded, and what its kind says about it."""

    model_config = ConfigDict(extra="allow")
    name: str
    loaded_at: float = Field(description="Unix time of the last (re)load.")


def listing_model(plural: str) -> type[BaseModel]:
    """``GET /v1/{plural}``: ``{plural: [Listed, ...]}``."""
    return create_model(f"{plural.capitalize()}List", **{plural: (list[Listed], ...)})  # type: ignore[call-overload]


def reload_model(kind: str) -> type[BaseModel]:
    """``POST /v1/{kind}s/{name}/reload``: ``{kind: name, "reloaded": true, "loaded_at", "load_seconds"}``."""
    return create_model(f"{kind.capitalize()}Reloaded", **{kind: (str, ...)},  # type: ignore[call-overload]
                        reloaded=(bool, ...), loaded_at=(float, ...), load_seconds=(float, ...))
