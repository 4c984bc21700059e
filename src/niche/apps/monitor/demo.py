"""A replayed timeline of real Financial PhraseBank sentences with one injected negative burst.

Used by ``niche monitor demo``, the tests and ``benchmarks/monitor.py``. The corpus (CC BY-NC-SA
3.0) is read in place from ``../shared/data/financial_phrasebank`` and never copied.

Split (no sentence is both trained on and replayed):
    train  = 50agree_train rows with ``sha1(text) % 4 != 0``
    pool   = 50agree_train rows with ``sha1(text) % 4 == 0``, plus all of 50agree_test
    (the corpus' own split is by sha1 too, so identical sentences never straddle train and pool)

Timeline: ``n_calm`` pool sentences drawn **with replacement** (the pool has ~1,450 sentences)
arrive as a Poisson process; each gets a synthetic ticker (``entity`` field), except a
``watch_share`` of them sent without ``entity`` so the watch list of real company names has to
find them in the text. Inside the timeline, ``burst_n`` distinct pool sentences whose gold label is
negative are attached to one ticker within ``burst_minutes``: the burst an alert should catch.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError

TICKERS = ["ACMX", "BOLT", "CRUX", "DYNA", "EVRA"]
"""Synthetic tickers attached to real sentences (any resemblance to a listed company is accidental)."""
WATCH_LIST = ["Nokia", "Metso", "Fiskars", "Neste", "Kemira", "Nordea", "Stora Enso", "UPM=UPM-Kymmene"]
"""Real company names frequent in PhraseBank sentences, matched in texts sent without an entity field."""


def find_phrasebank(data_dir: str | Path | None = None) -> Path:
    """The PhraseBank folder: ``data_dir``, else ``../shared/data/financial_phrasebank`` from cwd or the repo."""
    cands = [Path(data_dir)] if data_dir else [
        Path.cwd().parent / "shared/data/financial_phrasebank",
        Path(__file__).resolve().parents[5] / "shared/data/financial_phrasebank"]
    for d in cands:
        if (d / "50agree_train.csv").is_file() and (d / "50agree_test.csv").is_file():
            return d
    raise DataError(f"Financial PhraseBank not found (looked in {', '.join(map(str, cands))}); expected "
                    "50agree_train.csv and 50agree_test.csv there. Pass --data-dir DIR.")


def _read(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def _held_out(text: str) -> bool:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 4 == 0


def phrasebank_split(data_dir: str | Path | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train rows, replay pool rows) as (text, label); see the module docstring."""
    d = find_phrasebank(data_dir)
    train_all = _read(d / "50agree_train.csv")
    train = [r for r in train_all if not _held_out(r[0])]
    pool = [r for r in train_all if _held_out(r[0])] + _read(d / "50agree_test.csv")
    seen = {t for t, _ in train}
    pool = [r for r in pool if r[0] not in seen]
    return train, pool


@dataclass
class Replay:
    records: list[dict[str, Any]]
    burst_entity: str
    burst_start_ms: int
    burst_end_ms: int
    n_calm: int
    info: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for r in self.records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return path

    def score(self, alerts: list[dict[str, Any]], window_ms: int) -> dict[str, Any]:
        """Alerts inside the burst (the window overlaps it) vs anywhere else (false alerts)."""
        hit, false = [], []
        for a in alerts:
            end = a["window_end_ms"]
            inside = a["entity"] == self.burst_entity and self.burst_start_ms < end <= self.burst_end_ms + window_ms
            (hit if inside else false).append(a)
        first = min((a["window_end_ms"] for a in hit), default=None)
        return {"detected": bool(hit), "alerts_in_burst": len(hit), "false_alerts": len(false),
                "minutes_to_alert": None if first is None else round((first - self.burst_start_ms) / 60000, 1),
                "false_alert_list": [{k: a[k] for k in ("entity", "window_end_ms", "n", "negatives", "p_value")} for a in false]}


def build_replay(pool: list[tuple[str, str]], *, n_calm: int = 6000, per_hour: float = 30.0, burst_n: int = 30,
                 burst_minutes: float = 60.0, burst_at: float = 0.75, burst_entity: str = "CRUX",
                 watch_share: float = 0.2, seed: int = 0, start: str = "2024-01-01T00:00:00+00:00",
                 shuffle_lines: int = 0) -> Replay:
    """A calm timeline of ``n_calm`` sentences (``per_hour`` on average) with one negative burst.

    ``burst_at`` places the burst at that fraction of the calm timeline (after the baseline has
    filled). ``shuffle_lines`` > 0 swaps that many random neighbouring lines to make out-of-order input.
    """
    rng = random.Random(seed)
    negatives = [t for t, lab in pool if lab == "negative"]
    if len(negatives) < burst_n:
        raise DataError(f"the pool has {len(negatives)} negative sentences; a burst of {burst_n} needs more.")
    t = dt.datetime.fromisoformat(start).timestamp()
    recs: list[dict[str, Any]] = []
    for i in range(n_calm):
        t += rng.expovariate(per_hour / 3600)
        text, _ = pool[rng.randrange(len(pool))]
        r: dict[str, Any] = {"id": f"calm-{seed}-{i}", "ts": round(t, 3), "text": text}
        if rng.random() >= watch_share:
            r["entity"] = rng.choice(TICKERS)
        recs.append(r)
    t0, t1 = recs[0]["ts"], recs[-1]["ts"]
    b0 = t0 + burst_at * (t1 - t0)
    for i, text in enumerate(rng.sample(negatives, burst_n)):
        recs.append({"id": f"burst-{seed}-{i}", "ts": round(b0 + rng.uniform(0, burst_minutes * 60), 3),
                     "text": text, "entity": burst_entity})
    recs.sort(key=lambda r: r["ts"])
    for _ in range(shuffle_lines):
        i = rng.randrange(len(recs) - 1)
        recs[i], recs[i + 1] = recs[i + 1], recs[i]
    for r in recs:  # ISO 8601 in the feed, as a real one would have
        r["ts"] = dt.datetime.fromtimestamp(r["ts"], dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Replay(recs, burst_entity, int(b0 * 1000), int((b0 + burst_minutes * 60) * 1000), n_calm,
                  {"n_calm": n_calm, "per_hour": per_hour, "burst_n": burst_n, "burst_minutes": burst_minutes,
                   "seed": seed, "pool_sentences": len(pool), "pool_negatives": len(negatives),
                   "watch_share": watch_share, "days": round((t1 - t0) / 86400, 2),
                   "sampling": "calm sentences drawn with replacement from the pool; burst sentences distinct"})


def run_demo(out_dir: str | Path, data_dir: str | Path | None = None, family: str = "sparse", seed: int = 0,
             n_calm: int = 6000, config: Any = None, on_alert: Any = None, **model_params: Any) -> dict[str, Any]:
    """Train on the PhraseBank train part, replay the timeline into ``out_dir/monitor.db``, write the report.

    Returns the replay's score (burst detected, minutes to the alert, false alerts) and the run summary.
    """
    from ... import TextClassifier
    from .run import MonitorConfig, run_monitor
    from .report import write_report
    from .store import open_store

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, pool = phrasebank_split(data_dir)
    clf = TextClassifier(family, **model_params).fit([t for t, _ in train], [lab for _, lab in train])
    replay = build_replay(pool, n_calm=n_calm, seed=seed)
    feed = replay.write(out / "feed.jsonl")
    db = out / "monitor.db"
    for stale in (db, out / "monitor.db-wal", out / "monitor.db-shm", out / "alerts.jsonl"):
        stale.unlink(missing_ok=True)  # a demo starts from scratch
    cfg = config or MonitorConfig()
    cfg.alerts_jsonl = out / "alerts.jsonl"
    summary = run_monitor(clf, feed, db, entities=WATCH_LIST, config=cfg, on_alert=on_alert)
    store = open_store(db)
    try:
        score = replay.score(store.all_alerts(), cfg.rule.ms("window"))
    finally:
        store.close()
    index = write_report(db, out / "report")
    return {"score": score, "summary": summary.to_dict(), "replay": replay.info, "train_rows": len(train),
            "burst": {"entity": replay.burst_entity, "start": _iso_ms(replay.burst_start_ms),
                      "end": _iso_ms(replay.burst_end_ms)},
            "model_dev_accuracy": clf.info_["metrics"]["dev"]["accuracy"], "feed": str(feed), "db": str(db),
            "report": str(index), "alerts_jsonl": str(cfg.alerts_jsonl)}


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
