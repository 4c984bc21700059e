"""``niche monitor``: thin typer adapters over :mod:`niche.apps.monitor`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ._common import err, friendly, out

monitor_app = typer.Typer(no_args_is_help=True, help="Opinion monitoring: classify a feed into a database, alert on "
                                                     "negative bursts per entity, report.")


def _print_alert(p: dict[str, Any]) -> None:
    hook = f"  webhook: {p['webhook']}" if "webhook" in p else ""
    out.print(f"[bold red]ALERT[/] [bold]{p['entity']}[/]: {p['negatives']}/{p['n']} negative "
              f"({p['negative_share']:.0%}) in {p['window_start']} .. {p['window_end']} vs baseline "
              f"{p['baseline_negatives']}/{p['baseline_n']} ({p['baseline_negative_share']:.0%}), "
              f"p={p['p_value']:.1e}{hook}", highlight=False)


def _print_summary(s: dict[str, Any]) -> None:
    t = Table(title="monitor run")
    t.add_column("")
    t.add_column("count", justify="right")
    for k in ("lines", "records", "stored", "duplicates", "mentions", "no_entity", "out_of_order", "late", "alerts",
              "suppressed_by_cooldown", "webhook_sent", "webhook_failed", "batches"):
        t.add_row(k.replace("_", " "), str(s[k]))
    for kind, n in s["skipped"].items():
        t.add_row(f"skipped: {kind.replace('_', ' ')}", f"[yellow]{n}[/]")
    t.add_row("seconds", f"{s['seconds']:.2f}")
    t.add_row("texts/s", f"{s['texts_per_s']:.0f}")
    out.print(t)
    for f, n in s["resumed"].items():
        out.print(f"resumed {f} after line {n} (done by an earlier run)")


@monitor_app.command("run")
@friendly
def run_cli(
    model: Annotated[Path, typer.Option("--model", help="Model directory (a sentiment classifier).")],
    feed: Annotated[str, typer.Option("--input", help="JSONL file, directory of JSONL files, or - for stdin (follow mode).")],
    db: Annotated[str, typer.Option("--db", help="sqlite:///PATH, postgresql+psycopg://USER@HOST/DB, or a SQLite file path.")] = "monitor.db",
    entities: Annotated[Optional[str], typer.Option("--entities", help="Watch list for texts without 'entity': 'A,B=alias|alias' or a file, one per line.")] = None,
    window: Annotated[str, typer.Option("--window", help="Current window (e.g. 1h).")] = "1h",
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline period before the window (e.g. 7d).")] = "7d",
    step: Annotated[str, typer.Option("--step", help="Windows end every STEP of event time.")] = "15m",
    cooldown: Annotated[str, typer.Option("--cooldown", help="No second alert for an entity within this time.")] = "6h",
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level per test. 1e-4 suits the sparse model; with a fine-tuned transformer use 1e-5 (docs/monitor.md).")] = 1e-4,
    test: Annotated[str, typer.Option("--test", help="binomial (exact) | ztest (two-proportion).")] = "binomial",
    min_negatives: Annotated[int, typer.Option("--min-negatives", help="Negatives needed in the window.")] = 6,
    min_baseline: Annotated[int, typer.Option("--min-baseline", help="Texts needed in the baseline.")] = 20,
    min_rise: Annotated[float, typer.Option("--min-rise", help="Smallest rise of the negative share (0.10 = 10 points).")] = 0.10,
    negative_label: Annotated[str, typer.Option("--negative-label", help="The model label that counts as negative.")] = "negative",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
    predict_workers: Annotated[Optional[int], typer.Option("--predict-workers", help="0: predict in a thread; 1: in a separate process (default: 1).")] = None,
    alerts_jsonl: Annotated[Path, typer.Option("--alerts-jsonl", help="Append alerts here, one JSON per line.")] = Path("alerts.jsonl"),
    webhook: Annotated[Optional[str], typer.Option("--webhook", help="POST each alert as JSON to this URL.")] = None,
    webhook_timeout: Annotated[float, typer.Option("--webhook-timeout", help="Seconds per attempt.")] = 5.0,
    webhook_retries: Annotated[int, typer.Option("--webhook-retries", help="Retries after the first attempt.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Classify a feed into the database and raise alerts; rerun to resume where it stopped."""
    from ..apps.monitor import AlertRule, MonitorConfig, run_monitor

    rule = AlertRule(window=window, baseline=baseline, step=step, cooldown=cooldown, alpha=alpha, test=test,  # type: ignore[arg-type]
                     min_negatives=min_negatives, min_baseline=min_baseline, min_rise=min_rise)
    cfg = MonitorConfig(rule=rule, negative_label=negative_label, batch_size=batch_size,
                        predict_workers=predict_workers, alerts_jsonl=alerts_jsonl, webhook=webhook,
                        webhook_timeout=webhook_timeout, webhook_retries=webhook_retries)
    summary = run_monitor(model, feed, db, entities=entities, config=cfg, on_alert=_print_alert,
                          on_issue=lambda i: err.print(f"[yellow]warning:[/] {i}", highlight=False, soft_wrap=True))
    s = summary.to_dict()
    if as_json:
        print(json.dumps(s, indent=2))
    else:
        _print_summary(s)
    if summary.webhook_failed:
        err.print(f"[yellow]{summary.webhook_failed} alert(s) could not be delivered to {webhook}[/] "
                  f"(they are in the database and {alerts_jsonl}).")


@monitor_app.command("report")
@friendly
def report_cli(
    db: Annotated[str, typer.Option("--db", help="The monitor database (URL or SQLite path).")] = "monitor.db",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for index.html and one PNG + HTML per entity.")] = Path("monitor-report"),
    bucket_minutes: Annotated[Optional[int], typer.Option("--bucket-minutes", help="Time bucket of the plots (default: automatic).")] = None,
) -> None:
    """Plot negative share, volume and alerts per entity (PNG + HTML) with an index page."""
    from ..apps.monitor import write_report

    index = write_report(db, out_dir, bucket_minutes)
    out.print(f"report written: [bold]{index}[/]")


@monitor_app.command("demo")
@friendly
def demo_cli(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the feed, database, alerts and report go.")] = Path("runs/monitor-demo"),
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Financial PhraseBank folder (default ../shared/data/financial_phrasebank).")] = None,
    family: Annotated[str, typer.Option("--family", help="sparse | transformer")] = "sparse",
    n_calm: Annotated[int, typer.Option("--n-calm", help="Calm sentences in the replay.")] = 6000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train on Financial PhraseBank, replay a timeline with one negative burst, show the alert and the report."""
    from ..apps.monitor import run_demo

    out.print(f"training a [bold]{family}[/] model on Financial PhraseBank and replaying {n_calm} calm sentences "
              "plus a burst of 30 negative ones ...")
    res = run_demo(out_dir, data_dir, family=family, seed=seed, n_calm=n_calm, on_alert=_print_alert)
    sc = res["score"]
    out.print(f"burst: {res['burst']['entity']} {res['burst']['start']} .. {res['burst']['end']}")
    if sc["detected"]:
        out.print(f"[green]detected[/] {sc['minutes_to_alert']} min after the burst started; "
                  f"false alerts in the calm replay: {sc['false_alerts']}")
    else:
        out.print(f"[red]burst not detected[/]; false alerts: {sc['false_alerts']}")
    _print_summary(res["summary"])
    out.print(f"report: [bold]{res['report']}[/]  database: {res['db']}  alerts: {res['alerts_jsonl']}")
