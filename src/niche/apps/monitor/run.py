"""Financial opinion monitoring: classify a feed of texts, store them, alert on negative bursts.

Built on niche's public API (:class:`niche.TextClassifier`) and SQLAlchemy. The flow of one run::

    feed lines -> parse/validate -> batches of `batch_size` -> predict_proba (in the background)
               -> one transaction per batch: docs + mentions (insert-or-ignore), progress, alert rule
               -> after the commit: alerts printed, appended to a JSONL file, POSTed to a webhook

Example:
    >>> from niche.apps.monitor import MonitorConfig, run_monitor
    >>> summary = run_monitor("runs/finsent", "feed.jsonl", "monitor.db", entities=["NOK=Nokia"])  # doctest: +SKIP
    >>> summary.stored, summary.alerts                                                          # doctest: +SKIP
    (5210, 1)

See docs/monitor.md for the alert rule, the feed format and the resume semantics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import TextClassifier
from ...errors import ConfigError, no_space_left
from .alerts import AlertRule, alert_payload, evaluate, post_webhook
from .feed import EntityMatcher, Issue, IssueLog, Line, Record, feed_files, parse_entities, parse_line, read_file, read_stdin
from .store import Store, open_store

__all__ = ["AlertRule", "MonitorConfig", "RunSummary", "run_monitor"]


@dataclass
class MonitorConfig:
    """Settings of ``niche monitor run`` (the alert rule is its own dataclass, :class:`AlertRule`)."""

    rule: AlertRule = field(default_factory=AlertRule)
    negative_label: str = "negative"
    """The model label whose share is watched (a text counts as negative when it is the argmax)."""
    batch_size: int = 256
    """Texts per predict_proba call and per database transaction."""
    predict_workers: int | None = None
    """0: predict in a background thread of this process (overlaps with the database writes where the
    model releases the GIL, e.g. torch); 1: in a separate process (true overlap on 2+ cores; needs the
    model as a directory path). None (default): 1 when the model is given as a directory, else 0 —
    measured on 2 idle cores with the sparse model, the process mode ingests at 1.03 x the model's own
    predict_proba speed and the thread mode at 0.88 x (benchmarks/monitor.py)."""
    alerts_jsonl: Path | None = None
    """Append each alert as one JSON line here (None: don't)."""
    webhook: str | None = None
    """POST each alert as JSON to this URL (None: don't)."""
    webhook_timeout: float = 5.0
    """Seconds per webhook attempt."""
    webhook_retries: int = 3
    """Retries after the first attempt (timeouts, connection errors, 408/429, 5xx)."""
    webhook_backoff: float = 0.5
    """Seconds before the first retry; doubled each retry (0.5, 1, 2 s)."""
    flush_after: float = 1.0
    """Follow mode (stdin): commit a partial batch after this many idle seconds."""
    max_messages: int = 20
    """Issues of one kind shown one by one before they are only counted."""

    def validate(self) -> "MonitorConfig":
        self.rule.validate()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.predict_workers not in (None, 0, 1):
            raise ConfigError(f"predict_workers must be 0 (thread) or 1 (process), got {self.predict_workers}.")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {self.webhook!r} must be an http:// or https:// URL.")
        return self


@dataclass
class RunSummary:
    """What one run did (printed at the end by the CLI)."""

    lines: int = 0            # feed lines read in this run (after any resume position)
    records: int = 0          # valid lines
    stored: int = 0           # texts newly stored
    duplicates: int = 0       # valid lines whose id was already stored (ignored)
    skipped: dict[str, int] = field(default_factory=dict)  # invalid lines by kind
    out_of_order: int = 0     # texts older than one read before them (accepted; windows use event time)
    late: int = 0             # texts older than a window end already evaluated (stored, used in later baselines)
    no_entity: int = 0        # texts with no entity field and no watch-list match (stored, never alert)
    mentions: int = 0         # (text, entity) pairs stored
    alerts: int = 0
    suppressed_by_cooldown: int = 0
    webhook_sent: int = 0
    webhook_failed: int = 0
    resumed: dict[str, int] = field(default_factory=dict)  # file -> lines already done by earlier runs
    batches: int = 0
    seconds: float = 0.0
    db_seconds: float = 0.0   # inside the batch transactions (inserts, progress, alert rule, commit)

    @property
    def texts_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"texts_per_s": round(self.texts_per_s, 1)}


# -- prediction in the background ---------------------------------------------------------------
_WORKER_MODEL: TextClassifier | None = None


def _exit_with_parent() -> None:
    """Exit this worker process when the process that started it is gone, even if it was killed
    with SIGKILL (a spawned pool worker holds both ends of its task pipe, so it never sees EOF and
    would otherwise wait forever)."""
    import os
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="niche-monitor-parent-watch", daemon=True).start()


def _load_worker(model_dir: str) -> None:
    global _WORKER_MODEL
    _exit_with_parent()
    _WORKER_MODEL = TextClassifier.load(model_dir)


def _worker_predict(texts: list[str]) -> np.ndarray:
    assert _WORKER_MODEL is not None
    return _WORKER_MODEL.predict_proba(texts)


def _executor(model: TextClassifier, model_dir: Path | None, workers: int) -> tuple[Executor, Callable[[list[str]], Future]]:
    if workers == 0:
        ex: Executor = ThreadPoolExecutor(1, thread_name_prefix="niche-monitor-predict")
        return ex, lambda texts: ex.submit(model.predict_proba, texts)
    if model_dir is None:
        raise ConfigError("predict_workers=1 needs the model as a directory path (the worker process loads it).")
    ex = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_load_worker,
                             initargs=(str(model_dir),))
    return ex, lambda texts: ex.submit(_worker_predict, texts)


@dataclass
class _Batch:
    records: list[Record]
    positions: dict[str, tuple[int, int]]  # source -> (byte offset, line) after the batch's last line
    flush: bool = False                    # follow mode went idle: write everything now


def _batches(lines: Iterator[Line], matcher: EntityMatcher, log: IssueLog, summary: RunSummary,
             batch_size: int, max_ts: int | None) -> Iterator[_Batch]:
    recs: list[Record] = []
    pos: dict[str, tuple[int, int]] = {}
    for ln in lines:
        if ln.raw is None:
            if recs or pos:
                yield _Batch(recs, pos, flush=True)
                recs, pos = [], {}
            continue
        summary.lines += 1
        pos[ln.source] = (ln.end_offset, ln.line)
        item = parse_line(ln.raw, ln.source, ln.line, matcher)
        if isinstance(item, Issue):
            log.add(item)
            summary.skipped[item.kind] = summary.skipped.get(item.kind, 0) + 1
        elif item is not None:
            summary.records += 1
            if max_ts is not None and item.ts_ms < max_ts:
                summary.out_of_order += 1
                log.add(Issue("out_of_order", item.source, item.line, f"timestamp {_iso(item.ts_ms)} is older than "
                              f"{_iso(max_ts)} read before it; accepted (windows use the event time)."))
            max_ts = item.ts_ms if max_ts is None else max(max_ts, item.ts_ms)
            recs.append(item)
            if len(recs) >= batch_size:
                yield _Batch(recs, pos)
                recs, pos = [], {}
    if recs or pos:
        yield _Batch(recs, pos)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the run ---------------------------------------------------------------------------------
def run_monitor(
    model: TextClassifier | str | Path,
    feed: str | Path,
    db: str | Path | None = None,
    entities: str | Path | list[str] | None = None,
    config: MonitorConfig | None = None,
    *,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    on_issue: Callable[[Issue], None] | None = None,
    before_commit: Callable[[int], None] | None = None,
) -> RunSummary:
    """Ingest ``feed`` into ``db``, classifying texts with ``model`` and raising alerts.

    Args:
        model: a fitted :class:`~niche.TextClassifier` or a model directory.
        feed: a JSONL file, a directory of them, or ``"-"`` for stdin (follow mode).
        db: SQLAlchemy URL (``sqlite:///monitor.db``, ``postgresql+psycopg://user@host/db``) or a SQLite path.
        entities: watch list for texts without an ``entity`` field (list, comma-separated string or file).
        on_alert: called with each alert's JSON payload after it is committed.
        on_issue: called with each feed problem (the first ``max_messages`` of each kind).
        before_commit: test hook, called with the batch number inside each batch's transaction.
    Returns:
        A :class:`RunSummary`. Rerunning on the same feed and database continues where the last
        run stopped (per-file byte offsets are committed with each batch); repeated ids are stored once.
    """
    cfg = (config or MonitorConfig()).validate()
    rule = cfg.rule
    model_dir = None
    if not isinstance(model, TextClassifier):
        model_dir = Path(model)
        model = TextClassifier.load(model_dir)
    labels = list(model.classes_)
    if cfg.negative_label not in labels:
        raise ConfigError(f"negative label {cfg.negative_label!r} is not a label of the model; its labels are "
                          f"{', '.join(labels)}. Pass --negative-label with one of them.")
    neg_col = labels.index(cfg.negative_label)
    matcher = EntityMatcher(parse_entities(entities))
    log = IssueLog(on_issue, cfg.max_messages)
    summary = RunSummary()
    store = open_store(db)
    try:
        with no_space_left(store.where, "the database keeps every batch committed before this one "
                           "(this one was rolled back), and rerunning the same command resumes after them",
                           fix="move the database to a disk with room (--db)"):
            with store.engine.begin() as conn:
                st = store.get_state(conn)
                if "labels" in st and (st["labels"] != labels or st["negative_label"] != cfg.negative_label):
                    raise ConfigError(f"{store.url} was filled by a model with labels {st['labels']} watching "
                                      f"{st['negative_label']!r}; this model has {labels} and {cfg.negative_label!r}. "
                                      "Use a new --db for a different model.")
                if "bucket_ms" in st and st["bucket_ms"] != rule.ms("step"):
                    raise ConfigError(f"{store.url} counts texts in steps of {st['bucket_ms'] // 1000} s; --step "
                                      f"{rule.step} does not match. Pass --step {st['bucket_ms'] // 1000}s or use a new --db.")
                store.set_state(conn, labels=labels, negative_label=cfg.negative_label, bucket_ms=rule.ms("step"))
            workers = cfg.predict_workers if cfg.predict_workers is not None else (1 if model_dir is not None else 0)
            ex, submit = _executor(model, model_dir, workers)
            try:
                submit(["warm-up"]).result()  # start the worker and load the model before the clock starts
                t0 = time.perf_counter()
                for row in store.pending_alerts():  # committed by an earlier run that stopped before delivering them
                    _deliver(store, row, cfg, summary, on_alert)
                lines = _lines(feed, store, log, summary, cfg.flush_after)
                batches = _batches(lines, matcher, log, summary, cfg.batch_size, st.get("max_ts_ms"))
                pending: deque[tuple[_Batch, Future]] = deque()
                for batch in batches:
                    pending.append((batch, submit([r.text for r in batch.records])))
                    # keep one batch predicting while the previous one is written
                    while len(pending) > 1 or (pending and batch.flush):
                        b, fut = pending.popleft()
                        _write(store, b, fut.result(), neg_col, labels, rule, cfg, summary, on_alert, before_commit)
                while pending:
                    b, fut = pending.popleft()
                    _write(store, b, fut.result(), neg_col, labels, rule, cfg, summary, on_alert, before_commit)
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
            summary.seconds = time.perf_counter() - t0
    finally:
        store.close()
    summary.skipped = dict(sorted(summary.skipped.items()))
    return summary


def _lines(feed: str | Path, store: Store, log: IssueLog, summary: RunSummary, flush_after: float) -> Iterator[Line]:
    if str(feed) == "-":
        yield from read_stdin(flush_after)
        return
    for path in feed_files(feed):
        start = store.get_progress(str(path))
        if start[1]:
            summary.resumed[str(path)] = start[1]
        yield from read_file(path, start, log)


def _write(store: Store, batch: _Batch, proba: np.ndarray, neg_col: int, labels: list[str], rule: AlertRule,
           cfg: MonitorConfig, summary: RunSummary, on_alert: Callable[[dict[str, Any]], None] | None,
           before_commit: Callable[[int], None] | None) -> None:
    """One transaction: the batch's texts and mentions, the progress of its files, the alert rule."""
    pred = proba.argmax(1) if len(proba) else np.zeros(0, dtype=int)
    docs, seen = [], set()
    for r, p, k in zip(batch.records, proba, pred):
        if r.id in seen:
            continue
        seen.add(r.id)
        docs.append({"id": r.id, "ts_ms": r.ts_ms, "text": r.text, "label": labels[k], "p_negative": float(p[neg_col]),
                     "source": r.source, "line": r.line})
    summary.batches += 1
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        st = store.get_state(conn)
        new = store.insert_docs(conn, docs)
        n_stored = len(new)
        ments = []
        last_b = st.get("last_boundary_ms")
        for r, k in zip(batch.records, pred):
            if r.id not in new:
                continue
            new.discard(r.id)  # a second copy of the id in this batch is a duplicate
            if not r.entities:
                summary.no_entity += 1
            if last_b is not None and r.ts_ms < last_b:
                summary.late += 1
            ments += [{"doc_id": r.id, "entity": e, "ts_ms": r.ts_ms, "negative": int(k == neg_col)} for e in r.entities]
        store.insert_mentions(conn, ments)
        step = rule.ms("step")
        counts: dict[tuple[str, int], list[int]] = {}
        for m in ments:
            c = counts.setdefault((m["entity"], m["ts_ms"] // step * step), [0, 0])
            c[0] += 1
            c[1] += m["negative"]
        store.add_to_buckets(conn, [{"entity": e, "bucket_ms": b, "n": n, "negatives": k} for (e, b), (n, k) in counts.items()])
        for source, (offset, line) in batch.positions.items():
            if source != "-":
                store.set_progress(conn, source, offset, line)
        fired: list[dict[str, Any]] = []
        if batch.records:
            max_ts = max([r.ts_ms for r in batch.records] + ([st["max_ts_ms"]] if "max_ts_ms" in st else []))
            if last_b is None:
                last_b = min(r.ts_ms for r in batch.records) // step * step
            new_b = max_ts // step * step
            if new_b > last_b:
                fired, suppressed = evaluate(store, conn, rule, last_b, new_b)
                summary.suppressed_by_cooldown += suppressed
            store.set_state(conn, last_boundary_ms=max(new_b, last_b), max_ts_ms=max_ts)
        if before_commit is not None:
            before_commit(summary.batches)
    summary.db_seconds += time.perf_counter() - t0
    summary.stored += n_stored
    summary.duplicates += len(batch.records) - n_stored
    summary.mentions += len(ments)
    for row in fired:
        _deliver(store, row, cfg, summary, on_alert)


def _deliver(store: Store, row: dict[str, Any], cfg: MonitorConfig, summary: RunSummary,
             on_alert: Callable[[dict[str, Any]], None] | None) -> None:
    """Print/JSONL/webhook one committed alert, then mark it delivered (at least once across restarts)."""
    payload = alert_payload(row, cfg.rule)
    summary.alerts += 1
    webhook = None
    if cfg.webhook:
        ok, what, attempts = post_webhook(cfg.webhook, payload, cfg.webhook_timeout, cfg.webhook_retries,
                                          cfg.webhook_backoff)
        webhook = what
        payload["webhook"] = what
        if ok:
            summary.webhook_sent += 1
        else:
            summary.webhook_failed += 1
    if on_alert is not None:
        on_alert(payload)
    if cfg.alerts_jsonl is not None:
        path = Path(cfg.alerts_jsonl)
        with no_space_left(path, "the alert is in the database, not yet marked delivered: the next run delivers it",
                           fix="pass --alerts-jsonl on a disk with room"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(payload, ensure_ascii=False) + "\n")
    store.mark_notified(row["id"], dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), webhook)
