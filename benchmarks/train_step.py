"""One fine-tuning step of MiniLM, three ways, in the same run: where the time of a step goes on a CPU.

    python benchmarks/train_step.py                 # SST-2 phrases from ../shared (banking77 from data/ without it)
    python benchmarks/train_step.py --rounds 7

Variants (same model, same length-grouped batches of 32 typical texts, max_len 48, the same seed):
- ``adamw``: ``torch.optim.AdamW`` as torch picks it on CPU (a Python loop over the parameter tensors);
- ``fused``: ``AdamW(fused=True)`` -- the same update in one kernel (what ``niche.train.optim.adamw`` does);
- ``fused+frozen-emb``: fused, and the word-embedding matrix (11.7 M of MiniLM's 22.7 M parameters) frozen,
  as the auto search's transformer candidate trains it.

Rounds interleave the variants (each round runs every variant for ``--steps`` steps after a warm-up step),
so machine load hits all of them alike; the result is the median over rounds of ms per training text for
forward, backward and the optimizer step. Written to ``benchmarks/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import DATA, SHARED, save_result

VARIANTS = ("adamw", "fused", "fused+frozen-emb")


def texts_of() -> tuple[str, list[str]]:
    from niche import read_labeled

    if (SHARED / "sst2" / "train.csv").is_file():
        return "sst2", read_labeled(SHARED / "sst2" / "train.csv").texts
    return "banking77", read_labeled(DATA / "banking77" / "train.csv").texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=48)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from niche.encoders import quiet_hf, resolve_base
    from niche.train.optim import param_groups

    name, texts = texts_of()
    rng = np.random.default_rng(42)
    pick = rng.choice(len(texts), size=min(len(texts), 8 * args.batch * args.steps), replace=False)
    pick = sorted(pick.tolist(), key=lambda i: len(texts[i]))
    mid = len(pick) // 2 - args.batch * args.steps // 2
    pick = pick[mid: mid + args.batch * args.steps]  # typical lengths, like a length-grouped batch
    path = resolve_base("all-MiniLM-L6-v2")
    with quiet_hf():
        tok = AutoTokenizer.from_pretrained(path)
    batches = [tok([texts[i] for i in pick[s: s + args.batch]], padding=True, truncation=True,
                   max_length=args.max_len, return_tensors="pt") for s in range(0, len(pick), args.batch)]
    y = torch.zeros(args.batch, dtype=torch.long)

    def make(variant: str) -> tuple:
        torch.manual_seed(42)
        with quiet_hf():
            m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        if variant.endswith("frozen-emb"):
            m.get_input_embeddings().weight.requires_grad_(False)
        groups = param_groups(m, 1e-4, 0.01, 20.0)
        groups = [g | {"params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        opt = torch.optim.AdamW(groups, lr=1e-4, fused=variant != "adamw")
        m.train()
        return m, opt

    models = {v: make(v) for v in VARIANTS}
    times: dict[str, dict[str, list[float]]] = {v: {"forward": [], "backward": [], "optimizer": [], "total": []}
                                                 for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS:
            m, opt = models[v]
            f = b = o = 0.0
            for k, batch in enumerate([batches[0]] + batches):
                t0 = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(m(**batch).logits, y[: batch["input_ids"].shape[0]])
                t1 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t2 = time.perf_counter()
                opt.step()
                t3 = time.perf_counter()
                if k:  # the first is a warm-up
                    f, b, o = f + t1 - t0, b + t2 - t1, o + t3 - t2
            n = args.batch * args.steps
            for key, val in (("forward", f), ("backward", b), ("optimizer", o), ("total", f + b + o)):
                times[v][key].append(val / n * 1000)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {times[v]['total'][-1]:.2f}" for v in VARIANTS)
              + " ms/text", file=sys.stderr)
    med = {v: {k: round(float(np.median(x)), 3) for k, x in t.items()} for v, t in times.items()}
    res = {"dataset": name, "base": "all-MiniLM-L6-v2", "batch": args.batch, "max_len": args.max_len,
           "rounds": args.rounds, "steps": args.steps, "tokens_per_batch_mean": round(float(np.mean(
               [b["attention_mask"].sum().item() for b in batches])), 1),
           "ms_per_text": med, "rounds_ms_per_text": times,
           "speedup_vs_adamw": {v: round(med["adamw"]["total"] / med[v]["total"], 3) for v in VARIANTS}}
    save_result("train_step", res, command="python benchmarks/train_step.py " + " ".join(sys.argv[1:]))
    for v in VARIANTS:
        print(f"{v:18s} " + "  ".join(f"{k} {x:.2f}" for k, x in med[v].items()) + f"  x{res['speedup_vs_adamw'][v]:.2f}")


if __name__ == "__main__":
    main()
