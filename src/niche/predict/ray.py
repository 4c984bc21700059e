"""Batch scoring on a Ray cluster (``niche predict MODEL INPUT --out OUTPUT --engine ray``).

The same job as :func:`niche.predict.predict_file`, spread over a pool of Ray actors, each holding
one copy of the model, with the same output bytes:

1. **Read** (one Ray Data read task, pinned to the driver's node, so the input needs no shared file
   system): the input is parsed by niche's own readers into the *same chunks* as the local engine
   (``chunk_rows`` rows, same validation and error messages). Each chunk becomes one Ray Data row
   ``{chunk, first_row, n, payload}`` where ``payload`` is ``(rows, texts, header)`` as JSON (CSV/TSV/JSONL
   input) or as an Arrow IPC table that keeps the column types (Parquet input); never pickle.
2. **Score** (``map_batches`` with a callable class, ``batch_size=1`` = one chunk per call, a fixed
   pool of ``num_workers`` actors): ``predict_proba`` on the chunk's texts, exactly as the local
   engine calls it, then the chunk is formatted by the local engine's own writer
   (:func:`niche.predict.format_chunk`) into CSV/TSV/JSONL bytes, or into an Arrow table for
   Parquet output. The model directory is shipped through the object store, so workers on other
   nodes need no copy of it.
3. **Write** (the driver): chunks arrive in input order (``preserve_order``) and are appended to
   one output file, ``OUTPUT.partial`` until the job has finished, then renamed to ``OUTPUT``. The
   driver checks that chunk numbers and row offsets are contiguous, so a lost or duplicated chunk
   fails the job instead of corrupting the output.

Fault tolerance: a scoring actor that dies (killed, OOM) is restarted by Ray (``max_restarts``) and
its unfinished chunks are retried on it (``max_task_retries``); a chunk is only written once the
driver receives it, so a retry cannot duplicate rows. An interrupted *driver* leaves no partial
output: rerun the command (there is no row-level resume, unlike the local engine).

Example:
    >>> from niche.predict import predict_file_ray
    >>> predict_file_ray("runs/sparse", "big.csv", "big.scored.csv", num_workers=2)   # doctest: +SKIP
    {'rows': 20000, 'cluster': 'local Ray cluster (2 CPUs)', ...}
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..data import detect_format, iter_rows
from ..errors import ConfigError, DataError, NicheError, ResumeError
from .arrow import ChunkWriter, arrow_chunk, ipc_bytes
from .files import chunks, format_chunk

log = logging.getLogger(__name__)

OUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
INSTALL_HINT = "pip install 'niche[ray]'"


def import_ray() -> Any:
    """Import Ray lazily: it is an optional extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed ({e.msg}). "
                          f"Install it with: {INSTALL_HINT}  (or use the default --engine local).") from None
    return ray


# -- the three stages ------------------------------------------------------------------------------

_TEXT_COL = "__niche_chunk_text__"  # the texts ride beside a Parquet chunk's own columns


def _encode_chunk(rows: list[dict[str, Any]], texts: list[str], header: list[str], schema: Any = None) -> bytes:
    """A chunk as bytes an actor decodes without unpickling: JSON for rows read from CSV/TSV/JSONL
    (they came from text, so JSON gives them back exactly), an Arrow IPC table with the file's
    schema for rows read from Parquet (so their types survive)."""
    if schema is None:
        return json.dumps({"rows": rows, "texts": texts, "header": header}, ensure_ascii=False).encode("utf-8")
    import pyarrow as pa

    t = pa.Table.from_pylist(rows, schema=schema)
    return ipc_bytes(t.append_column(_TEXT_COL, pa.array(texts, pa.string())))


def _decode_chunk(payload: bytes, parquet: bool) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    if not parquet:
        d = json.loads(payload)
        return d["rows"], d["texts"], d["header"]
    import pyarrow as pa

    t = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    texts = t.column(_TEXT_COL).to_pylist()
    t = t.drop_columns([_TEXT_COL])
    return t.to_pylist(), texts, t.column_names


def _make_source(path: Path, text_col: str, chunk_rows: int) -> Any:
    """A Ray Data datasource yielding the local engine's chunks, one Ray row per chunk."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read() -> Iterator[pa.Table]:
        schema = None
        if detect_format(path) == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path).remove_metadata()
        first = 0
        for k, (rows, texts, header) in enumerate(chunks(path, text_col, chunk_rows, 0)):
            yield pa.table({"chunk": [k], "first_row": [first], "n": [len(rows)],
                            "payload": pa.array([_encode_chunk(rows, texts, header, schema)], pa.large_binary())})
            first += len(rows)

    class ChunkSource(Datasource):
        # False: Ray launches the read task on the driver's node, where the input file is.
        supports_distributed_reads = False

        def estimate_inmemory_data_size(self) -> int:
            return path.stat().st_size

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[Any]:
            meta = BlockMetadata(num_rows=None, size_bytes=path.stat().st_size, exec_stats=None,
                                 input_files=[str(path)])
            return [ReadTask(read, meta)]  # one streaming reader: parsing is cheap next to scoring

    return ChunkSource()


def _pack_dir(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


class ChunkScorer:
    """The Ray Data callable class: one instance (one model copy) per actor.

    Args:
        model_files: ``[ObjectRef]`` of ``{relative path: bytes}`` of the model directory (a list so
            Ray passes the reference through instead of resolving it).
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``parquet``.
        batch_size: texts per forward pass, as ``--batch-size``.
        in_schema: the Arrow schema of a Parquet input (serialized), so Parquet output keeps its types.
        threads: torch intra-op threads in this actor.
        parquet_input: the chunks come from a Parquet file (Arrow payloads, see ``_encode_chunk``).
    """

    def __init__(self, model_files: list[Any], fmt: str, batch_size: int, in_schema: bytes | None,
                 threads: int = 1, parquet_input: bool = False) -> None:
        import ray
        import torch

        from ..classifier import TextClassifier

        torch.set_num_threads(threads)

        files = ray.get(model_files[0])
        self._tmp = tempfile.TemporaryDirectory(prefix="niche-ray-model-")
        for rel, data in files.items():
            p = Path(self._tmp.name) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        self.clf = TextClassifier.load(self._tmp.name)
        self.fmt, self.batch_size, self.parquet_input = fmt, batch_size, parquet_input
        self.in_schema = None
        if in_schema is not None:
            import pyarrow as pa

            self.in_schema = pa.ipc.read_schema(pa.py_buffer(in_schema))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        payloads = []
        for k, payload in zip(batch["chunk"].to_pylist(), batch["payload"].to_pylist()):
            rows, texts, header = _decode_chunk(payload, parquet=self.parquet_input)
            proba = self.clf.predict_proba(texts, batch_size=self.batch_size)
            if self.fmt == "parquet":
                payloads.append(ipc_bytes(arrow_chunk(rows, proba, self.clf.classes_, header, self.in_schema)))
            else:
                payloads.append(format_chunk(self.fmt, rows, proba, self.clf.classes_, header, write_header=k == 0))
        return pa.table({"chunk": batch["chunk"], "first_row": batch["first_row"], "n": batch["n"],
                         "payload": pa.array(payloads, pa.large_binary())})


# -- the job -----------------------------------------------------------------------------------------

def _connect(ray: Any, address: str | None, num_cpus: int | None) -> tuple[bool, str]:
    """Join ``address`` or start a local cluster; returns (we started it, description)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage over the network
    if ray.is_initialized():
        desc = f"the Ray cluster this process is already connected to ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
        return False, desc
    if address:
        log.info("ray: connecting to the existing cluster at %s", address)
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return True, f"existing Ray cluster at {address} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    n = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    log.info("ray: starting a local cluster with %d CPUs (no dashboard, loopback only)", n)
    ray.init(num_cpus=n, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level=logging.WARNING)
    return True, f"local Ray cluster ({n} CPUs)"


def _niche_error(e: BaseException) -> NicheError | None:
    """The NicheError (e.g. a DataError with a line number) behind Ray's wrapped exceptions, if any."""
    seen: set[int] = set()
    stack: list[Any] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, NicheError):  # Ray re-raises it as a class deriving from both RayTaskError and it
            cls = next(c for c in type(x).__mro__ if issubclass(c, NicheError) and c.__module__.startswith("niche"))
            return cls(*x.args)
        stack += [getattr(x, "cause", None), x.__cause__, x.__context__]
    return None


def _write_in_order(ds: Any, writer: "ChunkWriter", bar: Any, on_chunk: Callable[[int], None] | None,
                    ) -> tuple[int, int, float | None]:
    """Append the scored chunks to ``writer`` in input order; (rows, chunks, time of the first result).
    Never writes a chunk twice or skips one."""
    done, expect, t_first = 0, 0, None
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        for k, first, n, payload in zip(*(batch[c].to_pylist() for c in ("chunk", "first_row", "n", "payload"))):
            if k != expect or first != done:
                raise RuntimeError(f"Ray returned chunk {k} (rows from {first}) where chunk {expect} (rows from "
                                   f"{done}) was expected; the output would lose or duplicate rows.")
            t_first = t_first or time.perf_counter()
            writer.write(payload)
            done, expect = done + n, expect + 1
            bar.update(n)
            if on_chunk is not None:
                on_chunk(done)
    return done, expect, t_first


def _check_job(inp: Path, out: Path, model_dir: Path, text_col: str, overwrite: bool, num_workers: int | None,
               chunk_rows: int, batch_size: int, threads: int) -> tuple[str, str, list[str], bytes | None]:
    """Refuse a bad job before any cluster starts: (output format, input format, labels, Parquet schema)."""
    from ..classifier import TextClassifier

    fmt = OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise DataError(f"{out}: unsupported output extension {out.suffix!r} for --engine ray; use "
                        f"{', '.join(OUT_FORMATS)}.")
    if not inp.is_file():
        raise DataError(f"{inp}: file not found. Check the path.")
    in_fmt = detect_format(inp)
    if out.exists() and not overwrite:
        raise ResumeError(f"{out} already exists; the Ray engine does not resume partial outputs. Pass --overwrite "
                          "to replace it, or choose another --out.")
    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"--num-workers must be at least 1, got {num_workers}.")
    if chunk_rows < 1 or batch_size < 1 or threads < 1:
        raise ConfigError("chunk_rows, threads and --batch-size must be at least 1.")
    labels = TextClassifier.load(model_dir).classes_  # fails early, with the fix, on a bad model dir
    header: list[str] = []
    for _, rec, header in iter_rows(inp):  # the text column exists? (first row only; the reader checks all)
        if text_col not in rec:
            raise DataError(f"{inp}: column {text_col!r} not found; columns are: {', '.join(map(str, header))}. "
                            "Pass --text-col with one of them.")
        break
    in_schema = None
    if in_fmt == "parquet" and fmt == "parquet":
        import pyarrow.parquet as pq

        in_schema = pq.read_schema(inp).serialize().to_pybytes()
    return fmt, in_fmt, labels, in_schema


def predict_file_ray(
    model_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    text_col: str = "text",
    batch_size: int = 32,
    num_workers: int | None = None,
    address: str | None = None,
    chunk_rows: int = 2048,
    overwrite: bool = False,
    progress: bool = True,
    max_retries: int = 3,
    threads: int = 1,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score every row of ``input_path`` into ``output_path`` on Ray; same output as the local engine.

    Args:
        model_dir: a saved niche model directory (shipped to the workers through Ray's object store).
        input_path: CSV/TSV/JSONL/Parquet file on this machine.
        output_path: ``.csv``, ``.tsv``, ``.jsonl`` (byte-identical to ``predict_file``) or ``.parquet``
            (same columns; probabilities as float64 rounded to 6 decimals).
        text_col: the column holding the text.
        batch_size: texts per forward pass inside a worker.
        num_workers: scoring actors, one model copy each, 1 CPU each (default: the cluster's CPUs).
        address: an existing cluster (``ray start --head`` prints it, e.g. ``127.0.0.1:6379``); ``None``
            starts a local cluster limited to this machine's CPUs and stops it afterwards. If this
            process is already connected to Ray (``ray.init`` was called), that cluster is used.
        chunk_rows: rows per chunk, the unit of work and of retry; must equal the local engine's
            ``chunk_rows`` (default 2048) for transformer outputs to be byte-identical.
        overwrite: replace an existing output.
        max_retries: restarts of a dead actor and retries of each of its chunks before the job fails.
        threads: torch threads per actor (each actor reserves 1 CPU). Transformer probabilities can differ
            in the last bit with the thread count (float sums are split differently), which flips a 6th
            decimal in a few rows per hundred to thousand; for byte-identical output pass the local engine's
            ``torch.get_num_threads()``. Sparse models do not depend on it.
        on_chunk: called on the driver after each chunk is written, with the rows written so far.

    Returns:
        ``{"rows", "output", "engine", "cluster", "num_workers", "setup_s", "init_s", "first_result_s",
        "seconds", "rows_per_s", "input_format"}``: ``setup_s`` is input checks + loading the model on
        the driver, ``init_s`` the cluster start/connect time, ``first_result_s`` the time from then to
        the first scored chunk (actor start + model load in the actor + one chunk); ``seconds`` is all of it.

    Raises:
        ConfigError: Ray is not installed, or a bad setting. DataError: a bad input row (as locally).
        ResumeError: the output exists and ``overwrite`` is false.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    inp, out, model_dir = Path(input_path), Path(output_path), Path(model_dir)
    fmt, in_fmt, labels, in_schema = _check_job(inp, out, model_dir, text_col, overwrite, num_workers, chunk_rows,
                                                batch_size, threads)

    ray = import_ray()
    from ray.data import DataContext

    t_setup = time.perf_counter()
    started, cluster = _connect(ray, address, None)
    t_init = time.perf_counter()
    log.info("ray: scoring on the %s", cluster)
    partial = out.with_name(out.name + ".partial")
    writer = None
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size)
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ctx.execution_options.preserve_order = True  # chunks come back in input order
        ctx.enable_progress_bars = False  # niche shows its own (rows written)
        # Each chunk is one Ray row and must stay one block (one task, one retry unit): without this, the
        # reader's output is coalesced into large blocks and nothing is scored before the file is read.
        ctx.target_max_block_size = 1
        model_ref = ray.put(_pack_dir(model_dir))
        # num_cpus=0: the reader is light and must not wait for a CPU held by a scoring actor
        ds = ray.data.read_datasource(_make_source(inp.resolve(), text_col, chunk_rows), num_cpus=0,
                                      override_num_blocks=1)  # one streaming reader, blocks not re-split
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing actor options such as max_restarts through **ray_remote_args
            # (removal announced for 2.64, hence `ray<2.64` in the extra) but has no named replacement;
            # its default is unbounded restarts, which would loop forever on an actor that always crashes.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                ChunkScorer, fn_constructor_args=([model_ref], fmt, batch_size, in_schema, threads,
                                                     in_fmt == "parquet"),
                batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                max_restarts=max_retries, max_task_retries=max_retries)  # a killed actor restarts; its chunks rerun
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = ChunkWriter(partial, fmt)
        bar = tqdm(desc=f"predicting (ray, {workers} workers)", unit="row", disable=not progress, dynamic_ncols=True)
        done, expect, t_first = _write_in_order(ds, writer, bar, on_chunk)
        bar.close()
        if expect == 0:  # empty input: header only, like the local engine
            extra = ["predicted", "confidence"] + [f"p_{lab}" for lab in labels]
            if fmt in ("csv", "tsv"):
                writer.write((("," if fmt == "csv" else "\t").join([text_col] + extra) + "\n").encode())
        writer.close()
        writer = None
        os.replace(partial, out)
    except Exception as e:
        err = _niche_error(e)
        if err is not None:
            raise err from None
        raise
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size = saved
        if started:
            ray.shutdown()
    t_end = time.perf_counter()
    return {"rows": done, "output": str(out), "engine": "ray", "cluster": cluster, "num_workers": workers,
            "setup_s": t_setup - t_start, "init_s": t_init - t_setup, "first_result_s": (t_first or t_end) - t_init, "seconds": t_end - t_start,
            "rows_per_s": done / max(t_end - t_start, 1e-9), "input_format": in_fmt}


__all__ = ["predict_file_ray", "import_ray", "arrow_chunk", "ChunkScorer", "INSTALL_HINT"]
