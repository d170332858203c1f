"""LoRA: a trainable low-rank update beside a frozen Linear (Hu et al. 2021, arXiv:2106.09685,
Eq. 3, with peft's scale and dropout):

    y = W x + b + (alpha / r) * B A dropout(x)       A: (r, in), B: (out, r), r << in, out

Only A and B train. A starts as ``nn.Linear`` (and peft) start a weight, kaiming-uniform with
a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); B starts at zero, so a new adapter changes nothing.
:func:`merge` folds the update into W and puts the plain Linear back, so the model is again the
model it was (it saves and exports with no LoRA keys); :func:`unmerge` takes the update out and
the adapter back.

A fused Linear (plait's ``qkv`` holds q, k and v; a SwiGLU's ``fc`` holds gate and up) can take
one adapter per slice of its output rows (``parts``): A stacks the slices' A_i and B is
block-diagonal, so slice i gets B_i A_i and nothing else:

    [y_q; y_k; y_v] += (alpha / r) * blockdiag(B_q, B_k, B_v) [A_q; A_k; A_v] x

which is what peft computes with separate adapters on q_proj, k_proj and v_proj
(:mod:`plait.hf.peft`). B is stored compact, (out, r) with slice i's rows holding B_i; the
block-diagonal (out, S r) is built in ``forward``, so off-diagonal blocks do not exist to train.

Targets are regular expressions over module names: a pattern matches a module when it matches a
whole trailing run of its dotted name, ``(.*\\.)?(pattern)`` (peft's ``rank_pattern`` rule).
``"qkv"`` matches every ``transformer.blocks.{i}.attn.qkv``, ``"attn.proj"`` every attention
output, ``"blocks\\.0\\.attn\\.qkv"`` only the first, ``"fc|proj"`` both MLP layers and the
attention output.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LoRALinear(nn.Module):
    """A frozen ``base`` Linear plus ``scale * B A dropout(x)``.

    Args:
        rank: r, the rank of each slice's update.
        scale: alpha / r (peft's ``use_rslora``: alpha / sqrt(r)).
        parts: heights of the output slices that get separate adapters; () = one, the whole.
    """

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float = 0.0,
                 parts: Sequence[int] = ()):
        super().__init__()
        parts = tuple(parts) or (base.out_features,)
        if sum(parts) != base.out_features:
            raise ValueError(f"LoRA parts {parts} must add up to the Linear's {base.out_features}"
                             " output rows")
        self.base, self.rank, self.scale, self.parts = base, rank, float(scale), parts
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(len(parts) * rank, base.in_features,
                                               dtype=w.dtype, device=w.device))  # (S r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype,
                                               device=w.device))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # fan_in = in, as nn.Linear(in, r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def block_B(self) -> Tensor:
        """(out, S r): B_i on the diagonal, zeros elsewhere (one part: B itself)."""
        if len(self.parts) == 1:
            return self.lora_B
        return torch.block_diag(*self.lora_B.split(self.parts))

    def delta(self) -> Tensor:
        """scale * B A, (out, in): what :func:`merge` adds to the weight."""
        return self.scale * (self.block_B() @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        h = F.linear(self.dropout(x), self.lora_A)  # (..., S r)
        return self.base(x) + F.linear(h, self.block_B()) * self.scale

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}, parts={self.parts}"


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Every adapter in ``model``, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _linear_names(modules: dict[str, nn.Module], n: int = 8) -> str:
    """``attn.qkv, attn.proj, mlp.fc, ...``: the Linear layers, by their last two names."""
    kinds = list(dict.fromkeys(".".join(k.split(".")[-2:]) for k, m in modules.items()
                               if isinstance(m, nn.Linear)))
    return ", ".join(kinds[:n]) + (f" (+{len(kinds) - n} more)" if len(kinds) > n else "")


def find_targets(model: nn.Module, targets: Iterable[str]) -> list[str]:
    """Names of the Linear modules the ``targets`` patterns match (module docstring). A pattern
    that matches nothing, or matches a module that is not a Linear, is a ValueError naming it."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("LoRA needs at least one target pattern (e.g. 'qkv')")
    if lora_modules(model):
        raise ValueError("the model already has LoRA adapters: merge them first")
    modules = dict(model.named_modules())
    found: list[str] = []
    for pattern in targets:
        try:
            rx = re.compile(rf"(?:.*\.)?(?:{pattern})")
        except re.error as e:
            raise ValueError(f"LoRA target {pattern!r} is not a regular expression: {e}") from None
        hits = [n for n in modules if n and rx.fullmatch(n)]
        if not hits:
            raise ValueError(f"LoRA target {pattern!r} matches no module (Linear layers here:"
                             f" {_linear_names(modules)})")
        for n in hits:
            if not isinstance(modules[n], nn.Linear):
                raise ValueError(f"LoRA target {pattern!r} matches {n}, a"
                                 f" {type(modules[n]).__name__}, not a Linear (Linear layers"
                                 f" here: {_linear_names(modules)})")
        found.extend(n for n in hits if n not in found)
    shared = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    for n in found:
        if shared[id(modules[n].weight)] > 1:
            raise ValueError(f"LoRA target {n}: its weight is tied to another layer's (the token"
                             " embedding); merging would change both")
    return found


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def wrap(model: nn.Module, name: str, rank: int, scale: float, dropout: float = 0.0,
         parts: Sequence[int] = ()) -> LoRALinear:
    """Put a new adapter around the Linear called ``name`` (in its train or eval mode)."""
    base = model.get_submodule(name)
    lora = LoRALinear(base, rank, scale, dropout, parts).train(base.training)
    _replace(model, name, lora)
    return lora


def train_only_adapters(model: nn.Module) -> nn.Module:
    """``requires_grad`` on the adapters' A and B alone."""
    model.requires_grad_(False)
    for lora in lora_modules(model).values():
        lora.lora_A.requires_grad_(True)
        lora.lora_B.requires_grad_(True)
    return model


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets: Iterable[str] = ("qkv",),
             parts: Mapping[str, Sequence[int]] | None = None) -> nn.Module:
    """Adapt every Linear that ``targets`` match (scale alpha / rank) and freeze the rest.

    Args:
        parts: module name -> heights of the output slices that get separate adapters
            (:func:`plait.hf.peft.lora_parts` gives Hugging Face's, so adapters match peft's).
    """
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    for name in find_targets(model, targets):
        wrap(model, name, rank, alpha / rank, dropout, (parts or {}).get(name, ()))
    return train_only_adapters(model)


def merge(model: nn.Module) -> dict[str, LoRALinear]:
    """W += scale * B A in every adapted Linear, and the plain Linear back in the adapter's
    place. Returns the adapters, by name, for :func:`unmerge`."""
    adapters = lora_modules(model)
    with torch.no_grad():
        for name, lora in adapters.items():
            lora.base.weight += lora.delta().to(lora.base.weight.dtype)
            _replace(model, name, lora.base)
    return adapters


def unmerge(model: nn.Module, adapters: Mapping[str, LoRALinear]) -> nn.Module:
    """Undo :func:`merge`: W -= scale * B A (equal to the weight before up to float rounding),
    and each adapter back in place."""
    with torch.no_grad():
        for name, lora in adapters.items():
            if model.get_submodule(name) is not lora.base:
                raise ValueError(f"{name} is not the Linear this adapter was merged into")
            lora.base.weight -= lora.delta().to(lora.base.weight.dtype)
            _replace(model, name, lora)
    return model
