"""Hand-made hostile HTTP inputs (issue 18, item 3): each gets its documented status and the
``{"error", "error_type"}`` body without a stack trace, and the server still answers afterwards.

Run on both a sparse and a transformer model: their tokenizers fail differently (a lone surrogate,
``"\\ud800"``, passes scikit-learn's vectorizer but makes the Rust tokenizer raise, which used to fail
the whole micro-batch with a 500).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serving extras (fastapi) not installed")
from fastapi.testclient import TestClient  # noqa: E402

from niche import DataError, TextClassifier  # noqa: E402
from niche.config import ServeConfig  # noqa: E402
from niche.serving.app import create_app  # noqa: E402

from ..conftest import TINY, toy_texts  # noqa: E402

KEY = "hostile-inputs-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json"}
CFG = ServeConfig(api_key=KEY, max_texts=8, max_chars=2000, max_body_bytes=200_000)


@pytest.fixture(scope="module")
def dirs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    tr, ty = toy_texts(120, seed=3)
    return {"sp": TextClassifier("sparse").fit(tr, ty).save(root / "sp"),
            "tf": TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(tr, ty).save(root / "tf")}


@pytest.fixture(scope="module")
def client(dirs):
    with TestClient(create_app(dirs, CFG), raise_server_exceptions=False) as c:
        yield c



DEEP = ("[" * 20000 + "]" * 20000).encode()
# (name, body, headers, status, error_type); headers None = the API key and JSON content type
CASES = [
    ("body over the limit", b'{"inputs": "' + b"a" * 300_000 + b'"}', None, 413, "payload_too_large"),
    ("10k texts", json.dumps({"inputs": ["good"] * 10_000}).encode(), None, 413, "payload_too_large"),
    ("one text over max_chars", json.dumps({"inputs": "a" * 5000}).encode(), None, 413, "payload_too_large"),
    ("1 MB text", json.dumps({"inputs": "a" * 1_000_000}).encode(), None, 413, "payload_too_large"),
    ("non-UTF-8 bytes", b'{"inputs": "\xff\xfe bad"}', None, 422, "invalid_request"),
    ("wrong content type", b'{"inputs": "good"}', {"Content-Type": "text/plain"}, 422, "invalid_request"),
    ("null", b"null", None, 422, "invalid_request"),
    ("a bare string", b'"good"', None, 422, "invalid_request"),
    ("nested lists", b'{"inputs": [["good"]]}', None, 422, "invalid_request"),
    ("20,000 levels of nesting", b'{"inputs": ' + DEEP + b"}", None, 422, "invalid_request"),
    ("empty string", b'{"inputs": ""}', None, 422, "invalid_request"),
    ("whitespace only", b'{"inputs": [" \\t\\n\\u3000 "]}', None, 422, "invalid_request"),
    ("empty list", b'{"inputs": []}', None, 422, "invalid_request"),
    ("lone surrogate", b'{"inputs": "\\ud800"}', None, 422, "invalid_request"),
    ("lone low surrogate in a list", b'{"inputs": ["good", "a\\udfffb"]}', None, 422, "invalid_request"),
    ("top_k as a string", b'{"inputs": "good", "top_k": "3"}', None, 422, "invalid_request"),
    ("negative top_k", b'{"inputs": "good", "top_k": -1}', None, 422, "invalid_request"),
    ("missing key", b'{"inputs": "good"}', {"Authorization": ""}, 401, "unauthorized"),
    ("wrong key", b'{"inputs": "good"}', {"Authorization": "Bearer not-the-key-at-all"}, 401, "unauthorized"),
]


@pytest.mark.parametrize("model", ["sp", "tf"])
@pytest.mark.parametrize("name,body,headers,status,error_type", CASES, ids=[c[0] for c in CASES])
def test_hostile_body(client, model, name, body, headers, status, error_type) -> None:
    hdrs = AUTH | JSON | (headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v}
    r = client.post(f"/v1/models/{model}/classify", content=body, headers=hdrs)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert set(err) == {"error", "error_type"} and err["error_type"] == error_type, err
    assert "Traceback" not in r.text and 'File "' not in r.text
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("model", ["sp", "tf"])
def test_unusual_but_valid_text_is_classified(client, model) -> None:
    texts = ["good 😀👍🏽", "مرحبا جيد", "go\u200bod", "\u202egood\u202c", "ｇｏｏｄ", "🇨🇳 很好", "\U0001f600" * 50]
    r = client.post(f"/v1/models/{model}/classify", json={"inputs": texts}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == len(texts)


def test_a_bad_text_does_not_fail_other_requests_in_its_batch(client) -> None:
    """Requests arriving together share a micro-batch; a refused one must not take the others down."""
    results: dict[int, int] = {}

    def send(i: int) -> None:
        body = b'{"inputs": "\\ud800"}' if i == 0 else b'{"inputs": "good movie"}'
        results[i] = client.post("/v1/models/tf/classify", content=body, headers=AUTH | JSON).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == 422 and all(results[i] == 200 for i in range(1, 6)), results


@pytest.mark.parametrize("path", ["/v1/models/..%2F..%2Fetc/classify", "/v1/models/../../etc/classify",
                                  "/v1/models/%2e%2e/classify", "/v1/models/sp%00/classify"])
def test_path_traversal_in_the_model_name(client, path) -> None:
    r = client.post(path, json={"inputs": "good"}, headers=AUTH)
    assert r.status_code == 404, r.text
    assert set(r.json()) == {"error", "error_type"} and r.json()["error_type"] in ("unknown_model", "not_found")
    assert client.get("/healthz").status_code == 200


def test_reload_of_an_unknown_model(client) -> None:
    r = client.post("/v1/models/nope/reload", headers=AUTH)
    assert r.status_code == 404 and r.json()["error_type"] == "unknown_model", r.text


def test_concurrent_reloads_keep_serving(client) -> None:
    codes: list[int] = []

    def reload() -> None:
        codes.append(client.post("/v1/models/sp/reload", headers=AUTH).status_code)

    threads = [threading.Thread(target=reload) for _ in range(4)]
    for t in threads:
        t.start()
    r = client.post("/v1/models/sp/classify", json={"inputs": "good"}, headers=AUTH)
    for t in threads:
        t.join()
    assert codes == [200] * 4, codes
    assert r.status_code == 200
    assert client.post("/v1/models/sp/classify", json={"inputs": "bad"}, headers=AUTH).status_code == 200


def test_the_python_api_refuses_a_lone_surrogate_with_a_clear_error(dirs) -> None:
    clf = TextClassifier.load(dirs["tf"])
    with pytest.raises(DataError, match="unpaired surrogate"):
        clf.predict(["good", "a\ud800b"])
