"""Pruning: remove whole MLP channels and attention heads, or zero the smallest weights.

**Structured pruning** deletes units, and what is left is smaller dense matrices, so every
matmul does less work (docs/efficiency.md §3). An MLP channel j is row j of the first Linear
(rows j and h + j of a gated ``fc``: its gate and its up projection) and column j of the second.
An attention unit is a key/value head with the query heads that share it (one head without GQA):
its rows of the fused ``qkv`` and its query heads' columns of the output projection. A unit is
scored by the size of what it reads times the size of what it writes:

    s_j = ||[W_in[j, :], b_in[j]]||_2 * ||W_out[:, j]||_2        (norms over all its rows/columns)

and each layer keeps its ``n - round(amount * n)`` best. A unit with ``s_j = 0`` adds nothing to
the output (its input rows and biases are zero, and ``act(0) = 0`` for every activation here;
or its output column is zero), so pruning such units leaves the outputs as they were: that is
how the tests check the slicing. Every layer loses the same count, so one ``n_inner`` /
``n_head`` still describes every layer, and a pruned model saves and loads like any other; the
head width is written into ``d_head``, since ``n_embd / n_head`` no longer gives it.

**Magnitude pruning** zeroes the weights of smallest ``|w|`` and keeps every shape. A dense
matmul multiplies by a zero as fast as by any number, so it brings no speed-up (PyTorch's own
``torch.nn.utils.prune`` masks likewise; pytorch/pytorch#36214); it is the quality reference
for the structured kind at the same count of removed weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.nn as nn
from torch import Tensor

from plait.nn.attention import SelfAttention
from plait.nn.layers import MLP, GatedMLP, Stack
from plait.nn.linear import Linear
from plait.nn.lora import LoRALinear
from plait.nn.positions import ALiBi, RelativeBias
from plait.nn.quant import QuantLinear


def check_amount(amount: float, what: str = "pruning amount") -> float:
    """``amount`` if it is a fraction strictly between 0 and 1, else a ValueError."""
    if not isinstance(amount, int | float) or not 0 < amount < 1:
        raise ValueError(f"{what} must be a fraction strictly between 0 and 1 (0.3 removes 30 %),"
                         f" got {amount}")
    return float(amount)


def removed_count(n: int, amount: float, unit: str) -> int:
    """How many of ``n`` units ``amount`` removes: ``round(amount * n)``, at least one, and at
    least one unit is kept."""
    k = round(check_amount(amount, f"{unit} pruning amount") * n)
    if k == 0:
        raise ValueError(f"pruning {amount} of {n} {unit}s removes none (round({amount * n:g})"
                         f" = 0); use more than {0.5 / n:.2g}")
    if k >= n:
        raise ValueError(f"pruning {amount} of {n} {unit}s removes all of them; use less")
    return k


# -- scores -----------------------------------------------------------------------------------
def _row_norms(lin: nn.Linear, rows: Tensor) -> Tensor:
    """||[W[rows, :], b[rows]]||_2 per row of ``rows`` (any shape of row indices)."""
    w = lin.weight.detach().float()[rows]  # (..., in)
    sq = w.pow(2).sum(-1)
    if lin.bias is not None:
        sq = sq + lin.bias.detach().float()[rows].pow(2)
    return sq


def channel_scores(mlp: MLP | GatedMLP) -> Tensor:
    """(hidden,) importance of each MLP channel (module docstring)."""
    h = mlp.proj.in_features
    rows = torch.arange(h)
    if isinstance(mlp, GatedMLP):
        rows = torch.stack((rows, rows + h), dim=-1)  # (h, 2): gate row j, up row j
    sq_in = _row_norms(mlp.fc, rows)
    sq_in = sq_in.sum(-1) if sq_in.dim() == 2 else sq_in
    sq_out = mlp.proj.weight.detach().float().pow(2).sum(0)  # (h,)
    return (sq_in * sq_out).sqrt().cpu()


def _group_rows(attn: SelfAttention) -> tuple[Tensor, Tensor]:
    """Per kv group g: the ``qkv`` rows it owns (nkv, (rep + 2) hs) and the output-projection
    columns of its query heads (nkv, rep hs)."""
    nq, nkv, hs = attn.n_head, attn.n_kv_head, attn.head_dim
    rep = nq // nkv
    d = torch.arange(hs)
    g = torch.arange(nkv)[:, None]
    q_heads = g * rep + torch.arange(rep)  # (nkv, rep): query head i uses kv head i // rep
    q_rows = (q_heads[..., None] * hs + d).flatten(1)  # (nkv, rep hs)
    k_rows = (nq + g) * hs + d  # (nkv, hs)
    v_rows = (nq + nkv + g) * hs + d
    return torch.cat((q_rows, k_rows, v_rows), dim=1), q_rows


def head_scores(attn: SelfAttention) -> Tensor:
    """(n_kv_head,) importance of each key/value group with its query heads."""
    rows, cols = _group_rows(attn)
    sq_in = _row_norms(attn.qkv, rows).sum(-1)  # (nkv,)
    sq_out = attn.proj.weight.detach().float().pow(2).sum(0)[cols].sum(-1)
    return (sq_in * sq_out).sqrt().cpu()


# -- slicing ----------------------------------------------------------------------------------
def _sliced(lin: nn.Linear, rows: Tensor | None = None, cols: Tensor | None = None) -> Linear:
    """A new Linear holding ``lin``'s rows ``rows`` (output features) or columns ``cols``."""
    w, b = lin.weight.detach(), None if lin.bias is None else lin.bias.detach()
    if rows is not None:
        w, b = w[rows.to(w.device)], None if b is None else b[rows.to(w.device)]
    if cols is not None:
        w = w[:, cols.to(w.device)]
    new = Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    new.weight = nn.Parameter(w.contiguous().clone(), requires_grad=lin.weight.requires_grad)
    if b is not None:
        new.bias = nn.Parameter(b.clone(), requires_grad=lin.bias.requires_grad)
    return new


def _kept(scores: Tensor, n_removed: int) -> Tensor:
    """Indices of the best ``len(scores) - n_removed`` units, in their original order."""
    return scores.topk(len(scores) - n_removed).indices.sort().values


def _the_stack(model: nn.Module, fields: Iterable[str]) -> Stack:
    """The model's one Stack, with a config that has ``fields``; else a ValueError naming why."""
    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    name = type(model).__name__
    if len(stacks) != 1:
        raise ValueError(f"pruning needs a model with one stack of blocks; {name} has"
                         f" {len(stacks)} (prune a decoder-only or encoder-only model)")
    config = getattr(model, "config", None)
    have = {f.name for f in dataclasses.fields(config)} if config is not None else set()
    missing = [f for f in fields if f not in have]
    if missing:
        raise ValueError(f"{name}'s config has no {', '.join(missing)}: its pruned sizes could"
                         " not be saved")
    wrapped = [m for m in stacks[0].modules() if isinstance(m, LoRALinear | QuantLinear)]
    if wrapped:
        raise ValueError(f"{type(wrapped[0]).__name__} layers cannot be pruned: merge LoRA"
                         " first, and quantise after pruning")
    return stacks[0]


# -- structured pruning -----------------------------------------------------------------------
def prune_mlp(model: nn.Module, amount: float) -> nn.Module:
    """Remove ``round(amount * n_inner)`` channels from every block's MLP (its lowest
    :func:`channel_scores`), in place; ``model.config.n_inner`` becomes the new width."""
    stack = _the_stack(model, ("n_inner",))
    mlps = [b.mlp for b in stack.blocks]
    if not all(isinstance(m, MLP | GatedMLP) for m in mlps):
        raise ValueError("pruning MLP channels needs plait MLP or GatedMLP feed-forwards")
    h = mlps[0].proj.in_features
    k = removed_count(h, amount, "MLP channel")
    for mlp in mlps:
        keep = _kept(channel_scores(mlp), k)
        rows = torch.cat((keep, keep + h)) if isinstance(mlp, GatedMLP) else keep
        mlp.fc, mlp.proj = _sliced(mlp.fc, rows=rows), _sliced(mlp.proj, cols=keep)
    model.config = dataclasses.replace(model.config, n_inner=h - k)
    return model


def prune_heads(model: nn.Module, amount: float) -> nn.Module:
    """Remove ``round(amount * n_kv_head)`` key/value heads, each with the query heads sharing
    it (one head each without GQA), from every block's self-attention (the lowest
    :func:`head_scores`), in place; the config gets the new ``n_head`` (and ``n_kv_head``) and
    ``d_head``. Models whose position bias is per head (ALiBi, relative) and blocks with
    cross-attention are refused."""
    stack = _the_stack(model, ("n_head", "d_head"))
    for m in model.modules():
        if isinstance(m, ALiBi | RelativeBias):
            raise ValueError(f"cannot prune heads of a model with {type(m).__name__} positions:"
                             " its bias is defined per head")
    if any(b.cross_attn is not None for b in stack.blocks):
        raise ValueError("cannot prune heads of blocks with cross-attention (it shares n_head)")
    first = stack.blocks[0].attn
    nq, nkv, hs = first.n_head, first.n_kv_head, first.head_dim
    rep = nq // nkv
    k = removed_count(nkv, amount, "attention head" if rep == 1 else "key/value head group")
    for block in stack.blocks:
        attn = block.attn
        keep = _kept(head_scores(attn), k)
        rows, cols = _group_rows(attn)
        own = rows[keep]  # (kept groups, (rep + 2) hs): each group's q heads, k head, v head
        q, kv = own[:, :rep * hs], own[:, rep * hs:].view(-1, 2, hs)
        # back in the fused layout: all q heads, then all k heads, then all v heads
        attn.qkv = _sliced(attn.qkv, rows=torch.cat((q.flatten(), kv[:, 0].flatten(),
                                                      kv[:, 1].flatten())))
        attn.proj = _sliced(attn.proj, cols=cols[keep].flatten())
        attn.n_head, attn.n_kv_head = (nkv - k) * rep, nkv - k
        attn.kv_cache = None  # its shape is stale: setup_cache makes a new one
    changes = {"n_head": (nkv - k) * rep, "d_head": hs}
    if getattr(model.config, "n_kv_head", None) is not None:
        changes["n_kv_head"] = nkv - k
    model.config = dataclasses.replace(model.config, **changes)
    return model


# -- unstructured -----------------------------------------------------------------------------
def block_linears(model: nn.Module) -> list[nn.Linear]:
    """Every Linear inside the model's blocks (not the embeddings or the LM head)."""
    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    return [m for s in stacks for m in s.modules() if isinstance(m, nn.Linear)]


def mlp_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linears of every block's MLP."""
    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    return [m for s in stacks for b in s.blocks for m in b.mlp.modules()
            if isinstance(m, nn.Linear)]


@torch.no_grad()
def magnitude_prune(linears: Iterable[nn.Linear], amount: float, per_layer: bool = False) -> int:
    """Zero the ``amount`` fraction of smallest-|w| weights of ``linears`` (biases stay), over
    all of them together or, with ``per_layer``, in each; returns the count zeroed (weights
    tied at the threshold go too). Shapes stay: no speed-up (module docstring)."""
    check_amount(amount, "magnitude pruning amount")
    linears = list(linears)
    if not linears:
        raise ValueError("no Linear layers to prune")
    groups = [[lin] for lin in linears] if per_layer else [linears]
    zeroed = 0
    for group in groups:
        mags = torch.cat([lin.weight.detach().abs().flatten().float() for lin in group])
        k = round(amount * mags.numel())
        if k == 0:
            continue
        threshold = mags.kthvalue(k).values
        for lin in group:
            small = lin.weight.abs() <= threshold
            lin.weight.masked_fill_(small, 0.0)
            zeroed += int(small.sum())
    return zeroed


def sparsity(linears: Iterable[nn.Linear]) -> float:
    """Fraction of zero weights over ``linears``."""
    linears = list(linears)
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears)
    return zeros / sum(lin.weight.numel() for lin in linears)
