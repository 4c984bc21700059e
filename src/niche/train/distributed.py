"""PyTorch distributed, the way ``torchrun`` and ``accelerate launch`` set it up.

niche never starts processes itself: run the same command under a launcher and every process
finds its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``)::

    torchrun --nproc-per-node 2 -m niche train --data train.csv --out model      # one machine
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --master-addr HOST ...    # two machines

The backend is NCCL on CUDA and gloo on CPU. Without those variables (or with a world of one)
everything here is a no-op and training is the plain single-process loop.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init(device: torch.device | None = None) -> Context:
    """Join the process group described by the launcher's environment (idempotent)."""
    if env_world() <= 1:
        return Context()
    if not tdist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=dt.timedelta(minutes=30))
    return context()


def context() -> Context:
    if tdist.is_available() and tdist.is_initialized():
        return Context(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Context()


def is_main() -> bool:
    """True in a single process and on rank 0 (the rank that evaluates, prints and saves)."""
    return context().is_main and int(os.environ.get("RANK", "0") or 0) == 0


def barrier() -> None:
    if context().enabled:
        tdist.barrier()


def all_reduce_sum(x: float, device: torch.device) -> float:
    if not context().enabled:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return float(t.item())


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not context().enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
