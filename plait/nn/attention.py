"""Multi-head attention (self and cross), attention masks, and a preallocated KV cache.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V          (Vaswani 2017, Eq. 1)
    MultiHead(X) = Concat(head_1, ..., head_h) W^O                 (Vaswani 2017, §3.2.2)

The maths runs in ``F.scaled_dot_product_attention`` (fused kernels; ``tests/`` checks it against
the naive formula). Grouped-query attention (Ainslie 2023, arXiv:2305.13245) shares each of
``n_kv_head`` key/value heads among ``n_head // n_kv_head`` query heads.

A mask is built only when needed: SDPA's ``is_causal=True`` covers a square, unpadded prefill
without a mask tensor, and any explicit mask rules out the flash kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.nn.linear import Linear
from plait.nn.positions import apply_rope


def dropout_layer(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity`` for p = 0: no op at all on the decoding path."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


@dataclass
class AttnInputs:
    """What every layer's attention needs for one forward pass, computed once by the model.

    mask: None, a bool tensor (B|1, 1, Tq, Tk) with True = may attend, or a float additive
        bias (B|1, nh|1, Tq, Tk) with -inf where masked.
    is_causal: let SDPA apply the (square) causal mask itself; only with mask None.
    rope: (cos, sin) each (B, 1, Tq, hs) for rotary positions, else None.
    input_pos: where this chunk starts in the KV cache; None runs without a cache.
    rows: (B,) one query position per sequence: only its output is computed, (B, 1, C).
        ``Stack`` sets it for its last block when a model pools a single token.
    """

    mask: Tensor | None = None
    is_causal: bool = False
    rope: tuple[Tensor, Tensor] | None = None
    input_pos: int | None = None
    rows: Tensor | None = None


def take_rows(x: Tensor, rows: Tensor, dim: int = 1) -> Tensor:
    """x (B, ...) at one position per sequence along ``dim``, which becomes size 1:
    (B, T, C) -> (B, 1, C), or queries (B, nh, T, hs) -> (B, nh, 1, hs) with ``dim=2``."""
    shape = list(x.shape)
    shape[dim] = 1
    return x.gather(dim, rows.view(-1, *[1] * (x.dim() - 1)).expand(shape))


def mask_rows(mask: Tensor | None, is_causal: bool, rows: Tensor, k_len: int) -> Tensor | None:
    """The (attn_mask) for one query per sequence at positions ``rows`` (B,): (B, *, 1, Tk)."""
    if mask is None:
        if not is_causal:
            return None
        return (torch.arange(k_len, device=rows.device) <= rows[:, None])[:, None, None]
    if mask.shape[2] == 1:  # key padding only: the same for every query
        return mask
    return take_rows(mask.expand(rows.shape[0], -1, -1, -1), rows, dim=2)


def make_attn_mask(
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    key_padding: Tensor | None = None,
    bias: Tensor | None = None,
    device: torch.device | str | None = None,
    also: Tensor | None = None,
) -> tuple[Tensor | None, bool]:
    """Combine causality, key padding and a position bias into SDPA's (attn_mask, is_causal).

    Args:
        q_len, k_len: query and key lengths; queries are the last ``q_len`` of ``k_len``
            positions (a cached chunk), so causality is aligned bottom-right.
        key_padding: (B, Tk) with 1/True for real tokens, 0/False for padding.
        bias: (B|1, nh, Tq, Tk) additive bias (ALiBi, relative), or None.
        device: where to build the causal mask when neither key_padding nor bias is given.
        also: (B, Tq, Tk) True for pairs that may attend whatever causality says (a block of
            image tokens that read each other both ways, as PaliGemma's prefix does).
    """
    if key_padding is None and bias is None and also is None:
        if not causal or q_len == 1:
            return None, False
        if q_len == k_len:
            return None, True
    if also is not None:
        device = also.device
    elif key_padding is not None:
        device = key_padding.device
    elif bias is not None:
        device = bias.device
    mask = None
    if causal:
        q_idx = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        mask = (torch.arange(k_len, device=device)[None, :] <= q_idx)[None, None]  # (1,1,Tq,Tk)
    if also is not None:
        mask = also[:, None] if mask is None else mask | also[:, None]
    if key_padding is not None:
        pad = key_padding.bool()[:, None, None, :]  # (B, 1, 1, Tk)
        mask = pad if mask is None else mask & pad
    if mask is not None:
        # A padding query may see no key at all; softmax over nothing is NaN. Let such rows see
        # everything instead: their outputs are never used, and no real row ever sees them.
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    if bias is None:
        return mask, False
    if mask is None:
        return bias, False
    return bias.masked_fill(~mask, float("-inf")), False


class KVCache(nn.Module):
    """Past keys and values, preallocated as (B, nkv, max_len, hs) and written in place."""

    def __init__(self, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @classmethod
    def over(cls, k: Tensor, v: Tensor) -> KVCache:
        """A cache writing into ``k`` and ``v`` (B, nkv, max_len, hs) as given: views into a
        larger store shared by several sequences (``plait.serving``'s batching)."""
        cache = cls.__new__(cls)
        nn.Module.__init__(cache)
        cache.register_buffer("k", k, persistent=False)
        cache.register_buffer("v", v, persistent=False)
        return cache

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, nkv, T, hs) at positions [input_pos, input_pos + T); return all so far."""
        end = input_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to write up to {end};"
                             " call setup_cache() with a larger max_len")
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"KV cache was set up for batch {self.k.shape[0]}, got batch"
                             f" {k.shape[0]}; call setup_cache() again")
        self.k.narrow(2, input_pos, end - input_pos).copy_(k)  # narrow: cheaper than indexing
        self.v.narrow(2, input_pos, end - input_pos).copy_(v)
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the surviving beams' histories)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


class Attention(nn.Module):
    """Shared core of self- and cross-attention: heads in, SDPA, output projection."""

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None,
                 head_dim: int | None = None, bias: bool = True, dropout: float = 0.0,
                 scale: float | None = None):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        self.head_dim = head_dim or n_embd // n_head
        if head_dim is None and n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        # 1/sqrt(d_k) (Vaswani Eq. 1) unless given: T5 folds it into its initialisation (1.0)
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else scale
        self.dropout = dropout
        self.proj = Linear(n_head * self.head_dim, n_embd, bias=bias)
        self.resid_drop = dropout_layer(dropout)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
               is_causal: bool) -> Tensor:
        """q (B, nh, Tq, hs), k/v (B, nkv, Tk, hs) -> projected output (B, Tq, C)."""
        if self.n_kv_head != self.n_head:
            # expand shared kv heads; SDPA's enable_gqa needs torch>=2.5, this works everywhere
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0,
        )
        B, _, T, _ = q.shape
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_drop(self.proj(y))

    def _heads(self, x: Tensor, n: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, hs)


class SelfAttention(Attention):
    """Self-attention with a fused qkv projection and an optional KV cache.

    ``bias`` switches the biases of both projections; ``qkv_bias`` (default: ``bias``) the fused
    query/key/value one alone (ViT and CLIP checkpoints without qkv bias keep the output one).
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None,
                 head_dim: int | None = None, bias: bool = True, dropout: float = 0.0,
                 qkv_bias: bool | None = None, scale: float | None = None):
        super().__init__(n_embd, n_head, n_kv_head, head_dim, bias, dropout, scale)
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.qkv = Linear(n_embd, (n_head + 2 * self.n_kv_head) * self.head_dim, bias=qkv_bias)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, ctx: AttnInputs) -> Tensor:
        B, T, _ = x.shape
        nq, nkv = self.n_head, self.n_kv_head
        # (B, nq + 2 nkv, T, hs): the q heads, then the k heads, then the v heads
        heads = self.qkv(x).view(B, T, nq + 2 * nkv, self.head_dim).transpose(1, 2)
        qk, v = heads.split([nq + nkv, nkv], dim=1)  # split, not slices: its backward is one cat
        if ctx.rope is not None:  # q and k heads lie side by side: rotate them in one pass
            qk = apply_rope(qk, *ctx.rope)
        q, k = qk.split([nq, nkv], dim=1)
        if ctx.input_pos is not None:
            if self.kv_cache is None:
                raise ValueError("input_pos given but no KV cache: call model.setup_cache() first")
            k, v = self.kv_cache.update(ctx.input_pos, k, v)
        if ctx.rows is not None:  # every key, but one query per sequence
            q = take_rows(q, ctx.rows, dim=2)
            return self.attend(q, k, v, mask_rows(ctx.mask, ctx.is_causal, ctx.rows, T), False)
        return self.attend(q, k, v, ctx.mask, ctx.is_causal)


class CrossAttention(Attention):
    """Queries from x (B, T, C), keys and values from an encoder's output ``memory`` (B, S, C_mem).

    While generating (``cache_memory`` on, set by ``Stack.setup_cache``), the memory's keys,
    values and padding mask are computed once, when the prefill passes the memory, and every
    later step passes ``memory=None`` and reuses them; ``reorder`` follows beam search.
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None,
                 memory_dim: int | None = None, bias: bool = True, dropout: float = 0.0,
                 scale: float | None = None, head_dim: int | None = None):
        super().__init__(n_embd, n_head, n_kv_head, head_dim, bias, dropout, scale)
        self.q = Linear(n_embd, n_head * self.head_dim, bias=bias)
        self.kv = Linear(memory_dim or n_embd, 2 * self.n_kv_head * self.head_dim, bias=bias)
        self.cache_memory = False
        self._memory: tuple[Tensor, Tensor, Tensor | None] | None = None  # k, v, mask

    def forward(self, x: Tensor, memory: Tensor | None,
                memory_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C); memory (B, S, C_mem), or None to reuse the cached one; memory_mask (B, S)
        with 1 for real positions, 0 for padding."""
        if memory is not None:
            k, v = self.kv(memory).chunk(2, dim=-1)  # (B, S, nkv * hs) each
            k, v = self._heads(k, self.n_kv_head), self._heads(v, self.n_kv_head)
            if memory_mask is not None and bool(memory_mask.all()):
                memory_mask = None
            mask, _ = make_attn_mask(1, k.shape[2], causal=False, key_padding=memory_mask)
            if self.cache_memory:
                self._memory = (k, v, mask)
        elif self._memory is not None:
            k, v, mask = self._memory
        else:
            raise ValueError("cross-attention needs the encoder output: pass memory (the"
                             " prefill does), or set up the cache and prefill first")
        # mask is (B, 1, 1, S) key padding: the same row for every query
        return self.attend(self._heads(self.q(x), self.n_head), k, v, mask, False)

    def reorder(self, index: Tensor) -> None:
        if self._memory is not None:
            k, v, mask = self._memory
            self._memory = (k.index_select(0, index), v.index_select(0, index),
                            None if mask is None else mask.index_select(0, index))

    def clear(self) -> None:
        self._memory = None
