"""The abstention rule of the assistant: thresholds, the in-scope decision, their calibration on
dev for a target out-of-scope precision, and the CLINC150 out-of-scope metrics.

See :mod:`niche.apps.assistant.bot` for what the three features are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Thresholds:
    t_prob: float = 0.0
    t_sim: float = -1.0
    t_margin: float = -2.0


# -- abstention calibration ----------------------------------------------------------------
def decide(prob: np.ndarray, sim: np.ndarray, margin: np.ndarray, th: Thresholds) -> np.ndarray:
    """Boolean in-scope decision per query (see :mod:`niche.apps.assistant.bot`)."""
    return (prob >= th.t_prob) & (sim >= th.t_sim) & (margin >= th.t_margin)


def _candidates(x: np.ndarray, is_oos: np.ndarray, n: int = 40) -> np.ndarray:
    """Threshold candidates for one feature: "off", plus values just above ``n`` quantiles of the
    feature over the dev out-of-scope queries (a threshold just above an out-of-scope query's value
    is the smallest one that declines it)."""
    qs = np.quantile(x[is_oos], np.linspace(0.0, 1.0, n))
    return np.unique(np.concatenate([[-np.inf], np.nextafter(qs, np.inf)]))


def calibrate(prob: np.ndarray, sim: np.ndarray, margin: np.ndarray, correct: np.ndarray, is_oos: np.ndarray,
              target_precision: float, reject_rate: float, use_margin: bool,
              oos_rate: float | None = None) -> tuple[Thresholds, dict[str, Any]]:
    """Pick thresholds on dev.

    Args:
        prob, sim, margin: features per dev query (see the module docstring).
        correct: the classifier's intent is right (only meaningful where ``~is_oos``).
        is_oos: the dev query is out of scope.
        oos_rate: expected share of out-of-scope queries in traffic; precision is computed with the
            dev out-of-scope queries weighted to it (``None``: dev's own share).
    Returns:
        the thresholds and a JSON-ready record of how they were chosen and what they give on dev.
    """
    n_oos = int(is_oos.sum())
    ins = ~is_oos
    if n_oos == 0:
        t = float(np.quantile(prob, reject_rate)) if reject_rate > 0 else 0.0
        th = Thresholds(t_prob=t)
        acc = float((correct & (prob >= t))[ins].mean())
        return th, {"method": "in-scope reject rate (no out-of-scope examples in dev)", "reject_rate": reject_rate,
                    "dev_in_scope_accuracy": acc, "dev_oos": 0}
    n_in = int(ins.sum())
    # weight of one dev out-of-scope query when counting declined queries, so that they make up
    # oos_rate of the (weighted) dev set
    w = 1.0 if oos_rate is None else (oos_rate / (1 - oos_rate)) * n_in / n_oos
    best: tuple[float, float, Thresholds, dict[str, float]] | None = None
    margins = _candidates(margin, is_oos, 16) if use_margin else np.array([-np.inf])
    tps = _candidates(prob, is_oos)
    above = prob[None, :] >= tps[:, None]  # (n_tp, N): passes each probability threshold
    good = correct & ins
    for tm in margins:
        for ts in _candidates(sim, is_oos):
            accept = above & ((sim >= ts) & (margin >= tm))[None, :]  # (n_tp, N)
            n_declined = (~accept).sum(1)
            tp_oos = (~accept & is_oos).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(n_declined > 0, w * tp_oos / (w * tp_oos + n_declined - tp_oos), 1.0)
            recall = tp_oos / n_oos
            acc = (accept & good).sum(1) / n_in
            score = np.where((precision >= target_precision) & (tp_oos > 0), acc + recall, -np.inf)
            i = int(np.argmax(score))
            if not np.isfinite(score[i]):
                continue
            if best is None or score[i] > best[0] + 1e-12 or (abs(score[i] - best[0]) <= 1e-12 and n_declined[i] < best[1]):
                best = (float(score[i]), int(n_declined[i]), Thresholds(float(tps[i]), float(ts), float(tm)),
                        {"dev_in_scope_accuracy": float(acc[i]), "dev_oos_recall": float(recall[i]),
                         "dev_oos_precision": float(precision[i])})
    if best is None:  # no rule reaches the target: never decline, and say so
        acc = float(correct[ins].mean())
        return Thresholds(), {"method": "grid search", "reached_target": False, "target_oos_precision": target_precision,
                              "dev_in_scope_accuracy": acc, "dev_oos_recall": 0.0, "dev_oos": n_oos}
    _, _, th, rec = best
    return th, {"method": "grid search", "reached_target": True, "target_oos_precision": target_precision,
                "expected_oos_rate": oos_rate if oos_rate is not None else n_oos / len(is_oos),
                "dev_oos": n_oos, "dev_in_scope": n_in} | rec


def oos_metrics(y_true: list[str], y_pred: list[str], oos_label: str = "oos") -> dict[str, Any]:
    """The usual CLINC150 metrics: in-scope accuracy (declining an in-scope query is an error),
    out-of-scope recall and precision (of the queries called out of scope, the share that are)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    ins, oos_t, oos_p = yt != oos_label, yt == oos_label, yp == oos_label
    n_pred_oos = int(oos_p.sum())
    return {
        "in_scope_accuracy": float((yp[ins] == yt[ins]).mean()) if ins.any() else float("nan"),
        "oos_recall": float((oos_p & oos_t).sum() / oos_t.sum()) if oos_t.any() else float("nan"),
        "oos_precision": float((oos_p & oos_t).sum() / n_pred_oos) if n_pred_oos else float("nan"),
        "in_scope": int(ins.sum()), "oos": int(oos_t.sum()), "declined": n_pred_oos,
    }
