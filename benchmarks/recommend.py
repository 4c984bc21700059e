"""Recommendation benchmark: both protocols on MovieLens latest-small, niche against
popularity, item-kNN and ALS (``implicit``) in one run, plus ranking latency.

    .venv/bin/python benchmarks/recommend.py            # ~11-20 min on 2 shared CPU cores (--steps N: + phase 2)

Reads ../shared/data/movielens-latest-small in place (research-only licence: never copied) and
writes benchmarks/results/recommend.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from _common import SHARED, result_path, save_result  # noqa: E402

ML = SHARED / "movielens-latest-small"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def latency(rec, users: list[str], repeats: int = 1) -> dict[str, float]:
    """ms per ``rank(user=..., k=10)`` over all items with the cached item embeddings."""
    rec.rank(user=users[0], k=10)  # warm-up
    times = []
    for _ in range(repeats):
        for u in users:
            t0 = time.perf_counter()
            rec.rank(user=u, k=10)
            times.append((time.perf_counter() - t0) * 1000)
    return {"users": len(users), "median_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2), "items": len(rec.item_ids_)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=result_path("recommend"))
    ap.add_argument("--steps", type=int, default=None, help="Phase-2 fine-tuning steps (default: the library's).")
    ap.add_argument("--tower-epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not (ML / "interactions.csv").is_file():
        sys.exit(f"{ML} not found; this benchmark needs ../shared/data/movielens-latest-small.")
    import torch

    from niche.apps.recommend import RecommendConfig, Recommender, evaluate
    from niche.apps.recommend.data import load

    torch.set_num_threads(args.threads)
    params = {k: v for k, v in {"steps": args.steps, "tower_epochs": args.tower_epochs, "threads": args.threads}.items()
              if v is not None}
    t0 = time.perf_counter()
    data = load(ML / "interactions.csv", ML / "items.csv", text_cols=["title", "genres", "tags"])
    log(f"{len(data.users)} interactions, {data.n_users} users, {data.n_items} items; report: {data.report.lines()}")
    res = evaluate(data, params, k=10, cold_fraction=0.1, seed=0, progress=log)
    rec = res.pop("_model")
    with tempfile.TemporaryDirectory() as d:  # latency of a loaded model dir: cached safetensors embeddings
        rec.save(Path(d) / "m")
        loaded = Recommender.load(Path(d) / "m")
        rng = np.random.default_rng(0)
        users = [str(u) for u in rng.choice(sorted(loaded.users_), size=200, replace=False)]
        lat = latency(loaded, users)
    log(f"rank latency: {lat}")
    import sklearn
    import transformers

    try:
        import implicit
        implicit_version = implicit.__version__
    except ImportError:
        implicit_version = None
    out = {
        "data": "movielens-latest-small (read in place from ../shared/data)",
        "config": dict(vars(RecommendConfig(**params))),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "scikit-learn": sklearn.__version__, "implicit": implicit_version},
        "total_seconds": round(time.perf_counter() - t0, 1),
        "latency": lat,
    } | res
    log(f"written {save_result(args.out.stem, out, args.out.parent)}")


if __name__ == "__main__":
    main()
