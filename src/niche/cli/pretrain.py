"""``niche pretrain``, ``niche fill-mask``, ``niche explain`` and ``niche ensemble``: thin adapters over
:mod:`niche.pretrain`, :mod:`niche.fillmask`, :mod:`niche.explain` and :mod:`niche.ensemble`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import _friendly, app, err, out


@app.command()
@_friendly
def pretrain(
    corpus: Annotated[list[Path], typer.Option("--corpus", help="Unlabeled texts: .txt (one per line) or CSV/TSV/JSONL/Parquet with --text-col. Repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Masked-LM directory to write (atomically).")],
    text_col: Annotated[Optional[str], typer.Option("--text-col", help="Text column of CSV/JSONL corpora (default: text).")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option("--exclude", help="Evaluation files whose texts must not be pretrained on (column 'text' or one per line). Repeatable.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Continue pretraining this encoder (dir or name); default: from scratch.")] = None,
    extend_vocab: Annotated[int, typer.Option("--extend-vocab", help="Continued: add up to N frequent corpus words the base tokenizer splits.")] = 0,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Scratch: wordpiece (CJK one char per token) | char.")] = "wordpiece",
    vocab_size: Annotated[int, typer.Option("--vocab-size")] = 8000,
    layers: Annotated[int, typer.Option("--layers")] = 4,
    hidden: Annotated[int, typer.Option("--hidden")] = 256,
    heads: Annotated[int, typer.Option("--heads")] = 4,
    intermediate: Annotated[int, typer.Option("--intermediate")] = 1024,
    max_len: Annotated[int, typer.Option("--max-len")] = 128,
    masking: Annotated[str, typer.Option("--masking", help="whole-word | token | jieba (Chinese whole-word masking).")] = "whole-word",
    mlm_prob: Annotated[float, typer.Option("--mlm-prob")] = 0.15,
    epochs: Annotated[int, typer.Option("--epochs")] = 1,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N steps (0: epochs decide).")] = 0,
    max_minutes: Annotated[float, typer.Option("--max-minutes", help="Wall-clock budget; the LR schedule ends with it.")] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak LR (0: 5e-4 scratch, 5e-5 continued).")] = 0.0,
    precision: Annotated[str, typer.Option("--precision", help="fp32 | bf16")] = "fp32",
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = 500,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Dev MLM loss every N steps.")] = 500,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Default: OUT.checkpoints")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    device: Annotated[str, typer.Option("--device")] = "auto",
    threads: Annotated[int, typer.Option("--threads")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Masked-LM pretraining from scratch (tokenizer + small BERT) or continued from --base; the output
    is a Hugging Face masked-LM directory that `niche train --base OUT` fine-tunes."""
    from ..pretrain import PretrainConfig
    from ..pretrain import pretrain as run

    cfg = PretrainConfig(base=base, tokenizer=tokenizer, vocab_size=vocab_size, layers=layers, hidden=hidden, heads=heads,
                         intermediate=intermediate, max_len=max_len, masking=masking, mlm_prob=mlm_prob,
                         extend_vocab=extend_vocab, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes,
                         batch_size=batch_size, lr=lr, precision=precision, checkpoint_every=checkpoint_every,
                         eval_every=eval_every, seed=seed, device=device, threads=threads)
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


@app.command("fill-mask")
@_friendly
def fill_mask(
    model: Annotated[str, typer.Argument(help="Masked-LM directory (e.g. from niche pretrain) or name.")],
    text: Annotated[str, typer.Argument(help="Text with one or more [MASK] tokens.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k tokens (with probabilities) for each [MASK] in TEXT, one line each."""
    from ..fillmask import FillMask

    res = FillMask(model)(text, top_k=top_k)
    if as_json:
        out.print_json(json.dumps(res, ensure_ascii=False))
        return
    for m, cands in enumerate(res):
        if len(res) > 1:
            out.print(f"[bold]mask {m + 1}[/]")
        for c in cands:
            out.print(f"{c['score']:.4f}  {c['token']}  {c['sequence']}", highlight=False)


@app.command()
@_friendly
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


@app.command()
@_friendly
def ensemble(
    models: Annotated[list[Path], typer.Option("--model", help="A niche model directory (2 to 5; repeat the option).")],
    eval_path: Annotated[Path, typer.Option("--eval", help="Labeled dev file the weights are chosen on.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Ensemble directory to write (atomically; members are copied in).")],
    test_path: Annotated[Optional[Path], typer.Option("--test", help="Also score on this file (members and ensemble).")] = None,
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    steps: Annotated[int, typer.Option("--steps", help="Weight grid resolution: multiples of 1/steps.")] = 20,
) -> None:
    """Average the probabilities of several models with weights chosen on --eval (dev accuracy, ties by log-loss)."""
    from ..data import read_labeled
    from ..ensemble import build_ensemble

    dev = read_labeled(eval_path, text_col, label_col)
    ens = build_ensemble(models, dev, steps=steps)
    t = Table(title=f"ensemble -> {out_dir}")
    for c in ("model", "weight", "dev accuracy") + (("test accuracy",) if test_path else ()):
        t.add_column(c, justify="left" if c == "model" else "right")
    test = read_labeled(test_path, text_col, label_col) if test_path else None
    for m, member in zip(ens.info_["members"], ens.model_.members):
        row = [m["source"], f"{m['weight']:.2f}", f"{m['dev_accuracy'] * 100:.2f}"]
        if test is not None:
            row.append(f"{member.evaluate(test)['accuracy'] * 100:.2f}")
        t.add_row(*row)
    row = ["ensemble", "", f"{ens.info_['metrics']['dev']['accuracy'] * 100:.2f}"]
    if test is not None:
        ens.info_["metrics"]["test"] = ens.evaluate(test)
        row.append(f"{ens.info_['metrics']['test']['accuracy'] * 100:.2f}")
    t.add_row(*row)
    ens.save(out_dir)
    out.print(t)
