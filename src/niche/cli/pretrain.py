"""``niche pretrain``, ``niche fill-mask`` and ``niche explain``: thin adapters over
:mod:`niche.pretrain` and :mod:`niche.explain`.

The model, tokenizer and training settings of ``niche pretrain`` are flags generated from
:class:`~niche.config.PretrainConfig` (see :func:`niche.cli._common.with_settings`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..config import PretrainConfig
from ._common import Quiet, Settings, err, friendly, out, with_settings

commands = typer.Typer()

PRETRAIN_SETTINGS = Settings("settings", {"pretrain": PretrainConfig}, panel="pretraining settings")


@commands.command()
@friendly
@with_settings(PRETRAIN_SETTINGS)
def pretrain(
    corpus: Annotated[list[Path], typer.Option("--corpus", help="Unlabeled texts: .txt (one per line) or CSV/TSV/JSONL/Parquet with --text-col. Repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Masked-LM directory to write (atomically).")],
    text_col: Annotated[Optional[str], typer.Option("--text-col", help="Text column of CSV/JSONL corpora (default: text).")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option("--exclude", help="Evaluation files whose texts must not be pretrained on (column 'text' or one per line). Repeatable.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Default: OUT.checkpoints")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    quiet: Quiet = False,
    settings: Optional[dict[str, Any]] = None,
) -> None:
    """Masked-LM pretraining from scratch (tokenizer + small BERT) or continued from --base; the output
    is a Hugging Face masked-LM directory that `niche train --base OUT` fine-tunes."""
    from ..pretrain import pretrain as run

    cfg = PretrainConfig(**(settings or {}))
    rep = run(corpus, out_dir, cfg, text_col=text_col, exclude=exclude or (), checkpoint_dir=checkpoint_dir,
              resume=resume, progress=not quiet)
    c = rep["corpus"]
    t = Table(title=f"pretrained ({rep['mode']}) -> {out_dir}")
    t.add_column("")
    t.add_column("", justify="right")
    rows = [("texts read", c["read"]), ("empty", c["empty"]), ("duplicates dropped", c["duplicates"]),
            ("excluded (in --exclude files)", c["excluded"]), ("kept (train + dev)", c["kept"]),
            ("vocabulary", rep["vocab_size"]), ("tokens added", rep["added_tokens"]), ("parameters", f"{rep['parameters']:,}"),
            ("steps", f"{rep['steps']} ({rep['stopped_by']})"), ("tokens seen", f"{rep['tokens_seen']:,}"),
            ("tokens/s", f"{rep['tokens_per_second']:,.0f}"), ("train time", f"{rep['train_seconds']:.0f} s"),
            ("dev MLM loss", " -> ".join(f"{v:.3f}" for _, v in rep["dev_loss"][:1] + rep["dev_loss"][-1:]) or "n/a")]
    for k, v in rows:
        t.add_row(k, str(v))
    out.print(t)
    if rep["mlm_head_created"]:
        out.print("[yellow]note:[/] the base had no masked-LM head; a new one (decoder tied to the input embeddings) was trained.")
    out.print(f"loss curve: {out_dir}/loss_curve.png; fine-tune with `niche train --base {out_dir} --data TRAIN --out MODEL`")


@commands.command("fill-mask")
@friendly
def fill_mask(
    model: Annotated[str, typer.Argument(help="Masked-LM directory (e.g. from niche pretrain) or name.")],
    text: Annotated[str, typer.Argument(help="Text with one or more [MASK] tokens.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k tokens (with probabilities) for each [MASK] in TEXT, one line each."""
    from ..pretrain import FillMask

    res = FillMask(model)(text, top_k=top_k)
    if as_json:
        out.print_json(json.dumps(res, ensure_ascii=False))
        return
    for m, cands in enumerate(res):
        if len(res) > 1:
            out.print(f"[bold]mask {m + 1}[/]")
        for c in cands:
            out.print(f"{c['score']:.4f}  {c['token']}  {c['sequence']}", highlight=False)


@commands.command()
@friendly
def explain(
    model: Annotated[str, typer.Argument(help="niche transformer model dir, or a Hugging Face encoder / masked-LM dir.")],
    text: Annotated[str, typer.Argument(help="The text to look at.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write attention_heads.png, cls_attention.png and explain.json here.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Explain this label's score (default: the predicted label).")] = None,
) -> None:
    """Attention heat maps per layer and head, the first token's attention, and gradient x input
    token importance (printed as a highlighted line)."""
    from ..explain import explain as run
    from ..explain import highlight, plot_attention

    res = run(model, text, target=target)
    if res.get("label") is not None:
        top = sorted(res["scores"].items(), key=lambda kv: -kv[1])[:3]
        out.print(f"predicted [bold]{res['label']}[/] (" + ", ".join(f"{k} {v:.3f}" for k, v in top) + ")")
        out.print("importance (gradient x input):")
    else:
        out.print("no classifier head: shading = last layer's first-token attention")
    out.print(highlight(res))
    L, H, T, _ = res["attentions"].shape
    out.print(f"{L} layers x {H} heads over {T} tokens")
    if out_dir is not None:
        paths = plot_attention(res, out_dir)
        keep = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in res.items()}
        (Path(out_dir) / "explain.json").write_text(json.dumps(keep, ensure_ascii=False))
        out.print("wrote " + ", ".join(str(p) for p in paths) + f", {out_dir}/explain.json")
    else:
        err.print("pass --out DIR for the attention heat maps (PNG) and the arrays (JSON).")
