"""Data parallelism under ``torchrun`` (DistributedDataParallel, Li et al. 2020, arXiv:2006.15704).

``torchrun --nproc_per_node N -m plait.cli.main train recipe.toml`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each process holds a full model replica; every
optimizer step, each rank computes the loss on its slice of the *same* global batch and DDP
all-reduces (averages) the gradients, so N ranks take the step one process would take on the
whole batch. Only rank 0 writes files and logs. The backend is gloo on CPU, nccl on CUDA.

Exact bits can differ from one process: the all-reduce sums per-rank gradients in a different
order than one process sums per-example gradients, and float addition is not associative, so
losses agree to ~1e-6 rather than bit for bit (``tests/test_ddp.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group if launched by torchrun; pick this rank's device.

    Args:
        device: "auto" (CUDA if available, else CPU), "cpu" or "cuda".
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA GPU is visible;"
                         " use --train.device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), torch.device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    dev = torch.device("cuda", d.local_rank) if device == "cuda" else torch.device("cpu")
    return d, dev


def teardown(clean: bool = True) -> None:
    """Leave the process group.

    After a clean run every rank first waits for the others: a gloo rank that closes its
    connections while a peer is still inside its last collective or its own teardown can abort
    that peer ("terminate called without an active exception"; 2 in 28 runs of the two-process
    test before this barrier). After an error there is no barrier, as the other ranks may never
    reach it.
    """
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` when running on more than one rank (it broadcasts rank 0's weights)."""
    if not d.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or ``torch.compile`` wrappers (what gets saved)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Sum floats over ranks (identity on one process), in float64."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather(obj: object, d: Dist) -> list[object]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` on one process)."""
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_value(value: float, d: Dist, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (so all ranks take the same decisions)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())
