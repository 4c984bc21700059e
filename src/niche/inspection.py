"""``niche data inspect``: what a labeled data set looks like before you train on it (sizes, label
balance, text lengths, duplicates, label conflicts, overlap with an evaluation file)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import read_labeled

CONTAINED_MAX_CHARS = 300
"""Evaluation texts up to this long are also searched for inside training texts (longer ones: exact matches)."""


def _canon(text: str) -> str:
    return " ".join(text.lower().split())


def contained_in(train: list[str], evaluation: list[str], max_train_chars: int = 200_000_000) -> list[bool]:
    """Per evaluation text: does it occur in the training texts, equal to one or inside one (case and
    whitespace ignored)? SST-2's training file, for instance, holds every sub-phrase of its parsed
    sentences, so 88 % of a dev split drawn from it sits inside a training phrase, and accuracy there
    rewards memorising. "Inside" means as whole words; texts longer than :data:`CONTAINED_MAX_CHARS`
    are matched exactly only."""
    canon = [_canon(t) for t in train]
    exact = set(canon)
    # " a b \n c d ": a match of " x " is whole words of one training text (no text holds a newline now)
    joined = " " + " \n ".join(canon) + " " if sum(map(len, canon)) <= max_train_chars else ""
    out = []
    for t in evaluation:
        c = _canon(t)
        out.append(c in exact or (bool(joined) and 0 < len(c) <= CONTAINED_MAX_CHARS and f" {c} " in joined))
    return out


def _percentiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (0, 50, 90, 95, 99, 100)} | {"mean": float(arr.mean())}


@dataclass
class InspectReport:
    """What ``niche data inspect`` prints (``to_dict`` for JSON)."""

    file: str
    rows: int
    skipped_empty: int
    class_counts: dict[str, int]
    chars: dict[str, float]
    tokens: dict[str, float]
    tokenizer: str
    duplicate_texts: int
    conflicting_duplicates: int
    eval_file: str | None = None
    eval_rows: int = 0
    eval_duplicate_texts: int = 0
    overlap_texts: int = 0
    contained_texts: int = 0
    eval_unseen_labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _dup_stats(texts: list[str], labels: list[str]) -> tuple[int, int]:
    seen: dict[str, set[str]] = {}
    dups = 0
    for t, y in zip(texts, labels):
        if t in seen:
            dups += 1
        seen.setdefault(t, set()).add(y)
    conflicting = sum(1 for ys in seen.values() if len(ys) > 1)
    return dups, conflicting


def inspect(
    path: str | Path,
    eval_path: str | Path | None = None,
    text_col: str = "text",
    label_col: str = "label",
    tokenizer: Any | None = None,
    skip_empty: bool = False,
) -> InspectReport:
    """Summarize a labeled file (and optionally its overlap with an evaluation file).

    Args:
        tokenizer: a Hugging Face tokenizer used to count tokens; when ``None``, whitespace tokens.
    """
    data = read_labeled(path, text_col, label_col, skip_empty=skip_empty)
    counts = Counter(data.labels)
    chars = [len(t) for t in data.texts]
    if tokenizer is not None:
        enc = tokenizer(data.texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        toks = [len(x) for x in enc]
        tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    else:
        toks = [len(t.split()) for t in data.texts]
        tok_name = "whitespace"
    dups, conflicting = _dup_stats(data.texts, data.labels)
    rep = InspectReport(
        file=str(path), rows=len(data), skipped_empty=data.skipped,
        class_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        chars=_percentiles(chars), tokens=_percentiles(toks), tokenizer=str(tok_name),
        duplicate_texts=dups, conflicting_duplicates=conflicting,
    )
    if len(counts) < 2:
        rep.warnings.append(f"only one class ({next(iter(counts))!r}): a classifier cannot be trained on this file")
    else:
        most, least = max(counts.values()), min(counts.values())
        if most / least >= 10 or least / len(data) < 0.2 / len(counts):
            rep.warnings.append(
                f"class imbalance: largest class has {most} rows, smallest {least} (ratio {most / least:.1f}); "
                "consider class weights (--class-weights) and judge by macro-F1"
            )
    if conflicting:
        rep.warnings.append(f"{conflicting} distinct texts appear with more than one label")
    if eval_path is not None:
        ev = read_labeled(eval_path, text_col, label_col, skip_empty=skip_empty)
        rep.eval_file = str(eval_path)
        rep.eval_rows = len(ev)
        rep.eval_duplicate_texts = _dup_stats(ev.texts, ev.labels)[0]
        rep.overlap_texts = len(set(data.texts) & set(ev.texts))
        rep.contained_texts = sum(contained_in(data.texts, ev.texts))
        rep.eval_unseen_labels = sorted(set(ev.labels) - set(data.labels))
        if rep.overlap_texts:
            rep.warnings.append(f"{rep.overlap_texts} distinct texts occur in both files: evaluation scores will be optimistic")
        if rep.contained_texts > rep.overlap_texts:
            rep.warnings.append(f"{rep.contained_texts} of the {len(ev)} evaluation texts occur inside a training text "
                                "(e.g. sub-phrases of training sentences): evaluation scores will be optimistic")
        if rep.eval_unseen_labels:
            rep.warnings.append(f"evaluation labels never seen in training: {', '.join(rep.eval_unseen_labels[:10])}")
    return rep
