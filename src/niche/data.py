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
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

MAX_LINE_CHARS = 10_000_000
"""The longest line (and CSV field) the readers accept, in characters. A longer one is almost always a
broken file (binary data, no line breaks, an unclosed quote); reading stops there with a
:class:`DataError` instead of holding it in memory, so memory stays bounded by this, not by the file."""


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
    """Fail early, with a line number, on bytes that are not UTF-8 and on NUL bytes."""
    line, offset, carry = 1, 0, b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            buf, bad = carry + chunk, None
            try:
                buf.decode("utf-8")
                good, carry = buf, b""
            except UnicodeDecodeError as e:
                if e.reason == "unexpected end of data" and e.start >= len(buf) - 3:
                    good, carry = buf[: e.start], buf[e.start:]  # may complete in the next chunk
                else:
                    good, bad = buf[: e.start], e.start
            if (nul := good.find(b"\0")) >= 0:
                raise _nul_error(path, line + good.count(b"\n", 0, nul), offset + nul, b"\0" in buf[nul + 2:nul + 4])
            if bad is not None:
                raise _not_utf8(path, line + good.count(b"\n"), offset + bad, buf, bad)
            line += good.count(b"\n")
            offset += len(good)
        if carry:
            raise DataError(
                f"{path}: line {line}: the file ends inside a multi-byte character (not valid UTF-8). "
                "Convert the file to UTF-8."
            )


def _nul_error(path: Path, line: int, offset: int, utf16: bool) -> DataError:
    fixed = _fixed(path)
    why = (f"it may be UTF-16 (convert: `iconv -f UTF-16 -t UTF-8 {path.name} > {fixed}`)" if utf16
           else f"a damaged one (remove them: `tr -d '\\000' < {path.name} > {fixed}`)")
    return DataError(f"{path}: line {line}: NUL byte (\\x00) at byte {offset}; a text data file never contains "
                     f"one, so this is a binary file or {why}. Re-export the data as UTF-8 text.")


def _fixed(path: Path) -> str:
    return f"{path.stem}.utf8{path.suffix}"


def guess_encoding(raw: bytes) -> tuple[str, str]:
    """(description, iconv name) of the likely encoding of ``raw``, bytes of a line that is not UTF-8:
    UTF-16 by its byte order mark, GB18030/GBK when the bytes decode as Chinese without swallowing any
    ASCII byte, else Windows-1252/Latin-1 (which decodes anything)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16", "UTF-16"
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as e:
        text = raw[: e.start].decode("gb18030") if e.start >= len(raw) - 4 else ""
    wide = [c for c in text if ord(c) >= 128]
    cjk = sum("CJK" in unicodedata.name(c, "") or unicodedata.east_asian_width(c) in "FW" for c in wide)
    ascii_kept = sum(b < 128 for b in raw[: len(text.encode("gb18030"))]) == len(text) - len(wide)
    if wide and ascii_kept and cjk >= 0.8 * len(wide):
        return "GBK/GB18030 (Chinese)", "GB18030"
    return "Windows-1252/Latin-1 (Western European)", "WINDOWS-1252"


def _not_utf8(path: Path, line: int, offset: int, buf: bytes, bad: int) -> DataError:
    lo = buf.rfind(b"\n", max(0, bad - 4096), bad) + 1 or max(0, bad - 4096)
    hi = buf.find(b"\n", bad, bad + 4096)
    name, iconv = guess_encoding(buf[lo: hi if hi >= 0 else bad + 4096])
    return DataError(
        f"{path}: line {line}: byte {offset} is not valid UTF-8 ({buf[bad:bad + 2]!r}): the file is not UTF-8 "
        f"text; it looks like {name}. "
        f"niche reads UTF-8 only; convert the file, e.g. `iconv -f {iconv} -t UTF-8 {path.name} > {_fixed(path)}` "
        "(use the encoding it was saved in if that guess is wrong)."
    )


def _lines(f: Any, path: Path) -> Iterator[str]:
    """The lines of the text file ``f``, refusing (without reading it whole) one over MAX_LINE_CHARS."""
    n = 0
    while line := f.readline(MAX_LINE_CHARS + 2):  # + 2: room for the line's \r\n
        n += 1
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise DataError(f"{path}: line {n} is longer than {MAX_LINE_CHARS:,} characters (niche's limit for one "
                            "line of a data file); the file is binary or has no line breaks. Check how it was "
                            "exported (one record per line), or split the long text.")
        yield line


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """Yield (line number, row dict, header) from a CSV/TSV file with a header row."""
    csv.field_size_limit(MAX_LINE_CHARS)
    with path.open("r", encoding="utf-8-sig", newline="") as f:  # -sig: a UTF-8 BOM is not part of the header
        reader = csv.reader(_lines(f, path), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; expected a header row such as `text,label`.") from None
        except csv.Error as e:
            raise DataError(f"{path}: line 1: cannot parse the header ({e}).") from None
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if "field limit" in str(e):
                    raise DataError(f"{path}: line {start}: a field longer than {MAX_LINE_CHARS:,} characters "
                                    f"starts here; usually a quote (\") that opens a field and never closes. Check "
                                    f"the quoting from line {start}.") from None
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
    with path.open("r", encoding="utf-8-sig") as f:
        for lineno, line in enumerate(_lines(f, path), 1):
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
        _check_utf8(p)
        with p.open(encoding="utf-8-sig") as f:
            return [line.rstrip("\n") for line in _lines(f, p)]
    col = text_col or "text"
    check_text_column(p, col)
    texts = []
    for row, rec, columns in iter_rows(p):
        if col not in rec:
            raise DataError(f"{p}: column {col!r} not found (row {row}); columns are: {', '.join(map(str, columns))}. "
                            "Pass --text-col with one of them.")
        v = rec[col]
        texts.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return texts


def check_text_column(path: Path, col: str, flag: str = "--text-col") -> None:
    """A Parquet text column must hold strings: an int64 or list column is the wrong column, or texts
    written with the wrong type. (CSV holds only strings; JSON numbers are read as their text.)"""
    if detect_format(path) != "parquet":
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # an unreadable file is reported by the reader
        return
    if col not in schema.names:
        return  # reported by the reader, with the list of columns
    typ = schema.field(col).type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)
            or pa.types.is_null(typ)):
        raise DataError(f"{path}: column {col!r} has type {typ}, expected strings (the texts). Pass {flag} with "
                        f"the text column, or write the texts as strings: df[{col!r}] = df[{col!r}].astype(str) "
                        "before df.to_parquet(...).")


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
    if path.suffix:
        check_text_column(path, text_col)
    for lineno, rec, header in iter_rows(path):
        if not checked or text_col not in rec or label_col not in rec:
            if text_col not in rec:
                raise _missing_column(path, text_col, "--text-col", header)
            if label_col not in rec:
                raise _missing_column(path, label_col, "--label-col", header)
            checked = True
        text, label = rec[text_col], rec[label_col]
        if not isinstance(text, (str, int, float)) and text is not None:
            raise DataError(f"{path}: {fmt_where} {lineno}, column {text_col!r}: expected a string, found "
                            f"{type(text).__name__} ({text!r:.40}). Pass --text-col with the text column, or write "
                            "the texts as strings.")
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
