"""Reading, validating, splitting and inspecting labeled text files.

Formats: CSV, TSV, JSONL (``.jsonl``/``.ndjson``) and Parquet, chosen by file extension.
Every problem is reported as a :class:`~niche.errors.DataError` that names the file, the
line (or row) and the column, and says how to fix it.

Example:
    >>> from niche.data import read_labeled
    >>> train = read_labeled("data/banking77/train.csv")          # doctest: +SKIP
    >>> len(train), train.classes[:2]                               # doctest: +SKIP
    (10003, ['Refund_not_showing_up', 'activate_my_card'])
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class LabeledData:
    """Texts with their labels, read from one file.

    Attributes:
        texts: the input texts, in file order.
        labels: one string label per text (numbers in the file become strings: ``1`` -> ``"1"``).
        source: the file the rows came from (``None`` when built in memory).
        rows: the 1-based line (CSV/TSV/JSONL) or row (Parquet) number of each text, for messages.
        skipped: how many rows were skipped because their text was empty (``skip_empty=True``).
    """

    texts: list[str]
    labels: list[str]
    source: str | None = None
    rows: list[int] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted(set(self.labels))

    def subset(self, idx: list[int]) -> "LabeledData":
        return LabeledData(
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            self.source,
            [self.rows[i] for i in idx] if self.rows else [],
        )

    def sha256(self) -> str:
        """Content hash of (text, label) pairs: recorded in ``niche.json`` for provenance."""
        h = hashlib.sha256()
        for t, y in zip(self.texts, self.labels):
            h.update(t.encode("utf-8"))
            h.update(b"\x1f")
            h.update(y.encode("utf-8"))
            h.update(b"\x1e")
        return h.hexdigest()


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file extension {path.suffix!r}; expected one of "
            f"{', '.join(sorted(FORMATS))}. Rename the file or convert it (e.g. to CSV with a header)."
        )
    return fmt


def _check_exists(path: Path) -> None:
    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = sorted(p.name for p in path.parent.iterdir() if p.suffix.lower() in FORMATS)[:8]
            if near:
                hint = f" Files in {path.parent}: {', '.join(near)}."
        raise DataError(f"{path}: file not found. Check the path.{hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a CSV/TSV/JSONL/Parquet file.")


def _check_utf8(path: Path) -> None:
    """Fail early, with a line number, on bytes that are not UTF-8."""
    line = 1
    with path.open("rb") as f:
        offset = 0
        carry = b""
        while chunk := f.read(1 << 20):
            buf = carry + chunk
            try:
                buf.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as e:
                # An incomplete multi-byte sequence at the chunk end is fine: retry with more bytes.
                if e.reason == "unexpected end of data" and e.start >= len(buf) - 3:
                    good, carry = buf[: e.start], buf[e.start :]
                    line += good.count(b"\n")
                    offset += len(good)
                    continue
                bad_line = line + buf[: e.start].count(b"\n")
                raise DataError(
                    f"{path}: line {bad_line}: byte {offset + e.start} is not valid UTF-8 "
                    f"({buf[e.start:e.start + 4]!r}). niche reads UTF-8 only; convert the file, e.g. "
                    f"`iconv -f GB18030 -t UTF-8 {path.name} > fixed.csv` (use the encoding it was saved in)."
                ) from None
            line += buf.count(b"\n")
            offset += len(buf)
        if carry:
            raise DataError(
                f"{path}: line {line}: the file ends inside a multi-byte character (not valid UTF-8). "
                "Convert the file to UTF-8."
            )


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """Yield (line number, row dict, header) from a CSV/TSV file with a header row."""
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; expected a header row such as `text,label`.") from None
        except csv.Error as e:
            raise DataError(f"{path}: line 1: cannot parse the header ({e}).") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(
                    f"{path}: line {reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({e}). "
                    "Check quoting: fields containing the delimiter, quotes or newlines must be quoted, "
                    'with quotes doubled ("").'
                ) from None
            if not values:  # blank line
                start = reader.line_num + 1
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{path}: line {start}: expected {len(header)} fields ({', '.join(header)}), "
                    f"found {len(values)}. Quote fields that contain the delimiter."
                )
            yield start, dict(zip(header, values)), header
            start = reader.line_num + 1


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno}). "
                                "Each line must be one JSON object.") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object like "
                                f'{{"text": ..., "label": ...}}, found {type(obj).__name__}.')
            yield lineno, obj, list(obj.keys())


def _iter_parquet(path: Path, columns: list[str] | None = None,
                  batch_size: int = 4096) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for bad files
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    header = pf.schema_arrow.names
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec, header


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """Stream ``(line_or_row, record, columns)`` from any supported file, in constant memory."""
    path = Path(path)
    _check_exists(path)
    fmt = detect_format(path)
    if fmt != "parquet":
        _check_utf8(path)
    if fmt == "csv":
        return _iter_csv(path, ",")
    if fmt == "tsv":
        return _iter_csv(path, "\t")
    if fmt == "jsonl":
        return _iter_jsonl(path)
    return _iter_parquet(path)


def read_texts(path: str | Path, text_col: str | None = None) -> list[str]:
    """Texts of one unlabeled file, empty ones kept as ``""``: ``.txt`` = one text per line;
    CSV/TSV/JSONL/Parquet = column ``text_col`` (default ``text``). Used by pretraining corpora and
    distillation transfer texts."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: text file not found. Check the path (one text per line, or CSV/JSONL with --text-col).")
    if p.suffix.lower() in (".txt", ".text", ""):
        try:
            with p.open(encoding="utf-8") as f:
                return [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 ({e}). Convert it, e.g. `iconv -f GB18030 -t UTF-8`.") from None
    col = text_col or "text"
    texts = []
    for row, rec, columns in iter_rows(p):
        if col not in rec:
            raise DataError(f"{p}: column {col!r} not found (row {row}); columns are: {', '.join(map(str, columns))}. "
                            "Pass --text-col with one of them.")
        v = rec[col]
        texts.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return texts


def _where(fmt: str) -> str:
    return "row" if fmt == "parquet" else "line"


def _missing_column(path: Path, col: str, flag: str, columns: list[str]) -> DataError:
    return DataError(
        f"{path}: column {col!r} not found; columns are: {', '.join(map(str, columns))}. "
        f"Pass {flag} with one of them."
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_labeled(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    skip_empty: bool = False,
) -> LabeledData:
    """Read a labeled file into memory and validate every row.

    Args:
        path: CSV, TSV, JSONL or Parquet file.
        text_col: column holding the text.
        label_col: column holding the label.
        skip_empty: skip (and count) rows whose text is empty or whitespace-only instead of failing.

    Returns:
        :class:`LabeledData`.

    Raises:
        DataError: missing file/column, non-UTF-8 bytes, empty text, empty/NaN label, empty file.
    """
    path = Path(path)
    fmt_where = _where(detect_format(path)) if path.suffix else "line"
    texts: list[str] = []
    labels: list[str] = []
    rows: list[int] = []
    skipped = 0
    checked = False
    for lineno, rec, header in iter_rows(path):
        if not checked or text_col not in rec or label_col not in rec:
            if text_col not in rec:
                raise _missing_column(path, text_col, "--text-col", header)
            if label_col not in rec:
                raise _missing_column(path, label_col, "--label-col", header)
            checked = True
        text, label = rec[text_col], rec[label_col]
        if _is_missing(text) or not isinstance(text, str) or not text.strip():
            if isinstance(text, (int, float)) and not _is_missing(text):
                text = str(text)
            elif skip_empty:
                skipped += 1
                continue
            else:
                raise DataError(
                    f"{path}: {fmt_where} {lineno}, column {text_col!r}: the text is empty or whitespace-only. "
                    "Remove the row, or pass --skip-empty to skip and count such rows."
                )
        if _is_missing(label) or (isinstance(label, str) and not label.strip()):
            raise DataError(
                f"{path}: {fmt_where} {lineno}, column {label_col!r}: the label is empty or missing. "
                "Every row needs a label; remove the row or fill in its label."
            )
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        texts.append(text)
        labels.append(str(label).strip())
        rows.append(lineno)
    if not texts:
        raise DataError(f"{path}: no rows with text found; expected a header and at least one data row.")
    return LabeledData(texts, labels, str(path), rows, skipped)


def check_trainable(data: LabeledData) -> None:
    """Training needs at least two classes."""
    classes = data.classes
    if len(classes) < 2:
        raise DataError(
            f"{data.source}: only one class ({classes[0]!r}) in {len(data)} rows; a classifier needs at "
            "least two. Check --label-col, or add examples of the other classes."
        )


def check_known_labels(data: LabeledData, known: list[str], what: str = "training") -> None:
    """Every label of an evaluation file must have been seen in training."""
    known_set = set(known)
    for lab, row in zip(data.labels, data.rows or [0] * len(data)):
        if lab not in known_set:
            shown = ", ".join(sorted(known_set)[:12]) + (" ..." if len(known_set) > 12 else "")
            raise DataError(
                f"{data.source}: line/row {row}: label {lab!r} was never seen in {what}; the model knows: "
                f"{shown}. Fix the label, drop these rows, or retrain with examples of {lab!r}."
            )


def stratified_split(data: LabeledData, dev_fraction: float = 0.1, seed: int = 42) -> tuple[LabeledData, LabeledData]:
    """Seeded stratified split into (train, dev). Classes with one example stay in train."""
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_class.setdefault(y, []).append(i)
    train_idx, dev_idx = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        rng.shuffle(idx)
        n_dev = int(round(len(idx) * dev_fraction))
        if len(idx) >= 2:
            n_dev = min(max(n_dev, 1), len(idx) - 1)
        else:
            n_dev = 0
        dev_idx += idx[:n_dev]
        train_idx += idx[n_dev:]
    return data.subset(sorted(train_idx)), data.subset(sorted(dev_idx))
