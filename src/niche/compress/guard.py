"""The compression guard: measure the source and the result in the same run, ship or refuse.

See :mod:`niche.compress` for the policy. :func:`guarded` builds a result in a temporary sibling of
``out``, measures both models (:func:`measure`), judges them (:func:`judge`), writes the report
(:func:`write_report`) and renames the result into place only when it passes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..classifier import TextClassifier
from ..config import GuardConfig
from ..data import LabeledData, check_known_labels
from ..errors import ConfigError, NicheError, no_space_left
from ..evaluation import compute_metrics
from ..modeldir import library_versions, move_into_place, read_info, temp_sibling, write_info

REPORT = "compression_report"


class CompressionRefused(NicheError):
    """The compressed model failed the guard (accuracy, speed or parity); nothing was written."""

    exit_code = 3


def set_threads(clf: TextClassifier, threads: int) -> None:
    """Use ``threads`` CPU threads for this model's forward pass (0 = leave the default)."""
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
    if hasattr(clf.model_, "session"):
        clf.model_.set_threads(threads)


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def _quality(clf: TextClassifier, dev: LabeledData) -> tuple[dict[str, Any], np.ndarray]:
    proba = clf.predict_proba(dev.texts, batch_size=32)
    pred = [clf.classes_[i] for i in proba.argmax(1)]
    m = compute_metrics(dev.labels, pred, clf.classes_)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"]}, proba


def _throughput(clf: TextClassifier, texts: list[str], batch_size: int) -> float:
    t0 = time.perf_counter()
    clf.predict_proba(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0)


def _latency_ms(clf: TextClassifier, texts: list[str]) -> float:
    times = []
    for t in texts:
        t0 = time.perf_counter()
        clf.predict_proba(t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def measure(models: dict[str, tuple[TextClassifier, Path]], dev: LabeledData, cfg: GuardConfig,
            progress: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Accuracy, macro-F1, docs/s, p50 ms and size for each model, speed rounds interleaved."""
    for clf, _ in models.values():
        set_threads(clf, cfg.threads)
        check_known_labels(dev, clf.classes_)
    rows: dict[str, dict[str, Any]] = {}
    probas: dict[str, np.ndarray] = {}
    for name, (clf, path) in models.items():
        q, probas[name] = _quality(clf, dev)
        rows[name] = q | {"size_mb": round(dir_size_mb(path), 2)}
    speed_texts = dev.texts[: cfg.speed_texts]
    lat_texts = dev.texts[: cfg.latency_texts]
    for clf, _ in models.values():  # warm-up
        clf.predict_proba(speed_texts[: cfg.batch_size], batch_size=cfg.batch_size)
    rounds: dict[str, list[float]] = {n: [] for n in models}
    lat: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(cfg.rounds):
        for name, (clf, _) in models.items():
            rounds[name].append(_throughput(clf, speed_texts, cfg.batch_size))
            lat[name].append(_latency_ms(clf, lat_texts))
    for name in models:
        rows[name] |= {"docs_per_s": statistics.median(rounds[name]), "p50_ms": statistics.median(lat[name]),
                       "docs_per_s_rounds": rounds[name]}
    return rows, probas


def parity(src: np.ndarray, res: np.ndarray) -> dict[str, float]:
    return {"label_agreement": float((src.argmax(1) == res.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(src - res).max()) if src.size else 0.0}


# -- the guard and its report ------------------------------------------------------------------

def judge(rows: dict[str, dict[str, Any]], source: str, result: str, cfg: GuardConfig,
          par: dict[str, float] | None) -> list[str]:
    """Reasons to refuse (empty list: the result passes)."""
    s, r = rows[source], rows[result]
    reasons = []
    drop = 100 * (s["accuracy"] - r["accuracy"])
    if drop > cfg.max_drop:
        reasons.append(f"accuracy drops {drop:.2f} points ({100 * s['accuracy']:.2f} -> {100 * r['accuracy']:.2f} %), "
                       f"more than --max-drop {cfg.max_drop}")
    if cfg.require_faster and r["docs_per_s"] <= s["docs_per_s"]:
        reasons.append(f"not faster: {r['docs_per_s']:.1f} docs/s vs the source's {s['docs_per_s']:.1f} "
                       f"(batch {cfg.batch_size}, {cfg.threads or 'default'} threads)")
    if par is not None and par["label_agreement"] < cfg.min_agreement:
        reasons.append(f"parity check failed: the result agrees with the source on {100 * par['label_agreement']:.2f} % "
                       f"of dev labels (< {100 * cfg.min_agreement:.1f} %), max |delta p| {par['max_abs_prob_diff']:.4f}")
    return reasons


def write_report(d: Path, rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{REPORT}.json").write_text(json.dumps({"models": rows} | meta, indent=2, ensure_ascii=False))
    base = next(iter(rows.values()))
    lines = [f"# Compression report: {meta['command']}", "",
             f"Dev data: `{meta['dev']}` ({meta['dev_rows']} rows). Machine: {meta['machine']}, "
             f"{meta['guard']['threads'] or 'default'} threads. Speed: median of {meta['guard']['rounds']} alternating "
             f"rounds over {meta['speed_texts']} texts at batch {meta['guard']['batch_size']}; p50 over "
             f"{meta['latency_texts']} single texts.", "",
             "| model | accuracy | macro-F1 | docs/s (batch 32) | speed-up | p50 ms (batch 1) | size MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | {r['docs_per_s']:.1f} | "
                     f"{r['docs_per_s'] / base['docs_per_s']:.2f}x | {r['p50_ms']:.1f} | {r['size_mb']:.1f} |")
    if meta.get("parity"):
        p = meta["parity"]
        lines += ["", f"Parity with the source: label agreement {100 * p['label_agreement']:.2f} %, "
                      f"max |delta probability| {p['max_abs_prob_diff']:.5f}."]
    verdict = meta["verdict"]
    lines += ["", "**Passed the guard.**" if verdict["passed"] else "**Refused:** " + "; ".join(verdict["reasons"]) + "."]
    (d / f"{REPORT}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(d / f"{REPORT}.png", rows)


def _plot(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rows.items():
        ax.scatter(r["docs_per_s"], 100 * r["accuracy"], s=40)
        ax.annotate(name, (r["docs_per_s"], 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("docs/s (batch 32, this CPU)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("accuracy vs throughput")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def guarded(source_dir: Path, out: Path, dev: LabeledData, build: Callable[[Path], None], command: str,
            guard: GuardConfig | None = None, check_parity: bool = False, result_name: str = "result",
            progress: bool = False) -> dict[str, Any]:
    """Build a result with ``build(tmp_dir)``, measure it against the source, ship it or refuse."""
    guard = guard or GuardConfig()
    guard.validate()
    source_dir, out = Path(source_dir), Path(out)
    if out.resolve() == source_dir.resolve():
        raise ConfigError(f"--out {out} is the source model; write the compressed model to a new directory.")
    src = TextClassifier.load(source_dir)
    state = f"nothing was written to {out}" + (" and its previous version is intact" if out.exists() else "")
    with no_space_left(out, state):  # a full disk: DiskFullError naming --out (the temp directory is removed)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(out)
        try:
            build(tmp)
            res = TextClassifier.load(tmp)
            if res.classes_ != src.classes_:
                raise CompressionRefused(f"the result's labels {res.classes_[:5]}... differ from the source's; not shipped.")
            rows, probas = measure({"source": (src, source_dir), result_name: (res, tmp)}, dev, guard, progress)
            par = parity(probas["source"], probas[result_name]) if check_parity else None
            reasons = judge(rows, "source", result_name, guard, par)
            meta = {"command": command, "source": str(source_dir), "out": str(out), "dev": str(dev.source),
                    "dev_rows": len(dev), "speed_texts": min(len(dev), guard.speed_texts),
                    "latency_texts": min(len(dev), guard.latency_texts), "guard": asdict(guard),
                    "machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or platform.platform()})",
                    "versions": library_versions(), "parity": par,
                    "result": {k: v for k, v in res.info_.items() if k in ("runtime", "precision", "onnx")},
                    "verdict": {"passed": not reasons, "reasons": reasons},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if reasons:
                refused = out.with_name(out.name + ".refused")
                shutil.rmtree(refused, ignore_errors=True)
                write_report(refused, rows, meta)
                raise CompressionRefused(
                    f"{command}: the result was NOT written to {out}: " + "; ".join(reasons)
                    + f". Report: {refused}/{REPORT}.md. Loosen --max-drop, or pick a larger student / another method.")
            write_report(tmp, rows, meta)
            info = read_info(tmp)
            info.setdefault("compression", {}).update({"command": command, "source": str(source_dir),
                                                       "dev": {k: rows[result_name][k] for k in ("accuracy", "macro_f1")},
                                                       "source_dev": {k: rows["source"][k] for k in ("accuracy", "macro_f1")},
                                                       "parity": par})
            write_info(tmp, info)
            move_into_place(tmp, out)
            shutil.rmtree(out.with_name(out.name + ".refused"), ignore_errors=True)  # a stale refusal of an earlier try
            return {"models": rows} | meta
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def require_dev(dev: LabeledData | None, command: str) -> LabeledData:
    if dev is None:
        raise ConfigError(f"{command} needs labeled dev data (--eval FILE) to measure accuracy and speed "
                          "before it ships a model.")
    return dev
