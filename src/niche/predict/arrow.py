"""Arrow/Parquet pieces of the Ray engine: a scored chunk as an Arrow table, its IPC bytes, and the
in-order writer of ``OUTPUT.partial``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError


def arrow_chunk(rows: list[dict[str, Any]], proba: Any, labels: list[str], header: list[str], in_schema: Any = None) -> Any:
    """A scored chunk as an Arrow table, with the columns of :func:`niche.predict.format_chunk`.

    Input columns keep their Parquet types (``in_schema``); CSV/TSV values stay strings.
    Probabilities are rounded to 6 decimals, as in the local engine's JSONL output.
    """
    import pyarrow as pa

    extra = ["predicted", "confidence"] + [f"p_{lab}" for lab in labels]
    cols = [c for c in header if c not in extra]
    if in_schema is not None:
        t = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows],
                                 schema=pa.schema([in_schema.field(c) for c in cols]))
    else:
        t = pa.Table.from_pylist([{c: r.get(c, "") for c in cols} for r in rows])
    top = proba.argmax(1)
    t = t.append_column("predicted", pa.array([labels[int(k)] for k in top], pa.string()))
    t = t.append_column("confidence", pa.array([round(float(p[k]), 6) for p, k in zip(proba, top)], pa.float64()))
    for j, lab in enumerate(labels):
        t = t.append_column(f"p_{lab}", pa.array([round(float(x), 6) for x in proba[:, j]], pa.float64()))
    return t


def ipc_bytes(t: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


class ChunkWriter:
    """Appends chunks, in order, to ``OUTPUT.partial`` (one Parquet row group per chunk)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.f = None if fmt == "parquet" else path.open("wb")
        self.pq: Any = None

    def write(self, payload: bytes) -> None:
        if self.f is not None:
            self.f.write(payload)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
        if self.pq is None:
            self.schema = t.schema  # the first chunk's schema is the file's
            self.pq = pq.ParquetWriter(self.path, t.schema)
        elif t.schema != self.schema:
            try:
                t = t.select(self.schema.names).cast(self.schema)
            except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise DataError(f"the input's columns change type or names from row to row ({e}); Parquet output "
                                "needs one schema. Write .csv or .jsonl instead.") from None
        self.pq.write_table(t)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.pq is not None:
            self.pq.close()
