"""Batch prediction over large files in constant memory, resumable after a kill.

Input rows stream from CSV/TSV/JSONL/Parquet in chunks; each output row is the input row plus
``predicted``, ``confidence`` and one ``p_<label>`` column per class. Output is CSV, TSV or JSONL.

Resume protocol: after each chunk the output is flushed and fsync'ed, then a small sidecar
``OUTPUT.progress.json`` records (rows done, output bytes, input/model fingerprint). On restart the
output is truncated to the recorded byte count (dropping any partly written chunk) and the first
``rows done`` input rows are skipped, so no row is duplicated or missing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..classifier import TextClassifier
from ..data import check_text_column, detect_format, iter_rows
from ..errors import DataError, ResumeError, no_space_left

OUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.json")


def _job_id(input_path: Path, model_dir: str, text_col: str) -> str:
    st = input_path.stat()
    h = hashlib.sha256(f"{input_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{Path(model_dir).resolve()}|{text_col}".encode())
    return h.hexdigest()[:16]


def chunks(path: Path, text_col: str, chunk_rows: int, skip: int) -> Iterator[tuple[list[dict[str, Any]], list[str], list[str]]]:
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    header: list[str] = []
    where = "row" if detect_format(path) == "parquet" else "line"
    check_text_column(path, text_col)  # a Parquet column of numbers or lists is the wrong column
    for i, (lineno, rec, header) in enumerate(iter_rows(path)):
        if text_col not in rec:
            raise DataError(f"{path}: column {text_col!r} not found; columns are: {', '.join(map(str, header))}. "
                            "Pass --text-col with one of them.")
        if i < skip:
            continue
        t = rec[text_col]
        if t is None or (isinstance(t, float) and t != t):
            t = ""
        if not isinstance(t, (str, int, float)):  # a JSON list or object is not a text
            raise DataError(f"{path}: {where} {lineno}, column {text_col!r}: expected a string, found "
                            f"{type(t).__name__} ({t!r:.40}). Pass --text-col with the text column, or write "
                            "the texts as strings.")
        if not isinstance(t, str):
            t = str(t)
        if not t.strip():
            raise DataError(f"{path}: {where} {lineno}, column {text_col!r}: the text is empty. Remove or fill the row "
                            "(a prediction for an empty text would be meaningless).")
        rows.append(rec)
        texts.append(t)
        if len(rows) == chunk_rows:
            yield rows, texts, header
            rows, texts = [], []
    if rows:
        yield rows, texts, header


def format_chunk(fmt: str, rows: list[dict[str, Any]], proba: Any, labels: list[str], header: list[str],
                 write_header: bool) -> bytes:
    """One scored chunk as output bytes: each input row + ``predicted``, ``confidence``, ``p_<label>``.

    Shared by the local engine and the Ray engine (``predict_ray``) so both write the same bytes.
    ``fmt`` is ``csv``, ``tsv`` or ``jsonl``; ``write_header`` adds the CSV/TSV header row first.
    """
    extra = ["predicted", "confidence"] + [f"p_{lab}" for lab in labels]
    buf = io.StringIO()
    if fmt == "jsonl":
        for rec, p in zip(rows, proba):
            k = int(p.argmax())
            obj = dict(rec) | {"predicted": labels[k], "confidence": round(float(p[k]), 6)}
            obj |= {f"p_{lab}": round(float(x), 6) for lab, x in zip(labels, p)}
            buf.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    else:
        w = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        cols = [c for c in header if c not in extra]
        if write_header:
            w.writerow(cols + extra)
        for rec, p in zip(rows, proba):
            k = int(p.argmax())
            w.writerow([rec.get(c, "") for c in cols] + [labels[k], f"{p[k]:.6f}"] + [f"{x:.6f}" for x in p])
    return buf.getvalue().encode("utf-8")


def predict_file(
    clf: TextClassifier,
    input_path: str | Path,
    output_path: str | Path,
    model_dir: str = "",
    text_col: str = "text",
    batch_size: int = 32,
    chunk_rows: int = 2048,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every row of ``input_path`` into ``output_path`` (resuming a partial output).

    Returns:
        ``{"rows": total rows in the output, "new_rows": rows written by this call, "resumed_from": n}``
    """
    from tqdm.auto import tqdm

    inp, out = Path(input_path), Path(output_path)
    fmt = OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise DataError(f"{out}: unsupported output extension {out.suffix!r}; use .csv, .tsv or .jsonl "
                        "(these can be appended to and resumed).")
    if not inp.is_file():
        raise DataError(f"{inp}: file not found. Check the path.")
    detect_format(inp)
    check_text_column(inp, text_col)  # before the output is touched
    job = _job_id(inp, model_dir, text_col)
    prog = _progress_path(out)
    done, nbytes = 0, 0

    def commit(rows: int, size: int, complete: bool = False) -> None:
        tmp = prog.with_suffix(".tmp")
        tmp.write_text(json.dumps({"job": job, "rows": rows, "bytes": size, "complete": complete,
                                   "input": str(inp), "model": model_dir}))
        os.replace(tmp, prog)

    if out.exists() and not overwrite:
        if not prog.exists():
            raise ResumeError(f"{out} already exists and was not written by an interrupted `niche predict` "
                              "(no progress file). Pass --overwrite to replace it, or choose another --out.")
        meta = json.loads(prog.read_text())
        if meta.get("job") != job:
            raise ResumeError(f"{out}: the partial output belongs to another input/model (job {meta.get('job')} != {job}). "
                              "Pass --overwrite to start over.")
        done, nbytes = int(meta["rows"]), int(meta["bytes"])
        if meta.get("complete"):
            return {"rows": done, "new_rows": 0, "resumed_from": done, "output": str(out)}
        with out.open("r+b") as f:
            f.truncate(nbytes)  # drop a partly written chunk
    fresh = not out.exists() or overwrite
    labels = clf.classes_
    extra = ["predicted", "confidence"] + [f"p_{lab}" for lab in labels]
    write_header = nbytes == 0
    bar = tqdm(desc="predicting", unit="row", initial=done, disable=not progress, dynamic_ncols=True)
    new, size = 0, nbytes

    def left() -> str:  # what a full disk leaves: the committed rows, which a rerun resumes after
        prog.with_suffix(".tmp").unlink(missing_ok=True)
        if out.exists():
            with out.open("r+b") as f:
                f.truncate(size)
        return (f"it holds the {done} rows scored so far (the last chunk was not committed), and rerunning the "
                "same command resumes after them")

    with no_space_left(out, left, fix="choose another --out on a disk with room (that starts over)"):
        if fresh:
            out.parent.mkdir(parents=True, exist_ok=True)
            commit(0, 0)  # first, so that a kill before the first chunk is committed still leaves a resumable job
            out.write_bytes(b"")
        with out.open("ab") as f:
            for rows, texts, header in chunks(inp, text_col, chunk_rows, done):
                proba = clf.predict_proba(texts, batch_size=batch_size)
                f.write(format_chunk(fmt, rows, proba, labels, header, write_header))
                write_header = False
                f.flush()
                os.fsync(f.fileno())
                commit(done + len(rows), f.tell())
                done += len(rows)
                new += len(rows)
                size = f.tell()
                bar.update(len(rows))
        if write_header and fmt != "jsonl":  # empty input: still write the header
            with out.open("ab") as f:
                f.write((("," if fmt == "csv" else "\t").join([text_col] + extra) + "\n").encode())
                size = f.tell()
        commit(done, size, complete=True)
    bar.close()
    return {"rows": done, "new_rows": new, "resumed_from": done - new, "output": str(out)}
