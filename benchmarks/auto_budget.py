"""Does ``niche train --family auto`` keep its budget when another job starts on the cores mid-search?

    python benchmarks/auto_budget.py --baseline-src ../old/src     # this checkout vs another checkout's src
    python benchmarks/auto_budget.py --minutes 4 --hog-after 0.4 --dataset sst2

Per variant -- this checkout, and optionally another checkout's ``src`` put first on ``PYTHONPATH`` (the
baseline) -- one ``niche train --family auto --max-minutes M`` on the peers harness's split of the
dataset (train minus a 10 % stratified dev, ``--eval dev``), and a busy-loop process that starts
``hog_after`` x the budget after the search and runs until it ends: another user's job arriving on the same
2 cores after the search has timed its probes. SST-2 by default: its 6,735 dev phrases make the
transformer's reserve (dev predictions and speed runs after its deadline) large, which is where a
slower-than-probed machine overran. Recorded per variant: the CLI's wall seconds, the leaderboard's
spent seconds, the overrun in % of the budget, each candidate's seconds, the transformer's
slowdown and whether it was stopped at the budget. Written to ``benchmarks/results/auto_budget.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, save_result

import peers

HOG = "while True:\n    pass\n"


def run_variant(name: str, src: Path | None, split: Path, minutes: float, hog_after: float, out: Path) -> dict:
    for old in (out, out.with_name(out.name + ".checkpoints")):
        shutil.rmtree(old, ignore_errors=True)  # a fresh search, not a resumed one
    env = os.environ | ({"PYTHONPATH": str(src)} if src else {})
    where = subprocess.run([sys.executable, "-c", "import niche; print(niche.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    source = peers._niche_source(Path(where).resolve().parents[2])
    commit = source["commit"]
    cmd = [sys.executable, "-m", "niche", "train", "--family", "auto", "--max-minutes", str(minutes), "-q",
           "--data", str(split / "train.csv"), "--eval", str(split / "dev.csv"), "--out", str(out)]
    print(f"[{name}] niche from {where} ({commit}); hog after {hog_after * minutes * 60:.0f} s", flush=True)
    t0 = time.perf_counter()
    log_path = out.with_name(out.name + ".log")  # a file, not a pipe nobody reads while the search runs
    with log_path.open("w", encoding="utf-8") as log_f:
        p = subprocess.Popen(cmd, env=env, stdout=log_f, stderr=subprocess.STDOUT)
    hog, hog_at = None, None
    try:
        while p.poll() is None:
            if hog is None and time.perf_counter() - t0 >= hog_after * minutes * 60:
                hog = subprocess.Popen([sys.executable, "-c", HOG])
                hog_at = time.perf_counter() - t0
            time.sleep(0.5)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        log = log_path.read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"{name}: niche train exited {p.returncode}: {log[-1500:]}")
    lb = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    cands = {r["name"]: {k: r.get(k) for k in ("status", "train_seconds", "dev_accuracy", "epochs", "stopped_at_budget",
                                                  "slowdown") if r.get(k) is not None} for r in lb["candidates"]}
    budget = lb["budget_seconds"]
    res = {"niche": where, "commit": commit, "uncommitted_src": source["uncommitted_src"], "wall_s": round(wall, 1), "spent_s": lb["spent_seconds"],
           "budget_s": budget, "over_pct": round(100 * (lb["spent_seconds"] - budget) / budget, 1),
           "wall_over_pct": round(100 * (wall - budget) / budget, 1), "hog_started_s": hog_at and round(hog_at, 1),
           "winner": lb["winner"], "reserve_s": lb["plan"].get("transformer", {}).get("reserve"), "candidates": cands}
    print(f"[{name}] spent {res['spent_s']:.0f} s of {budget:.0f} ({res['over_pct']:+.1f} %), wall {wall:.0f} s, "
          f"transformer {cands.get('transformer')}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="sst2", choices=sorted(peers.DATASETS))
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--hog-after", type=float, default=0.4, help="fraction of the budget before the busy loop starts")
    ap.add_argument("--baseline-src", type=Path, default=None, help="another checkout's src/ to run first, as the baseline")
    a = ap.parse_args()
    split = peers.prepare(a.dataset)["full"]
    work = ROOT / "benchmarks" / "results" / "work" / "auto_budget"
    variants = ([("baseline", a.baseline_src.resolve())] if a.baseline_src else []) + [("this", None)]
    runs = {}
    for name, src in variants:
        runs[name] = run_variant(name, src, split, a.minutes, a.hog_after, work / name)
    save_result("auto_budget", {"dataset": a.dataset, "minutes": a.minutes, "hog_after": a.hog_after,
                                "split": str(split.relative_to(ROOT)), "runs": runs})


if __name__ == "__main__":
    main()
