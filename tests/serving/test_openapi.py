"""The OpenAPI says what the server does: the error-table statuses of every route, the content
types, the security schemes with a key, request limits equal to the server's (and the server
refusing exactly what they forbid), strict types, the served names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serving extras (fastapi) not installed")
from fastapi.testclient import TestClient  # noqa: E402

from niche import TextClassifier  # noqa: E402
from niche.config import ServeConfig  # noqa: E402
from niche.serving.app import create_app  # noqa: E402
from niche.serving.errors import STATUS_TABLE, InvalidRequest, PayloadTooLarge  # noqa: E402
from niche.serving.openapi import NONBLANK, is_blank, json_safe, text_schema  # noqa: E402
from niche.serving.recommend import RankRequest, check_rank  # noqa: E402

from ..conftest import toy_texts  # noqa: E402

KEY = "openapi-key-0123456789"
PREDICT = {"/v1/models/{name}/classify", "/v1/assistants/{name}/answer", "/v1/recommenders/{name}/rank"}


@pytest.fixture(scope="module")
def sp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr, ty = toy_texts(120, seed=1)
    return TextClassifier("sparse").fit(tr, ty).save(tmp_path_factory.mktemp("openapi") / "sp")


def client(sp: Path, **cfg: object) -> TestClient:
    return TestClient(create_app({"sp": sp}, ServeConfig(**cfg)))  # type: ignore[arg-type]


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "api-key"])
def test_every_route_declares_the_statuses_it_can_return(sp: Path, keyed: bool) -> None:
    with client(sp, api_key=KEY if keyed else None) as c:
        doc = c.get("/openapi.json").json()
    table = {status for _, status, _ in STATUS_TABLE}
    assert ("securitySchemes" in doc["components"]) is keyed
    if keyed:
        schemes = doc["components"]["securitySchemes"]
        assert schemes["bearer"] == schemes["bearer"] | {"type": "http", "scheme": "bearer"}
        assert schemes["apiKey"] == schemes["apiKey"] | {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            statuses = {int(s) for s in op["responses"]}
            errors = statuses - {200, 503}
            assert errors <= table, (path, errors)
            for s in errors:
                assert op["responses"][str(s)]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"}, (path, s)
            v1 = path.startswith("/v1/")
            assert (401 in statuses) is (keyed and v1), (path, statuses)
            assert ("security" in op) is (keyed and v1), path
            if keyed and v1:
                assert op["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
            if "{name}" in path:
                assert {404, 413, 422, 500} <= statuses, path
            if method == "post":
                assert 413 in statuses, path
            if path in PREDICT:
                assert 429 in statuses and "Retry-After" in op["responses"]["429"]["headers"], path
    types = {p: list(doc["paths"][p]["get"]["responses"]["200"]["content"]) for p in ("/metrics", "/", "/healthz")}
    assert types["/metrics"][0].startswith("text/plain; version=0.0.4")
    assert types["/"] == ["text/html"] and types["/healthz"] == ["application/json"]
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error", "error_type"]


def test_what_is_served_matches_the_declared_content_types(sp: Path) -> None:
    with client(sp) as c:
        assert c.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
        assert c.get("/").headers["content-type"].startswith("text/html")


def test_request_limits_are_the_servers(sp: Path) -> None:
    with client(sp, max_texts=3, max_chars=10) as c:
        doc = c.get("/openapi.json").json()
        inputs = doc["components"]["schemas"]["ClassifyRequest"]["properties"]["inputs"]
        one, many = inputs["anyOf"]
        assert one == {"type": "string", "minLength": 1, "maxLength": 10, "pattern": NONBLANK}
        assert many == {"type": "array", "items": one, "minItems": 1, "maxItems": 3}
        rank = doc["components"]["schemas"]["RankRequest"]
        assert rank["properties"]["history_text"]["maxItems"] == 3 and rank["properties"]["history"]["maxItems"] == 300
        assert rank["properties"]["k"]["minimum"] == 1 and rank["properties"]["k"]["maximum"] == 1000
        assert len(rank["oneOf"]) == 2
        top_k = doc["components"]["schemas"]["ClassifyRequest"]["properties"]["top_k"]
        assert {"type": "integer", "minimum": 1} in top_k["anyOf"]

        def status(body: dict) -> int:
            return c.post("/v1/models/sp/classify", json=body).status_code

        # allowed by the schema: accepted
        for body in ({"inputs": "x" * 10}, {"inputs": ["good"] * 3}, {"inputs": "a", "top_k": 1},
                     {"inputs": "a", "top_k": 10**6}, {"inputs": "a", "top_k": 2.0}, {"inputs": "\u3000a"},
                     {"inputs": "a", "top_k": None}, {"inputs": "a", "explain": True, "extra": 1}):
            assert status(body) == 200, body
        # forbidden: refused, with the status of the error table
        for body, code in (({"inputs": "x" * 11}, 413), ({"inputs": ["good"] * 4}, 413), ({"inputs": []}, 422),
                           ({"inputs": ""}, 422), ({"inputs": " \t\u3000"}, 422), ({"inputs": ["a", "\x1c"]}, 422),
                           ({"inputs": "a", "top_k": 0}, 422), ({"inputs": "a", "top_k": "1"}, 422),
                           ({"inputs": "a", "top_k": 1.5}, 422), ({"inputs": "a", "top_k": True}, 422),
                           ({"inputs": "a", "explain": 1}, 422), ({"inputs": "a", "explain": "true"}, 422),
                           ({"inputs": 5}, 422), ({"inputs": ["a", 5]}, 422), ({}, 422)):
            assert status(body) == code, body


def test_the_blank_pattern_is_strip_in_every_regex_engine() -> None:
    """The schema's pattern, Python's ``str.strip`` and the server agree on every character, also
    in a validator whose regex engine is not Python's (schemathesis's, in Rust)."""
    chars = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
    assert [c for c in chars if is_blank(c)] == [c for c in chars if not c.strip()]
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    valid = jsonschema_rs.validator_for(text_schema(ServeConfig(max_chars=5)))
    assert [c for c in chars if not valid.is_valid(c)] == [c for c in chars if not c.strip()]


def test_either_key_header_is_enough(sp: Path) -> None:
    with client(sp, api_key=KEY) as c:
        def status(**headers: str) -> int:
            return c.post("/v1/models/sp/classify", json={"inputs": "a"}, headers=headers).status_code

        assert status(Authorization=f"Bearer {KEY}") == 200 and status(**{"X-API-Key": KEY}) == 200
        assert status(Authorization="Bearer wrong-key-123", **{"X-API-Key": KEY}) == 200
        assert status(Authorization=f"Bearer {KEY}", **{"X-API-Key": "wrong"}) == 200
        assert status(Authorization="Bearer wrong-key-123", **{"X-API-Key": "wrong"}) == 401
        assert status(Authorization=f"Basic {KEY}") == 401 and status() == 401


def test_no_route_no_method_and_unparsable_bodies_use_the_error_shape(sp: Path) -> None:
    with client(sp, max_body_bytes=4000) as c:
        r = c.get("/nowhere")
        assert r.status_code == 404 and r.json() == {"error": "Not Found", "error_type": "not_found"}
        r = c.delete("/v1/models")
        assert r.status_code == 405 and r.json()["error_type"] == "method_not_allowed" and "GET" in r.headers["Allow"]
        r = c.post("/v1/models/sp/classify", content=b'{"inputs": "\xff\xfe"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error_type"] == "invalid_request"
        # the body limit is a POST's (the only routes that read a body, and declare 413)
        assert c.request("GET", "/healthz", content=b"x" * 5000).status_code == 200
        assert c.post("/v1/models/sp/classify", content=b"x" * 5000).status_code == 413


def test_name_lists_the_served_names(sp: Path) -> None:
    with client(sp) as c:
        paths = c.get("/openapi.json").json()["paths"]
    (param,) = paths["/v1/models/{name}/classify"]["post"]["parameters"]
    assert param["schema"]["enum"] == ["sp"]
    (param,) = paths["/v1/assistants/{name}/answer"]["post"]["parameters"]
    assert "enum" not in param["schema"] and "404" in param["description"]  # none served: every name is unknown
    links = paths["/v1/models"]["get"]["responses"]["200"]["links"]
    assert {link["parameters"]["name"] for link in links.values()} == {"$response.body#/models/0/name"}
    assert len(links) == 2  # classify and reload


def test_rank_limits_and_listings_without_infinities() -> None:
    cfg = ServeConfig(max_texts=2, max_chars=5)
    check_rank(RankRequest(history=["a"] * 200), cfg)
    check_rank(RankRequest(history_text=["good", "bad"]), cfg)
    for req, err in ((RankRequest(history=["a"] * 201), PayloadTooLarge), (RankRequest(history_text=["a"] * 3), PayloadTooLarge),
                     (RankRequest(history=["a"], candidates=["b"] * 201), PayloadTooLarge),
                     (RankRequest(history_text=["toolong"]), PayloadTooLarge), (RankRequest(history_text=["a", " "]), InvalidRequest),
                     (RankRequest(), InvalidRequest), (RankRequest(history=["a"], history_text=["b"]), InvalidRequest)):
        with pytest.raises(err):
            check_rank(req, cfg)
    assert json_safe({"t": [float("-inf"), 1.5, float("nan")], "n": 3}) == {"t": [None, 1.5, None], "n": 3}
