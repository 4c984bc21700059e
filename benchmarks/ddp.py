"""Distributed training benchmark: 1 process vs 2 DDP processes (torchrun, gloo) on CPU.

    python benchmarks/ddp.py                  # bundled banking77, ~30 min on 2 cores
    python benchmarks/ddp.py --epochs 1       # quicker

Both runs use the same command (`niche train`), the same global batch (32), seed, data and
dev split (a seeded 10 % of train); the only difference is the launcher. On a 2-core machine the
single process uses both cores for its matrix products (2 intra-op threads) and each DDP process
one, so no speed-up is expected: the point is that the results agree and what the overhead is.
Reported: training samples/s (steps x batch / training seconds), dev and test accuracy, and the
largest difference between the two loss curves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from _common import DATA, RESULTS, save_result

BANKING77 = DATA / "banking77"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=64)
    a = ap.parse_args()
    work = RESULTS / "work" / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    args = ["train", "--data", str(BANKING77 / "train.csv"), "--test", str(BANKING77 / "test.csv"), "--epochs", str(a.epochs),
            "--max-len", str(a.max_len), "--batch-size", "32", "--lr", "1e-4", "--seed", "42", "--patience", "0",
            "--device", "cpu", "--quiet"]
    runs = {}
    for name, nproc, threads in (("1 process (2 threads)", 1, 2), ("2 DDP processes (1 thread each)", 2, 1)):
        out = work / ("p1" if nproc == 1 else "p2")
        cmd = ([sys.executable, "-m", "niche"] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", "29511", "-m", "niche"])
        cmd += args + ["--out", str(out), "--threads", str(threads)]
        print(f"[run] {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env | {"OMP_NUM_THREADS": str(threads)}, check=True)
        wall = time.perf_counter() - t0
        info = json.loads((out / "niche.json").read_text())
        tr = info["training"]
        runs[name] = {"processes": nproc, "threads_per_process": threads, "wall_s": round(wall, 1),
                      "train_s": tr["seconds"], "steps": tr["steps"],
                      "samples_per_s": round(tr["steps"] * 32 / tr["seconds"], 1),
                      "dev_accuracy": info["metrics"]["dev"]["accuracy"], "test_accuracy": info["metrics"]["test"]["accuracy"],
                      "loss_curve": tr["loss_curve"]}
        print(f"  {runs[name]['samples_per_s']} samples/s, dev {runs[name]['dev_accuracy']:.4f}, "
              f"test {runs[name]['test_accuracy']:.4f}", flush=True)
    (one, two) = runs.values()
    c1, c2 = np.array(one["loss_curve"])[:, 1], np.array(two["loss_curve"])[:, 1]
    res = {"dataset": "banking77 (bundled)", "epochs": a.epochs, "max_len": a.max_len, "global_batch": 32, "runs": runs,
           "max_loss_curve_diff": float(np.abs(c1 - c2).max()), "speed_ratio_2_vs_1": two["samples_per_s"] / one["samples_per_s"],
           "load_average_end": os.getloadavg()[0]}
    print(f"wrote {save_result('ddp', res)}")


if __name__ == "__main__":
    main()
