"""Metrics and the evaluation report: per-class precision/recall/F1, macro/micro/weighted
averages, accuracy, a confusion-matrix PNG, ``metrics.json`` and ``misclassified.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def calibration_scores(y_true: list[str], proba: np.ndarray, labels: list[str], bins: int = 15) -> dict[str, float]:
    """Log-loss and expected calibration error (ECE: the top-label confidence against accuracy in
    ``bins`` equal-width bins, weighted by bin size) of probabilities ``proba`` (columns in ``labels``)."""
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[v] for v in y_true])
    p = np.clip(proba.astype(np.float64), 1e-12, 1.0)
    log_loss = float(-np.mean(np.log(p[np.arange(len(y)), y] / p.sum(axis=1))))
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = sum(abs(float(np.mean(pred[which == b] == y[which == b])) - float(np.mean(conf[which == b])))
              * float(np.mean(which == b)) for b in range(bins) if np.any(which == b))
    return {"log_loss": log_loss, "ece": float(ece)}


def compute_metrics(y_true: list[str], y_pred: list[str], labels: list[str],
                    proba: np.ndarray | None = None) -> dict[str, Any]:
    """All scores as a JSON-friendly dict (labels in model order); with ``proba``, also log-loss and ECE."""
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {"n": len(y_true), "accuracy": float(accuracy_score(y_true, y_pred))}
    if proba is not None and len(y_true):
        out |= calibration_scores(y_true, proba, labels)
    for avg in ("macro", "micro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[avg] = {"precision": float(pa), "recall": float(ra), "f1": float(fa)}
    out["per_class"] = {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }
    return out


def plot_confusion(y_true: list[str], y_pred: list[str], labels: list[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    k = len(labels)
    size = min(4 + 0.22 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    row = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(row, 1)  # colour by recall so small classes are visible
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=max(4, 10 - k // 12))
    ax.set_yticks(range(k), labels, fontsize=max(4, 10 - k // 12))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_table(metrics: dict[str, Any]) -> str:
    """A small markdown table of the headline numbers."""
    rows = [("accuracy", metrics["accuracy"])] + [
        (f"{avg} F1", metrics[avg]["f1"]) for avg in ("macro", "micro", "weighted")
    ] + [(name, metrics[key]) for key, name in (("log_loss", "log-loss"), ("ece", "ECE (15 bins)")) if key in metrics]
    return "| metric | value |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in rows) + "\n"


def write_report(
    out_dir: Path,
    texts: list[str],
    y_true: list[str],
    proba: np.ndarray,
    labels: list[str],
    metrics: dict[str, Any],
    title: str = "",
) -> None:
    """Write ``metrics.json``, ``confusion_matrix.png``, ``misclassified.csv`` and ``report.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    y_pred = [labels[i] for i in proba.argmax(1)]
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_confusion(y_true, y_pred, labels, out_dir / "confusion_matrix.png", title)
    with (out_dir / "misclassified.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "predicted", "confidence"] + [f"p_{lab}" for lab in labels])
        for t, yt, yp, pr in zip(texts, y_true, y_pred, proba):
            if yt != yp:
                w.writerow([t, yt, yp, f"{pr.max():.6f}"] + [f"{x:.6f}" for x in pr])
    per = "\n".join(
        f"| {lab} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        for lab, m in metrics["per_class"].items()
    )
    (out_dir / "report.md").write_text(
        f"# Evaluation{': ' + title if title else ''}\n\n{metrics['n']} examples.\n\n{metrics_table(metrics)}\n"
        "| class | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|\n" + per + "\n\n"
        "![confusion matrix](confusion_matrix.png)\n",
        encoding="utf-8",
    )
