"""GPT: a decoder-only Transformer language model (Radford et al. 2019, GPT-2 layout by default).

token ids -> token embedding (+ absolute positions) -> N pre-norm causal blocks -> final norm ->
LM head tied to the token embedding -> logits (B, T, V).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.nn import (
    ALiBi,
    AttnInputs,
    Learned,
    Linear,
    PositionEncoding,
    PreNormBlock,
    RelativeBias,
    Rotary,
    SelfAttention,
    Sinusoidal,
    Stack,
    dropout_layer,
    gemv_layout,
    make_attn_mask,
    make_mlp,
    make_norm,
    normal_init,
)

PosKind = Literal["learned", "sinusoidal", "rope", "alibi", "relative"]


@dataclass(frozen=True)
class GPTConfig(Config):
    """Hyperparameters of a GPT. Names follow Hugging Face's GPT-2 config."""

    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    n_kv_head: int | None = None  # < n_head for grouped-query attention
    pos_encoding: PosKind = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "gelu_tanh", "relu", "swiglu", "silu", "quick_gelu", "relu2"] = "gelu"
    n_inner: int | None = None  # MLP width; default 4 * n_embd
    bias: bool = True
    dropout: float = 0.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head"
                             f" ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ValueError(f"GPTConfig.n_head ({self.n_head}) must be a multiple of n_kv_head"
                             f" ({self.n_kv_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner or 4 * self.n_embd


def make_positions(c: GPTConfig) -> PositionEncoding:
    return {
        "learned": lambda: Learned(c.block_size, c.n_embd),
        "sinusoidal": lambda: Sinusoidal(c.n_embd),
        "rope": lambda: Rotary(c.head_dim, c.rope_base),
        "alibi": lambda: ALiBi(c.n_head),
        "relative": lambda: RelativeBias(c.n_head, bidirectional=False),
    }[c.pos_encoding]()


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) 0/1 mask -> (B, T) positions counted from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class GPT(nn.Module):
    """``model(input_ids, attention_mask=None) -> logits (B, T, V)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = make_positions(c)
        self.drop = dropout_layer(c.dropout)
        self.transformer = Stack(
            [
                PreNormBlock(
                    SelfAttention(c.n_embd, c.n_head, c.n_kv_head, bias=c.bias, dropout=c.dropout),
                    make_mlp(c.mlp, c.n_embd, c.inner_dim, c.bias, c.dropout),
                    make_norm(c.norm, c.n_embd, c.norm_eps, c.bias),
                    make_norm(c.norm, c.n_embd, c.norm_eps, c.bias),
                )
                for _ in range(c.n_layer)
            ],
            final_norm=make_norm(c.norm, c.n_embd, c.norm_eps, c.bias),
        )
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(normal_init)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) (Radford 2019, §2.3)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                input_pos: int | None = None, last_only: bool = False) -> Tensor:
        """Logits for ``input_ids`` (B, T).

        Args:
            attention_mask: (B, Tk) 1 for real tokens, 0 for (left) padding, covering the
                cached positions too when decoding (Tk = input_pos + T).
            input_pos: start position in the KV cache (after ``setup_cache``); None = no cache.
            last_only: return logits of the last position only, (B, 1, V).
        """
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        start = input_pos or 0
        k_len = start + T
        c = self.config
        if c.pos_encoding == "learned" and k_len > c.block_size:
            raise ValueError(f"sequence length {k_len} exceeds block_size {c.block_size}")
        if attention_mask is not None:
            if attention_mask.shape != (B, k_len):
                raise ValueError(f"attention_mask must be {(B, k_len)}, got"
                                 f" {tuple(attention_mask.shape)}")
            if bool(attention_mask.all()):
                attention_mask = None
        if attention_mask is None:
            k_pos = torch.arange(k_len, device=input_ids.device)[None]
        else:
            k_pos = positions_from_mask(attention_mask)
        q_pos = k_pos[:, start:]

        x = self.wte(input_ids)  # (B, T, C)
        pos_emb = self.pos.embed(q_pos)
        if pos_emb is not None:
            x = x + pos_emb.to(x.dtype)
        mask, is_causal = make_attn_mask(
            T, k_len, causal=True, key_padding=attention_mask, bias=self.pos.bias(q_pos, k_pos),
            device=input_ids.device)
        if mask is not None and mask.is_floating_point():
            mask = mask.to(x.dtype)
        ctx = AttnInputs(mask, is_causal, self.pos.rotary(q_pos), input_pos)
        x = self.transformer(self.drop(x), ctx)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x)

    # -- generation interface --------------------------------------------------------------
    @property
    def max_len(self) -> int | None:
        """Longest sequence the model accepts (None: no hard limit)."""
        return self.config.block_size if self.config.pos_encoding == "learned" else None

    def setup_cache(self, batch: int, max_len: int) -> None:
        """Preallocate every layer's KV cache for ``batch`` rows of up to ``max_len`` tokens.

        Also stores the weights column-major for few-token steps (:func:`plait.nn.gemv_layout`).
        """
        gemv_layout(self)
        p = self.wte.weight
        self.transformer.setup_cache(batch, max_len, p.dtype, p.device)

    def reorder_cache(self, index: Tensor) -> None:
        self.transformer.reorder_cache(index)

    def clear_cache(self) -> None:
        self.transformer.clear_cache()

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 **kwargs) -> Tensor:
        """Prompt + new tokens; arguments and meaning as in ``transformers``' ``generate``.

        See :func:`plait.generation.generate` for the full list.
        """
        from plait.generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.pos, Learned):
            n -= self.pos.wpe.weight.numel()
        return n
