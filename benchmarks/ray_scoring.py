"""Batch scoring: the local engine vs Ray Data with 1 and 2 workers, same model, same input, same run.

    .venv/bin/python benchmarks/ray_scoring.py [--rows 20000] [--transformer-rows 3000 | --transformer-rows 0]

Models: the sparse model trained on banking77 train, and (unless --transformer-rows 0) all-MiniLM-L6-v2
fine-tuned for one epoch on a 1,540-text banking77 slice (throughput only; its accuracy is not the point).
Input: banking77 train+test texts repeated to --rows (CSV). For each engine: rows/s over the whole job,
Ray's fixed start-up (ray.init, then actors started + model loaded + first chunk scored) and the
steady-state rate after the first chunk; then a byte comparison of each Ray output with the local one.
Writes benchmarks/results/ray_scoring.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from _common import DATA, ROOT, save_result

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_input(path: Path, rows: int) -> Path:
    from niche import read_labeled

    d = DATA / "banking77"
    texts = read_labeled(d / "train.csv").texts + read_labeled(d / "test.csv").texts
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows((i, texts[i % len(texts)]) for i in range(rows))
    return path


def run_engines(model_dir: Path, inp: Path, work: Path, name: str) -> dict:
    import torch

    from niche import TextClassifier
    from niche.predict import predict_file
    from niche.predict import predict_file_ray

    out: dict = {}
    t0 = time.perf_counter()
    clf = TextClassifier.load(model_dir)
    res = predict_file(clf, inp, work / f"{name}-local.csv", str(model_dir), overwrite=True, progress=False)
    secs = time.perf_counter() - t0
    out["local"] = {"rows": res["rows"], "seconds": secs, "rows_per_s": res["rows"] / secs,
                    "threads": torch.get_num_threads()}
    ref = (work / f"{name}-local.csv").read_bytes().splitlines()
    for workers in (1, 2):
        marks: list[tuple[float, int]] = []
        r = predict_file_ray(model_dir, inp, work / f"{name}-ray{workers}.csv", num_workers=workers, overwrite=True,
                             progress=False, on_chunk=lambda n: marks.append((time.perf_counter(), n)))
        got = (work / f"{name}-ray{workers}.csv").read_bytes().splitlines()
        steady = ((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
                  if len(marks) > 1 and marks[-1][0] > marks[0][0] else None)
        out[f"ray-{workers}"] = {
            "rows": r["rows"], "seconds": r["seconds"], "rows_per_s": r["rows_per_s"], "cluster": r["cluster"],
            "driver_setup_s": r["setup_s"], "ray_init_s": r["init_s"], "first_result_s": r["first_result_s"],
            "startup_overhead_s": r["init_s"] + r["first_result_s"], "steady_rows_per_s": steady,
            "threads_per_actor": 1, "byte_identical": got == ref,
            "differing_lines": sum(a != b for a, b in zip(got, ref)) + abs(len(got) - len(ref)),
            "lines": len(ref)}
        print(name, workers, json.dumps(out[f"ray-{workers}"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--transformer-rows", type=int, default=3000)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-ray")
    args = ap.parse_args()
    from niche import TextClassifier, read_labeled

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    train = read_labeled(DATA / "banking77" / "train.csv")
    results: dict = {"models": {}}
    import ray

    results["ray_version"] = ray.__version__
    sp = work / "sparse"
    if not (sp / "niche.json").exists():
        TextClassifier("sparse").fit(train).save(sp)
    inp = make_input(work / "input.csv", args.rows)
    results["models"]["sparse"] = {"input_rows": args.rows, **run_engines(sp, inp, work, "sparse")}
    if args.transformer_rows:
        tf = work / "minilm"
        if not (tf / "niche.json").exists():
            sl = train.subset(list(range(0, len(train), 6)))
            TextClassifier("transformer", epochs=1, max_len=64, batch_size=32).fit(sl, progress=False).save(tf)
        tin = make_input(work / "input-tf.csv", args.transformer_rows)
        results["models"]["minilm"] = {"input_rows": args.transformer_rows, **run_engines(tf, tin, work, "minilm")}
    print(f"written {save_result('ray_scoring', results)}")


if __name__ == "__main__":
    main()
