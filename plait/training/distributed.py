"""Data parallelism under ``torchrun`` (DistributedDataParallel, Li et al. 2020, arXiv:2006.15704).

``torchrun --nproc_per_node N -m plait.cli.main train recipe.toml`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each process holds a full model replica; every
optimizer step, each rank computes the loss on its slice of the *same* global batch and DDP
all-reduces (averages) the gradients, so N ranks take the step one process would take on the
whole batch. Only rank 0 writes files and logs. The backend is gloo on CPU, nccl on CUDA.

Exact bits can differ from one process: the all-reduce sums per-rank gradients in a different
order than one process sums per-example gradients, and float addition is not associative, so
losses agree to ~1e-6 rather than bit for bit (``tests/test_ddp.py``).

``train.strategy = "fsdp"`` shards instead (FSDP2's ``fully_shard``, Zhao et al. 2023,
arXiv:2304.11277): each transformer ``Block`` is one unit and the root holds the rest
(embeddings, head, final norm). A rank keeps 1/N of every parameter, gradient and AdamW moment;
a unit's whole weights are all-gathered just before its forward (and again for its backward)
and freed after, and gradients are reduce-scattered (averaged), so the step is DDP's step.
Parameters keep their names, so the optimizer's groups are those of one process.

Checkpoints are whole whatever the strategy: every rank joins in gathering the full weights and
the full optimizer state (keyed by parameter name) to rank 0's CPU, which writes an ordinary
plait folder. Resuming loads the whole weights into the plain model on every rank *before*
sharding and scatters the optimizer state after, so a run saved on N ranks resumes on M.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from plait.nn import Block


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


def wrap(model: nn.Module, d: Dist, device: torch.device, strategy: str = "ddp") -> nn.Module:
    """On more than one rank: DDP-wrap ``model`` (it broadcasts rank 0's weights), or for
    ``"fsdp"`` shard it in place (every rank must hold the same weights: the same seed or the
    same checkpoint) and return it. Build the optimizer after this."""
    if not d.enabled:
        return model
    if strategy == "fsdp":
        # warns on every forward whose output is a view (our logits): in-place ops on it would
        # skip the backward all-gather, and no task does that
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
        for m in model.modules():
            if isinstance(m, Block):
                fully_shard(m)
        return fully_shard(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def no_sync(net: nn.Module, d: Dist, last: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) on all but the ``last``
    micro-batch of an accumulated step: gradients accumulate locally and are synced once."""
    if last or not d.enabled:
        return contextlib.nullcontext()
    if isinstance(net, nn.parallel.DistributedDataParallel):
        return net.no_sync()
    return _fsdp_no_sync(net)


@contextlib.contextmanager
def _fsdp_no_sync(net: Any) -> Iterator[None]:
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


@contextlib.contextmanager
def whole(model: nn.Module) -> Iterator[None]:
    """Inside: a sharded model's whole weights on every rank, so its forward runs no collective
    (an evaluation may call it a different number of times per rank, or ``generate``). Every
    rank must enter. Costs one whole copy of the weights (not of gradients or moments)."""
    units = [m for m in model.modules() if is_sharded(m)]
    for m in units:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_weights(model: nn.Module, d: Dist) -> dict[str, torch.Tensor] | None:
    """A sharded model's whole weights on rank 0's CPU (tied weights once, under their first
    name; ``{}`` on other ranks); every rank must call it. ``None`` for an unsharded model."""
    if not is_sharded(model):
        return None
    seen, names = set(), []
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            names.append(name)
    full = get_model_state_dict(model, options=_options(d))
    return {k: full[k] for k in names} if d.is_main else {}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                    d: Dist) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter name (rank 0; every rank must call it):
    the same for one process, DDP and FSDP, so any run resumes any other."""
    return get_optimizer_state_dict(unwrap(model), optimizer, options=_options(d))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any], d: Dist) -> None:
    """Load :func:`optimizer_state` (each rank keeps its shard), or an older checkpoint's
    ``optimizer.state_dict()`` keyed by position."""
    groups = state.get("param_groups", [])
    if groups and groups[0]["params"] and isinstance(groups[0]["params"][0], int):
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(unwrap(model), optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def _options(d: Dist) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=d.enabled)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or ``torch.compile`` wrappers (what gets saved; FSDP
    shards in place, so a sharded model is its own unwrapped self)."""
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
