"""Same-run A/B of two versions of niche: did a change make prediction or serving slower?

Each version's ``src/`` is taken from git (``--base REV``, and the working tree as the new version),
and every measurement runs the same model directory in a fresh process of that version, the
versions interleaved round by round, so machine load hits both alike:

- **predict**: ``TextClassifier.load(model).predict(texts, batch_size=32)`` on the first ``--texts``
  banking77 test texts (one warm-up pass, then timed), docs/s per round; the labels of both
  versions are compared text by text;
- **serve**: ``niche serve`` of that version, wrk at concurrency 32 for ``--duration`` s on short
  banking77 texts (the request mix of ``serve_load.py``), requests/s and p50/p99 per round.

    python benchmarks/versions.py --base 01e33a7 --model benchmarks/results/work/banking77-transformer

Writes ``benchmarks/results/versions.json``; ``python benchmarks/render.py`` puts it in BENCHMARKS.md.
Speed does not depend on the weights, so any model with the benchmark's architecture will do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, ROOT, save_result  # noqa: E402

PREDICT = r"""
import json, sys, time
from niche import TextClassifier, read_labeled
model, n = sys.argv[1], int(sys.argv[2])
texts = read_labeled(sys.argv[3]).texts[:n]
clf = TextClassifier.load(model)
clf.predict(texts[:64], batch_size=32)  # warm-up: first-call allocations and kernel choices
t0 = time.perf_counter()
labels = clf.predict(texts, batch_size=32)
print(json.dumps({"docs_per_s": len(texts) / (time.perf_counter() - t0), "labels": labels}))
"""


def checkout(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` extracted under ``into``."""
    archive = into / f"{rev}.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as t:
        t.extractall(into / rev, filter="data")
    return into / rev / "src"


def env_for(src: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(src), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def predict_once(src: Path, model: Path, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PREDICT, str(model), str(n), str(DATA / "banking77" / "test.csv")],
                         env=env_for(src), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def serve_once(src: Path, model: Path, duration: int, bodies: Path, script: Path) -> dict:
    import serve_load as sl

    port = sl.free_port()
    p = subprocess.Popen([sys.executable, "-m", "niche", "serve", f"m={model}", "--port", str(port)], env=env_for(src),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sl.wait_ready(port)
        url = f"http://127.0.0.1:{port}/v1/models/m/classify"
        sl.run_wrk(url, bodies, script, 4, 3)  # warm-up
        return sl.run_wrk(url, bodies, script, 32, duration)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare the working tree against")
    ap.add_argument("--model", type=Path, default=RESULTS / "work" / "banking77-transformer")
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5, help="predict rounds per version (interleaved)")
    ap.add_argument("--serve-rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    args = ap.parse_args()
    import random

    import serve_load as sl

    from niche import read_labeled

    base_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], capture_output=True,
                              text=True, check=True).stdout.strip()
    head_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="niche-versions-") as tmp:
        versions = {f"base {base_rev}": checkout(args.base, Path(tmp)), f"new {head_rev}+tree": ROOT / "src"}
        short = read_labeled(DATA / "banking77" / "test.csv").texts
        random.Random(0).shuffle(short)
        bodies, script = Path(tmp) / "bodies.jsonl", Path(tmp) / "post.lua"
        bodies.write_text("\n".join(json.dumps({"inputs": t}) for t in short[:1000]) + "\n")
        script.write_text(sl.LUA)
        load = {"start": list(os.getloadavg())}
        predict: dict[str, list[float]] = {v: [] for v in versions}
        labels: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            for v, src in versions.items():
                r = predict_once(src, args.model, args.texts)
                predict[v].append(r["docs_per_s"])
                labels[v] = r["labels"]
                print(v, "predict", round(r["docs_per_s"], 1), flush=True)
        serve: dict[str, list[dict]] = {v: [] for v in versions}
        if args.serve_rounds:
            for _ in range(args.serve_rounds):
                for v, src in versions.items():
                    serve[v].append(serve_once(src, args.model, args.duration, bodies, script))
                    print(v, "serve", serve[v][-1], flush=True)
        load["end"] = list(os.getloadavg())
    a, b = list(versions)
    res = {"base": base_rev, "new": f"{head_rev} + working tree", "model": str(args.model), "texts": args.texts,
           "predict_docs_per_s": predict, "predict_median": {v: statistics.median(x) for v, x in predict.items()},
           "labels_identical": labels[a] == labels[b], "serve_c32": serve,
           "serve_median_rps": {v: statistics.median([r["rps"] for r in x]) for v, x in serve.items() if x},
           "load_average": load}
    res["predict_ratio_new_vs_base"] = res["predict_median"][b] / res["predict_median"][a]
    if serve[a] and res["serve_median_rps"][a] > 0:
        res["serve_ratio_new_vs_base"] = res["serve_median_rps"][b] / res["serve_median_rps"][a]
    cmd = "python benchmarks/versions.py " + " ".join(sys.argv[1:])
    print(json.dumps({k: v for k, v in res.items() if k not in ("serve_c32",)}, indent=1))
    save_result("versions", res, command=cmd)


if __name__ == "__main__":
    main()
