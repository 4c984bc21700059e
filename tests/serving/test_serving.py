"""The HTTP service on tiny models: shapes, every error status, batching, overload, reload under load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi", reason="serving extras (fastapi) not installed")
from fastapi.testclient import TestClient  # noqa: E402

from niche import TextClassifier  # noqa: E402
from niche.config import ServeConfig  # noqa: E402
from niche.serving.app import create_app  # noqa: E402
from niche.serving.batching import MicroBatcher  # noqa: E402
from niche.serving.errors import Overloaded  # noqa: E402

from ..conftest import TINY, free_port, toy_texts, wait_ready  # noqa: E402

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def model_dirs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    tr, ty = toy_texts(160, seed=1)
    return {"tf": TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(tr, ty).save(root / "tf"),
            "sp": TextClassifier("sparse").fit(tr, ty).save(root / "sp")}


@pytest.fixture
def client(model_dirs):
    app = create_app(model_dirs, ServeConfig(api_key=KEY, max_texts=4, max_chars=200, max_body_bytes=4000))
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        yield c


def test_classify_shapes_match_local_predict(client, model_dirs) -> None:
    texts = ["the food was great", "awful service"]
    for name in ("tf", "sp"):
        r = client.post(f"/v1/models/{name}/classify", json={"inputs": texts})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        local = TextClassifier.load(model_dirs[name]).predict_proba(texts)
        for p, row in zip(preds, local):
            scores = [x["score"] for x in p["labels"]]
            assert scores == sorted(scores, reverse=True) and len(scores) == 2
            assert {x["label"]: x["score"] for x in p["labels"]} == pytest.approx(
                dict(zip(["neg", "pos"], row.tolist())), abs=1e-5)
        one = client.post(f"/v1/models/{name}/classify", json={"inputs": texts[0], "top_k": 1}).json()
        assert len(one["predictions"]) == 1 and len(one["predictions"][0]["labels"]) == 1


def test_explain_returns_attention_for_transformers(client) -> None:
    r = client.post("/v1/models/tf/classify", json={"inputs": "the food was great", "explain": True}).json()
    att = r["predictions"][0]["attention"]
    assert att["tokens"][0] == "[CLS]" and att["tokens"][-1] == "[SEP]"
    assert len(att["weights"]) == len(att["tokens"]) and sum(att["weights"]) == pytest.approx(1, abs=1e-4)
    assert client.post("/v1/models/sp/classify", json={"inputs": "x", "explain": True}).json()["predictions"][0]["attention"] is None


@pytest.mark.parametrize("kwargs, status, kind", [
    (dict(content=b"{not json", headers={"Content-Type": "application/json"}), 422, "invalid_request"),
    (dict(json={"texts": ["a"]}), 422, "invalid_request"),
    (dict(json={"inputs": []}), 422, "invalid_request"),
    (dict(json={"inputs": ["a"] * 5}), 413, "payload_too_large"),
    (dict(json={"inputs": "x" * 201}), 413, "payload_too_large"),
    (dict(json={"inputs": ["y" * 190] * 4, "pad": "z" * 4000}), 413, "payload_too_large"),
])
def test_error_statuses(client, kwargs, status, kind) -> None:
    r = client.post("/v1/models/sp/classify", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == kind and r.json()["error"]


def test_unknown_model_and_auth(client) -> None:
    r = client.post("/v1/models/../../etc/classify", json={"inputs": "a"})
    assert r.status_code == 404
    r = client.post("/v1/models/nope/classify", json={"inputs": "a"})
    assert r.status_code == 404 and r.json()["error_type"] == "unknown_model" and "sp" in r.json()["error"]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-key-123"}):
        r = client.post("/v1/models/sp/classify", json={"inputs": "a"}, headers=headers)
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
    r = client.get("/v1/models", headers={"Authorization": "", "X-API-Key": KEY})
    assert r.status_code == 200 and {m["name"] for m in r.json()["models"]} == {"tf", "sp"}
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_model_failure_is_500_without_trace(client, monkeypatch) -> None:
    slot = client.app.state.slots["sp"]
    monkeypatch.setattr(slot.batcher, "predict", lambda texts: 1 / 0)
    r = client.post("/v1/models/sp/classify", json={"inputs": "a"})
    assert r.status_code == 500 and r.json() == {"error": "the model failed to process this request", "error_type": "model_failure"}
    assert "Traceback" not in r.text and "ZeroDivision" not in r.text


def test_health_ready_metrics_docs(client) -> None:
    client.post("/v1/models/sp/classify", json={"inputs": ["good", "bad"]})
    assert client.get("/readyz").json() == {"ready": True, "models": ["sp", "tf"], "assistants": []}
    m = client.get("/metrics").text
    assert 'niche_requests_total{method="POST",route="/v1/models/{name}/classify",status="200"}' in m
    assert "niche_batch_texts_bucket" in m and "niche_queue_depth" in m and "niche_model_load_seconds" in m
    assert "/v1/models/{name}/classify" in client.get("/openapi.json").json()["paths"]
    assert "<select id=\"model\">" in client.get("/").text


def test_batcher_gathers_concurrent_requests_and_overloads() -> None:
    sizes = []

    def predict(texts):
        time.sleep(0.05)
        return np.tile(np.array([[0.25, 0.75]]), (len(texts), 1)) + np.arange(len(texts))[:, None] * 0

    async def main():
        b = MicroBatcher(predict, max_batch=64, max_wait_ms=20, max_queue=100, on_batch=sizes.append)
        b.start()
        res = await asyncio.gather(*[b.submit([f"t{i}", f"u{i}"]) for i in range(20)])
        assert all(r.shape == (2, 2) for r in res)
        small = MicroBatcher(predict, max_batch=1, max_wait_ms=0, max_queue=2)
        small.start()
        outcomes = await asyncio.gather(*[small.submit(["x"]) for _ in range(6)], return_exceptions=True)
        await b.drain_and_stop()
        await small.drain_and_stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert sum(sizes) == 40 and len(sizes) < 20  # gathered: fewer forward passes than requests
    rejected = [o for o in outcomes if isinstance(o, Overloaded)]
    assert rejected and all(o.retry_after >= 1 for o in rejected)


def test_batcher_fails_only_the_request_whose_output_is_an_exception() -> None:
    """A servable may return an exception in place of one output (a recommender's unknown
    history): that request gets the error, the others in the same batch their outputs."""
    from niche.errors import DataError

    def predict(inputs):
        time.sleep(0.05)  # the first batch runs alone; the rest gather behind it
        return [DataError(f"bad {x}") if x.startswith("bad") else x.upper() for x in inputs]

    async def main():
        b = MicroBatcher(predict, max_batch=64, max_wait_ms=20, max_queue=100)
        b.start()
        out = await asyncio.gather(*[b.submit([f"ok{i}"] if i % 3 else [f"bad{i}", f"ok{i}"]) for i in range(9)],
                                   return_exceptions=True)
        await b.drain_and_stop()
        return out

    out = asyncio.run(main())
    for i, o in enumerate(out):
        if i % 3:
            assert o == [f"OK{i}"]
        else:
            assert isinstance(o, DataError) and str(o) == f"bad bad{i}"

def test_overload_returns_429_with_retry_after(model_dirs, monkeypatch) -> None:
    import httpx

    app = create_app({"sp": model_dirs["sp"]}, ServeConfig(max_queue=1, max_batch=1, max_wait_ms=0))

    async def main():
        async with app.router.lifespan_context(app):
            slot = app.state.slots["sp"]
            real = slot.batcher.predict
            slot.batcher.predict = lambda t: (time.sleep(0.2), real(t))[1]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/models/sp/classify", json={"inputs": "good"}) for _ in range(8)])
        return rs

    rs = asyncio.run(main())
    codes = sorted(r.status_code for r in rs)
    assert 200 in codes and 429 in codes, codes
    r429 = next(r for r in rs if r.status_code == 429)
    assert r429.headers["Retry-After"] == "1" and r429.json()["error_type"] == "overloaded"


def test_reload_under_load_loses_no_request(model_dirs, tmp_path: Path) -> None:
    import shutil

    import httpx

    d = tmp_path / "live"
    shutil.copytree(model_dirs["sp"], d)
    app = create_app({"live": d}, ServeConfig(max_wait_ms=2))
    tr, ty = toy_texts(100, seed=3)

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                first = app.state.slots["live"].loaded_at

                async def hammer(i):
                    return await c.post("/v1/models/live/classify", json={"inputs": [f"good {i}", "bad"]})

                tasks = [asyncio.ensure_future(hammer(i)) for i in range(150)]
                await asyncio.sleep(0.01)
                # a new version lands in the directory (atomically), then reload while requests fly
                TextClassifier("sparse").fit([t + " extra" for t in tr], ty).save(d)
                rel = await c.post("/v1/models/live/reload")
                more = [asyncio.ensure_future(hammer(i)) for i in range(50)]
                rs = await asyncio.gather(*tasks, *more)
                return rel, rs, first, app.state.slots["live"].loaded_at

    rel, rs, first, after = asyncio.run(main())
    assert rel.status_code == 200 and rel.json()["reloaded"] is True and after > first
    assert [r.status_code for r in rs] == [200] * 200


def test_niche_serve_cli_on_loopback_with_sighup_reload(model_dirs, tmp_path: Path) -> None:
    """A real `niche serve` process: readiness, auth, classify, SIGHUP reload, clean shutdown."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    port = free_port()
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "niche", "serve", f"intents={model_dirs['sp']}", str(model_dirs["tf"]),
                             "--port", str(port), "--api-key-file", str(keyfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        wait_ready(base)
        models = httpx.get(f"{base}/v1/models", headers=auth).json()["models"]
        assert sorted(m["name"] for m in models) == ["intents", "tf"]
        assert httpx.post(f"{base}/v1/models/intents/classify", json={"inputs": "good"}).status_code == 401
        r = httpx.post(f"{base}/v1/models/intents/classify", json={"inputs": "great food"}, headers=auth)
        assert r.status_code == 200 and r.json()["predictions"][0]["labels"][0]["label"] == "pos"
        before = {m["name"]: m["loaded_at"] for m in models}
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.time() + 30
        after = before
        while time.time() < deadline and not all(after[n] > before[n] for n in before):  # models reload one by one
            time.sleep(0.2)
            after = {m["name"]: m["loaded_at"] for m in httpx.get(f"{base}/v1/models", headers=auth).json()["models"]}
        assert all(after[n] > before[n] for n in before), (before, after)
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    assert "great food" not in logs  # request texts stay out of the logs by default


def test_serves_onnx_models_like_pytorch_ones(model_dirs, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from niche.compress import write_onnx

    onnx_dir = tmp_path / "tf-onnx"
    onnx_dir.mkdir()
    write_onnx(TextClassifier.load(model_dirs["tf"]), onnx_dir)
    texts = ["the food was great", "awful service", "good " * 30]
    with TestClient(create_app({"pt": model_dirs["tf"], "ox": onnx_dir})) as c:
        listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert listed["ox"]["runtime"] == "onnx" and listed["pt"]["runtime"] == "torch"
        a = c.post("/v1/models/pt/classify", json={"inputs": texts}).json()["predictions"]
        b = c.post("/v1/models/ox/classify", json={"inputs": texts, "explain": True}).json()["predictions"]
    for x, y in zip(a, b):
        assert [v["label"] for v in x["labels"]] == [v["label"] for v in y["labels"]]
        assert [v["score"] for v in x["labels"]] == pytest.approx([v["score"] for v in y["labels"]], abs=1e-4)
        assert y["attention"] is None  # no attention maps from an ONNX graph
