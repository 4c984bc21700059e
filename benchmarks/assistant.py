"""Assistant benchmark (issue 5B) on CLINC150, written to BENCHMARKS.md by `python benchmarks/run.py --render`.

    python benchmarks/assistant.py            # ~1 h on 2 cores (two MiniLM fine-tunings); cached steps are reused
    python benchmarks/assistant.py --redo     # retrain everything

Data: the bundled CLINC150 "full" split (data/clinc150): train 15,100 (100 oos), validation 3,100
(100 oos), test 5,500 (1,000 oos). Everything is fitted on train and calibrated on validation; the
test set is touched once, at the end. Systems, all in this one run:

- niche assistant: the MiniLM intent classifier fine-tuned on the in-scope train utterances,
  MiniLM mean-pooled retrieval over all train utterances (in-scope and oos), abstention thresholds
  chosen on validation for out-of-scope precision >= TARGET (src/niche/apps/assistant.py);
- niche assistant with the sparse classifier (TF-IDF n-grams): the same retrieval and calibration;
- (a) the same fine-tuned classifier + a max-probability threshold, chosen on validation by the
  same rule and target (the retrieval features switched off);
- (b) MiniLM fine-tuned with `oos` as a 151st class (same settings), no threshold.

In-scope accuracy counts a declined in-scope query as an error; out-of-scope precision is the
share of declined queries that are really out of scope.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "data" / "clinc150"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.9, help="out-of-scope precision to calibrate for on validation")
    ap.add_argument("--redo", action="store_true", help="retrain the classifiers even if they exist")
    a = ap.parse_args()

    from niche import TextClassifier, read_labeled
    from niche.apps.assistant import Assistant, AssistantConfig, calibrate, decide, oos_metrics

    work = RESULTS / "work" / "assistant"
    work.mkdir(parents=True, exist_ok=True)
    train, val, test = (read_labeled(DATA / f"{s}.csv") for s in ("train", "validation", "test"))

    def ins(d):
        return d.subset([i for i, lab in enumerate(d.labels) if lab != "oos"])

    params = {"epochs": a.epochs, "max_len": 32, "seed": 42}
    timings: dict[str, float] = {}

    def trained(name: str, family: str, p: dict, tr, dv) -> TextClassifier:
        d = work / name
        if (d / "niche.json").is_file() and not a.redo:
            clf = TextClassifier.load(d)
            timings[name] = clf.info_["training"]["seconds"]
            print(f"[cached] {name} ({timings[name]:.0f} s to train)", flush=True)
            return clf
        print(f"[train] {name} ...", flush=True)
        clf = TextClassifier(family, **p).fit(tr, eval_data=dv, progress=True)
        clf.save(d)
        timings[name] = clf.info_["training"]["seconds"]
        return clf

    clf_in = trained("clf-in-scope", "transformer", params, ins(train), ins(val))
    clf_oos = trained("clf-oos-class", "transformer", params, train, val)
    clf_sparse = trained("clf-sparse", "sparse", {"seed": 42}, ins(train), ins(val))

    systems: dict[str, dict] = {}
    cfg = AssistantConfig(classifier=params, target_oos_precision=a.target)
    for label, clf, family in (("niche assistant", clf_in, "transformer"),
                               ("niche assistant (sparse classifier)", clf_sparse, "sparse")):
        t0 = time.perf_counter()
        bot = Assistant.build(train, dev=val, config=AssistantConfig(**{**cfg.__dict__, "family": family}), classifier=clf)
        build_s = time.perf_counter() - t0  # embedding + calibration (the classifier was trained above)
        bot.save(work / label.replace(" ", "-").replace("(", "").replace(")", ""))
        t0 = time.perf_counter()
        pred = bot.predict(test.texts)
        secs = time.perf_counter() - t0
        systems[label] = oos_metrics(test.labels, pred) | {
            "thresholds": bot.info["thresholds"], "calibration": bot.info["calibration"],
            "index_and_calibration_s": round(build_s, 1), "answers_per_s": round(len(test) / secs, 1)}
        print(f"  {label}: {systems[label]}", flush=True)

    # (a) max-probability threshold on the same classifier, same calibration rule and target
    pv, pt = clf_in.predict_proba(val.texts), clf_in.predict_proba(test.texts)
    labels = np.array(clf_in.classes_)
    yv = np.array(val.labels)
    one = np.ones(len(val))
    th, rec = calibrate(pv.max(1), one, one, labels[pv.argmax(1)] == yv, yv == "oos", a.target, 0.02, use_margin=False)
    keep = decide(pt.max(1), np.ones(len(test)), np.ones(len(test)), th)
    pred_a = np.where(keep, labels[pt.argmax(1)], "oos").tolist()
    systems["(a) classifier + max-prob threshold"] = oos_metrics(test.labels, pred_a) | {
        "thresholds": {"t_prob": th.t_prob}, "calibration": rec}
    # (b) oos as a class
    systems["(b) classifier with oos as a class"] = oos_metrics(test.labels, clf_oos.predict(test.texts))
    for k in ("(a) classifier + max-prob threshold", "(b) classifier with oos as a class"):
        print(f"  {k}: {systems[k]}", flush=True)

    res = {"dataset": "clinc150", "n_train": len(train), "n_val": len(val), "n_test": len(test),
           "target_oos_precision": a.target, "classifier": params, "train_seconds": timings, "systems": systems,
           "command": "python benchmarks/assistant.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "date": time.strftime("%Y-%m-%d")}
    (RESULTS / "assistant.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {RESULTS / 'assistant.json'}")


if __name__ == "__main__":
    main()
