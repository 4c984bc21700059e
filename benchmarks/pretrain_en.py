"""English domain-adaptive pretraining: continued MLM of all-MiniLM-L6-v2 on IMDB
train texts, then fine-tuning, against fine-tuning MiniLM as it ships, same fine-tuning budget.

    python benchmarks/pretrain_en.py --mlm-minutes 15

MiniLM ships without an MLM head: `niche pretrain --base` creates one (decoder tied to the input
embeddings) and trains the whole model. The MLM corpus is IMDB train (25,000 reviews), with every
IMDB test review excluded (123 texts are in both). Fine-tuning subset (documented, seeded): 2,000
train reviews, 500 other train reviews as dev, 2,000 test reviews; max_len 256 head+tail, bf16
autocast, the same epochs/learning rate/seed for both encoders.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, SHARED, load_result, save_result

sys.path.insert(0, str(ROOT / "src"))
WORK = RESULTS / "work" / "pretrain_en"
IMDB = SHARED / "imdb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlm-minutes", type=float, default=15)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--redo", action="store_true")
    a = ap.parse_args()
    if not IMDB.is_dir():
        sys.exit(f"{IMDB} not found: this benchmark reads IMDB from ../shared/data in place.")
    from niche import TextClassifier, read_labeled
    from niche.pretrain import PretrainConfig, pretrain

    res = (None if a.redo else load_result("pretrain_en")) or {}

    def save() -> None:
        save_result("pretrain_en", res)

    adapted = WORK / "minilm-imdb-mlm"
    if not (adapted / "model.safetensors").is_file() or a.redo:
        cfg = PretrainConfig(base="all-MiniLM-L6-v2", max_len=128, batch_size=32, epochs=1, max_minutes=a.mlm_minutes,
                             precision="bf16", eval_every=200, checkpoint_every=200, dev_texts=500)
        rep = pretrain([IMDB / "train.csv"], adapted, cfg, exclude=[IMDB / "test.csv"],
                       checkpoint_dir=WORK / "minilm-imdb-mlm.checkpoints", resume=True)
        rep.pop("train_loss", None)
        res["mlm"] = rep
        save()

    train, test = read_labeled(IMDB / "train.csv"), read_labeled(IMDB / "test.csv")
    rng = np.random.default_rng(0)
    p = rng.permutation(len(train))
    tr, dv = train.subset(sorted(p[: a.train].tolist())), train.subset(sorted(p[a.train: a.train + 500].tolist()))
    te = test.subset(sorted(rng.permutation(len(test))[: a.test].tolist()))
    res["split"] = {"train": len(tr), "dev": len(dv), "test": len(te), "seed": 0}
    params = dict(max_len=256, truncation="head+tail", epochs=a.epochs, batch_size=16, precision="bf16", patience=0, seed=42)
    for name, base in (("MiniLM-L6 as shipped", "all-MiniLM-L6-v2"), ("MiniLM-L6 + continued MLM on IMDB", str(adapted))):
        if name in res.get("runs", {}) and not a.redo:
            continue
        t0 = time.perf_counter()
        clf = TextClassifier("transformer", base=base, **params).fit(tr, eval_data=dv, progress=True)
        secs = time.perf_counter() - t0
        m = clf.evaluate(te)
        res.setdefault("runs", {})[name] = {"base": base, "params": params, "train_seconds": round(secs, 1),
                                            "dev_accuracy": clf.info_["metrics"]["dev"]["accuracy"],
                                            "test": {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "n": m["n"]},
                                            "evals": clf.info_["training"].get("evals")}
        save()
        print(name, res["runs"][name]["test"], f"{secs:.0f} s")


if __name__ == "__main__":
    main()
