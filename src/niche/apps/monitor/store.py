"""The monitor's database: schema, insert-or-ignore per dialect, progress and state.

SQLAlchemy 2.x Core over SQLite (default, a file) or PostgreSQL (``postgresql+psycopg://...``).
Every write of one batch happens in one transaction: the texts, their entity mentions, the
per-file read position and the alert-evaluation state commit together or not at all, which is
what makes a killed run resumable without losing or doubling anything.

Tables (all prefixed ``monitor_``):
    docs      one row per feed ``id`` (primary key; a second copy of an id is ignored)
    mentions  (doc_id, entity) pairs with the event time and whether the text was negative
    buckets   per entity and ``step`` of event time: texts and negatives (what the alert rule reads)
    progress  per feed file: byte offset and line number of the last line consumed
    alerts    one row per alert, unique per (entity, window_end_ms)
    state     key/value: last evaluated window boundary, newest event time, model labels
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, MetaData, SmallInteger, String, Table, Text,
                        UniqueConstraint, create_engine, event, func, select, update)
from sqlalchemy.engine import Connection, Engine

from ...errors import ConfigError, DiskFullError, no_space_left

metadata = MetaData()

docs = Table(
    "monitor_docs", metadata,
    Column("id", String, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),   # event time, UTC epoch milliseconds
    Column("text", Text, nullable=False),
    Column("label", String, nullable=False),        # the model's predicted label
    Column("p_negative", Float, nullable=False),    # the model's probability of the negative label
    Column("source", String),                       # feed file (or "-" for stdin)
    Column("line", Integer),
    Index("ix_monitor_docs_ts", "ts_ms"),
)

mentions = Table(
    "monitor_mentions", metadata,
    Column("doc_id", String, primary_key=True),
    Column("entity", String, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("negative", SmallInteger, nullable=False),  # 0/1 (summable in every dialect)
    Index("ix_monitor_mentions_entity_ts", "entity", "ts_ms"),
)

# Counts per (entity, step bucket), incremented in the same transaction as the mentions they count:
# the alert rule sums <= baseline/step rows per test instead of scanning a week of mentions.
buckets = Table(
    "monitor_buckets", metadata,
    Column("entity", String, primary_key=True),
    Column("bucket_ms", BigInteger, primary_key=True),  # start of the bucket, a multiple of the step
    Column("n", Integer, nullable=False),
    Column("negatives", Integer, nullable=False),
)

progress = Table(
    "monitor_progress", metadata,
    Column("source", String, primary_key=True),
    Column("byte_offset", BigInteger, nullable=False),
    Column("line", Integer, nullable=False),
)

alerts = Table(
    "monitor_alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entity", String, nullable=False),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("window_end_ms", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),               # texts about the entity in the window
    Column("negatives", Integer, nullable=False),
    Column("baseline_n", Integer, nullable=False),
    Column("baseline_negatives", Integer, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("test", String, nullable=False),
    Column("created", String, nullable=False),          # wall clock, ISO 8601 UTC
    Column("notified", String),                         # null until printed/JSONL/webhook were attempted
    Column("webhook", String),                          # "sent", "failed: ...", or null (no webhook)
    UniqueConstraint("entity", "window_end_ms", name="uq_monitor_alerts_entity_end"),
)

state = Table(
    "monitor_state", metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)


def normalize_url(db: str | Path | None) -> str:
    """A SQLAlchemy URL from ``db``: a URL as is, a plain path as a SQLite file, ``None`` as ``monitor.db``."""
    if db is None:
        db = "monitor.db"
    db = str(db)
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (e.g. `monitor report`) never block the writer; NORMAL sync is durable against a
    # killed process (only a power loss can drop the last commits), and much faster than FULL.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Store:
    """A connection pool to one monitor database, with the dialect-specific statements."""

    def __init__(self, url: str):
        self.url = url

    def open(self) -> "Store":
        """Connect and create the tables if they do not exist yet."""
        url = self.url
        try:
            self.engine: Engine = create_engine(url)
        except Exception as e:  # bad URL or missing driver
            raise ConfigError(f"cannot use database URL {url!r}: {e}. Expected sqlite:///PATH or "
                              "postgresql+psycopg://USER@HOST/DB (or a plain file path for SQLite).") from None
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"database {url!r} is {self.dialect}; the monitor supports sqlite and postgresql.")
        if self.dialect == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            with no_space_left(self.where, "no table was created", fix="use a --db on a disk with room"):
                metadata.create_all(self.engine)
        except DiskFullError:
            raise
        except Exception as e:
            raise ConfigError(f"cannot open database {self.engine.url.render_as_string(hide_password=True)}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0]}. Check the URL, that the server is "
                              "running and that the user may create tables.") from None
        return self

    @property
    def where(self) -> str:
        """The SQLite file, or the server URL without its password (for messages)."""
        if self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            return str(self.engine.url.database)
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- dialect-specific insert -------------------------------------------------------------
    def _insert(self, table: Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def insert_docs(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert-or-ignore; returns the ids that were new (a repeated id is stored once)."""
        if not rows:
            return set()
        stmt = self._insert(docs).on_conflict_do_nothing(index_elements=["id"]).returning(docs.c.id)
        return set(conn.execute(stmt, list(rows)).scalars().all())

    def insert_mentions(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self._insert(mentions).on_conflict_do_nothing(index_elements=["doc_id", "entity"]), list(rows))

    def add_to_buckets(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Add (entity, bucket_ms, n, negatives) rows to the bucket counts (upsert with increment)."""
        if not rows:
            return
        ins = self._insert(buckets)
        stmt = ins.on_conflict_do_update(index_elements=["entity", "bucket_ms"],
                                         set_={"n": buckets.c.n + ins.excluded.n,
                                               "negatives": buckets.c.negatives + ins.excluded.negatives})
        conn.execute(stmt, list(rows))

    def insert_alert(self, conn: Connection, row: dict[str, Any]) -> int | None:
        """Insert-or-ignore one alert; its id, or ``None`` if that (entity, window end) was already alerted."""
        stmt = (self._insert(alerts).on_conflict_do_nothing(index_elements=["entity", "window_end_ms"])
                .returning(alerts.c.id))
        return conn.execute(stmt, row).scalar()

    def _upsert(self, conn: Connection, table: Table, key: str, values: dict[str, Any]) -> None:
        stmt = self._insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=[key], set_={k: v for k, v in values.items() if k != key})
        conn.execute(stmt)

    # -- progress and state ------------------------------------------------------------------
    def set_progress(self, conn: Connection, source: str, byte_offset: int, line: int) -> None:
        self._upsert(conn, progress, "source", {"source": source, "byte_offset": byte_offset, "line": line})

    def get_progress(self, source: str) -> tuple[int, int]:
        """(byte offset, line number) of the last committed line of ``source``; (0, 0) if never read."""
        with self.engine.connect() as conn:
            row = conn.execute(select(progress.c.byte_offset, progress.c.line).where(progress.c.source == source)).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def get_state(self, conn: Connection) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in conn.execute(select(state.c.key, state.c.value)).all()}

    def set_state(self, conn: Connection, **values: Any) -> None:
        for k, v in values.items():
            self._upsert(conn, state, "key", {"key": k, "value": json.dumps(v)})

    # -- queries used by the alert rule and the report ---------------------------------------
    def buckets_between(self, conn: Connection, start_ms: int, end_ms: int) -> list[tuple[str, int, int, int]]:
        """(entity, bucket_ms, n, negatives) of buckets with start <= bucket_ms < end and a negative in them."""
        q = (select(buckets.c.entity, buckets.c.bucket_ms, buckets.c.n, buckets.c.negatives)
             .where(buckets.c.bucket_ms >= start_ms, buckets.c.bucket_ms < end_ms, buckets.c.negatives > 0))
        return [(e, int(b), int(n), int(k)) for e, b, n, k in conn.execute(q).all()]

    def counts(self, conn: Connection, entity: str, start_ms: int, end_ms: int) -> tuple[int, int]:
        """(texts, negatives) about ``entity`` with start <= ts < end (both multiples of the bucket size)."""
        q = (select(func.coalesce(func.sum(buckets.c.n), 0), func.coalesce(func.sum(buckets.c.negatives), 0))
             .where(buckets.c.entity == entity, buckets.c.bucket_ms >= start_ms, buckets.c.bucket_ms < end_ms))
        n, neg = conn.execute(q).one()
        return int(n), int(neg)

    def last_alert_end(self, conn: Connection, entity: str) -> int | None:
        q = select(func.max(alerts.c.window_end_ms)).where(alerts.c.entity == entity)
        v = conn.execute(q).scalar()
        return int(v) if v is not None else None

    def pending_alerts(self) -> list[dict[str, Any]]:
        """Alerts committed but not yet delivered to the sinks (e.g. the run was killed right after the commit)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.notified.is_(None)).order_by(alerts.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def mark_notified(self, alert_id: int, when: str, webhook: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(notified=when, webhook=webhook))

    def all_alerts(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(alerts).order_by(alerts.c.window_end_ms, alerts.c.entity)).mappings()]

    def series(self, bucket_ms: int) -> list[tuple[str, int, int, int]]:
        """(entity, bucket start ms, texts, negatives) for every entity and non-empty time bucket."""
        b = (mentions.c.ts_ms // bucket_ms).label("b")
        q = (select(mentions.c.entity, b, func.count(), func.sum(mentions.c.negative))
             .group_by(mentions.c.entity, b).order_by(mentions.c.entity, b))
        with self.engine.connect() as conn:
            return [(e, int(k) * bucket_ms, int(n), int(neg)) for e, k, n, neg in conn.execute(q).all()]

    def time_range(self) -> tuple[int, int] | None:
        with self.engine.connect() as conn:
            lo, hi = conn.execute(select(func.min(mentions.c.ts_ms), func.max(mentions.c.ts_ms))).one()
        return None if lo is None else (int(lo), int(hi))

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def open_store(db: str | Path | None) -> Store:
    return Store(normalize_url(db)).open()
