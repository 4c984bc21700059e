"""Reading the monitor's feed: JSONL files, a directory of them, or stdin; entity matching.

A feed line is one JSON object ``{"id": ..., "ts": ..., "text": ..., "entity": ...}``:

- ``id``: string or integer, unique per text (a repeated id is stored once).
- ``ts``: ISO 8601 (``2024-05-01T09:30:00Z``; without an offset it is taken as UTC) or a number
  of seconds since the Unix epoch.
- ``text``: non-empty string.
- ``entity`` (optional): a string or a list of strings. Without it, entities are found in the
  text with the watch list (case-insensitive, whole words).

Bad lines are never fatal: each becomes an :class:`Issue` naming the file and line, is counted,
and the read goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import ConfigError, DataError

FEED_SUFFIXES = (".jsonl", ".ndjson")


@dataclass
class Record:
    """One valid feed line."""

    id: str
    ts_ms: int
    text: str
    entities: list[str]
    source: str
    line: int


@dataclass
class Issue:
    """A problem with one feed line (the line is skipped unless ``kind`` says otherwise)."""

    kind: str      # malformed_json | not_an_object | missing_field | bad_field | bad_timestamp | not_utf8 | out_of_order | truncated_file
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass
class IssueLog:
    """Counts issues by kind; passes the first ``limit`` of each kind to ``sink`` (then one note)."""

    sink: Callable[[Issue], None] | None = None
    limit: int = 20
    counts: Counter = field(default_factory=Counter)

    def add(self, issue: Issue) -> None:
        self.counts[issue.kind] += 1
        if self.sink is None:
            return
        c = self.counts[issue.kind]
        if c <= self.limit:
            self.sink(issue)
        elif c == self.limit + 1:
            self.sink(Issue(issue.kind, issue.source, issue.line,
                            f"more '{issue.kind}' issues follow; not shown one by one (counted in the summary)"))


# -- entities ---------------------------------------------------------------------------------
class EntityMatcher:
    """Finds watch-list entities in a text: case-insensitive, whole words, several per text.

    Args:
        entities: entries ``NAME`` or ``NAME=alias1|alias2`` (``NAME`` is always an alias of itself).

    Example:
        >>> EntityMatcher(["NOK=Nokia|Nokia Oyj", "Stora Enso"]).find("nokia and STORA ENSO fell; Nokian rose")
        ['NOK', 'Stora Enso']
    """

    def __init__(self, entities: list[str]):
        self.alias: dict[str, str] = {}
        for entry in entities:
            name, _, rest = entry.partition("=")
            name = name.strip()
            if not name:
                raise ConfigError(f"watch-list entry {entry!r} has no name; expected NAME or NAME=alias1|alias2.")
            for a in [name] + [x.strip() for x in rest.split("|") if x.strip()]:
                self.alias.setdefault(a.lower(), name)
        self.names = sorted(set(self.alias.values()))
        alts = sorted(self.alias, key=len, reverse=True)  # longest first: "nokia oyj" before "nokia"
        self.regex = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alts)) + r")(?!\w)", re.IGNORECASE) if alts else None

    def find(self, text: str) -> list[str]:
        if self.regex is None:
            return []
        return sorted({self.alias[m.group(0).lower()] for m in self.regex.finditer(text)})


def parse_entities(spec: str | Path | list[str] | None) -> list[str]:
    """A watch list from a comma-separated string, a file (one entry per line, ``#`` comments) or a list."""
    if spec is None:
        return []
    if isinstance(spec, list):
        return [s.strip() for s in spec if s.strip()]
    p = Path(spec)
    if p.is_file():
        lines = p.read_text(encoding="utf-8").splitlines()
        return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    if str(spec).endswith((".txt", ".csv", ".list")):
        raise ConfigError(f"--entities {spec}: file not found. Pass an existing file (one entity per line) "
                          "or a comma-separated list such as 'NOK=Nokia,Stora Enso'.")
    return [s.strip() for s in str(spec).split(",") if s.strip()]


# -- parsing one line -------------------------------------------------------------------------
def parse_ts(value: Any) -> int:
    """Event time in UTC epoch milliseconds from ISO 8601 text or epoch seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, (int, float)):
        if value != value or abs(value) > 1e11:  # NaN, or far outside years 0..5000 in seconds
            raise ValueError(f"{value} is not epoch seconds")
        return int(round(value * 1000))
    if isinstance(value, str):
        t = dt.datetime.fromisoformat(value.strip())
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return int(round(t.timestamp() * 1000))
    raise ValueError(f"expected ISO 8601 text or epoch seconds, got {type(value).__name__}")


def parse_line(raw: bytes, source: str, line: int, matcher: EntityMatcher) -> Record | Issue | None:
    """A :class:`Record`, an :class:`Issue` (line skipped), or ``None`` for a blank line."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Issue("not_utf8", source, line, f"not UTF-8 ({e.reason} at byte {e.start}); line skipped. Re-encode the feed as UTF-8.")
    if not s.strip():
        return None
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        return Issue("malformed_json", source, line, f"malformed JSON ({e.msg} at column {e.colno}); line skipped. "
                     'Expected one object per line like {"id": "a1", "ts": "2024-05-01T09:30:00Z", "text": "..."}.')
    if not isinstance(obj, dict):
        return Issue("not_an_object", source, line, f"expected a JSON object, found {type(obj).__name__}; line skipped.")
    missing = [k for k in ("id", "ts", "text") if k not in obj or obj[k] is None]
    if missing:
        return Issue("missing_field", source, line, f"missing field{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(repr(m) for m in missing)} (found: {', '.join(map(str, obj)) or 'none'}); line skipped. "
                     "Each line needs id, ts and text (entity is optional).")
    rid, text = obj["id"], obj["text"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        return Issue("bad_field", source, line, f"'id' must be a non-empty string or an integer, found {rid!r:.60}; line skipped.")
    if not isinstance(text, str) or not text.strip():
        return Issue("bad_field", source, line, f"'text' must be a non-empty string, found {text!r:.60}; line skipped.")
    try:
        ts_ms = parse_ts(obj["ts"])
    except (ValueError, OverflowError, OSError) as e:
        return Issue("bad_timestamp", source, line, f"unparsable timestamp {obj['ts']!r:.60} ({e}); line skipped. "
                     "Use ISO 8601 such as 2024-05-01T09:30:00Z, or epoch seconds.")
    ent = obj.get("entity")
    if ent is None:
        entities = matcher.find(text)
    elif isinstance(ent, str):
        entities = [ent.strip()] if ent.strip() else []
    elif isinstance(ent, list) and all(isinstance(e, str) for e in ent):
        entities = sorted({e.strip() for e in ent if e.strip()})
    else:
        return Issue("bad_field", source, line, f"'entity' must be a string or a list of strings, found {ent!r:.60}; line skipped.")
    return Record(str(rid), ts_ms, text, entities, source, line)


# -- reading sources --------------------------------------------------------------------------
@dataclass
class Line:
    """One raw line and where the source stands after it (for the progress table)."""

    raw: bytes | None  # None: follow mode went idle, flush what is buffered
    source: str
    line: int
    end_offset: int


def feed_files(feed: str | Path) -> list[Path]:
    """The JSONL files of ``feed`` (a file, or a directory's ``*.jsonl``/``*.ndjson`` sorted by name)."""
    p = Path(feed)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in FEED_SUFFIXES)
        if not files:
            raise DataError(f"feed directory {p} has no *.jsonl or *.ndjson files; put the feed files there "
                            "or pass a single file.")
        return files
    if p.is_file():
        return [p]
    raise DataError(f"feed {p} not found; pass a JSONL file, a directory of JSONL files, or - for stdin.")


def read_file(path: Path, start: tuple[int, int], log: IssueLog) -> Iterator[Line]:
    """Lines of ``path`` from byte offset ``start[0]`` (line number ``start[1]``), i.e. after the last committed line."""
    offset, line = start
    size = path.stat().st_size
    source = str(path)
    if offset > size:
        log.add(Issue("truncated_file", source, line, f"file is shorter ({size} bytes) than the position recorded by "
                      f"an earlier run ({offset} bytes): it was truncated or replaced. Reading it again from the start; "
                      "ids already stored are ignored."))
        offset, line = 0, 0
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            offset += len(raw)
            line += 1
            yield Line(raw, source, line, offset)


def read_stdin(flush_after: float, stream: BinaryIO | None = None) -> Iterator[Line]:
    """Follow mode: lines from stdin as they come; a ``raw=None`` line whenever input is idle ``flush_after`` s."""
    stream = stream if stream is not None else sys.stdin.buffer
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=10000)

    def pump() -> None:
        for raw in stream:
            q.put(raw)
        q.put(None)

    threading.Thread(target=pump, daemon=True, name="niche-monitor-stdin").start()
    line = offset = 0
    idle_sent = True
    while True:
        try:
            raw = q.get(timeout=flush_after)
        except queue.Empty:
            if not idle_sent:
                idle_sent = True
                yield Line(None, "-", line, offset)
            continue
        if raw is None:
            return
        line += 1
        offset += len(raw)
        idle_sent = False
        yield Line(raw, "-", line, offset)
