"""``niche assistant``: build, ask and evaluate an intent assistant that knows when it doesn't know.

Thin adapters over :mod:`niche.apps.assistant`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._common import err, friendly, out

assistant_app = typer.Typer(no_args_is_help=True,
                            help="Customer-service assistant: intents, canned answers, and an honest 'I don't know'.")


def _bundled_clinc150() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        d = root / "data" / "clinc150"
        if all((d / f).is_file() for f in ("train.csv", "validation.csv", "test.csv")):
            return d
    from ..errors import DataError

    raise DataError("bundled data/clinc150 not found; run the demo from the niche repository root, "
                    "or pass --data-dir DIR containing train.csv, validation.csv and test.csv.")


@assistant_app.command("build")
@friendly
def build(
    data: Annotated[Path, typer.Option("--data", help="Labeled utterances (text,label); label 'oos' marks out-of-scope examples.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Assistant directory to write (atomically).")],
    dev: Annotated[Optional[Path], typer.Option("--dev", help="Dev utterances for early stopping and calibration (default: 20 % of --data).")] = None,
    answers: Annotated[Optional[Path], typer.Option("--answers", help="CSV label,answer with a canned answer per intent.")] = None,
    family: Annotated[str, typer.Option("--family", help="Intent classifier: transformer or sparse.")] = "transformer",
    base: Annotated[Optional[str], typer.Option("--base", help="Base encoder (classifier and retrieval).")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 5,
    max_len: Annotated[int, typer.Option("--max-len")] = 32,
    target_precision: Annotated[float, typer.Option("--target-oos-precision", help="Out-of-scope precision to calibrate for on dev.")] = 0.9,
    expected_oos_rate: Annotated[Optional[float], typer.Option("--expected-oos-rate", help="Share of out-of-scope questions expected in traffic (default: dev's share); precision is calibrated at this share.")] = None,
    oos_label: Annotated[str, typer.Option("--oos-label")] = "oos",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
) -> None:
    """Train the intent classifier, index the utterances, calibrate when to decline."""
    from ..apps.assistant import Assistant, AssistantConfig, read_answers
    from ..config import DEFAULT_BASE
    from ..data import read_labeled

    params: dict = {"epochs": epochs, "max_len": max_len} if family == "transformer" else {}
    if base and family == "transformer":
        params["base"] = base
    cfg = AssistantConfig(family=family, classifier=params, encoder=base or DEFAULT_BASE,
                          target_oos_precision=target_precision, expected_oos_rate=expected_oos_rate, oos_label=oos_label)
    train = read_labeled(data, text_col=text_col, label_col=label_col)
    dev_data = read_labeled(dev, text_col=text_col, label_col=label_col) if dev else None
    bot = Assistant.build(train, dev=dev_data, answers=read_answers(answers) if answers else None, config=cfg,
                          progress=True)
    bot.save(out_dir)
    _print_build(bot.info, out_dir)


def _print_build(info: dict, out_dir: Path) -> None:
    cal, th = info["calibration"], info["thresholds"]
    out.print(f"assistant written to [bold]{out_dir}[/]: {len(info['intents'])} intents, {info['examples']} example "
              f"utterances ({info['oos_examples']} out-of-scope)")
    if cal.get("reached_target") is False:
        err.print(f"[yellow]warning:[/] no threshold reached out-of-scope precision {cal['target_oos_precision']} on dev; "
                  "the assistant will not decline anything. Add out-of-scope examples (label oos) to the dev data.")
    out.print(f"abstention rule ({cal['method']}): prob >= {th['t_prob']:.3f}, similarity >= {th['t_sim']:.3f}, "
              f"margin over out-of-scope >= {th['t_margin']:.3f}")
    shown = {k: v for k, v in cal.items() if k.startswith("dev_")}
    out.print("on dev: " + ", ".join(f"{k[4:]} {v:.4f}" if isinstance(v, float) else f"{k[4:]} {v}" for k, v in shown.items()))


@assistant_app.command("ask")
@friendly
def ask(
    model_dir: Annotated[Path, typer.Argument(help="Assistant directory from `niche assistant build`.")],
    texts: Annotated[list[str], typer.Argument(help="One or more questions.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Answer questions: intent, answer, confidence, the nearest training example, in scope or not."""
    from ..apps.assistant import Assistant

    answers = Assistant.load(model_dir).answer(texts)
    if as_json:
        for t, a in zip(texts, answers):
            out.print(json.dumps({"text": t} | a, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table()
    for col in ("question", "in scope", "intent", "confidence", "answer", "matched example"):
        table.add_column(col)
    for t, a in zip(texts, answers):
        table.add_row(t, "yes" if a["in_scope"] else "[yellow]no[/]", a["intent"], f"{a['confidence']:.2f}", a["answer"],
                      f"{a['matched_example']} ({a['similarity']:.2f})")
    out.print(table)


@assistant_app.command("evaluate")
@friendly
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="Assistant directory.")],
    data: Annotated[Path, typer.Option("--data", help="Labeled test utterances (out-of-scope rows labeled with the oos label).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """In-scope accuracy, out-of-scope recall and precision on labeled data."""
    from ..apps.assistant import Assistant
    from ..data import read_labeled

    bot = Assistant.load(model_dir)
    m = bot.evaluate(read_labeled(data))
    if as_json:
        out.print(json.dumps(m), highlight=False)
        return
    _print_metrics({"assistant": m}, f"{Path(data).name}: {m['in_scope']} in-scope, {m['oos']} out-of-scope")


def _print_metrics(named: dict[str, dict], title: str) -> None:
    table = Table(title=title)
    table.add_column("system")
    for col in ("in-scope accuracy", "oos recall", "oos precision", "declined"):
        table.add_column(col, justify="right")
    for name, m in named.items():
        table.add_row(name, f"{m['in_scope_accuracy'] * 100:.2f} %", f"{m['oos_recall'] * 100:.2f} %",
                      f"{m['oos_precision'] * 100:.2f} %", str(m["declined"]))
    out.print(table)


@assistant_app.command("demo")
@friendly
def demo(
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with train/validation/test.csv (default: bundled CLINC150).")] = None,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("runs/assistant-demo"),
    epochs: Annotated[int, typer.Option("--epochs")] = 5,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if the demo assistant exists.")] = False,
) -> None:
    """Build an assistant on CLINC150 (train; calibrated on validation) and score it on the test set."""
    from ..apps.assistant import Assistant, AssistantConfig
    from ..data import read_labeled

    d = data_dir or _bundled_clinc150()
    train, dev, test = (read_labeled(d / f"{s}.csv") for s in ("train", "validation", "test"))
    target = out_dir / "assistant"
    if target.is_dir() and not rebuild:
        out.print(f"reusing {target} (pass --rebuild to build again)")
        bot = Assistant.load(target)
    else:
        out.print(f"[bold]building[/] an assistant on {len(train)} utterances from {d} ({epochs} epochs) ...")
        # CLINC150's validation split has 3 % out-of-scope queries; calibrate as for traffic with 10 %
        cfg = AssistantConfig(classifier={"epochs": epochs, "max_len": 32}, target_oos_precision=0.8,
                              expected_oos_rate=0.1)
        bot = Assistant.build(train, dev=dev, config=cfg, progress=True)
        bot.save(target)
        _print_build(bot.info, target)
    m = bot.evaluate(test)
    _print_metrics({"assistant": m}, f"CLINC150 test: {m['in_scope']} in-scope, {m['oos']} out-of-scope queries")
    questions = ["what's my checking account balance", "how do i say thank you in german",
                 "who won the football game last night", "can you recommend a good lasagna recipe",
                 "what is the meaning of life"]
    ask(target, questions)
