"""Feed-forward networks, norms, the residual block and stacks of blocks.

    FFN(x) = act(x W1 + b1) W2 + b2                    (Vaswani 2017, Eq. 2)
    SwiGLU(x) = (silu(x W) * x V) W2                   (Shazeer 2020, arXiv:2002.05202, Eq. 6)
    GEGLU(x)  = (gelu(x W) * x V) W2                   (ibid., Eq. 5; T5 v1.1's "gated-gelu")
    post-norm: x = Norm(x + Sublayer(x))               (Vaswani 2017 §3.1; BERT)
    pre-norm:  x = x + Sublayer(Norm(x))               (GPT-2; Xiong 2020, arXiv:2002.04745)

One ``Block`` serves every architecture; pre- or post-norm is the subclass you build, and the
sublayers (attention, cross-attention, MLP, norms) are modules passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from plait.nn.attention import (
    AttnInputs,
    CrossAttention,
    KVCache,
    SelfAttention,
    dropout_layer,
    take_rows,
)
from plait.nn.linear import Linear


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ReLU2Function(torch.autograd.Function):
    """relu(x)^2 with d/dx = 2 relu(x): two elementwise passes each way instead of autograd's
    four (relu, pow; pow's backward, relu's backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (r,) = ctx.saved_tensors
        return (grad * r).mul_(2.0)


class ReLU2(nn.Module):
    """relu(x)^2: the squared ReLU of Primer (So et al. 2021, arXiv:2109.08668)."""

    def forward(self, x: Tensor) -> Tensor:
        return _ReLU2Function.apply(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,  # exact, erf-based (BERT, ViT)
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "quick_gelu": QuickGELU,
    "relu2": ReLU2,  # squared ReLU (Primer)
}

# The same activations written over their input. The hidden (B, T, 4C) buffer is a layer's
# largest allocation, and fresh memory from the OS costs a page fault per 4 KiB. With the
# in-place residuals of the blocks below, this removes most of an encoder's page faults
# (counts and times in BENCHMARKS.md, "Fewer allocations").
_IN_PLACE: dict[type, Callable[[nn.Module, Tensor], Tensor]] = {
    nn.GELU: lambda m, h: torch.ops.aten.gelu_(h, approximate=m.approximate),
    nn.ReLU: lambda m, h: h.relu_(),
    nn.SiLU: lambda m, h: F.silu(h, inplace=True),
    QuickGELU: lambda m, h: h.mul_(torch.sigmoid_(h * 1.702)),
    ReLU2: lambda m, h: h.relu_().square_(),
}


def activate(act: nn.Module, h: Tensor) -> Tensor:
    """``act(h)``, overwriting ``h`` when autograd does not need it: only for a fresh tensor."""
    in_place = _IN_PLACE.get(type(act))
    return act(h) if in_place is None or h.requires_grad else in_place(act, h)


def residual(f: Tensor, x: Tensor) -> Tensor:
    """``x + f`` for a sublayer's fresh output ``f``, added into ``f`` where that is the same
    sum. Not under bf16 autocast, where ``f`` is bf16 and ``x`` fp32: there ``x + f`` keeps the
    residual stream in fp32, and an in-place add would round it to bf16."""
    return f.add_(x) if f.dtype == x.dtype and f.shape == x.shape else x + f


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> activation -> Linear -> dropout."""

    def __init__(self, n_embd: int, hidden: int, act: nn.Module, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.fc = Linear(n_embd, hidden, bias=bias)
        self.act = act
        self.proj = Linear(hidden, n_embd, bias=bias)
        self.drop = dropout_layer(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(activate(self.act, self.fc(x))))


class GatedMLP(nn.Module):
    """act(x W) * (x V), then W2: the gate and up projections are one fused Linear ``fc``
    (gate rows first). SwiGLU with SiLU, GEGLU with GELU (Shazeer 2020)."""

    def __init__(self, n_embd: int, hidden: int, act: nn.Module, bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.fc = Linear(n_embd, 2 * hidden, bias=bias)
        self.act = act
        self.proj = Linear(hidden, n_embd, bias=bias)
        self.drop = dropout_layer(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.drop(self.proj(self.act(gate) * up))


class SwiGLU(GatedMLP):
    """silu(x W) * (x V), then W2 (Llama's feed-forward)."""

    def __init__(self, n_embd: int, hidden: int, bias: bool = False, dropout: float = 0.0):
        super().__init__(n_embd, hidden, nn.SiLU(), bias, dropout)


# gated feed-forwards by name: the gate's activation
GATED = {"swiglu": "silu", "geglu": "gelu_tanh"}


def make_mlp(kind: str, n_embd: int, hidden: int, bias: bool = True,
             dropout: float = 0.0) -> nn.Module:
    """A gated kind ('swiglu', 'geglu') or any name in ACTIVATIONS."""
    if kind in GATED:
        return GatedMLP(n_embd, hidden, ACTIVATIONS[GATED[kind]](), bias, dropout)
    if kind not in ACTIVATIONS:
        allowed = ", ".join([*GATED, *ACTIVATIONS])
        raise ValueError(f"unknown mlp/activation '{kind}' (allowed: {allowed})")
    return MLP(n_embd, hidden, ACTIVATIONS[kind](), bias, dropout)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g  (Zhang & Sennrich 2019, arXiv:1910.07467)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(
            x.dtype) * self.weight


def make_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm '{kind}' (allowed: layernorm, rmsnorm)")


def normal_init(m: nn.Module, std: float = 0.02) -> None:
    """GPT-2 / BERT initialisation, for ``model.apply``: N(0, std) weights, zero biases."""
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, mean=0.0, std=std)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


class Block(nn.Module):
    """Self-attention, optional cross-attention, and an MLP, each with a residual and a norm."""

    def __init__(self, attn: SelfAttention, mlp: nn.Module, norm_attn: nn.Module,
                 norm_mlp: nn.Module, cross_attn: CrossAttention | None = None,
                 norm_cross: nn.Module | None = None):
        super().__init__()
        self.attn, self.mlp = attn, mlp
        self.norm_attn, self.norm_mlp = norm_attn, norm_mlp
        self.cross_attn, self.norm_cross = cross_attn, norm_cross


class PreNormBlock(Block):
    """x + f(norm(x)) for each sublayer (GPT-2, ViT, CLIP, Llama).

    The residual is added into the sublayer's fresh output (:func:`residual`, the same sum as
    ``x + f(.)``): one allocation fewer per sublayer, and ``x`` itself is never written. With
    ``ctx.rows`` set, the block computes and returns those rows only, (B, 1, C).
    """

    def forward(self, x: Tensor, ctx: AttnInputs, memory: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        res = x if ctx.rows is None else take_rows(x, ctx.rows)
        x = residual(self.attn(self.norm_attn(x), ctx), res)
        if self.cross_attn is not None:
            x = residual(self.cross_attn(self.norm_cross(x), memory, memory_mask), x)
        return residual(self.mlp(self.norm_mlp(x)), x)


class PostNormBlock(Block):
    """norm(x + f(x)) for each sublayer (the original Transformer, BERT); residuals in place and
    ``ctx.rows`` as in ``PreNormBlock``."""

    def forward(self, x: Tensor, ctx: AttnInputs, memory: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        res = x if ctx.rows is None else take_rows(x, ctx.rows)
        x = self.norm_attn(residual(self.attn(x, ctx), res))
        if self.cross_attn is not None:
            x = self.norm_cross(residual(self.cross_attn(x, memory, memory_mask), x))
        return self.norm_mlp(residual(self.mlp(x), x))


class Stack(nn.Module):
    """Blocks in sequence, then a final norm (``nn.Identity`` for post-norm stacks).

    ``checkpointing`` (set by :func:`checkpoint_activations`): while gradients are on, each
    block keeps only its input and recomputes its activations in the backward pass
    (``torch.utils.checkpoint``, non-reentrant): memory for about one more forward of time.
    """

    def __init__(self, blocks: list[Block], final_norm: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = final_norm if final_norm is not None else nn.Identity()
        self.checkpointing = False

    def run(self, block: nn.Module, x: Tensor, ctx: AttnInputs, memory: Tensor | None = None,
            memory_mask: Tensor | None = None) -> Tensor:
        """``block(x, ...)``, through ``torch.utils.checkpoint`` when ``checkpointing``."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, ctx, memory, memory_mask, use_reentrant=False)
        return block(x, ctx, memory, memory_mask)

    def forward(self, x: Tensor, ctx: AttnInputs, memory: Tensor | None = None,
                memory_mask: Tensor | None = None, rows: Tensor | int | None = None) -> Tensor:
        """(B, T, C) -> (B, T, C); with ``rows`` (B,), the states at those positions, (B, 1, C)
        (an int: the same position in every sequence).

        A pooled model needs one token's state. Every block but the last must still run at
        every position (the last block's keys and values come from them); the last runs its
        attention query, output projection and MLP for ``rows`` alone.
        """
        if isinstance(rows, int):
            rows = torch.full((x.shape[0],), rows, device=x.device)
        if rows is not None and tuple(rows.shape) != (x.shape[0],):
            raise ValueError(f"rows must be ({x.shape[0]},), one position per sequence, got"
                             f" shape {tuple(rows.shape)}")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == last and rows is not None:
                ctx = replace(ctx, rows=rows)
            x = self.run(block, x, ctx, memory, memory_mask)
        return self.norm(x)

    # -- KV cache management: used by generation, identical for every decoder ------------------
    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype,
                    device: torch.device) -> None:
        for b in self.blocks:
            a = b.attn
            a.kv_cache = KVCache(batch, a.n_kv_head, max_len, a.head_dim, dtype, device)
            if b.cross_attn is not None:
                b.cross_attn.clear()
                b.cross_attn.cache_memory = True

    def reorder_cache(self, index: Tensor) -> None:
        for b in self.blocks:
            b.attn.kv_cache.reorder(index)
            if b.cross_attn is not None:
                b.cross_attn.reorder(index)

    def clear_cache(self) -> None:
        for b in self.blocks:
            b.attn.kv_cache = None
            if b.cross_attn is not None:
                b.cross_attn.clear()
                b.cross_attn.cache_memory = False


def checkpoint_activations(model: nn.Module, on: bool = True) -> nn.Module:
    """Turn activation checkpointing on (or off) in every :class:`Stack` of ``model``; a model
    without one (ResNet) is an error, not a silent no-op."""
    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    if not stacks:
        raise ValueError(f"activation checkpointing: {type(model).__name__} has no transformer"
                         f" blocks (plait.nn.Stack) to recompute; set"
                         f" train.activation_checkpointing = false for it")
    for stack in stacks:
        stack.checkpointing = on
    return model
