"""Resumable checkpoints shared by fine-tuning and pretraining (safetensors + JSON, never pickle).

A checkpoint is ``ckpt_dir/step-N/``: model weights, AdamW moments, the loop state, the
scheduler state (when there is a scheduler), the torch and Python RNG states, and the run's
fingerprint (data + settings). :func:`resume_or_refuse` is the one policy: a checkpoint left by an
interrupted run is continued only with ``resume=True`` and only by a run with the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import ResumeError, no_space_left
from ..modeldir import move_into_place, process_alive

CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
"""What a ``step-N`` directory holds (written into a temp directory, renamed into place complete)."""
BEST = "best.safetensors"
"""Best-on-dev weights kept beside the step checkpoints."""


def fingerprint(*parts: Any) -> str:
    """A short hash of everything that must match for a checkpoint to be resumed."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the model's weights to ``path`` atomically (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state_dict(model), str(tmp))
    os.replace(tmp, path)


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """Optimizer tensors to safetensors at ``path``; returns the JSON-able rest (param groups)."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    save_file(tensors, str(path))
    return {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, path: Path, groups: dict[str, Any]) -> None:
    """Inverse of :func:`save_optimizer`."""
    tensors = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete ``step-N`` directory, or None (one whose files are not all there, say half
    deleted by a run killed while removing its checkpoints after saving the model, is skipped)."""
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("step-*") if all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def save_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: Any, fp: str,
                    sched: Any = None) -> Path:
    """Write ``step-N`` (N = ``state.global_step``) atomically and drop older step dirs.

    Args:
        state: the loop's state dataclass (saved with ``asdict``).
        sched: a learning-rate scheduler with ``state_dict()``, or None when the loop sets the rate itself.
    """
    final = ckpt_dir / f"step-{state.global_step}"
    tmp = ckpt_dir / f".tmp-step-{state.global_step}-{os.getpid()}"
    prev = latest_checkpoint(ckpt_dir)
    with no_space_left(ckpt_dir, f"the new checkpoint was not written; the last complete one "
                                 f"({prev.name if prev else 'none yet'}) is intact",
                       fix="pass --checkpoint-dir on a disk with room (and --resume)"):
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_file(state_dict(model), str(tmp / "model.safetensors"))
            groups = save_optimizer(opt, tmp / "optimizer.safetensors")
            save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
            meta = {"fingerprint": fp, "state": asdict(state), "scheduler": sched.state_dict() if sched is not None else {},
                    "optimizer": groups, "python_random": list(random.getstate()[1])}
            (tmp / "state.json").write_text(json.dumps(meta, default=json_default))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk (or Ctrl-C) leaves no partial step directory
            raise
    move_into_place(tmp, final)  # atomic even when step-N is saved again (a resumed run that was done)
    for old in ckpt_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_dir.glob(".tmp-step-*-*"):  # left by a killed run
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def resume_or_refuse(ckpt_dir: Path, resume: bool, fp: str, what: str = "run",
                     other: str = "a run with other data or settings",
                     same: str = "the same --data/--eval and flags") -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue, or None for a fresh start.

    Raises:
        ResumeError: ``ckpt_dir`` holds a checkpoint but ``resume`` is False, or the checkpoint's
            fingerprint is not ``fp`` (another run's data or settings).
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return None
    if not resume:
        raise ResumeError(f"{ckpt_dir} holds a checkpoint ({last.name}) of an interrupted {what}. Pass --resume to "
                          f"continue it, or delete {ckpt_dir} to start over.")
    meta = json.loads((last / "state.json").read_text())
    if meta["fingerprint"] != fp:
        raise ResumeError(f"{last}: this checkpoint belongs to {other} (fingerprint "
                          f"{meta['fingerprint']} != {fp}). Resume with {same}, or delete {ckpt_dir}.")
    return last, meta


def restore(last: Path, meta: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device,
            sched: Any = None, strict: bool = True) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and RNG states of checkpoint ``last`` in place; returns the
    saved loop state (a dict for the loop's state dataclass)."""
    model.load_state_dict(load_file(str(last / "model.safetensors"), device=str(device)), strict=strict)
    load_optimizer(opt, last / "optimizer.safetensors", meta["optimizer"])
    if sched is not None:
        sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(last / "rng.safetensors"))["torch_cpu"])
    if "python_random" in meta:
        random.setstate((3, tuple(meta["python_random"]), None))
    return meta["state"]


def load_weights(model: torch.nn.Module, path: Path, device: torch.device) -> None:
    model.load_state_dict(load_file(str(path), device=str(device)))
