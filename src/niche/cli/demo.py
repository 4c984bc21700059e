"""``niche demo``: the main job end to end on the bundled banking77 data (what ``make demo`` runs)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import NicheError
from ._common import friendly, metrics_side_by_side, out

commands = typer.Typer()


def bundled_banking77() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        d = root / "data" / "banking77"
        if (d / "train.csv").is_file() and (d / "test.csv").is_file():
            return d
    from ..errors import DataError

    raise DataError("bundled data/banking77 not found; run `niche demo` from the niche repository root, "
                    "or pass --data-dir DIR containing train.csv and test.csv.")


@commands.command()
@friendly
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

    d = data_dir or bundled_banking77()
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
