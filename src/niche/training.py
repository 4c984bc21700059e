"""The explicit fine-tuning loop for the transformer family.

AdamW, linear warm-up then linear decay, gradient clipping, optional class weights,
length-grouped batches with dynamic padding, evaluation on dev macro-F1 with early stopping,
and resumable checkpoints.

Checkpoints (all safetensors + JSON, never pickle) live in ``ckpt_dir/step-N/``: model weights,
AdamW moments, scheduler/loop state and the torch RNG state. The batch order of an epoch is a
pure function of (seed, epoch), so a resumed run skips exactly the batches already done and
reproduces an uninterrupted run step for step.

Distributed (under ``torchrun``/``accelerate launch``, see :mod:`niche.distributed`): the model is
wrapped in DistributedDataParallel and ``batch_size`` stays the *global* batch of one optimizer
step. Every process computes the same batch order and takes every ``world``-th text of each
(length-sorted) batch, optionally in ``grad_accum`` micro-batches; each loss is normalized by the
global batch, so the summed gradient is the single-process gradient whatever the number of
processes. Hence a checkpoint resumes on any number of processes. Rank 0 evaluates, prints and
writes checkpoints (``ckpt_dir`` must be on storage every node sees to resume a multi-node run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score

from . import distributed
from .config import TransformerConfig
from .errors import ConfigError, ResumeError
from .families.transformer import TransformerModel

log = logging.getLogger(__name__)

BEST = "best.safetensors"


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


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# -- checkpoint I/O ------------------------------------------------------------------------------

def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    save_file(tensors, str(path))
    return {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, path: Path, groups: dict[str, Any]) -> None:
    tensors = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("step-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    state: TrainState, fp: str) -> Path:
    """Write ``step-N`` atomically (temp dir, then rename) and drop older step dirs."""
    final = ckpt_dir / f"step-{state.global_step}"
    tmp = ckpt_dir / f".tmp-step-{state.global_step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_state_dict(model), str(tmp / "model.safetensors"))
    groups = _save_optimizer(opt, tmp / "optimizer.safetensors")
    save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    meta = {"fingerprint": fp, "state": asdict(state), "scheduler": sched.state_dict(), "optimizer": groups,
            "python_random": list(random.getstate()[1])}
    (tmp / "state.json").write_text(json.dumps(meta, default=_json_default))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in ckpt_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _autocast(precision: str, device: torch.device) -> Any:
    """Mixed-precision context for the forward pass (weights and optimizer stay fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA GPU (the device is {device}); use --precision bf16 on a CPU, or fp32.")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use --precision fp16 or fp32.")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


# -- the loop ------------------------------------------------------------------------------------

def train_transformer(
    tm: TransformerModel,
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
    soft: np.ndarray | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> TrainState:
    """Fine-tune ``tm.model`` in place; on return it holds the best-on-dev weights.

    Args:
        ckpt_dir: where resumable checkpoints go.
        fp: fingerprint of data + settings; a checkpoint with another fingerprint is refused.
        resume: continue from the latest checkpoint in ``ckpt_dir`` (fresh start if there is none).
        callbacks: called with the state after every optimizer step (and its checkpoint).
        soft: teacher logits (N, K) for knowledge distillation; the loss becomes
            ``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)``. Rows whose label is
            ``-100`` (unlabeled transfer texts) contribute the KL term only.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model, device = tm.model, tm.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = distributed.init(device)
    progress = progress and ctx.is_main
    autocast = _autocast(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    n_classes = model.config.num_labels
    lengths = [len(x) for x in train_ids]
    steps_per_epoch = (len(train_ids) + cfg.batch_size - 1) // cfg.batch_size
    state = TrainState(total_steps=steps_per_epoch * cfg.epochs)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    head_prefixes = ("classifier.", "pooler.", "bert.pooler.", "pre_classifier.", "score.")
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for n, p in model.named_parameters():
        is_head = n.startswith(head_prefixes) or ".pooler." in n
        groups.setdefault((is_head, n.endswith(no_decay)), []).append(p)
    params = [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay,
               "lr": cfg.lr * (cfg.head_lr_mult if head else 1.0)}
              for (head, nd), ps in sorted(groups.items())]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * state.total_steps), state.total_steps)

    weight = None
    if cfg.class_weights:
        known = train_y[train_y >= 0]
        counts = np.bincount(known, minlength=n_classes).astype(np.float64)
        w = len(known) / (n_classes * np.maximum(counts, 1))
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    w_np = weight.cpu().numpy() if weight is not None else None

    def norms(b: list[int]) -> tuple[float, float]:
        """Normalizers of the *global* batch ``b``: total class weight of its labeled rows (the
        denominator of a weighted-mean cross-entropy) and its row count (KL ``batchmean``)."""
        y = train_y[b]
        y = y[y >= 0]
        return (float(w_np[y].sum()) if w_np is not None else float(len(y))), float(len(b))

    def compute_loss(logits: torch.Tensor, labels: torch.Tensor, part: list[int], ce_norm: float,
                     kl_norm: float) -> torch.Tensor:
        """This micro-batch's share of the global-batch loss (sums divided by global normalizers;
        with one process and no accumulation it equals the usual mean loss)."""
        ce = None
        if ce_norm > 0 and bool((labels >= 0).any()):
            ce = torch.nn.functional.cross_entropy(logits, labels, weight=weight, ignore_index=-100,
                                                   reduction="sum") / ce_norm
        if soft is None:
            return ce if ce is not None else logits.sum() * 0.0
        T = temperature
        teacher = torch.as_tensor(soft[part], dtype=torch.float32, device=device) / T
        kl = torch.nn.functional.kl_div(torch.log_softmax(logits / T, -1), torch.log_softmax(teacher, -1),
                                        log_target=True, reduction="sum") * (T * T) / kl_norm
        if alpha >= 1 or ce_norm == 0:
            return kl
        return (1 - alpha) * (ce if ce is not None else kl * 0.0) + alpha * kl

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(ckpt_dir)
    if last is not None and not resume:
        raise ResumeError(
            f"{ckpt_dir} holds a checkpoint ({last.name}) of an interrupted run. Pass --resume to continue it, "
            f"or delete {ckpt_dir} to start over."
        )
    if last is not None:
        meta = json.loads((last / "state.json").read_text())
        if meta["fingerprint"] != fp:
            raise ResumeError(
                f"{last}: this checkpoint belongs to a run with other data or settings (fingerprint "
                f"{meta['fingerprint']} != {fp}). Resume with the same --data/--eval and flags, or delete {ckpt_dir}."
            )
        model.load_state_dict(load_file(str(last / "model.safetensors"), device=str(device)))
        _load_optimizer(opt, last / "optimizer.safetensors", meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        torch.set_rng_state(load_file(str(last / "rng.safetensors"))["torch_cpu"])
        random.setstate((3, tuple(meta["python_random"]), None))
        state = TrainState(**meta["state"])
        log.info("resuming from %s (step %d of %d)", last, state.global_step, state.total_steps)

    def evaluate_dev() -> float:
        """Rank 0 scores dev and keeps the best weights; every rank gets the same bookkeeping."""
        if ctx.is_main:
            logits = tm.logits_for_ids(dev_ids)
            f1 = float(f1_score(dev_y, logits.argmax(1), average="macro", labels=list(range(n_classes)), zero_division=0))
            acc = float((logits.argmax(1) == dev_y).mean())
            state.evals.append({"step": state.global_step, "epoch": state.epoch, "dev_macro_f1": f1, "dev_accuracy": acc})
            if f1 > state.best_f1:
                state.best_f1, state.best_step, state.bad_evals = f1, state.global_step, 0
                tmp = ckpt_dir / f".{BEST}.tmp"
                save_file(_state_dict(model), str(tmp))
                os.replace(tmp, ckpt_dir / BEST)
            else:
                state.bad_evals += 1
        book = distributed.broadcast((state.evals, state.best_f1, state.best_step, state.bad_evals))
        state.evals, state.best_f1, state.best_step, state.bad_evals = book
        return state.evals[-1]["dev_macro_f1"]

    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net: torch.nn.Module = DistributedDataParallel(model, device_ids=ids)
        torch.manual_seed(cfg.seed + 1000 * ctx.rank)  # dropout masks differ between ranks, as in one big batch
    else:
        net = model
    accum = cfg.grad_accum

    model.train()
    bar = tqdm(total=state.total_steps, initial=state.global_step, desc="fine-tuning", unit="step",
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - state.seconds
    loss_acc, loss_n = 0.0, 0
    while state.epoch < cfg.epochs and not state.stopped_early:
        batches = batch_order(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length)
        for b in batches[state.step_in_epoch:]:
            ce_norm, kl_norm = norms(b)
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
                    loss = compute_loss(logits.float(), labels, part, ce_norm, kl_norm) * scale
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += float(loss.detach()) / max(ctx.world, 1)
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
                save_checkpoint(ckpt_dir, model, opt, sched, state, fp)
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
        model.load_state_dict(load_file(str(best), device=str(device)))
    distributed.barrier()  # every rank has read them before rank 0 may clean up
    model.eval()
    state.seconds = time.perf_counter() - t0
    return state
