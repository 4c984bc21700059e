"""Core benchmark: niche vs. its peers in the same run, written to BENCHMARKS.md.

    python benchmarks/run.py            # everything (about 1.5 h on 2 CPU cores), resumable
    python benchmarks/run.py --only banking77 --only imdb
    python benchmarks/run.py --render   # rewrite BENCHMARKS.md from finished results (= benchmarks/render.py)

Peers, on the same data, base model, epochs, batch size, learning rates, max length and seed:
- transformer    vs Hugging Face ``Trainer`` (training) and ``pipeline`` (prediction)
- the sparse family's accuracy (its tuned peers -- TF-IDF + LinearSVC / LR with C chosen on dev, fastText,
  model2vec, SetFit -- run in ``benchmarks/peers.py``, each in its own venv, on nine datasets)

Every (dataset, system) runs in its own subprocess, so peak memory (ru_maxrss) is its own; results
are cached as JSON in ``benchmarks/results/`` so an interrupted run resumes. Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, SHARED, result_path, save_result

# Transformer settings shared by niche and the HF peer. Subsets are documented in BENCHMARKS.md.
DATASETS = {
    "banking77": dict(train="banking77/train.csv", test="banking77/test.csv", test_name="test",
                      tf=dict(epochs=5, lr=1e-4, max_len=128, batch_size=32)),
    "sst2": dict(train="sst2/train.csv", test="sst2/validation.csv", test_name="validation",
                 tf=dict(epochs=1, lr=1e-4, max_len=64, batch_size=32)),
    "imdb": dict(train="imdb/train.csv", test="imdb/test.csv", test_name="test",
                 tf=dict(epochs=1, lr=1e-4, max_len=256, batch_size=32), tf_train_subset=3000, tf_test_subset=1000),
    "chnsenticorp": dict(train="chnsenticorp/train.csv", test="chnsenticorp/test.csv", test_name="test", tf=None),
}
SEED = 42


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_mb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6


SMOKE = os.environ.get("NICHE_BENCH_SMOKE") == "1"
if SMOKE:  # a 2-minute plumbing check of every code path; its numbers mean nothing
    RESULTS = ROOT / "benchmarks" / "results-smoke"
    for _spec in DATASETS.values():
        if _spec["tf"]:
            _spec["tf"] = _spec["tf"] | {"epochs": 1, "max_len": 32}
            _spec["tf_train_subset"], _spec["tf_test_subset"] = 300, 64


def load(name: str, split: str, subset: int | None = None):
    from niche import read_labeled

    if SMOKE and subset is None:
        subset = 400

    d = read_labeled(SHARED / DATASETS[name][split])
    if subset and subset < len(d):
        idx = sorted(random.Random(SEED).sample(range(len(d)), subset))
        d = d.subset(idx)
    return d


def scores(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}


# -- systems (each runs in a child process) -----------------------------------------------------

def run_niche_sparse(name: str, work: Path) -> dict:
    from niche import TextClassifier

    tr, te = load(name, "train"), load(name, "test")
    t0 = time.perf_counter()
    clf = TextClassifier("sparse").fit(tr)
    train_s = time.perf_counter() - t0
    d = clf.save(work / f"{name}-sparse")
    t0 = time.perf_counter()
    pred = clf.predict(te.texts)
    pred_s = time.perf_counter() - t0
    return scores(te.labels, pred) | {"train_s": train_s, "docs_per_s": len(te) / pred_s, "size_mb": dir_mb(d),
                                      "n_train": len(tr), "n_test": len(te), "analyzers": clf.info_["training"]["analyzers"]}


def _splits(name: str):
    """Train/dev/test for the transformer runs: dev = niche's seeded 10 % stratified split of train."""
    from niche import stratified_split

    spec = DATASETS[name]
    full = load(name, "train", spec.get("tf_train_subset"))
    tr, dev = stratified_split(full, 0.1, seed=SEED)
    return full, tr, dev, load(name, "test", spec.get("tf_test_subset"))


def run_niche_transformer(name: str, work: Path) -> dict:
    from niche import TextClassifier

    full, tr, dev, te = _splits(name)
    clf = TextClassifier("transformer", seed=SEED, patience=0, **DATASETS[name]["tf"])
    t0 = time.perf_counter()
    clf.fit(tr, eval_data=dev, checkpoint_dir=work / f"{name}-tf.ckpt")
    train_s = time.perf_counter() - t0
    d = clf.save(work / f"{name}-transformer")
    t0 = time.perf_counter()
    pred = clf.predict(te.texts, batch_size=32)
    pred_s = time.perf_counter() - t0
    return scores(te.labels, pred) | {"train_s": train_s, "docs_per_s": len(te) / pred_s, "size_mb": dir_mb(d),
                                      "n_train": len(tr), "n_dev": len(dev), "n_test": len(te),
                                      "steps": clf.info_["training"]["steps"], "model_dir": str(d)}


class ListDataset:
    """A list of feature dicts as a map-style torch dataset (what Trainer needs)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def run_hf_trainer(name: str, work: Path) -> dict:
    """HF Trainer + pipeline with the *same* optimizer param groups (incl. niche's head LR
    multiplier), schedule, epochs, batch size, max length, seed and per-epoch dev evaluation with
    best-model selection on macro-F1. Differences left: Trainer's default (random, not
    length-grouped) batching and its own loop."""
    import numpy as np
    import torch
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, get_linear_schedule_with_warmup, pipeline)

    from niche.config import TransformerConfig
    from niche.encoders import resolve_base

    full, tr, dev, te = _splits(name)
    hp = TransformerConfig(**DATASETS[name]["tf"])
    labels = tr.classes
    l2i = {lab: i for i, lab in enumerate(labels)}
    base = resolve_base(hp.base)
    t0 = time.perf_counter()  # like niche's fit(): loading the base model counts as training time
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=l2i)

    def enc(data):
        e = tok(data.texts, truncation=True, max_length=hp.max_len)
        return ListDataset([{"input_ids": i, "attention_mask": m, "labels": l2i[y]}
                            for i, m, y in zip(e["input_ids"], e["attention_mask"], data.labels)])

    train_ds, dev_ds = enc(tr), enc(dev)
    steps = ((len(tr) + hp.batch_size - 1) // hp.batch_size) * hp.epochs
    no_decay = ("bias", "LayerNorm.weight")
    groups: dict = {}
    for n, p in model.named_parameters():
        head = n.startswith(("classifier.", "bert.pooler."))
        groups.setdefault((head, n.endswith(no_decay)), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": 0.0 if nd else hp.weight_decay,
                              "lr": hp.lr * (hp.head_lr_mult if h else 1.0)} for (h, nd), ps in sorted(groups.items())],
                            lr=hp.lr)
    sched = get_linear_schedule_with_warmup(opt, int(hp.warmup_ratio * steps), steps)
    args = TrainingArguments(
        output_dir=str(work / f"{name}-hf-out"), num_train_epochs=hp.epochs, per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.eval_batch_size, max_grad_norm=hp.max_grad_norm, seed=SEED,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="macro_f1",
        save_total_limit=1, report_to=[], logging_steps=50, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0)

    def metrics(p):
        return {"macro_f1": f1_score(p.label_ids, np.argmax(p.predictions, -1), average="macro")}

    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics, optimizers=(opt, sched))
    trainer.train()
    train_s = time.perf_counter() - t0
    d = work / f"{name}-hf-model"
    trainer.save_model(str(d))
    tok.save_pretrained(str(d))
    clf = pipeline("text-classification", model=str(d), tokenizer=str(d), device=-1 if not torch.cuda.is_available() else 0)
    t0 = time.perf_counter()
    out = clf(te.texts, batch_size=32, truncation=True, max_length=hp.max_len)
    pred_s = time.perf_counter() - t0
    pred = [o["label"] for o in out]
    return scores(te.labels, pred) | {"train_s": train_s, "docs_per_s": len(te) / pred_s, "size_mb": dir_mb(d),
                                      "n_train": len(tr), "n_dev": len(dev), "n_test": len(te), "steps": steps}


def run_predict_speed(name: str, work: Path) -> dict:
    """niche predict vs HF pipeline on the *same* niche-trained model directory, batch 32, same
    max length; 3 alternating rounds, median docs/s; labels compared text by text."""
    import statistics

    import torch
    from transformers import pipeline

    from niche import TextClassifier

    model_dir = work / f"{name}-transformer"
    te = load(name, "test", DATASETS[name].get("tf_test_subset"))
    texts = te.texts[:600]
    clf = TextClassifier.load(model_dir)
    pipe = pipeline("text-classification", model=str(model_dir), device=-1 if not torch.cuda.is_available() else 0)
    max_len = clf.info_["max_len"]
    ours, theirs = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        a = clf.predict(texts, batch_size=32)
        ours.append(len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        b = [o["label"] for o in pipe(texts, batch_size=32, truncation=True, max_length=max_len)]
        theirs.append(len(texts) / (time.perf_counter() - t0))
    agree = sum(x == y for x, y in zip(a, b))
    return {"niche_docs_per_s": statistics.median(ours), "pipeline_docs_per_s": statistics.median(theirs),
            "rounds_niche": ours, "rounds_pipeline": theirs, "n": len(texts), "label_agreement": agree / len(texts),
            "labels_identical": agree == len(texts), "max_len": max_len}


SYSTEMS = {"niche-sparse": run_niche_sparse,
           "niche-transformer": run_niche_transformer, "hf-trainer": run_hf_trainer, "predict-speed": run_predict_speed}


def plan(only: list[str]) -> list[tuple[str, str]]:
    jobs = []
    names = [n for n in DATASETS if not only or n in only]
    for n in names:
        jobs.append((n, "niche-sparse"))
    for n in ("banking77", "imdb", "sst2"):
        if n in names and DATASETS[n]["tf"]:
            jobs += [(n, "niche-transformer"), (n, "hf-trainer")]
            if n == "imdb":
                jobs.append((n, "predict-speed"))
    return jobs


def child(name: str, system: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    work = RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = SYSTEMS[system](name, work)
    res |= {"dataset": name, "system": system, "peak_rss_mb": peak_mb(), "wall_s": time.perf_counter() - t0}
    save_result(f"{name}-{system}", res, RESULTS, command=f"python benchmarks/run.py --job {name}:{system}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="dataset(s) to run")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from cached results")
    ap.add_argument("--force", action="store_true", help="rerun jobs whose results exist")
    ap.add_argument("--job", action="append", default=[], metavar="DATASET:SYSTEM",
                    help="run only these jobs (e.g. imdb:predict-speed), even if cached")
    ap.add_argument("--smoke", action="store_true", help="tiny subsets, to check the plumbing (numbers meaningless)")
    ap.add_argument("--child", nargs=2, metavar=("DATASET", "SYSTEM"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.smoke and not SMOKE:
        os.environ["NICHE_BENCH_SMOKE"] = "1"
        os.execv(sys.executable, [sys.executable, __file__] + [x for x in sys.argv[1:] if x != "--smoke"])
    if a.child:
        return child(*a.child)
    if not a.render:
        if not SHARED.is_dir():
            sys.exit(f"{SHARED} not found: the benchmark needs the shared datasets (see README).")
        RESULTS.mkdir(parents=True, exist_ok=True)
        jobs = [tuple(j.split(":", 1)) for j in a.job] or plan(a.only)
        for name, system in jobs:
            out = result_path(f"{name}-{system}", RESULTS)
            if out.exists() and not a.force and not a.job:
                print(f"[cached] {name} {system}")
                continue
            print(f"[run] {name} {system} ...", flush=True)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, "--child", name, system])
            print(f"[{'done' if r.returncode == 0 else 'FAILED'}] {name} {system} in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    import render

    print(f"wrote {render.write(RESULTS, RESULTS / 'BENCHMARKS.smoke.md') if SMOKE else render.write()}")


if __name__ == "__main__":
    main()
