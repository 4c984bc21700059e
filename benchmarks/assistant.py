"""Assistant benchmark on CLINC150, written to BENCHMARKS.md by `python benchmarks/render.py`.

    python benchmarks/assistant.py            # ~1 h on 2 cores (two MiniLM fine-tunings); cached steps are reused
    python benchmarks/assistant.py --redo     # retrain everything

Data: the bundled CLINC150 "full" split (data/clinc150): train 15,100 (100 oos), validation 3,100
(100 oos), test 5,500 (1,000 oos). Everything is fitted on train and calibrated on validation; the
test set is touched once, at the end. Systems, all in this one run:

- niche assistant: the MiniLM intent classifier fine-tuned on the in-scope train utterances,
  MiniLM mean-pooled retrieval over all train utterances (in-scope and oos), abstention thresholds
  chosen on validation for out-of-scope precision >= TARGET (src/niche/apps/assistant/calibration.py);
- niche assistant with the sparse classifier (TF-IDF n-grams): the same retrieval and calibration;
- (a) the same fine-tuned classifier + a max-probability threshold, chosen on validation by the
  same rule and target (the retrieval features switched off);
- (b) MiniLM fine-tuned with `oos` as a 151st class (same settings), no threshold.

In-scope accuracy counts a declined in-scope query as an error; out-of-scope precision is the
share of declined queries that are really out of scope.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import DATA, RESULTS, ROOT, save_result

sys.path.insert(0, str(ROOT / "src"))
CLINC = DATA / "clinc150"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.9, help="out-of-scope precision to calibrate for on validation")
    ap.add_argument("--redo", action="store_true", help="retrain the classifiers even if they exist")
    ap.add_argument("--expected-oos-rate", type=float, default=None,
                    help="also calibrate at this expected out-of-scope share of traffic (default: only dev's own share)")
    ap.add_argument("--skip-oos-class", action="store_true",
                    help="do not train baseline (b) with MiniLM (it is another full fine-tuning); its sparse version still runs")
    a = ap.parse_args()

    from niche import TextClassifier, read_labeled
    from niche.apps.assistant import Assistant, AssistantConfig, calibrate, decide, oos_metrics

    work = RESULTS / "work" / "assistant"
    work.mkdir(parents=True, exist_ok=True)
    train, val, test = (read_labeled(CLINC / f"{s}.csv") for s in ("train", "validation", "test"))

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
    clf_sparse = trained("clf-sparse", "sparse", {"seed": 42}, ins(train), ins(val))
    clf_sparse_oos = trained("clf-sparse-oos-class", "sparse", {"seed": 42}, train, val)
    clf_oos = None if a.skip_oos_class else trained("clf-oos-class", "transformer", params, train, val)

    systems: dict[str, dict] = {}
    rates = [None] + ([a.expected_oos_rate] if a.expected_oos_rate else [])
    for family, clf, clf_b in (("MiniLM", clf_in, clf_oos), ("sparse", clf_sparse, clf_sparse_oos)):
        for rate in rates:
            label = f"niche assistant, {family} classifier" + (f", expected oos rate {rate}" if rate else "")
            cfg = AssistantConfig(family="transformer" if family == "MiniLM" else "sparse", classifier=params,
                                  target_oos_precision=a.target, expected_oos_rate=rate)
            t0 = time.perf_counter()
            bot = Assistant.build(train, dev=val, config=cfg, classifier=clf)
            build_s = time.perf_counter() - t0  # embedding + calibration (the classifier was trained above)
            t0 = time.perf_counter()
            pred = bot.predict(test.texts)
            secs = time.perf_counter() - t0
            systems[label] = oos_metrics(test.labels, pred) | {
                "family": family, "assistant": True, "expected_oos_rate": rate,
                "thresholds": bot.info["thresholds"], "calibration": bot.info["calibration"],
                "index_and_calibration_s": round(build_s, 1), "answers_per_s": round(len(test) / secs, 1)}
            print(f"  {label}: {systems[label]}", flush=True)

            # (a) max-probability threshold on the same classifier, same calibration rule, target and rate
            pv, pt = clf.predict_proba(val.texts), clf.predict_proba(test.texts)
            labels = np.array(clf.classes_)
            yv = np.array(val.labels)
            one = np.ones(len(val))
            th, rec = calibrate(pv.max(1), one, one, labels[pv.argmax(1)] == yv, yv == "oos", a.target, 0.02,
                                use_margin=False, oos_rate=rate)
            keep = decide(pt.max(1), np.ones(len(test)), np.ones(len(test)), th)
            pred_a = np.where(keep, labels[pt.argmax(1)], "oos").tolist()
            k = f"(a) {family} classifier + max-prob threshold" + (f", expected oos rate {rate}" if rate else "")
            systems[k] = oos_metrics(test.labels, pred_a) | {"family": family, "thresholds": {"t_prob": th.t_prob},
                                                             "calibration": rec}
            print(f"  {k}: {systems[k]}", flush=True)
        # (b) oos as a class
        k = f"(b) {family} classifier with oos as a class"
        systems[k] = (oos_metrics(test.labels, clf_b.predict(test.texts)) | {"family": family} if clf_b is not None
                      else {"family": family, "not_run": "skipped (--skip-oos-class): another full MiniLM fine-tuning"})
        print(f"  {k}: {systems[k]}", flush=True)

    res = {"dataset": "clinc150", "n_train": len(train), "n_val": len(val), "n_test": len(test),
           "target_oos_precision": a.target,
           "classifier_note": clf_in.info_["training"].get("stopped"),
           "main_system": "niche assistant, MiniLM classifier" + (f", expected oos rate {a.expected_oos_rate}"
                                                                  if a.expected_oos_rate else ""), "classifier": params, "train_seconds": timings, "systems": systems}
    print(f"wrote {save_result('assistant', res)}")


if __name__ == "__main__":
    main()
