"""Position encodings: sinusoidal, learned, rotary (RoPE), ALiBi and T5-style relative bias.

Attention is permutation-invariant, so order must be injected somewhere. The five classic
answers inject it in three different places, and each encoding here fills exactly one of them:

- ``embed(pos)``   adds a vector to the token embedding       (sinusoidal, learned)
- ``rotary(pos)``  rotates queries and keys before the dot product (RoPE)
- ``bias(q, k)``   adds a per-head bias to the attention scores   (ALiBi, relative)

(``sincos_2d`` gives ViT's fixed 2-D table for a grid of patches, ``whisper_sinusoids`` Whisper's
audio-frame table.) The model calls all three; an
encoding answers ``None`` where it has nothing to say, so no model
code branches on which encoding it uses. Positions are integer tensors ``(B, T)`` so left padding
(positions counted from each row's first real token) works the same for every encoding.

References: sinusoidal, Vaswani et al. 2017 (arXiv:1706.03762) §3.5; RoPE, Su et al. 2021
(arXiv:2104.09864) Eq. 34; ALiBi, Press et al. 2021 (arXiv:2108.12409) §3; relative buckets,
Raffel et al. 2019 (arXiv:1910.10683) §2.1.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor


class PositionEncoding(nn.Module):
    """Base class: contributes nothing anywhere. Subclasses override one method."""

    def embed(self, pos: Tensor) -> Tensor | None:
        """(B, T) positions -> (B, T, C) vectors added to token embeddings."""
        return None

    def rotary(self, pos: Tensor) -> tuple[Tensor, Tensor] | None:
        """(B, T) positions -> (cos, sin), each (B, 1, T, hs), for :func:`apply_rope`."""
        return None

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """(B, Tq), (B, Tk) positions -> (B, nh, Tq, Tk) additive attention-score bias."""
        return None


def sincos_2d(grid: int, dim: int, base: float = 10000.0) -> Tensor:
    """Fixed 2-D positions for a grid x grid of image patches, (grid * grid, dim), row-major:
    sin and cos of the column, then sin and cos of the row, each over dim/4 frequencies
    (Beyer et al. 2022, "Better plain ViT baselines", arXiv:2205.01580)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    omega = base ** (-torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1 or 1))
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ay, ax = y.flatten()[:, None] * omega, x.flatten()[:, None] * omega  # (N, dim/4)
    return torch.cat((ax.sin(), ax.cos(), ay.sin(), ay.cos()), dim=1)


def whisper_sinusoids(length: int, channels: int, base: float = 10000.0) -> Tensor:
    """Whisper's fixed encoder table (length, channels): every sine, then every cosine, of
    channels/2 frequencies from 1 down to 1/base *inclusive*, a log step of
    ln(base) / (channels/2 - 1) (Radford et al. 2022, openai/whisper ``sinusoids``). Vaswani's
    step is ln(base) / (channels/2), so its last frequency stops short of 1/base; the two tables
    differ, and checkpoints store Whisper's, which loading copies exactly."""
    if channels % 2 or channels < 4:
        raise ValueError(f"Whisper's sinusoids need an even width of at least 4, got {channels}")
    step = math.log(base) / (channels // 2 - 1)
    inv = torch.exp(-step * torch.arange(channels // 2, dtype=torch.float64))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv  # (length, channels/2)
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


class NoPositions(PositionEncoding):
    """No position information (e.g. a bag-of-patches ablation)."""


class Sinusoidal(PositionEncoding):
    """PE(p, 2i) = sin(p / 10000^(2i/C)), PE(p, 2i+1) = cos(p / 10000^(2i/C)). Vaswani §3.5.

    ``halves=True`` lays the same values out as fairseq and Marian do: every sine first, then
    every cosine. Computed in float64 and rounded once, as those reference tables are.
    """

    def __init__(self, n_embd: int, base: float = 10000.0, halves: bool = False):
        super().__init__()
        if n_embd % 2:
            raise ValueError(f"sinusoidal positions need an even n_embd, got {n_embd}")
        self.halves = halves
        denom = base ** (torch.arange(0, n_embd, 2, dtype=torch.float64) / n_embd)
        self.register_buffer("denom", denom, persistent=False)

    def embed(self, pos: Tensor) -> Tensor:
        angles = pos.to(torch.float64)[..., None] / self.denom  # (B, T, C/2)
        if self.halves:
            out = torch.cat((angles.sin(), angles.cos()), dim=-1)
        else:  # interleave: even channels sin, odd channels cos
            out = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
        return out.float()  # (B, T, C)


class Learned(PositionEncoding):
    """A trained vector per absolute position, up to ``block_size`` (GPT-2, BERT, ViT)."""

    def __init__(self, block_size: int, n_embd: int):
        super().__init__()
        self.block_size = block_size
        self.wpe = nn.Embedding(block_size, n_embd)

    def embed(self, pos: Tensor) -> Tensor:
        return self.wpe(pos)


class Rotary(PositionEncoding):
    """RoPE: rotate each (x_i, x_{i+hs/2}) pair of q and k by angle p * theta_i.

    After rotation q_m . k_n depends on m - n only (Su 2021, Eq. 16), which the tests check.
    This is the "rotate half" layout of GPT-NeoX / Llama checkpoints.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        angles = pos.to(self.inv_freq.dtype)[..., None] * self.inv_freq  # (B, T, hs/2)
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, T, hs)
        return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, nh, T, hs) by the angles behind cos/sin (B, 1, T, hs)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def alibi_slopes(n_head: int) -> Tensor:
    """Geometric head slopes 2^(-8/n), 2^(-16/n), ... (Press 2021 §3), with the paper's
    interleaving rule when n_head is not a power of two."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(power_of_2(n_head))
    closest = 2 ** math.floor(math.log2(n_head))
    extra = power_of_2(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(power_of_2(closest) + extra)


class ALiBi(PositionEncoding):
    """score(q, k) += -slope_h * |p_q - p_k|: a linear distance penalty per head, no parameters."""

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        dist = (q_pos[:, :, None] - k_pos[:, None, :]).abs()  # (B, Tq, Tk)
        return -self.slopes[None, :, None, None] * dist[:, None].to(self.slopes.dtype)


class RelativeBias(PositionEncoding):
    """T5's learned bias per (head, bucket of relative distance k - q).

    Small distances get a bucket each; larger ones share log-spaced buckets up to
    ``max_distance``. ``bidirectional=False`` (decoders) only sees the past, so all buckets
    go to non-positive offsets.
    """

    def __init__(self, n_head: int, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = False):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.bidirectional = bidirectional
        self.rel_bias = nn.Embedding(num_buckets, n_head)

    def bucket(self, rel: Tensor) -> Tensor:
        """Relative offsets k - q (any shape) -> bucket ids in [0, num_buckets)."""
        n_buckets, out = self.num_buckets, torch.zeros_like(rel)
        if self.bidirectional:
            n_buckets //= 2
            out = out + (rel > 0).long() * n_buckets
            n = rel.abs()
        else:
            n = (-rel).clamp(min=0)
        max_exact = n_buckets // 2
        is_small = n < max_exact
        # log-spaced buckets for max_exact <= n < max_distance, then one shared last bucket
        large = max_exact + (
            torch.log(n.float().clamp(min=1) / max_exact)
            / math.log(self.max_distance / max_exact)
            * (n_buckets - max_exact)
        ).long()
        large = large.clamp(max=n_buckets - 1)
        return out + torch.where(is_small, n, large)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = k_pos[:, None, :] - q_pos[:, :, None]  # (B, Tq, Tk)
        return self.rel_bias(self.bucket(rel)).permute(0, 3, 1, 2)  # (B, nh, Tq, Tk)
