"""The masked-LM pretraining loop: model setup, the time/step budget, dev loss, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PretrainConfig
from ..encoders import pad_batch, pick_device, quiet_hf, resolve_base
from ..errors import ConfigError, ModelLoadError
from ..modeldir import library_versions, write_dir_atomically
from ..train import MaskedLM, batch_order, checkpoint, fingerprint
from ..train.optim import autocast as make_autocast
from ..train.optim import adamw, param_groups
from .corpus import build_corpus, extend_vocabulary, train_tokenizer
from .masking import Encoded, encode_corpus, mask_tokens

log = logging.getLogger(__name__)

REPORT = "pretrain_report.json"


# -- model ------------------------------------------------------------------------------------------

def scratch_model(tokenizer: Any, cfg: PretrainConfig) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    conf = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                      max_position_embeddings=cfg.max_len, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(cfg.seed)
    return BertForMaskedLM(conf)


def load_masked_lm(src: str) -> tuple[Any, Any, bool]:
    """(model, tokenizer, head_was_created) for a local dir or hub name; safetensors only."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer


    path = resolve_base(src)
    with quiet_hf():
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load {src!r} as a masked LM ({e}); pass a Hugging Face encoder directory "
                                 "with safetensors weights.") from None
    created = any(k.startswith(("cls.", "lm_head", "vocab_", "predictions")) for k in info.get("missing_keys", []))
    if created:
        model.tie_weights()
    return model, tok, created


# -- the loop ------------------------------------------------------------------------------------------

@dataclass
class PretrainState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0
    tokens_seen: int = 0
    masked_seen: int = 0
    seconds: float = 0.0
    losses: list[list[float]] = field(default_factory=list)  # [step, mean train loss since last record]
    dev_losses: list[list[float]] = field(default_factory=list)  # [step, dev MLM loss]
    stopped_by: str = ""


def _collate(seqs: list[np.ndarray], words: list[np.ndarray], pad_id: int, multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence rounded up to ``multiple``: a few distinct shapes instead of one per
    length keeps CPU kernels (oneDNN, bf16) and the allocator from re-planning every step (measured:
    memory grew and half the CPU time went to the kernel with exact-length padding)."""
    return pad_batch(seqs, pad_id, multiple)[0], pad_batch(words, -1, multiple)[0]


def _masked_batch(enc: Encoded, b: list[int], tokenizer: Any, rng: np.random.Generator, candidates: np.ndarray,
                  prob: float, device: torch.device) -> tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]:
    """Pad the sequences ``b`` of ``enc``, mask them; returns (padded ids, model inputs, labels)."""
    ids, words = _collate([enc.ids[i] for i in b], [enc.words[i] for i in b], tokenizer.pad_token_id)
    x, y = mask_tokens(ids, words, rng, tokenizer.mask_token_id, candidates, prob)
    inputs = {"input_ids": torch.as_tensor(x, device=device),
              "attention_mask": torch.as_tensor(ids != tokenizer.pad_token_id, device=device).long()}
    return ids, inputs, torch.as_tensor(y, device=device)


def _lr_factor(frac: float, warmup: float) -> float:
    if frac < warmup:
        return frac / warmup
    return max(0.0, (1 - frac) / (1 - warmup)) if warmup < 1 else 0.0


@torch.inference_mode()
def dev_loss(model: Any, enc: Encoded, tokenizer: Any, cfg: PretrainConfig, device: torch.device,
             candidates: np.ndarray) -> float:
    """Mean MLM loss per masked token over the held-out texts with fixed masks."""
    model.eval()
    rng = np.random.default_rng([cfg.seed, 999_999])
    total, n = 0.0, 0
    order = np.argsort([len(x) for x in enc.ids])
    for s in range(0, len(order), 64):
        b = order[s: s + 64]
        ids, inputs, labels = _masked_batch(enc, b, tokenizer, rng, candidates, cfg.mlm_prob, device)
        k = int((labels != -100).sum())
        if not k:
            continue
        total += float(MaskedLM()(model, inputs, labels)) * k
        n += k
    model.train()
    return total / max(n, 1)


@dataclass
class _Run:
    """What :func:`_prepare` sets up for the loop."""

    model: Any
    tokenizer: Any
    device: torch.device
    enc: Encoded
    dev_enc: Encoded
    stats: Any
    added: list[str]
    head_created: bool
    candidates: np.ndarray
    train_texts: int
    dev_texts: int


def _prepare(corpus: Sequence[str | Path], cfg: PretrainConfig, text_col: str | None, exclude: Sequence[str | Path],
             resume: bool, saved_tok: Path) -> _Run:
    """Read and split the corpus, build or load the tokenizer and model, encode both splits."""
    texts, stats = build_corpus(corpus, text_col, exclude)
    rng = random.Random(cfg.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_dev = min(cfg.dev_texts, len(texts) // 100)
    dev_idx, train_idx = sorted(order[:n_dev]), sorted(order[n_dev:])
    train_texts = [texts[i] for i in train_idx]
    dev_texts = [texts[i] for i in dev_idx]
    log.info("corpus: %d texts kept (%d duplicates, %d excluded, %d empty)", stats.kept, stats.duplicates, stats.excluded, stats.empty)

    added: list[str] = []
    head_created = False
    if cfg.base is None:
        if resume and (saved_tok / "tokenizer.json").is_file():  # the vocabulary the checkpoint was trained with
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(saved_tok))
        else:
            tokenizer = train_tokenizer(train_texts, cfg)
        model = scratch_model(tokenizer, cfg)
    else:
        model, tokenizer, head_created = load_masked_lm(cfg.base)
        if cfg.extend_vocab:
            added = extend_vocabulary(tokenizer, model, train_texts, cfg.extend_vocab)
        limit = getattr(model.config, "max_position_embeddings", cfg.max_len)
        if cfg.max_len > limit:
            raise ConfigError(f"max_len {cfg.max_len} exceeds the base model's {limit} positions; pass --max-len {limit} or less.")
    device = pick_device(cfg.device)
    model.to(device)
    enc = encode_corpus(tokenizer, train_texts, cfg.max_len, cfg.masking)
    dev_enc = encode_corpus(tokenizer, dev_texts, cfg.max_len, cfg.masking)
    special = set(tokenizer.all_special_ids)
    candidates = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)

    return _Run(model, tokenizer, device, enc, dev_enc, stats, added, head_created, candidates,
                len(train_texts), len(dev_texts))


def pretrain(corpus: Sequence[str | Path], out: str | Path, cfg: PretrainConfig | None = None,
             text_col: str | None = None, exclude: Sequence[str | Path] = (), checkpoint_dir: str | Path | None = None,
             resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pretrain (or continue pretraining) a masked LM on ``corpus`` and write it to ``out`` atomically.

    Returns the report written to ``out/pretrain_report.json``.
    Raises:
        DataError: unreadable or empty corpus. ConfigError: bad settings. ResumeError: a checkpoint of
        another run is in ``checkpoint_dir`` (or one exists and ``resume`` is False).
    """
    from tqdm.auto import tqdm


    cfg = cfg or PretrainConfig()
    cfg.validate()
    out = Path(out)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out.with_name(out.name + ".checkpoints")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    saved_tok = ckpt_dir / "tokenizer"
    run = _prepare(corpus, cfg, text_col, exclude, resume, saved_tok)
    model, tokenizer, device, enc, dev_enc = run.model, run.tokenizer, run.device, run.enc, run.dev_enc
    stats, added, candidates = run.stats, run.added, run.candidates

    steps_per_epoch = math.ceil(len(enc.ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    fp = fingerprint(asdict(cfg) | {"threads": None, "device": None}, stats.kept, stats.characters, len(enc.ids), added)
    state = PretrainState(total_steps=total)

    opt = adamw(param_groups(model, cfg.peak_lr, cfg.weight_decay), lr=cfg.peak_lr, betas=(0.9, 0.98),
                            eps=1e-6)
    # the learning rate follows the run's progress (see _lr_factor), so there is no scheduler to save
    found = checkpoint.resume_or_refuse(ckpt_dir, resume, fp, what="pretraining run",
                                        other="another corpus or other settings", same="the same flags")
    last = found[0] if found else None
    if cfg.base is None and last is None:  # atomically: a run killed while saving it must not resume a torn vocabulary
        with quiet_hf():
            write_dir_atomically(saved_tok, lambda d: tokenizer.save_pretrained(str(d)))
    if found is not None:
        state = PretrainState(**checkpoint.restore(last, found[1], model, opt, device, strict=False))
        model.tie_weights()
        log.info("resuming pretraining from %s (step %d of %d)", last, state.global_step, state.total_steps)

    autocast = make_autocast(cfg.precision, device)
    budget = cfg.max_minutes * 60
    lengths = [len(x) for x in enc.ids]
    mlm_loss = MaskedLM()

    if last is None:
        torch.manual_seed(cfg.seed)  # dropout; a resumed run continues the checkpoint's RNG state
    model.train()
    bar = tqdm(total=state.total_steps, initial=state.global_step, desc="pretraining (MLM)", unit="step",
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - state.seconds
    loss_acc, loss_n, tok_window, t_window = 0.0, 0, 0, time.perf_counter()
    done = state.global_step >= state.total_steps
    while not done:
        batches = batch_order(lengths, cfg.batch_size, cfg.seed, state.epoch, True)
        for b in batches[state.step_in_epoch:]:
            frac = state.global_step / max(state.total_steps, 1)
            if budget:
                frac = max(frac, (time.perf_counter() - t0) / budget)
            for g in opt.param_groups:
                g["lr"] = cfg.peak_lr * _lr_factor(frac, cfg.warmup_ratio)
            ids, inputs, labels = _masked_batch(enc, b, tokenizer, np.random.default_rng([cfg.seed, state.global_step]),
                                                candidates, cfg.mlm_prob, device)
            if bool((labels != -100).any()):
                with autocast:
                    loss = mlm_loss(model, inputs, labels)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss_acc += float(loss.detach())
                loss_n += 1
            n_tok = int((ids != tokenizer.pad_token_id).sum())
            state.tokens_seen += n_tok
            state.masked_seen += int((labels != -100).sum())
            tok_window += n_tok
            state.global_step += 1
            state.step_in_epoch += 1
            if state.step_in_epoch == len(batches):
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if state.global_step % 10 == 0 and loss_n:
                now = time.perf_counter()
                state.losses.append([state.global_step, loss_acc / loss_n])
                post = {"loss": f"{loss_acc / loss_n:.3f}", "tok_s": f"{tok_window / max(now - t_window, 1e-9):,.0f}",
                        "lr": f"{opt.param_groups[0]['lr']:.1e}"}
                if budget:  # the step total is an upper bound when the time budget decides
                    post["budget_left"] = f"{max(budget - (now - t0), 0) / 60:.1f} min"
                bar.set_postfix(post)
                loss_acc, loss_n, tok_window, t_window = 0.0, 0, 0, now
            state.seconds = time.perf_counter() - t0
            over_time = bool(budget) and state.seconds >= budget
            done = state.global_step >= state.total_steps or over_time
            if done:
                state.stopped_by = "time budget" if over_time and state.global_step < state.total_steps else "steps"
            if dev_enc.ids and (state.global_step % cfg.eval_every == 0 or done):
                state.dev_losses.append([state.global_step, dev_loss(model, dev_enc, tokenizer, cfg, device, candidates)])
                bar.write(f"step {state.global_step}: dev MLM loss {state.dev_losses[-1][1]:.4f}") if progress else None
            bar.update(1)
            if state.global_step % cfg.checkpoint_every == 0 or done:
                checkpoint.save_checkpoint(ckpt_dir, model, opt, state, fp)
            if done or state.step_in_epoch == 0:
                break
    bar.close()
    model.eval()

    report = _report(run, cfg, state, steps_per_epoch, time.perf_counter() - t_start)
    _write_model(out, model, tokenizer, report)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return report


def _report(run: _Run, cfg: PretrainConfig, state: PretrainState, steps_per_epoch: int,
            wall_seconds: float) -> dict[str, Any]:
    """``pretrain_report.json``: the corpus, the model, how far training got and its loss curves."""
    report = {
        "mode": "scratch" if cfg.base is None else "continued",
        "base": cfg.base,
        "config": asdict(cfg),
        "corpus": asdict(run.stats) | {"train_texts": run.train_texts, "dev_texts": run.dev_texts,
                                   "train_sequences": len(run.enc.ids), "corpus_tokens": run.enc.tokens},
        "vocab_size": len(run.tokenizer),
        "added_tokens": len(run.added),
        "added_examples": run.added[:50],
        "mlm_head_created": run.head_created,
        "parameters": int(sum(p.numel() for p in run.model.parameters())),
        "steps": state.global_step,
        "total_steps": state.total_steps,
        "epochs_done": state.global_step / max(steps_per_epoch, 1),
        "stopped_by": state.stopped_by or "steps",
        "tokens_seen": state.tokens_seen,
        "masked_tokens_seen": state.masked_seen,
        "train_seconds": round(state.seconds, 1),
        "wall_seconds_total": round(wall_seconds, 1),
        "tokens_per_second": round(state.tokens_seen / max(state.seconds, 1e-9), 1),
        "final_train_loss": state.losses[-1][1] if state.losses else None,
        "dev_loss": state.dev_losses,
        "train_loss": state.losses,
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
    }

    return report


def _write_model(out: Path, model: Any, tokenizer: Any, report: dict[str, Any]) -> None:
    """The masked-LM directory (Hugging Face files, report, loss plot), written atomically."""
    def fill(d: Path) -> None:
        with quiet_hf():
            model.save_pretrained(str(d), safe_serialization=True)
            tokenizer.save_pretrained(str(d))
        (d / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        plot_losses(report, d / "loss_curve.png")

    write_dir_atomically(out, fill)


def plot_losses(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if report["train_loss"]:
        s, v = zip(*report["train_loss"])
        ax.plot(s, v, lw=0.8, alpha=0.7, label="train (mean of 10 steps)")
    if report["dev_loss"]:
        s, v = zip(*report["dev_loss"])
        ax.plot(s, v, "o-", label="dev (held-out corpus)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM cross-entropy per masked token")
    ax.set_title(f"niche pretrain ({report['mode']}): {report['tokens_seen']:,} tokens seen")
    ax.grid(alpha=0.3)
    if report["train_loss"] or report["dev_loss"]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
