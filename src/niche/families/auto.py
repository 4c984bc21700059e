"""``auto``: the best model for the data within a CPU budget.

A *search*, not a family: :func:`search` plans candidates from the data (size, language, text
length), estimates each one's cost from a short timed probe on this machine, trains those that fit
the budget, measures every one on the same dev split (accuracy, macro-F1, train seconds, texts/s at
batch 32, size on disk) and returns the winner as an ordinary fitted model of its own family, with a
leaderboard (``leaderboard.json`` / ``leaderboard.md``) and a Pareto plot (``pareto.png``, dev accuracy
against texts/s) to be written beside it.

Candidates, in order (cheap and strong first, so a short budget still ends with a good model):

1. ``sparse``: the tuned sparse family (always trained: a model must come out; untuned when even the
   tuning grid does not fit).
2. ``static``: the static family (token vectors distilled from ``base``; CJK: characters + bigrams).
3. ``sentence``: ``base``'s sentence vectors + logistic regression, the encoder tuned contrastively on
   pairs first when there are few labels per class (SetFit's recipe); planned up to
   :data:`SENTENCE_MAX_ROWS` training texts (with more, a fine-tuned transformer learns more from them).
   Skipped like the transformer for CJK text on the default base.
4. ``transformer``: ``base`` fine-tuned, ``max_len`` from the 95th percentile of token lengths, as
   many epochs (1-5; more for small data) as the probe says fit the remaining budget; stopped at the
   deadline if it runs over. Skipped for CJK text when the base is the default MiniLM (244 CJK tokens).
5. ``ensemble``: the weighted probability average of the best two. Its weights are chosen on dev,
   so its dev accuracy is estimated by two-fold cross-fitting on dev (weights chosen on one half,
   scored on the other) to compete fairly with single models.

Selection (``prefer``): the best dev accuracy, ties within 0.1 point going to the faster; ``speed``:
the fastest within 1 point of the best; ``min_docs_per_s`` drops slower candidates first.

Resume: with a checkpoint directory, every finished candidate is saved under ``CKPT/auto/NAME`` with
its leaderboard row and the plan in ``CKPT/auto/state.json``; a resumed search loads them instead of
retraining, and the transformer continues from its own checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AUTO_CANDIDATES, AutoConfig, DEFAULT_BASE, TransformerConfig, config_to_dict
from ..errors import ConfigError, ModelLoadError
from ..evaluation import compute_metrics

CONFIG = AutoConfig
CANDIDATES = AUTO_CANDIDATES  # every candidate, in training order (the ensemble last)
STATE = "state.json"
LEADERBOARD_JSON = "leaderboard.json"
LEADERBOARD_MD = "leaderboard.md"
PARETO = "pareto.png"
TIE = 0.001  # dev accuracies within 0.1 point are a tie
SPEED_SLACK = 0.01  # prefer=speed: within 1 point of the best
SPEED_TEXTS = 512  # dev texts timed for texts/s


@dataclass
class SearchResult:
    """The winner (a fitted :class:`~niche.TextClassifier` of its own family) and the files to save with it."""

    winner: Any
    leaderboard: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        """The compact record kept in the winner's ``niche.json["training"]["auto"]``."""
        return summary(self.leaderboard)


# -- measuring --------------------------------------------------------------------------------------

def docs_per_second(clf: Any, texts: list[str], batch: int = 32) -> float:
    """Texts/s of ``clf.predict_proba`` on (up to SPEED_TEXTS of) ``texts`` in batches of ``batch``."""
    texts = texts[:SPEED_TEXTS] or ["x"]
    clf.predict_proba(texts[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        clf.predict_proba(texts[i:i + batch])
    return len(texts) / max(time.perf_counter() - t0, 1e-9)


def dir_mb(d: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / 2**20, 2)


def token_lengths(base: str, texts: list[str], sample: int = 2000) -> np.ndarray:
    from transformers import AutoTokenizer

    from ..encoders import quiet_hf, resolve_base

    with quiet_hf():
        tok = AutoTokenizer.from_pretrained(resolve_base(base))
    enc = tok(texts[:sample], add_special_tokens=True, truncation=False)["input_ids"]
    return np.array([len(x) for x in enc])


# -- the plan ---------------------------------------------------------------------------------------

def data_profile(task: Any) -> dict[str, Any]:
    from .sparse import cjk_share

    texts = task.train.texts
    chars = np.array([len(t) for t in texts[:5000]])
    counts = np.bincount(task.y_train, minlength=len(task.labels))
    return {"rows": len(texts), "dev_rows": len(task.dev), "classes": len(task.labels),
            "min_per_class": int(counts.min()), "cjk": bool(cjk_share(texts) > 0.3),
            "chars_p50": int(np.percentile(chars, 50)), "chars_p95": int(np.percentile(chars, 95))}


def _subset(task: Any, n: int, seed: int) -> Any:
    """A FitTask on (at most) ``n`` training rows, stratified-ish by a seeded permutation."""
    quiet = {"checkpoint_dir": None, "resume": False, "progress": False, "callbacks": ()}
    if len(task.train) <= n:
        return dataclasses.replace(task, **quiet)
    idx = np.sort(np.random.default_rng(seed).permutation(len(task.train))[:n])
    return dataclasses.replace(task, train=task.train.subset(idx.tolist()), y_train=task.y_train[idx], **quiet)


LEAK_SHARE = 0.1
"""When at least this share of the dev texts occurs inside training texts, the leaderboard warns."""


def dev_leak(task: Any) -> dict[str, Any]:
    """How many dev texts occur inside a training text (``{}`` for none or a dev split under 2 x SMALL_DEV).

    Accuracy on such texts rewards memorising the training file: SST-2's holds every sub-phrase of its
    sentences, so 5,921 of a 6,735-text dev split drawn from it sit inside a training phrase. Leaving them
    out does not make dev clean -- the other 814 are longer phrases that *contain* training phrases, and
    on them the tuned sparse model still scored 92.8 % dev against 82.7 % test (the search then kept it,
    82.68 % test instead of 87.16 %: benchmarks/peers.py, 2026-12-03) -- so auto keeps dev as given and
    says so in the leaderboard; a dev split grouped by source sentence is the fix, and only the user can
    make it."""
    from ..inspection import contained_in

    if len(task.dev) < 2 * SMALL_DEV:
        return {}
    n = int(sum(contained_in(task.train.texts, task.dev.texts)))
    return {"dev_inside_train": n} if n >= LEAK_SHARE * len(task.dev) else {}


def probe_sparse(cfg: AutoConfig, task: Any, cjk: bool) -> tuple[float, str]:
    """Seconds the tuned sparse fit should take: one untuned fit on <= 2000 rows, scaled by rows and grid."""
    from . import get, make_config
    from .sparse import SparseModel, c_grid

    n = min(len(task.train), 2000)
    sub = _subset(task, n, cfg.seed)
    t0 = time.perf_counter()
    get("sparse").fit(make_config("sparse", seed=cfg.seed), dataclasses.replace(sub, dev=sub.dev.subset([]),
                                                                             y_dev=sub.y_dev[:0]))
    one = time.perf_counter() - t0
    binary = len(task.labels) == 2
    fits = sum(len(c_grid(loss, len(task.labels))) for loss in ((["nblr"] if binary else []) + ["lr", "svm"]))
    fits *= (2 if cjk else 1) * 0.75  # C sweeps stop early
    cv = SparseModel(make_config("sparse", seed=cfg.seed)).cv_fits(task.train.texts, task.dev.texts, len(task.labels))
    if cv:  # small data: k-fold cross-validation (no early stop), then the chosen setting's fit
        fits = cv + 1
    est = one * (len(task.train) / n) * fits * 1.2
    return est, f"one untuned fit on {n} rows took {one:.1f} s; x{len(task.train) / n:.1f} rows x ~{fits:.0f} grid fits"


def probe_static(cfg: AutoConfig, task: Any, cjk: bool) -> tuple[float, str]:
    """Seconds the static fit should take: the token vectors (once per base) + ~15 epochs, timed on one
    epoch of <= 2000 rows."""
    from . import get, make_config
    from .static import base_token_vectors

    t0 = time.perf_counter()
    if not cjk:
        base_token_vectors(cfg.base)  # cached for the real fit
    vectors = time.perf_counter() - t0
    n = min(len(task.train), 2000)
    sub = _subset(task, n, cfg.seed)
    t1 = time.perf_counter()
    get("static").fit(make_config("static", base=cfg.base, epochs=1, seed=cfg.seed), sub)
    epoch = time.perf_counter() - t1
    est = (epoch * 15 * len(task.train) / n) * 1.1
    return est, f"vectors {vectors:.0f} s (cached); one epoch on {n} rows {epoch:.1f} s; x{len(task.train) / n:.1f} rows x ~15 epochs"


def _typical_rows(task: Any, seed: int, n: int) -> list[int]:
    """``n`` training rows of typical length, like one length-grouped batch of training: the middle of a
    seeded sample of 8n rows sorted by length (repeated when there are fewer)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(task.train), size=min(len(task.train), 8 * n), replace=False)
    pick = sorted(pick.tolist(), key=lambda i: len(task.train.texts[i]))
    mid = max(0, len(pick) // 2 - n // 2)
    return (pick[mid:mid + n] * n)[:n]


def _timed_steps(params: Any, loss_of: Any, steps: int = 3) -> float:
    """Median seconds of one optimizer step (forward ``loss_of()``, backward, AdamW) over ``steps`` steps
    after one warm-up; the learning rate is tiny, the probe must not matter."""
    from ..train.optim import adamw

    opt = adamw(params, lr=1e-9)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


SENTENCE_MAX_ROWS = 5000
"""Most training texts for which the sentence candidate is planned."""
SENTENCE_PAIR_CLASS = 64
"""The sentence candidate tunes its encoder on pairs when the rarest label has at most this many texts."""
SENTENCE_STEPS = 300
"""Contrastive steps of the sentence candidate (SetFit's ``max_steps`` in the peers benchmark) ..."""
SENTENCE_SHARE = 0.4
"""... or fewer: at most this share of the budget left when it is planned."""


def probe_sentence(cfg: AutoConfig, task: Any, max_len: int) -> tuple[float, float, str]:
    """(seconds per contrastive step of 16 pairs, seconds per embedded text, why): two timed steps after
    a warm-up on 32 texts of typical length, and one embedding pass over them."""
    import torch

    from ..encoders import SentenceEncoder, mean_pool, pad_batch

    t0 = time.perf_counter()
    enc = SentenceEncoder.load(cfg.base, max_len=max_len)
    load_s = time.perf_counter() - t0
    texts = [task.train.texts[i] for i in _typical_rows(task, cfg.seed, 32)]
    ids = enc.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    a, m = (torch.from_numpy(t) for t in pad_batch(ids, enc.tokenizer.pad_token_id or 0, multiple=8))

    def loss_of() -> Any:
        v = mean_pool(enc.model(input_ids=a, attention_mask=m).last_hidden_state, m)
        return (v[:16] * v[16:]).sum()

    enc.model.train()
    step = _timed_steps(enc.model.parameters(), loss_of, 2)
    enc.model.eval()
    t1 = time.perf_counter()
    enc.embed(texts)
    infer = (time.perf_counter() - t1) / len(texts)
    return step, infer + load_s / max(len(task.train) + len(task.dev), 1), (
        f"{step:.2f} s per step of 16 pairs, {infer * 1000:.0f} ms per embedded text at max_len {max_len}")


def _plan_sentence(cfg: AutoConfig, task: Any, profile: dict[str, Any], left: float) -> dict[str, Any]:
    from ..encoders import BASE_ALIASES

    if profile["cjk"] and cfg.base in BASE_ALIASES:
        return {"decision": "skip", "why": f"{DEFAULT_BASE} has 244 CJK tokens: useless for Chinese text"}
    if profile["rows"] > SENTENCE_MAX_ROWS:
        return {"decision": "skip", "why": f"{profile['rows']} training texts (> {SENTENCE_MAX_ROWS}): frozen sentence "
                                           "vectors learn less from them than the fine-tuned transformer"}
    try:
        lengths = token_lengths(cfg.base, task.train.texts)
        max_len = int(min(256, max(32, int(np.ceil(np.percentile(lengths, 95) / 16) * 16))))
        step, per_text, why = probe_sentence(cfg, task, max_len)
    except (ConfigError, ModelLoadError, OSError) as e:
        return {"decision": "skip", "why": f"probe failed: {str(e)[:200]}"}
    embed_s = (profile["rows"] + 2 * profile["dev_rows"]) * per_text + 10
    steps = 0
    if profile["min_per_class"] <= SENTENCE_PAIR_CLASS:
        steps = int(min(SENTENCE_STEPS, max(0, SENTENCE_SHARE * left - embed_s) / max(step, 1e-9)))
    est = round(steps * step + embed_s, 1)
    p = {"seconds": est, "max_len": max_len, "pair_steps": steps}
    if est > left:
        return p | {"decision": "skip", "over_budget": True, "why": f"{why}; ~{est:.0f} s, {max(left, 0):.0f} s left"}
    how = (f"{steps} contrastive steps (the rarest label has {profile['min_per_class']} texts)" if steps
           else "frozen encoder")
    return p | {"decision": "train", "why": f"{why}; {how}"}


def probe_transformer(cfg: AutoConfig, task: Any, max_len: int) -> tuple[float, str, float]:
    """Seconds per training text and per dev text at ``max_len``: three timed optimizer steps (after one
    warm-up) on a batch like the length-grouped batches of training -- ``batch_size`` texts of typical
    length (the middle of a seeded sample sorted by length)."""
    import torch

    from .transformer import TransformerModel

    tcfg = TransformerConfig(base=cfg.base, max_len=max_len, seed=cfg.seed, freeze_embeddings=True)
    tm = TransformerModel.from_base(tcfg, task.labels)
    pick = _typical_rows(task, cfg.seed, tcfg.batch_size)
    ids = tm.encode([task.train.texts[i] for i in pick])
    batch = tm.collate(ids)
    y = torch.tensor(task.y_train[pick].tolist()).to(tm.device)
    tm.model.train()
    per_text = _timed_steps(tm.model.parameters(),
                            lambda: torch.nn.functional.cross_entropy(tm.model(**batch).logits, y)) / len(ids)
    tm.model.eval()
    t0 = time.perf_counter()
    tm.logits_for_ids(ids)
    infer = (time.perf_counter() - t0) / len(ids)
    return per_text, f"{per_text * 1000:.0f} ms per training text, {infer * 1000:.0f} ms per dev text at max_len {max_len}", infer


# -- the search -------------------------------------------------------------------------------------

class Budget:
    """The deadline of the search, and a progress bar over it that a thread keeps moving."""

    def __init__(self, seconds: float, spent: float, progress: bool):
        from tqdm.auto import tqdm

        self.seconds = seconds
        self.start = time.monotonic() - spent
        self.stage = "planning"
        self.bar = tqdm(total=round(seconds), desc="auto", unit="s", disable=not progress, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of the budget")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def spent(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.spent()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.refresh()

    def refresh(self) -> None:
        self.bar.n = min(self.spent(), self.seconds)
        self.bar.set_description_str(f"auto ({self.stage})", refresh=True)

    def write(self, line: str) -> None:
        if not self.bar.disable:
            self.bar.write(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.refresh()
        self.bar.close()


def _fingerprint(cfg: AutoConfig, task: Any) -> str:
    from ..train import fingerprint

    return fingerprint(task.data_sha256, task.dev.sha256(), task.labels,
                       {k: v for k, v in config_to_dict(cfg).items() if k not in ("prefer", "min_docs_per_s")})


def _load_state(state_dir: Path | None, fp: str, resume: bool) -> dict[str, Any]:
    if state_dir is None:
        return {}
    path = state_dir / STATE
    if resume and path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: unreadable search state ({e}); delete {state_dir} to start afresh.") from None
        if state.get("fingerprint") != fp:
            raise ConfigError(f"{state_dir} holds a search of other data or settings; drop --resume, or pass the "
                              "same --data/--eval and settings as the interrupted run.")
        return state
    if state_dir.exists() and not resume:
        shutil.rmtree(state_dir)  # a fresh search: old candidates must not be mistaken for this run's
    return {}


def _save_state(state_dir: Path | None, state: dict[str, Any]) -> None:
    if state_dir is None:
        return
    from ..modeldir import write_json

    state_dir.mkdir(parents=True, exist_ok=True)
    write_json(state_dir / STATE, state)


def search(cfg: AutoConfig, task: Any, classifier: type) -> SearchResult:
    """Run the search described in the module docstring on ``task`` (a :class:`niche.families.FitTask`).

    ``classifier`` is :class:`niche.TextClassifier` (passed in, not imported: the classifier calls the
    search), used to wrap, describe, save and load the candidates like any fitted model.
    """
    cfg.validate()
    leak = dev_leak(task)
    fp = _fingerprint(cfg, task)
    own_tmp = task.checkpoint_dir is None
    root = Path(task.checkpoint_dir) if task.checkpoint_dir else Path(tempfile.mkdtemp(prefix="niche-auto-"))
    state_dir = root / "auto"
    try:
        state = _load_state(state_dir, fp, task.resume and not own_tmp)
        budget = Budget(cfg.max_minutes * 60, float(state.get("spent_seconds", 0.0)), task.progress)
        try:
            if leak:
                budget.write(f"auto: warning: {leak['dev_inside_train']} of the {len(task.dev)} dev texts occur inside "
                             "training texts; dev accuracy rewards memorising (split dev by source document)")
            return _search(cfg, task, state_dir, state, fp, budget, classifier, leak)
        finally:
            budget.close()
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _search(cfg: AutoConfig, task: Any, state_dir: Path, state: dict[str, Any], fp: str, budget: Budget,
            TextClassifier: type, leak: dict[str, Any]) -> SearchResult:

    profile = state.get("profile") or data_profile(task) | leak
    plan: dict[str, Any] = state.get("plan") or {}
    rows: dict[str, dict[str, Any]] = {r["name"]: r for r in state.get("rows", [])}
    fitted: dict[str, Any] = {}
    dev_proba: dict[str, np.ndarray] = {}
    wanted = cfg.candidate_list
    if "sparse" not in wanted and len(wanted) == 1 and wanted[0] == "ensemble":
        raise ConfigError("candidates=ensemble alone has nothing to ensemble; add sparse, static or transformer.")

    def persist() -> None:
        _save_state(state_dir, {"fingerprint": fp, "profile": profile, "plan": plan,
                                "rows": list(rows.values()), "spent_seconds": round(budget.spent(), 2)})

    # reload finished candidates of an interrupted run
    for name, row in list(rows.items()):
        d = state_dir / name
        if row.get("status") == "trained" and (d / "niche.json").is_file():
            clf = TextClassifier.load(d)
            fitted[name] = clf
            dev_proba[name] = clf.predict_proba(task.dev.texts)
            row["resumed"] = True
            budget.write(f"auto: {name} finished before the interruption; loaded, not retrained")
        elif row.get("status") == "trained":
            del rows[name]  # its directory did not survive: train it again

    if not plan:
        budget.stage = "probing"
        plan = _plan(cfg, task, profile, budget)
        persist()
    budget.write("auto: plan — " + "; ".join(f"{n}: {p['decision']} ({p['why']})" for n, p in plan.items()))

    def measure(name: str, clf: Any, seconds: float, extra: dict[str, Any]) -> None:
        proba = clf.predict_proba(task.dev.texts)
        pred = [task.labels[i] for i in proba.argmax(1)]
        m = compute_metrics(task.dev.labels, pred, task.labels, proba)
        d = state_dir / name
        clf.save(d)
        rows[name] = {"name": name, "family": clf.family, "status": "trained",
                      "dev_accuracy": round(m["accuracy"], 5), "dev_macro_f1": round(m["macro"]["f1"], 5),
                      "train_seconds": round(seconds, 2), "docs_per_s": round(docs_per_second(clf, task.dev.texts), 1),
                      "size_mb": dir_mb(d), "estimated_seconds": plan.get(name, {}).get("seconds"), **extra}
        fitted[name] = clf
        dev_proba[name] = proba
        persist()
        budget.write(f"auto: {name}: dev accuracy {m['accuracy'] * 100:.2f} %, {rows[name]['docs_per_s']:.0f} texts/s, "
                     f"{seconds:.0f} s")

    def skip(name: str, p: dict[str, Any], note: str) -> None:
        rows[name] = {"name": name, "family": name, "status": "skipped", "note": note,
                      "estimated_seconds": p.get("seconds")}
        persist()

    for name in CANDIDATES[:-1]:
        p = plan.get(name)
        if p is None or name in fitted:
            continue
        left = budget.left()
        if name == "transformer" and "per_text" in p and not (state_dir / "transformer.checkpoints").exists():
            p = plan[name] = fit_transformer_plan(p, profile, left)  # with what the cheaper ones really left
            persist()  # (a resumed transformer keeps the epochs it was started with)
        elif p["decision"] != "train" and p.get("over_budget") and p["seconds"] <= left:
            p = plan[name] = p | {"decision": "train", "over_budget": False,
                                  "why": f"{p['why']}; trained after all: {left:.0f} s were left when its turn came"}
            persist()
        if p["decision"] != "train":
            skip(name, p, p["why"])
            continue
        if name != "sparse" and p["seconds"] > left:
            skip(name, p, f"estimated {p['seconds']:.0f} s, {max(left, 0):.0f} s of the budget left")
            continue
        budget.stage = f"training {name}"
        t0 = time.perf_counter()
        try:
            clf, extra = _train(name, cfg, task, p, state_dir, budget, TextClassifier)
        except (ConfigError, ModelLoadError) as e:  # e.g. a base that cannot be loaded: report, go on
            rows[name] = {"name": name, "family": name, "status": "failed", "note": str(e)[:300]}
            persist()
            continue
        budget.stage = f"measuring {name}"
        measure(name, clf, time.perf_counter() - t0, extra)

    if "ensemble" in plan and "ensemble" not in fitted:
        trained = sorted((r for r in rows.values() if r["status"] == "trained" and r["name"] in fitted),
                         key=lambda r: -r["dev_accuracy"])
        if len(trained) < 2:
            rows["ensemble"] = {"name": "ensemble", "family": "ensemble", "status": "skipped",
                                "note": "fewer than two candidates trained"}
        else:
            budget.stage = "ensemble"
            t0 = time.perf_counter()
            a, b = trained[0]["name"], trained[1]["name"]
            clf, cv_acc, cv_f1 = _ensemble(fitted[a], fitted[b], dev_proba[a], dev_proba[b], task, TextClassifier)
            d = state_dir / "ensemble"
            clf.save(d)
            proba = clf.predict_proba(task.dev.texts)
            rows["ensemble"] = {"name": "ensemble", "family": "ensemble", "status": "trained",
                                "dev_accuracy": round(cv_acc, 5), "dev_macro_f1": round(cv_f1, 5),
                                "dev_accuracy_in_sample": round(float(np.mean(proba.argmax(1) == task.y_dev)), 5),
                                "train_seconds": round(time.perf_counter() - t0 + trained[0]["train_seconds"]
                                                       + trained[1]["train_seconds"], 2),
                                "docs_per_s": round(docs_per_second(clf, task.dev.texts), 1), "size_mb": dir_mb(d),
                                "members": [a, b], "weights": [m["weight"] for m in clf.info_.get("members", [])],
                                "note": "dev accuracy cross-fitted (weights chosen on one half of dev, scored on the other)"}
            fitted["ensemble"] = clf
            persist()

    budget.stage = "choosing"
    winner, why = choose(list(rows.values()), cfg, len(task.dev))
    for r in rows.values():
        r["winner"] = r["name"] == winner
    budget.refresh()
    board = {"budget_seconds": round(budget.seconds, 1), "spent_seconds": round(budget.spent(), 1),
             "prefer": cfg.prefer, "min_docs_per_s": cfg.min_docs_per_s, "winner": winner, "why": why,
             "profile": profile, "plan": plan, "fingerprint": fp,
             "candidates": [rows[n] for n in CANDIDATES if n in rows]}
    persist()
    budget.write(f"auto: winner {winner} ({why})")
    files = {LEADERBOARD_JSON: json.dumps(board, indent=2, ensure_ascii=False).encode("utf-8"),
             LEADERBOARD_MD: leaderboard_md(board).encode("utf-8")}
    png = pareto_png(board)
    if png is not None:
        files[PARETO] = png
    return SearchResult(fitted[winner], board, files)


def _plan(cfg: AutoConfig, task: Any, profile: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """Which candidates to train, each with its estimated seconds and settings, from the profile and probes."""
    wanted = cfg.candidate_list
    plan: dict[str, Any] = {}
    total = budget.seconds
    if "sparse" in wanted:
        est, why = probe_sparse(cfg, task, profile["cjk"])
        tune = est <= 0.5 * total
        plan["sparse"] = {"decision": "train", "seconds": round(est, 1), "tune": tune,
                          "why": why + ("" if tune else "; the tuning grid does not fit half the budget: untuned")}
    committed = plan.get("sparse", {}).get("seconds", 0.0)
    if "static" in wanted:
        try:
            est, why = probe_static(cfg, task, profile["cjk"])
            fits = committed + est <= budget.left()
            plan["static"] = {"decision": "train" if fits else "skip", "seconds": round(est, 1), "over_budget": not fits,
                              "why": why if fits else f"{why}: does not fit the budget"}
            committed += est if fits else 0.0
        except (ConfigError, ModelLoadError) as e:
            plan["static"] = {"decision": "skip", "why": f"probe failed: {str(e)[:200]}"}
    if "sentence" in wanted:
        plan["sentence"] = _plan_sentence(cfg, task, profile, budget.left() - committed)
        committed += plan["sentence"]["seconds"] if plan["sentence"]["decision"] == "train" else 0.0
    if "transformer" in wanted:
        plan["transformer"] = _plan_transformer(cfg, task, profile, budget.left() - committed)
    if "ensemble" in wanted:
        plan["ensemble"] = {"decision": "train", "seconds": 0, "why": "weighted average of the best two on dev"}
    return plan


def _plan_transformer(cfg: AutoConfig, task: Any, profile: dict[str, Any], left: float) -> dict[str, Any]:
    from ..encoders import BASE_ALIASES

    if profile["cjk"] and cfg.base in BASE_ALIASES:
        return {"decision": "skip", "why": f"{DEFAULT_BASE} has 244 CJK tokens: useless for Chinese text; pass "
                                           "base= a Chinese model (e.g. one from niche pretrain) to try it"}
    try:
        lengths = token_lengths(cfg.base, task.train.texts)
        max_len = int(min(256, max(32, int(np.ceil(np.percentile(lengths, 95) / 16) * 16))))
        per_text, why, infer = probe_transformer(cfg, task, max_len)
    except (ConfigError, ModelLoadError, OSError) as e:
        return {"decision": "skip", "why": f"probe failed: {str(e)[:200]}"}
    return fit_transformer_plan({"max_len": max_len, "per_text": per_text, "infer": infer, "probe": why},
                                profile, left)


MOST_EPOCHS = 5
"""Most epochs of the transformer candidate on data of >= 2,000 texts (fewer when the budget says so)."""
MIN_TRANSFORMER_ROWS = 2000
"""Fewest training texts of a transformer candidate trained on a subset (one epoch of all rows does not fit)."""


def fit_transformer_plan(p: dict[str, Any], profile: dict[str, Any], left: float) -> dict[str, Any]:
    """The transformer's epochs (or, when one epoch of every row does not fit, the seeded subset of rows
    one epoch can see) for ``left`` seconds, from the probe's per-text times in ``p``. Called when the
    plan is made and again, with what is really left, when the transformer's turn comes."""
    n, n_dev = profile["rows"], profile["dev_rows"]
    per_text, infer, why = p["per_text"], p["infer"], p["probe"]
    base = {k: p[k] for k in ("max_len", "per_text", "infer", "probe")}
    # after training: dev predictions for the metrics and the ensemble (3x dev) and two speed runs
    reserve = round((3 * n_dev + 2 * (SPEED_TEXTS + 32)) * infer + 10, 1)
    usable = 0.9 * (left - reserve)
    epoch_s = n * per_text + n_dev * infer
    # up to 5 passes when they fit (banking77's 9,000 texts: 3 left half the budget unused, and the core
    # benchmark's 5 epochs gave 93.6 %); small data more (>= ~10,000 texts seen); early stopping keeps the best
    most = int(min(20, max(MOST_EPOCHS, np.ceil(10_000 / max(n, 1)))))
    epochs = int(min(most, np.floor(usable / max(epoch_s, 1e-9))))
    if epochs >= 1:
        return base | {"decision": "train", "seconds": round(epochs * epoch_s + reserve, 1), "epochs": epochs,
                       "reserve": reserve, "why": f"{why}; {epochs} epoch(s) of ~{epoch_s:.0f} s fit"}
    rows = int((usable - n_dev * infer) / max(per_text, 1e-9))
    if rows >= min(MIN_TRANSFORMER_ROWS, n):
        return base | {"decision": "train", "seconds": round(rows * per_text + n_dev * infer + reserve, 1),
                       "epochs": 1, "rows": rows, "reserve": reserve,
                       "why": f"{why}; one epoch of all {n} rows (~{epoch_s:.0f} s) does not fit: one epoch of a "
                              f"seeded {rows}-row subset"}
    return base | {"decision": "skip", "seconds": round(epoch_s, 1),
                   "why": f"{why}; one epoch ~{epoch_s:.0f} s, {max(left, 0):.0f} s left"}


def slowdown(state: Any, per_text: float, infer: float, batch_size: int, n_dev: int) -> float:
    """How many times slower the transformer trains than its probe said: the loop's seconds over the
    probe's estimate for the steps and dev evaluations done (1 to 3; 1 for the first 20 steps, which
    carry warm-up costs the probe does not time)."""
    expected = state.global_step * batch_size * per_text + len(state.evals) * n_dev * infer
    if state.global_step < 20 or expected <= 0:
        return 1.0
    return float(min(3.0, max(1.0, state.seconds / expected)))


AUTO_TRANSFORMER_LR = 1e-4
"""The transformer candidate's learning rate (not the family's 5e-5): a budget allows few epochs, and the
core benchmark's transformer rows ran at 1e-4 (banking77 93.6 % in 5 epochs, SST-2 90.0 % in 1; BENCHMARKS.md).
It trains with ``freeze_embeddings`` (a faster step, so more texts seen within the budget)."""
AUTO_CHECKPOINT_EVERY = 150
"""Steps between the transformer candidate's resumable checkpoints (~180 MB each): about a minute of
MiniLM on short texts on 2 cores, the most a kill loses."""


def _train(name: str, cfg: AutoConfig, task: Any, p: dict[str, Any], state_dir: Path,
           budget: Budget, TextClassifier: type) -> tuple[Any, dict[str, Any]]:
    """Fit candidate ``name`` as an ordinary family fit; returns the classifier and leaderboard extras."""
    from . import get, make_config

    sub = dataclasses.replace(task, progress=False, checkpoint_dir=None, resume=False, callbacks=())
    extra: dict[str, Any] = {}
    if name == "sparse":
        params: dict[str, Any] = {"seed": cfg.seed}
        if not p.get("tune", True):
            params |= {"loss": "nblr" if len(task.labels) == 2 else "lr", "C": 10.0}
            sub = dataclasses.replace(sub, dev=task.dev.subset([]), y_dev=task.y_dev[:0])
    elif name == "static":
        params = {"base": cfg.base, "seed": cfg.seed}
    elif name == "sentence":
        params = {"base": cfg.base, "seed": cfg.seed, "max_len": p["max_len"], "pair_steps": p["pair_steps"]}
        deadline = budget.start + budget.seconds - 10

        def stop_pairs(state: Any) -> None:
            if time.monotonic() > deadline and not state.stopped_early:
                state.stopped_early = True
                extra["stopped_at_budget"] = True

        sub = dataclasses.replace(sub, callbacks=(stop_pairs,))
        extra |= {"max_len": p["max_len"], "pair_steps": p["pair_steps"]}
    else:
        params = {"base": cfg.base, "seed": cfg.seed, "max_len": p["max_len"], "epochs": p["epochs"],
                  "lr": AUTO_TRANSFORMER_LR, "freeze_embeddings": True, "checkpoint_every": AUTO_CHECKPOINT_EVERY}
        end, reserve, batch = budget.start + budget.seconds, p.get("reserve", 10), TransformerConfig.batch_size

        def stop_at_deadline(state: Any) -> None:
            # the reserve (dev predictions, speed runs, saving) was timed on the probe; when training runs
            # slower than the probe said (other work on the cores), so will they: stretch it alike
            slow = slowdown(state, p["per_text"], p["infer"], batch, len(task.dev))
            if time.monotonic() > end - reserve * slow and not state.stopped_early:
                state.stopped_early = True
                extra["stopped_at_budget"] = True
                extra["slowdown"] = round(slow, 2)

        part = _subset(task, p["rows"], cfg.seed) if p.get("rows") else task
        sub = dataclasses.replace(part, progress=False, checkpoint_dir=state_dir / "transformer.checkpoints",
                                  resume=True, callbacks=(*task.callbacks, stop_at_deadline))
        extra |= {"max_len": p["max_len"], "epochs": p["epochs"]} | ({"rows": p["rows"]} if p.get("rows") else {})
    fcfg = make_config(name, **params)
    t0 = time.perf_counter()
    model, facts = get(name).fit(fcfg, sub)
    clf = TextClassifier.from_model(name, model, task.labels, fcfg)
    training = {"data": str(task.train.source), "data_sha256": task.data_sha256, "rows": len(task.train),
                "dev": str(task.dev.source), "dev_rows": len(task.dev), "skipped_empty": task.train.skipped,
                "seconds": round(time.perf_counter() - t0, 2)}
    clf.describe(training | facts, task.dev)
    if name == "sparse" and facts.get("chosen"):
        extra["chosen"] = facts["chosen"]
    shutil.rmtree(state_dir / "transformer.checkpoints", ignore_errors=True) if name == "transformer" else None
    return clf, extra


def _ensemble(a: Any, b: Any, pa: np.ndarray, pb: np.ndarray, task: Any, TextClassifier: type) -> tuple[Any, float, float]:
    """The ensemble of ``a`` and ``b`` (weights on all of dev) and its two-fold cross-fitted dev accuracy / F1."""
    from sklearn.metrics import f1_score

    from ..config import EnsembleConfig
    from . import ensemble

    y = task.y_dev
    grid = np.linspace(0, 1, 21)
    halves = np.random.default_rng(0).permutation(len(y)) % 2
    pred = np.zeros(len(y), dtype=np.int64)
    for h in (0, 1):
        fit, score = halves != h, halves == h
        w = max(grid, key=lambda w: float(np.mean((w * pa[fit] + (1 - w) * pb[fit]).argmax(1) == y[fit])))
        pred[score] = (w * pa[score] + (1 - w) * pb[score]).argmax(1)
    ecfg = EnsembleConfig(steps=20)
    model, info = ensemble.build([(a.model_, a.info_, a.family), (b.model_, b.info_, b.family)], task.dev, ecfg)
    ens = TextClassifier.from_model("ensemble", model, info["labels"], ecfg, info)
    return ens, float(np.mean(pred == y)), float(f1_score(y, pred, average="macro"))


SMALL_DEV = 100
PRIOR = {"sentence": 4, "transformer": 3, "ensemble": 2, "static": 1, "sparse": 0}
"""Few labels favour pretrained knowledge: on a small dev split, the order that breaks ties (the
sentence candidate first: SetFit's recipe is the strong one on a handful of labels per class, and a
classification head on [CLS] learns little from them)."""


def small_dev_margin(acc: float, n_dev: int) -> float:
    """Half the 95 % interval of an accuracy ``acc`` measured on ``n_dev`` texts (normal approximation
    of the binomial): on a small dev split, differences below it are noise."""
    return 1.96 * float(np.sqrt(max(acc * (1 - acc), 1.0 / n_dev) / n_dev))


def choose(rows: list[dict[str, Any]], cfg: AutoConfig, n_dev: int | None = None) -> tuple[str, str]:
    """The winner's name and why, from the trained rows (see the module docstring). With fewer than
    SMALL_DEV dev texts, accuracies within one dev text are a tie, won by the candidate with more
    pretrained knowledge (:data:`PRIOR`) rather than the faster."""
    trained = [r for r in rows if r["status"] == "trained"]
    if not trained:
        raise ConfigError("no candidate could be trained (see the leaderboard notes); check --candidates and --base.")
    pool = trained
    note = ""
    if cfg.min_docs_per_s:
        fast = [r for r in trained if r["docs_per_s"] >= cfg.min_docs_per_s]
        if fast:
            pool = fast
            note = f", among those with >= {cfg.min_docs_per_s:g} texts/s"
        else:
            best = max(trained, key=lambda r: r["docs_per_s"])
            return best["name"], (f"no candidate reached {cfg.min_docs_per_s:g} texts/s; the fastest "
                                  f"({best['docs_per_s']:.0f} texts/s) is kept")
    top = max(r["dev_accuracy"] for r in pool)
    if cfg.prefer == "speed":
        near = [r for r in pool if r["dev_accuracy"] >= top - SPEED_SLACK - 1e-12]
        best = max(near, key=lambda r: r["docs_per_s"])
        return best["name"], f"the fastest within 1 point of the best dev accuracy{note}"
    if n_dev is not None and 0 < n_dev < SMALL_DEV:
        margin = max(1.0 / n_dev, small_dev_margin(top, n_dev))
        near = [r for r in pool if r["dev_accuracy"] >= top - margin - 1e-12]
        best = max(near, key=lambda r: (PRIOR.get(r["name"], 0), r["dev_accuracy"]))
        return best["name"], (f"within {margin * 100:.1f} points of the best dev accuracy, which {n_dev} dev texts "
                              "cannot tell apart (95 % interval); a tie goes to the candidate with more pretrained "
                              "knowledge" + note)
    near = [r for r in pool if r["dev_accuracy"] >= top - TIE - 1e-12]
    best = max(near, key=lambda r: r["docs_per_s"])
    return best["name"], ("the best dev accuracy" + (" (a tie within 0.1 point: the faster)" if len(near) > 1 else "")
                          + note)


# -- reports ----------------------------------------------------------------------------------------

def leaderboard_md(board: dict[str, Any]) -> str:
    lines = ["# auto leaderboard", "",
             f"Budget {board['budget_seconds'] / 60:.1f} min, spent {board['spent_seconds'] / 60:.1f} min; "
             f"{board['profile']['rows']} training rows, {board['profile']['dev_rows']} dev rows, "
             f"{board['profile']['classes']} classes{', CJK text' if board['profile']['cjk'] else ''}"
             + (f". **Warning**: {board['profile']['dev_inside_train']} of the dev texts occur inside training texts: "
                "dev accuracy rewards memorising, and the choice may not generalise (split dev by source document)"
                if board['profile'].get('dev_inside_train') else "") + ". "
             f"Winner: **{board['winner']}** ({board['why']}).", "",
             "| candidate | status | dev accuracy | dev macro-F1 | train s | texts/s (batch 32) | size MB | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in board["candidates"]:
        if r["status"] == "trained":
            note = r.get("note", "")
            if r.get("resumed"):
                note = (note + "; " if note else "") + "loaded after an interruption"
            if r.get("chosen"):
                note = (note + "; " if note else "") + ", ".join(f"{k}={v}" for k, v in r["chosen"].items())
            if r.get("pair_steps") is not None:
                note = (note + "; " if note else "") + (f"{r['pair_steps']} contrastive steps" if r["pair_steps"]
                                                        else "frozen encoder") + \
                    (", stopped at the budget" if r.get("stopped_at_budget") else "")
            if r.get("epochs"):
                note = (note + "; " if note else "") + f"max_len {r['max_len']}, {r['epochs']} epoch(s)" + \
                    (", stopped at the budget" if r.get("stopped_at_budget") else "") + \
                    (f" ({r['slowdown']}x slower than the probe)" if r.get("slowdown", 1) > 1 else "")
            name = f"**{r['name']}**" if r.get("winner") else r["name"]
            lines.append(f"| {name} | trained | {r['dev_accuracy'] * 100:.2f} | {r['dev_macro_f1'] * 100:.2f} | "
                         f"{r['train_seconds']:.0f} | {r['docs_per_s']:.0f} | {r['size_mb']:.1f} | {note} |")
        else:
            lines.append(f"| {r['name']} | {r['status']} |  |  |  |  |  | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """Names of trained rows not beaten on both dev accuracy and texts/s by another."""
    t = [r for r in rows if r["status"] == "trained"]
    return [r["name"] for r in t if not any(o is not r and o["dev_accuracy"] >= r["dev_accuracy"]
                                            and o["docs_per_s"] >= r["docs_per_s"]
                                            and (o["dev_accuracy"], o["docs_per_s"]) != (r["dev_accuracy"], r["docs_per_s"])
                                            for o in t)]


def pareto_png(board: dict[str, Any]) -> bytes | None:
    """The dev accuracy / texts/s plot of the trained candidates, the front joined, the winner starred."""
    try:
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in board["candidates"] if r["status"] == "trained"]
    front = set(pareto_front(rows))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for r in rows:
        ax.scatter(r["docs_per_s"], r["dev_accuracy"] * 100, s=160 if r.get("winner") else 50,
                   marker="*" if r.get("winner") else "o", color="C3" if r.get("winner") else "C0", zorder=3)
        ax.annotate(r["name"], (r["docs_per_s"], r["dev_accuracy"] * 100), textcoords="offset points", xytext=(6, 4))
    pts = sorted((r["docs_per_s"], r["dev_accuracy"] * 100) for r in rows if r["name"] in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), color="C1", lw=1, ls="--", label="Pareto front", zorder=2)
        ax.legend(loc="lower left")
    ax.set_xscale("log")
    ax.set_xlabel("texts/s at batch 32 (this machine, log scale)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title(f"niche auto: winner {board['winner']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def summary(board: dict[str, Any]) -> dict[str, Any]:
    """The compact record of a search kept in the winner's ``niche.json["training"]["auto"]``."""
    keep = ("name", "status", "dev_accuracy", "dev_macro_f1", "train_seconds", "docs_per_s", "size_mb", "note")
    return {"winner": board["winner"], "why": board["why"], "budget_seconds": board["budget_seconds"],
            "spent_seconds": board["spent_seconds"], "prefer": board["prefer"], "min_docs_per_s": board["min_docs_per_s"],
            "leaderboard": LEADERBOARD_JSON,
            "candidates": [{k: r[k] for k in keep if k in r} for r in board["candidates"]]}
