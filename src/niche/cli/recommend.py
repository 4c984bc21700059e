"""``niche recommend``: thin typer adapters over :mod:`niche.apps.recommend`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ._common import err, friendly, out

recommend_app = typer.Typer(no_args_is_help=True, help="Text-aware personalized recommendation (two-tower model).")

TextCols = Annotated[Optional[str], typer.Option("--text-cols", help="Item text columns, comma-separated (default: all but *_id).")]
Tags = Annotated[Optional[Path], typer.Option("--tags", help="Optional user_id,item_id,tag file; distinct tags are added to the item text.")]
MinRating = Annotated[Optional[float], typer.Option("--min-rating", help="Keep interactions with rating >= this (default: all = implicit feedback).")]


def _load(interactions: Path, items: Path, text_cols: Optional[str], tags: Optional[Path], min_rating: Optional[float]) -> Any:
    from ..apps.recommend.data import load

    cols = [c.strip() for c in text_cols.split(",") if c.strip()] if text_cols else None
    data = load(interactions, items, cols, tags, min_rating)
    out.print(f"{len(data.users)} interactions, {data.n_users} users, {data.n_items} items")
    for line in data.report.lines():
        err.print(f"[yellow]note:[/] {line}")
    return data


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@recommend_app.command("train")
@friendly
def train_cli(
    interactions: Annotated[Path, typer.Option("--interactions", help="user_id,item_id[,rating][,timestamp] CSV.")],
    items: Annotated[Path, typer.Option("--items", help="item_id + text columns CSV.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (atomically).")],
    text_cols: TextCols = None,
    tags: Tags = None,
    min_rating: MinRating = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base encoder (default all-MiniLM-L6-v2, offline).")] = None,
    history: Annotated[Optional[int], typer.Option("--history", help="Items of recent history per user (N).")] = None,
    tower_epochs: Annotated[Optional[int], typer.Option("--tower-epochs", help="Phase 1 epochs (frozen encoder).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Phase 2 encoder fine-tuning steps (0 = none).")] = None,
    max_len: Annotated[Optional[int], typer.Option("--max-len")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Training time budget.")] = None,
    no_blend: Annotated[bool, typer.Option("--no-blend", help="Text score only (no co-occurrence/popularity blend).")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train a two-tower recommender on interactions + item texts."""
    from ..apps.recommend import Recommender

    data = _load(interactions, items, text_cols, tags, min_rating)
    params = _params(base=base, history=history, tower_epochs=tower_epochs, steps=steps, max_len=max_len,
                     max_minutes=max_minutes, seed=seed, threads=threads)
    if no_blend:
        params["blend"] = False
    rec = Recommender(**params).fit(data, progress=None if quiet else (lambda m: err.print(m, highlight=False)))
    rec.save(out_dir)
    v = rec.info_["validation"]
    if v:
        out.print(f"validation NDCG@10 ({v['users']} users' last training item): text only {v['ndcg@10_text_only']}, "
                  f"blended {v['ndcg@10_blended']} with weights {rec.blend_}")
    out.print(f"trained in {rec.info_['training']['seconds']:.0f} s; saved to [bold]{out_dir}[/]")


def _split(s: Optional[str]) -> Optional[list[str]]:
    return [x.strip() for x in s.split(",") if x.strip()] if s is not None else None


def read_candidates(path: Path) -> list[str]:
    """One item id per line, or a CSV with an item_id column."""
    from ..errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: candidates file not found; expected one item id per line or a CSV with item_id.")
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if lines and "item_id" in lines[0].split(","):
        import csv

        with path.open(encoding="utf-8", newline="") as f:
            return [r["item_id"].strip() for r in csv.DictReader(f) if r.get("item_id", "").strip()]
    return lines


@recommend_app.command("rank")
@friendly
def rank_cli(
    model: Annotated[Path, typer.Argument(help="Recommender directory.")],
    user: Annotated[Optional[str], typer.Option("--user", help="A user id seen in training.")] = None,
    history: Annotated[Optional[str], typer.Option("--history", help="Item ids, oldest first, comma-separated.")] = None,
    history_text: Annotated[Optional[list[str]], typer.Option("--history-text", help="Text of something the user liked (repeatable, oldest first).")] = None,
    k: Annotated[int, typer.Option("--k")] = 10,
    candidates: Annotated[Optional[Path], typer.Option("--candidates", help="Rank only these item ids (file).")] = None,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Do not remove the history's items.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k items for a user, an item-id history or history texts, with each score's parts."""
    from ..apps.recommend import Recommender

    rec = Recommender.load(model)
    res = rec.rank(user=user, history=_split(history), history_text=history_text, k=k,
                   candidates=read_candidates(candidates) if candidates else None, exclude_seen=not include_seen)
    if as_json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return
    t = Table(title=f"top {k} from {model.name} (score = text + cooc + pop)")
    for c in ("#", "item_id", "score", "text", "cooc", "pop", "item"):
        t.add_column(c, justify="left" if c == "item" else "right")
    for n, r in enumerate(res["items"], 1):
        t.add_row(str(n), r["item_id"], f"{r['score']:.4f}", f"{r['text']:.4f}", f"{r['cooc']:.4f}", f"{r['pop']:.4f}",
                  r["item_text"][:70])
    out.print(t)
    for key in ("unknown_history", "unknown_candidates"):
        if res[key]:
            err.print(f"[yellow]note:[/] {len(res[key])} {key.replace('_', ' ')} ignored: {', '.join(res[key][:10])}")


@recommend_app.command("add-items")
@friendly
def add_items_cli(
    model: Annotated[Path, typer.Argument(help="Recommender directory (rewritten atomically).")],
    items: Annotated[Path, typer.Option("--items", help="item_id + text columns CSV of new (or changed) items.")],
    text_cols: TextCols = None,
) -> None:
    """Embed new items into a trained recommender without retraining."""
    from ..apps.recommend import Recommender
    from ..apps.recommend.data import DataReport, read_items

    rec = Recommender.load(model)
    cols = [c.strip() for c in text_cols.split(",") if c.strip()] if text_cols else None
    report = DataReport()
    ids, texts = read_items(items, cols, report=report)
    res = rec.add_items(ids, texts)
    rec.save(model)
    for line in report.lines():
        err.print(f"[yellow]note:[/] {line}")
    out.print(f"added {res['added']}, updated {res['updated']}; {res['items']} items in {model}")


@recommend_app.command("evaluate")
@friendly
def evaluate_cli(
    interactions: Annotated[Path, typer.Option("--interactions")],
    items: Annotated[Path, typer.Option("--items")],
    text_cols: TextCols = None,
    tags: Tags = None,
    min_rating: MinRating = None,
    protocol: Annotated[str, typer.Option("--protocol", help="leave-last-out, cold-start, or both (comma-separated).")] = "leave-last-out,cold-start",
    k: Annotated[int, typer.Option("--k")] = 10,
    cold_fraction: Annotated[float, typer.Option("--cold-fraction")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps")] = None,
    tower_epochs: Annotated[Optional[int], typer.Option("--tower-epochs")] = None,
    base: Annotated[Optional[str], typer.Option("--base")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes")] = None,
    no_als: Annotated[bool, typer.Option("--no-als", help="Skip the ALS baseline (needs the `implicit` package).")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json-out", help="Write the results as JSON here.")] = None,
) -> None:
    """Leave-last-out (HR/NDCG) and cold-start (AUC/NDCG): niche vs popularity, item-kNN and ALS."""
    from ..apps.recommend import evaluate

    data = _load(interactions, items, text_cols, tags, min_rating)
    params = _params(steps=steps, tower_epochs=tower_epochs, base=base, max_minutes=max_minutes, seed=seed)
    res = evaluate(data, params, k=k, cold_fraction=cold_fraction, seed=seed, use_als=not no_als,
                   protocols=tuple(p.strip() for p in protocol.split(",") if p.strip()),
                   progress=lambda m: err.print(m, highlight=False))
    res.pop("_model", None)
    for key, cols in (("leave_last_out", (f"hr@{k}", f"ndcg@{k}")), ("cold_start", ("auc", f"ndcg@{k}"))):
        if key in res:
            r = res[key]
            t = Table(title=f"{key.replace('_', '-')} ({r['users']} users)")
            t.add_column("model")
            for c in cols:
                t.add_column(c, justify="right")
            for name, m in r["results"].items():
                t.add_row(name, *[f"{m[c]:.4f}" for c in cols])
            out.print(t)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
        out.print(f"results written to {json_out}")
