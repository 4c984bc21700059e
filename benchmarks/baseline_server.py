"""The naive peer for the serving benchmark: FastAPI + Hugging Face ``pipeline``, one forward pass
per request, written the way most people first write it (a sync endpoint, FastAPI's thread pool).

    python benchmarks/baseline_server.py MODEL_DIR --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Req(BaseModel):
    inputs: str | list[str]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--max-len", type=int, default=128)
    a = ap.parse_args()
    pipe = pipeline("text-classification", model=a.model, device=-1)
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/v1/models/{name}/classify")
    def classify(name: str, req: Req) -> dict:
        texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
        out = pipe(texts, top_k=None, truncation=True, max_length=a.max_len)
        return {"model": name, "predictions": [{"labels": o} for o in out]}

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
