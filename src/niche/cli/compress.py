"""``niche export``, ``quantize`` and ``distill``: thin adapters over :mod:`niche.compress`.

The guard's flags (every command) and distill's student and distillation settings are generated
from :class:`~niche.config.GuardConfig`, :class:`~niche.config.TransformerConfig` and
:class:`~niche.config.DistillConfig` (see :func:`niche.cli._common.with_settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..config import DistillConfig, GuardConfig, TransformerConfig
from ._common import (
    LabelCol,
    Quiet,
    Settings,
    TextCol,
    friendly,
    out,
    read_dev,
    with_settings,
)

commands = typer.Typer()

GUARD_SETTINGS = Settings("guard", {"guard": GuardConfig}, panel="guard settings", skip=("require_faster",),
                          flags={"batch_size": "--guard-batch-size"})
"""The guard's settings; the command line always requires the result to be faster than its source."""
STUDENT_SETTINGS = Settings("student_settings", {"student": TransformerConfig},
                            panel="student training settings (left out: a transformer teacher's own; a sparse student takes --seed only; a static student --seed, --epochs, --lr, --batch-size, --patience, its head by --student static:linear|mlp|cnn)",
                            skip=("base",), flags={"threads": "--student-threads"}, show_defaults=False)
"""How a transformer student is trained (left out: the teacher's settings when it is a transformer, else the
defaults); ``--student`` sets its base.
A sparse student takes ``--seed`` only; a static student the fields in ``niche.compress.distill.STATIC_FIELDS``."""
DISTILL_SETTINGS = Settings("distillation", {"distill": DistillConfig}, panel="distillation settings",
                            required=("student",))

EvalFile = Annotated[Optional[Path], typer.Option("--eval", help="Labeled dev file the guard measures on (required).")]
Fuse = Annotated[bool, typer.Option("--fuse/--no-fuse", help="Fuse attention, LayerNorm and GELU with onnxruntime's transformer optimizer (BERT-style models).")]


def print_compression(rep: dict[str, Any]) -> None:
    """The guard's table (source vs result), the parity line, and where the result went."""
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


@commands.command()
@friendly
@with_settings(GUARD_SETTINGS)
def export(
    model: Annotated[Path, typer.Argument(help="fp32 PyTorch transformer model directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the exported model.")],
    eval_path: EvalFile = None,
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Quantize the weights to int8 (onnxruntime dynamic).")] = False,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    fuse: Fuse = True,
    guard: Optional[dict[str, Any]] = None,
) -> None:
    """Export to ONNX (fp32 or --int8) with a parity check and the accuracy/speed guard."""
    from ..compress import export as do_export
    from ..errors import ConfigError

    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported; use --format onnx.")
    dev = read_dev(eval_path, text_col, label_col, "export")
    print_compression(do_export(model, out_dir, dev, int8=int8, guard=GuardConfig(**(guard or {})), fuse=fuse))


@commands.command()
@friendly
@with_settings(GUARD_SETTINGS)
def quantize(
    model: Annotated[Path, typer.Argument(help="fp32 PyTorch transformer model directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the int8 model.")],
    eval_path: EvalFile = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    fuse: Fuse = True,
    guard: Optional[dict[str, Any]] = None,
) -> None:
    """int8 dynamic quantization (onnxruntime), guarded by accuracy, speed and parity."""
    from ..compress import quantize as do_quantize

    dev = read_dev(eval_path, text_col, label_col, "quantize")
    print_compression(do_quantize(model, out_dir, dev, guard=GuardConfig(**(guard or {})), fuse=fuse))


@commands.command()
@friendly
@with_settings(DISTILL_SETTINGS, STUDENT_SETTINGS, GUARD_SETTINGS)
def distill(
    teacher: Annotated[Path, typer.Option("--teacher", help="Fine-tuned teacher model directory.")],
    data: Annotated[Path, typer.Option("--data", help="Labeled training file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the student.")],
    eval_path: EvalFile = None,
    unlabeled: Annotated[Optional[Path], typer.Option("--unlabeled", help="Extra in-domain texts: one per line, or a CSV/JSONL column (--text-col).")] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted student run.")] = False,
    quiet: Quiet = False,
    distillation: Optional[dict[str, Any]] = None,
    student_settings: Optional[dict[str, Any]] = None,
    guard: Optional[dict[str, Any]] = None,
) -> None:
    """Knowledge distillation into a smaller/faster student, guarded against the teacher."""
    from ..compress import distill as do_distill
    from ..compress import read_unlabeled
    from ..data import read_labeled

    train_data = read_labeled(data, text_col, label_col)
    dev = read_dev(eval_path, text_col, label_col, "distill")
    extra = read_unlabeled(unlabeled, text_col) if unlabeled else None
    rep = do_distill(teacher, train_data, dev, out_dir, DistillConfig(**(distillation or {})), unlabeled=extra,
                     params=student_settings, guard=GuardConfig(**(guard or {})), resume=resume, progress=not quiet)
    from ..train import distributed

    if rep.get("verdict") is not None:  # None: a non-zero rank under torchrun (rank 0 reports)
        print_compression(rep)
    distributed.shutdown()
