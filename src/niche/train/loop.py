"""The explicit fine-tuning loop for the transformer family.

AdamW, linear warm-up then linear decay, gradient clipping, optional class weights,
length-grouped batches with dynamic padding, evaluation on dev macro-F1 with early stopping,
and resumable checkpoints.

Checkpoints (all safetensors + JSON, never pickle) live in ``ckpt_dir/step-N/``: model weights,
AdamW moments, scheduler/loop state and the torch RNG state. The batch order of an epoch is a
pure function of (seed, epoch), so a resumed run skips exactly the batches already done and
reproduces an uninterrupted run step for step.

Distributed (under ``torchrun``/``accelerate launch``, see :mod:`niche.train.distributed`): the model is
wrapped in DistributedDataParallel and ``batch_size`` stays the *global* batch of one optimizer
step. Every process computes the same batch order and takes every ``world``-th text of each
(length-sorted) batch, optionally in ``grad_accum`` micro-batches; each loss is normalized by the
global batch, so the summed gradient is the single-process gradient whatever the number of
processes. Hence a checkpoint resumes on any number of processes. Rank 0 evaluates, prints and
writes checkpoints (``ckpt_dir`` must be on storage every node sees to resume a multi-node run).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from ..config import TransformerConfig
from . import checkpoint, distributed
from .checkpoint import BEST
from .losses import CrossEntropy, class_weights
from .optim import autocast as make_autocast
from .optim import adamw, param_groups

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Loop position and early-stopping bookkeeping, saved in every checkpoint."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0
    best_f1: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    losses: list[list[float]] = field(default_factory=list)  # [step, mean loss since last record]
    evals: list[dict[str, float]] = field(default_factory=list)


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The batches of one epoch, deterministic in (seed, epoch).

    With ``group_by_length``: shuffle, cut into mega-batches of 50 batches, sort each by length,
    split into batches and shuffle the batch order (as Hugging Face's LengthGroupedSampler), so
    each batch holds texts of similar length and padding is small, while every epoch still sees
    a fresh random order.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    if not group_by_length:
        return [perm[i: i + batch_size].tolist() for i in range(0, len(perm), batch_size)]
    mega = batch_size * 50
    batches = []
    for s in range(0, len(perm), mega):
        chunk = sorted(perm[s: s + mega].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    # keep the longest batch first (fail fast on memory), shuffle the rest
    first = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
    rest = [b for i, b in enumerate(batches) if i != first]
    order = rng.permutation(len(rest))
    return [batches[first]] + [rest[i] for i in order]


def _wrap_ddp(model: torch.nn.Module, ctx: Any, device: torch.device, seed: int) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel under a launcher; the model itself otherwise."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids)
    torch.manual_seed(seed + 1000 * ctx.rank)  # dropout masks differ between ranks, as in one big batch
    return net


def _evaluate_dev(tm: Any, dev_ids: list[list[int]], dev_y: np.ndarray, n_classes: int, state: TrainState, ctx: Any,
                  ckpt_dir: Path) -> float:
    """Rank 0 scores dev and keeps the best weights; every rank gets the same bookkeeping."""
    if ctx.is_main:
        logits = tm.logits_for_ids(dev_ids)
        f1 = float(f1_score(dev_y, logits.argmax(1), average="macro", labels=list(range(n_classes)), zero_division=0))
        acc = float((logits.argmax(1) == dev_y).mean())
        state.evals.append({"step": state.global_step, "epoch": state.epoch, "dev_macro_f1": f1, "dev_accuracy": acc})
        if f1 > state.best_f1:
            state.best_f1, state.best_step, state.bad_evals = f1, state.global_step, 0
            checkpoint.save_weights(tm.model, ckpt_dir / BEST)
        else:
            state.bad_evals += 1
    book = distributed.broadcast((state.evals, state.best_f1, state.best_step, state.bad_evals))
    state.evals, state.best_f1, state.best_step, state.bad_evals = book
    return state.evals[-1]["dev_macro_f1"]


def _gradient_step(net: torch.nn.Module, tm: Any, loss: CrossEntropy, b: list[int], train_ids: list[list[int]],
                   train_y: np.ndarray, ctx: Any, cfg: TransformerConfig, autocast: Any, scaler: Any,
                   opt: torch.optim.Optimizer, sched: Any) -> float:
    """One optimizer step on the global batch ``b``: this process's share, in ``grad_accum``
    micro-batches; returns this process's share of the batch loss."""
    model, device, accum = tm.model, tm.device, cfg.grad_accum
    norms = loss.norms(b)
    mine = b[ctx.rank::ctx.world]  # this process's share of the global batch
    scale = float(ctx.world)  # DDP averages gradients over processes; the losses are already global
    if not mine:  # a global batch smaller than the world: join the all-reduce with a zero gradient
        mine, scale = b[:1], 0.0
    parts = [mine[i::accum] for i in range(min(accum, len(mine)))]
    step_loss = 0.0
    for k, part in enumerate(parts):
        sync = k == len(parts) - 1 or not ctx.enabled
        with (contextlib.nullcontext() if sync else net.no_sync()), autocast:
            inputs = tm.collate([train_ids[i] for i in part])
            labels = torch.as_tensor(train_y[part], dtype=torch.long, device=device)
            logits = net(**inputs).logits
            value = loss(logits.float(), labels, part, norms) * scale
        (scaler.scale(value) if scaler else value).backward()
        step_loss += float(value.detach()) / max(ctx.world, 1)
    if scaler:
        scaler.unscale_(opt)
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return step_loss


# -- the loop ------------------------------------------------------------------------------------

def train_classifier(
    tm: Any,
    train_ids: list[list[int]],
    train_y: np.ndarray,
    dev_ids: list[list[int]],
    dev_y: np.ndarray,
    cfg: TransformerConfig,
    ckpt_dir: Path,
    fp: str,
    resume: bool = False,
    progress: bool = True,
    callbacks: tuple[Callable[[TrainState], None], ...] = (),
    loss: CrossEntropy | None = None,
) -> TrainState:
    """Fine-tune ``tm.model`` in place; on return it holds the best-on-dev weights.

    ``tm`` is a classifier wrapper with ``model``, ``device``, ``collate(ids)`` and
    ``logits_for_ids(ids)`` (:class:`niche.families.transformer.TransformerModel`).

    Args:
        ckpt_dir: where resumable checkpoints go.
        fp: fingerprint of data + settings; a checkpoint with another fingerprint is refused.
        resume: continue from the latest checkpoint in ``ckpt_dir`` (fresh start if there is none).
        callbacks: called with the state after every optimizer step (and its checkpoint).
        loss: the training loss (:mod:`niche.train.losses`): default cross-entropy on ``train_y`` (class
            weighted with ``cfg.class_weights``); :class:`~niche.train.losses.Distillation` for a student.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model, device = tm.model, tm.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = distributed.init(device)
    progress = progress and ctx.is_main
    autocast = make_autocast(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    n_classes = model.config.num_labels
    lengths = [len(x) for x in train_ids]
    steps_per_epoch = (len(train_ids) + cfg.batch_size - 1) // cfg.batch_size
    state = TrainState(total_steps=steps_per_epoch * cfg.epochs)

    opt = adamw(param_groups(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult), lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * state.total_steps), state.total_steps)
    if loss is None:
        loss = CrossEntropy(train_y, class_weights(train_y, n_classes) if cfg.class_weights else None)

    found = checkpoint.resume_or_refuse(ckpt_dir, resume, fp)
    if found is not None:
        last, meta = found
        state = TrainState(**checkpoint.restore(last, meta, model, opt, device, sched))
        log.info("resuming from %s (step %d of %d)", last, state.global_step, state.total_steps)

    net = _wrap_ddp(model, ctx, device, cfg.seed)

    def evaluate_dev() -> float:
        return _evaluate_dev(tm, dev_ids, dev_y, n_classes, state, ctx, ckpt_dir)

    model.train()
    bar = tqdm(total=state.total_steps, initial=state.global_step, desc="fine-tuning", unit="step",
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - state.seconds
    loss_acc, loss_n = 0.0, 0
    while state.epoch < cfg.epochs and not state.stopped_early:
        batches = batch_order(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length)
        for b in batches[state.step_in_epoch:]:
            step_loss = _gradient_step(net, tm, loss, b, train_ids, train_y, ctx, cfg, autocast, scaler, opt, sched)
            state.global_step += 1
            state.step_in_epoch += 1
            loss_acc += step_loss
            loss_n += 1
            if state.global_step % 10 == 0:
                loss_acc = distributed.all_reduce_sum(loss_acc, device)  # each rank held its share of the loss
                state.losses.append([state.global_step, loss_acc / loss_n])
                bar.set_postfix(loss=f"{loss_acc / loss_n:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}",
                                best_f1=f"{max(state.best_f1, 0):.4f}")
                loss_acc, loss_n = 0.0, 0
            end_of_epoch = state.step_in_epoch == len(batches)
            if end_of_epoch:
                state.epoch += 1
                state.step_in_epoch = 0
            evaluated = False
            if (cfg.eval_every and state.global_step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch) \
                    or state.global_step == state.total_steps:
                if not (state.evals and state.evals[-1]["step"] == state.global_step):
                    f1 = evaluate_dev()
                    evaluated = True
                    bar.write(f"step {state.global_step}: dev macro-F1 {f1:.4f} (best {state.best_f1:.4f})") \
                        if progress else None
                    model.train()
                    if cfg.patience and state.bad_evals >= cfg.patience:
                        state.stopped_early = True
            bar.update(1)
            state.seconds = time.perf_counter() - t0
            if (evaluated or state.global_step % cfg.checkpoint_every == 0 or state.stopped_early) and ctx.is_main:
                checkpoint.save_checkpoint(ckpt_dir, model, opt, state, fp, sched)
            for cb in callbacks:
                cb(state)
            if state.stopped_early or end_of_epoch:
                break
    bar.close()
    if not state.evals:  # e.g. zero steps left after resume: still have a dev score
        evaluate_dev()
    distributed.barrier()  # rank 0 has written the best weights
    best = ckpt_dir / BEST
    if best.is_file():
        checkpoint.load_weights(model, best, device)
    distributed.barrier()  # every rank has read them before rank 0 may clean up
    model.eval()
    state.seconds = time.perf_counter() - t0
    return state
