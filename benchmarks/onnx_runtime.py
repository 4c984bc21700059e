"""onnxruntime session settings that niche uses, against onnxruntime's defaults (a compression follow-up).

    python benchmarks/onnx_runtime.py            # banking77 and IMDB; needs benchmarks/compress.py's models

For the int8 teacher that `benchmarks/compress.py` built (results/work/compress/NAME/int8), four
ways to run the same graph, measured in the same run on the first 512 evaluation texts at batch 32
(tokenization included, as `predict_proba` runs it), rounds interleaved, median docs/s:
  niche       idle onnxruntime threads busy-wait during a run and sleep after it (spin="run"), unpadded
              batches run the mask-free graph (onnxruntime's CPU flash attention)
  spinning    the same with onnxruntime's default: idle threads keep spinning after a run (spin="always")
  sleeping    the same with idle threads that never spin (spin="never")
  masked      the same as niche, but every batch runs the masked graph
each "alone" (the model runs back to back) and "after another model" (the fp32 ONNX teacher predicts
128 texts right before each timed pass: a process that serves or compares several models).
Writes results/onnx_runtime.json; `python benchmarks/render.py` puts it in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

import run as core  # noqa: E402
from _common import load_result, save_result  # noqa: E402

RESULTS = core.RESULTS
VARIANTS = ("niche", "spinning", "sleeping", "masked")


def variant(path: Path, kind: str):
    from niche import TextClassifier

    clf = TextClassifier.load(path)
    if kind in ("spinning", "sleeping"):
        clf.model_.spin = "always" if kind == "spinning" else "never"
        clf.model_.set_threads(0)  # rebuilds the session(s) with that setting
    elif kind == "masked":
        clf.model_.mask_free = False
    return clf


def run_dataset(name: str, rounds: int) -> dict:
    from niche import TextClassifier

    cdir = RESULTS / "work" / "compress" / name
    if not (cdir / "int8" / "niche.json").is_file():
        sys.exit(f"{cdir}/int8 missing: run `python benchmarks/compress.py --only {name}` first")
    _, _, _, te = core._splits(name)
    texts = te.texts[:512]
    other = TextClassifier.load(cdir / "onnx-fp32")
    models = {k: variant(cdir / "int8", k) for k in VARIANTS}
    for clf in [other, *models.values()]:
        clf.predict_proba(texts[:64], batch_size=32)  # warm-up, builds the mask-free sessions
    speed: dict[str, dict[str, list[float]]] = {s: {k: [] for k in VARIANTS} for s in ("alone", "after another model")}
    for r in range(rounds):
        for scenario in speed:
            for k, clf in models.items():
                if scenario == "after another model":
                    other.predict_proba(texts[:128], batch_size=32)
                t0 = time.perf_counter()
                clf.predict_proba(texts, batch_size=32)
                speed[scenario][k].append(len(texts) / (time.perf_counter() - t0))
        print(f"  {name} round {r + 1}/{rounds}", flush=True)
    med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in speed.items()}
    return {"dataset": name, "n_texts": len(texts), "rounds": rounds, "docs_per_s": med, "docs_per_s_rounds": speed,
            "unpadded_batches": _unpadded(models["niche"], texts)}


def _unpadded(clf, texts: list[str]) -> list[int]:
    from niche.encoders import plan_batches

    enc = clf.model_.encode(texts)
    plan = plan_batches([len(x) for x in enc], 32, clf.model_.call_overhead_tokens)
    return [sum(1 for b in plan if len({len(enc[i]) for i in b}) == 1), len(plan)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["banking77", "imdb"])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    res = load_result("onnx_runtime", RESULTS) or {}
    for name in a.only or ["banking77", "imdb"]:
        res[name] = run_dataset(name, a.rounds)
    print(f"-> {save_result('onnx_runtime', res, RESULTS)}")


if __name__ == "__main__":
    main()
