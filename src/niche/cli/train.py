"""``niche train``, ``evaluate``, ``predict``, ``ensemble`` and ``data inspect``: thin adapters over
:class:`niche.TextClassifier` and :mod:`niche.data`.

The family settings of ``niche train`` are flags generated from the dataclasses of
:mod:`niche.config` (see :func:`niche.cli._common.with_settings`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..config import (AutoConfig, EnsembleConfig, ScratchConfig, SentenceConfig, SparseConfig, StaticConfig,
                      TransformerConfig)
from ._common import (
    LabelCol,
    Quiet,
    Settings,
    TextCol,
    err,
    friendly,
    metrics_side_by_side,
    out,
    read_optional,
    refuse_other_families,
    with_settings,
)

commands = typer.Typer()
data_app = typer.Typer(no_args_is_help=True, help="Look at data files before training.")
commands.add_typer(data_app, name="data")

FAMILY_SETTINGS = Settings("settings", {"transformer": TransformerConfig, "scratch": ScratchConfig, "sparse": SparseConfig,
                                        "static": StaticConfig, "sentence": SentenceConfig,
                                        "auto": AutoConfig})
"""One flag per field of the trainable families' settings; a run may use its own family's only."""
ENSEMBLE_SETTINGS = Settings("settings", {"ensemble": EnsembleConfig}, panel="ensemble settings")


def leaderboard_table(board: dict[str, Any]) -> Table:
    """The candidates of an auto search as a rich table (the winner in bold)."""
    t = Table(title=f"auto: {board['spent_seconds'] / 60:.1f} of {board['budget_seconds'] / 60:.1f} min; "
                    f"winner {board['winner']} ({board['why']})")
    numbers = ("dev acc %", "dev F1 %", "train s", "texts/s", "MB")
    for col in ("candidate", "status", *numbers, "note"):
        t.add_column(col, justify="right" if col in numbers else "left")
    for r in board["candidates"]:
        done = r["status"] == "trained"
        cells = [f"{r['dev_accuracy'] * 100:.2f}", f"{r['dev_macro_f1'] * 100:.2f}", f"{r['train_seconds']:.0f}",
                 f"{r['docs_per_s']:.0f}", f"{r['size_mb']:.1f}"] if done else [""] * 5
        t.add_row(r["name"], r["status"], *cells, r.get("note", "") or ("resumed" if r.get("resumed") else ""),
                  style="bold" if r.get("winner") else None)
    return t


@commands.command()
@friendly
@with_settings(FAMILY_SETTINGS)
def train(
    data: Annotated[Path, typer.Option("--data", help="Training file (CSV, TSV, JSONL or Parquet).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (atomically).")],
    eval_path: Annotated[Optional[Path], typer.Option("--eval", help="Dev file; default: a stratified split of --data.")] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    family: Annotated[str, typer.Option("--family", help="auto (the best of several families within --max-minutes; leaderboard saved with the winner) | transformer | sparse | static (distilled token vectors + a linear head, thousands of texts/s) | sentence (sentence-encoder vectors + logistic regression, contrastive tuning with --pair-steps: few labels) | scratch (random init, tokenizer learned on --data); the settings below say which family each belongs to.")] = "transformer",
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Default: OUT.checkpoints")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    dev_fraction: Annotated[float, typer.Option("--dev-fraction", help="Held-out share when --eval is not given.")] = 0.1,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Skip (and count) rows with empty text instead of failing.")] = False,
    test_path: Annotated[Optional[Path], typer.Option("--test", help="Also evaluate on this file; report in OUT/eval-test/.")] = None,
    quiet: Quiet = False,
    settings: Optional[dict[str, Any]] = None,
) -> None:
    """Train a classifier on a labeled file and save it as a model directory."""
    import tempfile

    from ..classifier import TextClassifier
    from ..data import read_labeled

    params = dict(settings or {})
    if family in FAMILY_SETTINGS.classes:
        refuse_other_families(FAMILY_SETTINGS, params, family)
    if family == "scratch" and params.pop("base", None) is not None:
        err.print("[yellow]note:[/] --base does not apply to the scratch family (it starts from random weights); ignored.")
    train_data = read_labeled(data, text_col, label_col, skip_empty=skip_empty)
    if train_data.skipped:
        err.print(f"[yellow]skipped {train_data.skipped} rows with empty text[/] in {data}")
    dev = read_optional(eval_path, text_col, label_col, skip_empty)
    test = read_optional(test_path, text_col, label_col, skip_empty)
    ckpt = checkpoint_dir or out_dir.with_name(out_dir.name + ".checkpoints")
    clf = TextClassifier(family, **params)
    uses_ckpt = family not in ("sparse", "static", "sentence")
    clf.fit(train_data, eval_data=dev, dev_fraction=dev_fraction, checkpoint_dir=ckpt if uses_ckpt else None,
            resume=resume, progress=not quiet)
    from ..train import distributed

    if not distributed.is_main():  # under torchrun: rank 0 evaluates, saves and reports
        distributed.shutdown()
        return
    reports = {"dev": clf.info_["metrics"]["dev"]}
    with tempfile.TemporaryDirectory(prefix="niche-eval-") as tmp:
        if test is not None:
            reports["test"] = clf.evaluate(test, out_dir=Path(tmp) / "eval-test")
            clf.info_["metrics"]["test"] = reports["test"]
        clf.save(out_dir)
        if test is not None:
            shutil.move(str(Path(tmp) / "eval-test"), str(out_dir / "eval-test"))
    if uses_ckpt:
        shutil.rmtree(ckpt, ignore_errors=True)  # the model is safely saved; checkpoints are no longer needed
    board = getattr(clf, "leaderboard_", None)
    if board is not None:
        out.print(leaderboard_table(board))
    out.print(metrics_side_by_side(reports, title=f"{clf.family} model -> {out_dir}"))
    out.print(f"trained in {clf.info_['training']['seconds']:.1f} s; saved to [bold]{out_dir}[/]")
    distributed.shutdown()


@commands.command()
@friendly
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[Path, typer.Argument(help="Labeled file to score.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write metrics.json, confusion_matrix.png, misclassified.csv, report.md here.")] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Quiet = False,
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


@commands.command()
@friendly
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    input_path: Annotated[Optional[Path], typer.Argument(help="CSV/TSV/JSONL/Parquet file to score.")] = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="A text to classify (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", help="Output .csv/.tsv/.jsonl (resumes if interrupted).")] = None,
    text_col: TextCol = "text",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels shown per --text.")] = 3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output instead of resuming.")] = False,
    quiet: Quiet = False,
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
        from ..predict import predict_file_ray

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


@commands.command()
@friendly
@with_settings(ENSEMBLE_SETTINGS)
def ensemble(
    models: Annotated[list[Path], typer.Option("--model", help="A niche model directory (2 to 5; repeat the option).")],
    eval_path: Annotated[Path, typer.Option("--eval", help="Labeled dev file the weights are chosen on.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Ensemble directory to write (atomically; members are copied in).")],
    test_path: Annotated[Optional[Path], typer.Option("--test", help="Also score on this file (members and ensemble).")] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    settings: Optional[dict[str, Any]] = None,
) -> None:
    """Average the probabilities of several models with weights chosen on --eval (dev accuracy, ties by log-loss)."""
    from ..classifier import TextClassifier, build_ensemble
    from ..data import read_labeled

    dev = read_labeled(eval_path, text_col, label_col)
    ens = build_ensemble(models, dev, **(settings or {}))
    t = Table(title=f"ensemble -> {out_dir}")
    for c in ("model", "weight", "dev accuracy") + (("test accuracy",) if test_path else ()):
        t.add_column(c, justify="left" if c == "model" else "right")
    test = read_optional(test_path, text_col, label_col)
    for m, model, info in zip(ens.info_["members"], ens.model_.members, ens.model_.member_infos):
        row = [m["source"], f"{m['weight']:.2f}", f"{m['dev_accuracy'] * 100:.2f}"]
        if test is not None:
            member = TextClassifier.from_model(info["family"], model, info["labels"], info=info)
            row.append(f"{member.evaluate(test)['accuracy'] * 100:.2f}")
        t.add_row(*row)
    row = ["ensemble", "", f"{ens.info_['metrics']['dev']['accuracy'] * 100:.2f}"]
    if test is not None:
        ens.info_["metrics"]["test"] = ens.evaluate(test)
        row.append(f"{ens.info_['metrics']['test']['accuracy'] * 100:.2f}")
    t.add_row(*row)
    ens.save(out_dir)
    out.print(t)


@data_app.command("inspect")
@friendly
def data_inspect(
    path: Annotated[Path, typer.Argument(help="Labeled file.")],
    eval_path: Annotated[Optional[Path], typer.Option("--eval", help="An evaluation file to check for overlap.")] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Base model whose tokenizer counts tokens; 'none' = whitespace.")] = "all-MiniLM-L6-v2",
    skip_empty: Annotated[bool, typer.Option("--skip-empty")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Class counts, lengths, duplicates, train/eval overlap and warnings."""
    from ..inspection import inspect

    tok = None
    if tokenizer != "none":
        from transformers import AutoTokenizer

        from ..encoders import resolve_base

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
                  f"texts in both files: {rep.overlap_texts}; evaluation texts equal to or inside a training text: "
                  f"{rep.contained_texts}")
    for w in rep.warnings:
        out.print(f"[yellow]warning:[/] {w}")
