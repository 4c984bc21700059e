"""The ``niche`` command line: thin typer adapters over the library.

Every command catches :class:`~niche.errors.NicheError`, prints its message (which says the fix)
and exits non-zero; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import NicheError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="niche: specialized text classifiers from pretrained language models, offline, on CPU.")
data_app = typer.Typer(no_args_is_help=True, help="Look at data files before training.")
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NicheError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]; rerun with --resume to continue where it stopped.")
            raise typer.Exit(130) from None

    return wrapper


def metrics_side_by_side(named: dict[str, dict[str, Any]], title: str = "") -> Table:
    table = Table(title=title or None)
    table.add_column("metric")
    for name in named:
        table.add_column(name, justify="right")
    rows = [("accuracy", lambda m: m["accuracy"])] + [
        (f"{a} {k}", (lambda a, k: lambda m: m[a][k])(a, k)) for a in ("macro", "weighted") for k in ("precision", "recall", "f1")
    ] + [("micro f1", lambda m: m["micro"]["f1"]), ("examples", lambda m: m["n"])]
    for label, get in rows:
        table.add_row(label, *[f"{get(m):.4f}" if isinstance(get(m), float) else str(get(m)) for m in named.values()])
    return table


@app.command()
@_friendly
def train(
    data: Annotated[Path, typer.Option("--data", help="Training file (CSV, TSV, JSONL or Parquet).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (atomically).")],
    eval_path: Annotated[Optional[Path], typer.Option("--eval", help="Dev file; default: a stratified split of --data.")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    family: Annotated[str, typer.Option("--family", help="transformer | sparse | scratch (random init, tokenizer learned on --data)")] = "transformer",
    arch: Annotated[Optional[str], typer.Option("--arch", help="scratch family: transformer | bilstm.")] = None,
    vectors: Annotated[Optional[Path], typer.Option("--vectors", help="scratch family: static word vectors (word2vec/GloVe text) to initialize embeddings.")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="scratch family: encoder / LSTM layers.")] = None,
    hidden: Annotated[Optional[int], typer.Option("--hidden", help="scratch family: hidden size.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="scratch family: WordPiece vocabulary learned on --data.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base encoder: local dir or HF name (default all-MiniLM-L6-v2, offline).")] = None,
    max_len: Annotated[Optional[int], typer.Option("--max-len", help="Max tokens per text.")] = None,
    truncation: Annotated[Optional[str], typer.Option("--truncation", help="Long-text policy: head | tail | head+tail.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    head_lr_mult: Annotated[Optional[float], typer.Option("--head-lr-mult", help="LR multiplier for the new classification head.")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option("--warmup-ratio")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Early-stopping patience (evaluations); 0 = off.")] = None,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every", help="Evaluate every N steps (0 = each epoch).")] = None,
    class_weights: Annotated[bool, typer.Option("--class-weights", help="Weight the loss by inverse class frequency.")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Checkpoint every N steps.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Default: OUT.checkpoints")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    dev_fraction: Annotated[float, typer.Option("--dev-fraction", help="Held-out share when --eval is not given.")] = 0.1,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Skip (and count) rows with empty text instead of failing.")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (0 = default).")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Micro-batches per optimizer step (same gradient, less memory).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32 | bf16 | fp16 (fp16: CUDA only).")] = None,
    test_path: Annotated[Optional[Path], typer.Option("--test", help="Also evaluate on this file; report in OUT/eval-test/.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a classifier on a labeled file and save it as a model directory."""
    from ..classifier import TextClassifier
    from ..data import read_labeled

    names = {"base": base, "max_len": max_len, "truncation": truncation, "epochs": epochs, "batch_size": batch_size,
             "lr": lr, "head_lr_mult": head_lr_mult, "warmup_ratio": warmup_ratio, "patience": patience, "eval_every": eval_every, "checkpoint_every": checkpoint_every,
             "seed": seed, "device": device, "threads": threads, "grad_accum": grad_accum, "precision": precision}
    if class_weights:
        names["class_weights"] = True
    scratch_names = {"arch": arch, "vectors": str(vectors) if vectors else None, "layers": layers, "hidden": hidden,
                     "vocab_size": vocab_size}
    if family == "scratch":
        names |= scratch_names
        if base is not None:
            err.print("[yellow]note:[/] --base does not apply to the scratch family (it starts from random weights); ignored.")
            names.pop("base")
    elif any(v is not None for v in scratch_names.values()):
        from ..errors import ConfigError

        given = ", ".join("--" + k.replace("_", "-") for k, v in scratch_names.items() if v is not None)
        raise ConfigError(f"{given} apply to --family scratch only (this run is --family {family}).")
    params = {k: v for k, v in names.items() if v is not None}
    if family == "sparse":
        ignored = sorted(set(params) - {"seed"})
        if ignored:
            err.print(f"[yellow]note:[/] {', '.join(ignored)} do not apply to the sparse family and are ignored.")
        params = {k: v for k, v in params.items() if k == "seed"}
    train_data = read_labeled(data, text_col, label_col, skip_empty=skip_empty)
    if train_data.skipped:
        err.print(f"[yellow]skipped {train_data.skipped} rows with empty text[/] in {data}")
    dev = read_labeled(eval_path, text_col, label_col, skip_empty=skip_empty) if eval_path else None
    test = read_labeled(test_path, text_col, label_col, skip_empty=skip_empty) if test_path else None
    ckpt = checkpoint_dir or out_dir.with_name(out_dir.name + ".checkpoints")
    clf = TextClassifier(family, **params)
    clf.fit(train_data, eval_data=dev, dev_fraction=dev_fraction, checkpoint_dir=ckpt if family != "sparse" else None,
            resume=resume, progress=not quiet)
    from .. import distributed

    if not distributed.is_main():  # under torchrun: rank 0 evaluates, saves and reports
        distributed.shutdown()
        return
    reports = {"dev": clf.info_["metrics"]["dev"]}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="niche-eval-") as tmp:
        if test is not None:
            reports["test"] = clf.evaluate(test, out_dir=Path(tmp) / "eval-test")
            clf.info_["metrics"]["test"] = reports["test"]
        clf.save(out_dir)
        if test is not None:
            shutil.move(str(Path(tmp) / "eval-test"), str(out_dir / "eval-test"))
    if family != "sparse":
        shutil.rmtree(ckpt, ignore_errors=True)  # the model is safely saved; checkpoints are no longer needed
    out.print(metrics_side_by_side(reports, title=f"{family} model -> {out_dir}"))
    out.print(f"trained in {clf.info_['training']['seconds']:.1f} s; saved to [bold]{out_dir}[/]")
    distributed.shutdown()


@app.command()
@_friendly
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[Path, typer.Argument(help="Labeled file to score.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write metrics.json, confusion_matrix.png, misclassified.csv, report.md here.")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Evaluate a model directory on a labeled file."""
    from tqdm.auto import tqdm

    from ..classifier import TextClassifier
    from ..data import read_labeled

    clf = TextClassifier.load(model)
    ds = read_labeled(data, text_col, label_col)
    with tqdm(total=len(ds), desc="evaluating", unit="text", disable=quiet) as bar:
        metrics = clf.evaluate(ds, out_dir=out_dir, batch_size=batch_size, progress=bar)
    if as_json:
        print(json.dumps(metrics, indent=2, ensure_ascii=False))
        return
    out.print(metrics_side_by_side({data.name: metrics}, title=f"{model.name} ({clf.family})"))
    if out_dir:
        out.print(f"report written to [bold]{out_dir}[/]")


@app.command()
@_friendly
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    input_path: Annotated[Optional[Path], typer.Argument(help="CSV/TSV/JSONL/Parquet file to score.")] = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="A text to classify (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", help="Output .csv/.tsv/.jsonl (resumes if interrupted).")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels shown per --text.")] = 3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output instead of resuming.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    engine: Annotated[str, typer.Option("--engine", help="local, or ray: score the file on a Ray cluster (pip install 'niche[ray]'; also writes .parquet).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="With --engine ray: an existing cluster (e.g. 127.0.0.1:6379); default: start a local one.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", help="With --engine ray: scoring actors, one model copy each (default: the cluster's CPUs).")] = None,
) -> None:
    """Classify --text strings, or a whole file into --out."""
    from ..classifier import TextClassifier
    from ..errors import ConfigError

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r} is not known; use --engine local or --engine ray.")
    if engine == "local" and (address is not None or num_workers is not None):
        raise ConfigError("--address and --num-workers apply to --engine ray only; add --engine ray.")
    if engine == "ray" and input_path is not None and output is not None:
        from ..predict_ray import predict_file_ray

        res = predict_file_ray(model, input_path, output, text_col=text_col, batch_size=batch_size,
                               num_workers=num_workers, address=address, overwrite=overwrite, progress=not quiet)
        out.print(f"{res['rows']} rows -> {output} on the {res['cluster']} with {res['num_workers']} workers "
                  f"(start-up {res['init_s'] + res['first_result_s']:.1f} s, {res['seconds']:.1f} s in all)")
        return
    if (text is None) == (input_path is None):
        raise ConfigError("give either --text \"...\" or an INPUT file with --out OUTPUT (not both, not neither).")
    if input_path is not None and output is None:
        raise ConfigError(f"scoring {input_path} needs --out OUTPUT (.csv, .tsv or .jsonl).")
    clf = TextClassifier.load(model)
    if text is not None:
        proba = clf.predict_proba(text)
        for t, p in zip(text, proba):
            order = p.argsort()[::-1][:top_k]
            out.print(f"[bold]{clf.classes_[order[0]]}[/]\t" + "  ".join(f"{clf.classes_[i]}={p[i]:.4f}" for i in order)
                      + f"\t{t[:80]!r}", highlight=False)
        return
    from ..predict import predict_file

    res = predict_file(clf, input_path, output, model_dir=str(model), text_col=text_col, batch_size=batch_size,
                       overwrite=overwrite, progress=not quiet)
    note = f" (resumed after {res['resumed_from']} rows)" if res["resumed_from"] else ""
    out.print(f"{res['rows']} rows -> {output}{note}")


def _read_dev(eval_path: Optional[Path], text_col: str, label_col: str, command: str) -> Any:
    """The labeled dev file every compress command's guard measures on (required)."""
    from ..compress import require_dev
    from ..data import read_labeled

    return require_dev(read_labeled(eval_path, text_col, label_col) if eval_path else None, command)


def _guard_opts(max_drop: float, threads: int) -> Any:
    from ..compress import GuardConfig

    return GuardConfig(max_drop=max_drop, threads=threads)


def _print_compression(rep: dict[str, Any]) -> None:
    t = Table(title=f"{rep['command']} (dev: {Path(rep['dev']).name}, {rep['dev_rows']} rows)")
    for c in ("model", "accuracy", "macro-F1", "docs/s (b32)", "speed-up", "p50 ms (b1)", "MB"):
        t.add_column(c, justify="right" if c != "model" else "left")
    base = next(iter(rep["models"].values()))
    for name, r in rep["models"].items():
        t.add_row(name, f"{100 * r['accuracy']:.2f}", f"{100 * r['macro_f1']:.2f}", f"{r['docs_per_s']:.1f}",
                  f"{r['docs_per_s'] / base['docs_per_s']:.2f}x", f"{r['p50_ms']:.1f}", f"{r['size_mb']:.1f}")
    out.print(t)
    if rep.get("parity"):
        out.print(f"parity: label agreement {100 * rep['parity']['label_agreement']:.2f} %, "
                  f"max |delta p| {rep['parity']['max_abs_prob_diff']:.5f}")
    out.print(f"[green]passed the guard[/]; written to [bold]{rep['out']}[/] (report: compression_report.md)")


MaxDrop = Annotated[float, typer.Option("--max-drop", help="Refuse if dev accuracy drops more than this many points.")]
Threads = Annotated[int, typer.Option("--threads", help="CPU threads while measuring (0 = default); recorded in the report.")]
Fuse = Annotated[bool, typer.Option("--fuse/--no-fuse", help="Fuse attention, LayerNorm and GELU with onnxruntime's transformer optimizer (BERT-style models).")]
EvalFile = Annotated[Optional[Path], typer.Option("--eval", help="Labeled dev file the guard measures on (required).")]


@app.command()
@_friendly
def export(
    model: Annotated[Path, typer.Argument(help="fp32 PyTorch transformer model directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the exported model.")],
    eval_path: EvalFile = None,
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Quantize the weights to int8 (onnxruntime dynamic).")] = False,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    max_drop: MaxDrop = 1.0,
    threads: Threads = 0,
    fuse: Fuse = True,
) -> None:
    """Export to ONNX (fp32 or --int8) with a parity check and the accuracy/speed guard."""
    from ..compress import export as do_export
    from ..errors import ConfigError

    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported; use --format onnx.")
    dev = _read_dev(eval_path, text_col, label_col, "export")
    _print_compression(do_export(model, out_dir, dev, int8=int8, guard=_guard_opts(max_drop, threads), fuse=fuse))


@app.command()
@_friendly
def quantize(
    model: Annotated[Path, typer.Argument(help="fp32 PyTorch transformer model directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the int8 model.")],
    eval_path: EvalFile = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    max_drop: MaxDrop = 1.0,
    threads: Threads = 0,
    fuse: Fuse = True,
) -> None:
    """int8 dynamic quantization (onnxruntime), guarded by accuracy, speed and parity."""
    from ..compress import quantize as do_quantize

    dev = _read_dev(eval_path, text_col, label_col, "quantize")
    _print_compression(do_quantize(model, out_dir, dev, guard=_guard_opts(max_drop, threads), fuse=fuse))


@app.command()
@_friendly
def distill(
    teacher: Annotated[Path, typer.Option("--teacher", help="Fine-tuned teacher model directory.")],
    data: Annotated[Path, typer.Option("--data", help="Labeled training file.")],
    student: Annotated[str, typer.Option("--student", help="layers:K | sparse | a base model name/dir.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the student.")],
    eval_path: EvalFile = None,
    unlabeled: Annotated[Optional[Path], typer.Option("--unlabeled", help="Extra in-domain texts: one per line, or a CSV/JSONL column (--text-col).")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the distillation term (1 - alpha on labels).")] = 0.5,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature of the KL term.")] = 2.0,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr")] = None,
    max_len: Annotated[Optional[int], typer.Option("--max-len")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Student training precision: fp32, bf16 (CPU/GPU) or fp16 (CUDA).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted student run.")] = False,
    max_drop: MaxDrop = 1.0,
    threads: Threads = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Knowledge distillation into a smaller/faster student, guarded against the teacher."""
    from ..data import read_labeled
    from ..distill import DistillConfig, read_unlabeled
    from ..distill import distill as do_distill

    train_data = read_labeled(data, text_col, label_col)
    dev = _read_dev(eval_path, text_col, label_col, "distill")
    extra = read_unlabeled(unlabeled, text_col) if unlabeled else None
    params = {k: v for k, v in {"epochs": epochs, "lr": lr, "max_len": max_len, "batch_size": batch_size,
                                "seed": seed, "precision": precision}.items() if v is not None}
    rep = do_distill(teacher, train_data, dev, out_dir, DistillConfig(student, alpha, temperature), unlabeled=extra,
                     params=params, guard=_guard_opts(max_drop, threads), resume=resume, progress=not quiet)
    from .. import distributed

    if rep.get("verdict") is not None:  # None: a non-zero rank under torchrun (rank 0 reports)
        _print_compression(rep)
    distributed.shutdown()


@data_app.command("inspect")
@_friendly
def data_inspect(
    path: Annotated[Path, typer.Argument(help="Labeled file.")],
    eval_path: Annotated[Optional[Path], typer.Option("--eval", help="An evaluation file to check for overlap.")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Base model whose tokenizer counts tokens; 'none' = whitespace.")] = "all-MiniLM-L6-v2",
    skip_empty: Annotated[bool, typer.Option("--skip-empty")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Class counts, lengths, duplicates, train/eval overlap and warnings."""
    from ..data import inspect

    tok = None
    if tokenizer != "none":
        from transformers import AutoTokenizer

        from ..families.transformer import resolve_base

        tok = AutoTokenizer.from_pretrained(resolve_base(tokenizer))
    rep = inspect(path, eval_path, text_col, label_col, tokenizer=tok, skip_empty=skip_empty)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
        return
    out.print(f"[bold]{rep.file}[/]: {rep.rows} rows, {len(rep.class_counts)} classes"
              + (f", {rep.skipped_empty} empty skipped" if rep.skipped_empty else ""))
    t = Table(title="class counts")
    t.add_column("label")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    for lab, n in rep.class_counts.items():
        t.add_row(lab, str(n), f"{n / rep.rows:.1%}")
    out.print(t)
    lt = Table(title="text length")
    lt.add_column("unit")
    for k in rep.chars:
        lt.add_column(k, justify="right")
    lt.add_row("characters", *[f"{v:.0f}" for v in rep.chars.values()])
    lt.add_row(f"tokens ({Path(rep.tokenizer).name})", *[f"{v:.0f}" for v in rep.tokens.values()])
    out.print(lt)
    out.print(f"duplicate texts within the file: {rep.duplicate_texts} (texts with conflicting labels: {rep.conflicting_duplicates})")
    if rep.eval_file:
        out.print(f"{rep.eval_file}: {rep.eval_rows} rows, {rep.eval_duplicate_texts} duplicates; "
                  f"texts in both files: {rep.overlap_texts}")
    for w in rep.warnings:
        out.print(f"[yellow]warning:[/] {w}")


@app.command()
@_friendly
def serve(
    model_dirs: Annotated[list[str], typer.Argument(help="Model directories, each served under its directory name or as NAME=DIR.")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="File holding the API key required on /v1/*.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most texts per forward pass.")] = 64,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="Batch-forming wait under load.")] = 5.0,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests per model before 429.")] = 1024,
    max_texts: Annotated[int, typer.Option("--max-texts", help="Most texts per request.")] = 256,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Most characters per text.")] = 20000,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Allow this origin (repeatable); CORS is off by default.")] = None,
    log_texts: Annotated[bool, typer.Option("--log-texts", help="Log request texts (off by default).")] = False,
) -> None:
    """Serve model directories over HTTP (FastAPI + uvicorn) with micro-batching; SIGHUP reloads."""
    import uvicorn

    from ..config import ServeConfig
    from ..errors import ConfigError
    from ..serving.app import create_app

    models: dict[str, str] = {}
    for spec in model_dirs:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
        if name in models:
            raise ConfigError(f"two models are named {name!r}; use NAME=DIR to tell them apart.")
        if not Path(path).is_dir():
            raise ConfigError(f"{path}: model directory not found.")
        models[name] = path
    key = None
    if api_key_file is not None:
        if not api_key_file.is_file():
            raise ConfigError(f"{api_key_file}: API key file not found.")
        key = api_key_file.read_text().strip()
    cfg = ServeConfig(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                      max_texts=max_texts, max_chars=max_chars, api_key=key, cors_origins=tuple(cors_origin or ()),
                      log_texts=log_texts)
    app_ = create_app(models, cfg)
    out.print(f"serving {', '.join(f'{n} ({p})' for n, p in models.items())} on http://{host}:{port}  (docs: /docs)")
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=False)


def _bundled_banking77() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        d = root / "data" / "banking77"
        if (d / "train.csv").is_file() and (d / "test.csv").is_file():
            return d
    from ..errors import DataError

    raise DataError("bundled data/banking77 not found; run `niche demo` from the niche repository root, "
                    "or pass --data-dir DIR containing train.csv and test.csv.")


@app.command()
@_friendly
def demo(
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with train.csv/test.csv (default: bundled banking77).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where models and reports go.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option("--epochs")] = 5,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    retrain: Annotated[bool, typer.Option("--retrain", help="Retrain even if finished demo models exist.")] = False,
) -> None:
    """The main job: fine-tune MiniLM and the sparse model on banking77, compare them on its test set."""
    import time

    from tqdm.auto import tqdm

    from ..classifier import TextClassifier
    from ..data import read_labeled

    d = data_dir or _bundled_banking77()
    train_data, test = read_labeled(d / "train.csv"), read_labeled(d / "test.csv")
    out.print(f"[bold]niche demo[/]: {len(train_data)} training / {len(test)} test texts, "
              f"{len(train_data.classes)} intents from {d} (10% of train held out as dev)")
    specs = {"sparse": {}, "transformer": {"epochs": epochs, "lr": lr}}
    reports, speed, models = {}, {}, {}
    for family, params in specs.items():
        mdir = out_dir / family
        clf = None
        if mdir.is_dir() and not retrain:
            try:
                old = TextClassifier.load(mdir)
                if old.info_["training"]["data_sha256"] == train_data.sha256() and all(
                        old.info_["config"].get(k) == v for k, v in params.items()):
                    clf = old
                    out.print(f"reusing finished {family} model in {mdir} (pass --retrain to train again)")
            except NicheError:
                clf = None
        if clf is None:
            out.print(f"training [bold]{family}[/] ...")
            clf = TextClassifier(family, **params).fit(
                train_data, checkpoint_dir=out_dir / f"{family}.checkpoints" if family == "transformer" else None,
                resume=True, progress=True)
            clf.save(mdir)
            shutil.rmtree(out_dir / f"{family}.checkpoints", ignore_errors=True)
        t0 = time.perf_counter()
        with tqdm(total=len(test), desc=f"evaluating {family}", unit="text") as bar:
            reports[family] = clf.evaluate(test, out_dir=out_dir / f"eval-{family}", batch_size=32, progress=bar)
        speed[family] = (len(test) / (time.perf_counter() - t0), clf.info_["training"]["seconds"])
        models[family] = clf
    table = metrics_side_by_side({f"{k} (test)": v for k, v in reports.items()}, title="banking77 test set")
    table.add_row("train seconds", *[f"{speed[k][1]:.0f}" for k in reports])
    table.add_row("predict texts/s", *[f"{speed[k][0]:.0f}" for k in reports])
    out.print(table)
    examples = ["I still haven't received my new card, it's been two weeks",
                "Why was I charged a fee for taking out cash?",
                "my phone was stolen, what should I do?"] + test.texts[:2]
    pt = Table(title="a few predictions")
    pt.add_column("text")
    for k in models:
        pt.add_column(k)
    preds = {k: (m.predict(examples), m.predict_proba(examples).max(1)) for k, m in models.items()}
    for i, t in enumerate(examples):
        pt.add_row(t, *[f"{preds[k][0][i]} ({preds[k][1][i]:.2f})" for k in models])
    out.print(pt)
    out.print(f"models in {out_dir}/sparse and {out_dir}/transformer; reports (confusion matrix, misclassified.csv) "
              f"in {out_dir}/eval-*/")


from .assistant import assistant_app  # noqa: E402  (after _friendly: the sub-apps import it)

app.add_typer(assistant_app, name="assistant")
from .monitor import monitor_app  # noqa: E402
app.add_typer(monitor_app, name="monitor")
from .recommend import recommend_app  # noqa: E402
app.add_typer(recommend_app, name="recommend")
from . import pretrain as _pretrain_commands  # noqa: E402,F401  (registers pretrain, fill-mask, explain)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
