"""GPT: a decoder-only Transformer language model (Radford et al. 2019, GPT-2 layout by default).

token ids (or ready embeddings) -> + absolute positions -> N pre-norm causal blocks -> final
norm -> LM head tied to the token embedding -> logits (B, T, V).

With ``add_cross_attention`` every block also attends to an encoder's output between its
self-attention and its MLP (GPT-2's decoder in ``transformers``' encoder-decoder models, e.g. a
ViT encoder + GPT-2 captioner):
``model(ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask)``.

``GPT`` implements the decoding protocol (:class:`plait.generation.Decoder`): ``prefill`` takes
the prompt and any extra inputs (``inputs_embeds``, the encoder output), ``step`` one token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import require_positive
from plait.models.base import TransformerConfig, build_stack
from plait.nn import (
    ALiBi,
    AttnInputs,
    Learned,
    Linear,
    PositionEncoding,
    RelativeBias,
    Rotary,
    Sinusoidal,
    dropout_layer,
    gemv_layout,
    make_attn_mask,
    normal_init,
)

PosKind = Literal["learned", "sinusoidal", "rope", "alibi", "relative"]


@dataclass(frozen=True)
class GPTConfig(TransformerConfig):
    """Hyperparameters of a GPT. Names follow Hugging Face's GPT-2 config."""

    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    n_kv_head: int | None = None  # < n_head for grouped-query attention
    d_head: int | None = None  # width of one head; default n_embd / n_head
    pos_encoding: PosKind = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "gelu_tanh", "relu", "swiglu", "geglu", "silu", "quick_gelu",
                 "relu2"] = "gelu"
    n_inner: int | None = None  # MLP width; default 4 * n_embd
    bias: bool = True
    qkv_bias: bool | None = None  # the q/k/v projection's own bias; None: as bias (Qwen2: True)
    dropout: float = 0.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    add_cross_attention: bool = False  # blocks also attend to an encoder's output
    memory_dim: int | None = None  # that output's width; default n_embd

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size"))
        if self.d_head is not None:
            require_positive(self, ("d_head",))
        if self.n_head % self.kv_heads:
            raise ValueError(f"GPTConfig.n_head ({self.n_head}) must be a multiple of n_kv_head"
                             f" ({self.n_kv_head})")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


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


def _within(groups: Tensor | None, B: int, T: int, start: int) -> Tensor | None:
    """(B, T) group ids -> (B, T, T) pairs of one positive group, which attend both ways."""
    if groups is None:
        return None
    if tuple(groups.shape) != (B, T) or start:
        raise ValueError(f"attend_within must be ({B}, {T}) and cover the whole prompt (no"
                         f" cached positions before it), got {tuple(groups.shape)} at {start}")
    return (groups[:, :, None] == groups[:, None, :]) & (groups[:, :, None] > 0)


class GPT(nn.Module):
    """``model(input_ids, attention_mask=None) -> logits (B, T, V)``."""

    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = make_positions(c)
        self.drop = dropout_layer(c.dropout)
        memory_dim = (c.memory_dim or c.n_embd) if c.add_cross_attention else None
        self.transformer = build_stack(c, norm=c.norm, bias=c.bias, qkv_bias=c.qkv_bias,
                                       n_kv_head=c.n_kv_head, memory_dim=memory_dim)
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(normal_init)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) (Radford 2019, §2.3)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                input_pos: int | None = None, last_only: bool = False, *,
                inputs_embeds: Tensor | None = None,
                encoder_hidden_states: Tensor | None = None,
                encoder_attention_mask: Tensor | None = None,
                attend_within: Tensor | None = None) -> Tensor:
        """Logits for ``input_ids`` (B, T), or for ``inputs_embeds`` (B, T, C) given instead.

        Args:
            attention_mask: (B, Tk) 1 for real tokens, 0 for (left) padding, covering the
                cached positions too when decoding (Tk = input_pos + T).
            input_pos: start position in the KV cache (after ``setup_cache``); None = no cache.
            last_only: return logits of the last position only, (B, 1, V).
            inputs_embeds: token embeddings to use instead of ``wte(input_ids)`` (an image's
                features spliced into a prompt, say); positions are added as for tokens.
            encoder_hidden_states: (B, S, memory_dim) for cross-attention (with
                ``add_cross_attention``); None while decoding reuses the cached one.
            encoder_attention_mask: (B, S) 1 for real encoder positions, 0 for padding.
            attend_within: (B, T) group ids: tokens of one positive id read each other both
                ways (an image's tokens, PaliGemma-style); 0 keeps a token causal. Only for a
                whole prompt (no cached positions before it).
        """
        x = self.embed(input_ids, inputs_embeds)  # (B, T, C)
        B, T, _ = x.shape
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
            k_pos = torch.arange(k_len, device=x.device)[None]
        else:
            k_pos = positions_from_mask(attention_mask)
        q_pos = k_pos[:, start:]

        pos_emb = self.pos.embed(q_pos)
        if pos_emb is not None:
            x = x + pos_emb.to(x.dtype)
        mask, is_causal = make_attn_mask(
            T, k_len, causal=True, key_padding=attention_mask, bias=self.pos.bias(q_pos, k_pos),
            device=x.device, also=_within(attend_within, B, T, start))
        if mask is not None and mask.is_floating_point():
            mask = mask.to(x.dtype)
        ctx = AttnInputs(mask, is_causal, self.pos.rotary(q_pos), input_pos)
        x = self.transformer(self.drop(x), ctx, self._memory(encoder_hidden_states, B),
                             encoder_attention_mask)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x)

    def embed(self, input_ids: Tensor | None, inputs_embeds: Tensor | None) -> Tensor:
        """Token embeddings (B, T, C) from exactly one of ids (B, T) or ready embeddings."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.n_embd:
                raise ValueError(f"inputs_embeds must be (batch, seq_len, {self.config.n_embd}),"
                                 f" got shape {tuple(inputs_embeds.shape)}")
            return inputs_embeds.to(self.wte.weight.dtype)
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        return self.wte(input_ids)

    def _memory(self, memory: Tensor | None, B: int) -> Tensor | None:
        has_cross = self.config.add_cross_attention
        if memory is not None and not has_cross:
            raise ValueError("encoder_hidden_states given, but this GPT has no cross-attention"
                             " (GPTConfig.add_cross_attention is false)")
        if memory is not None and (memory.dim() != 3 or memory.shape[0] != B):
            raise ValueError(f"encoder_hidden_states must be ({B}, source_len, width), got"
                             f" shape {tuple(memory.shape)}")
        return memory

    # -- the decoding protocol (plait.generation.Decoder) ---------------------------------------
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

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                inputs_embeds: Tensor | None = None,
                encoder_hidden_states: Tensor | None = None,
                encoder_attention_mask: Tensor | None = None,
                attend_within: Tensor | None = None) -> Tensor:
        """Run the prompt into the cache; next-token logits (B, V). With ``inputs_embeds`` the
        ids only stand in for the embeddings (their count and the output's bookkeeping)."""
        ids = None if inputs_embeds is not None else input_ids
        return self(ids, attention_mask, input_pos=0, last_only=True, inputs_embeds=inputs_embeds,
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_attention_mask=encoder_attention_mask,
                    attend_within=attend_within)[:, -1]

    def step(self, input_ids: Tensor, attention_mask: Tensor | None, input_pos: int) -> Tensor:
        """One new token per row (B, 1) at ``input_pos``; next-token logits (B, V)."""
        return self(input_ids, attention_mask, input_pos=input_pos, last_only=True)[:, -1]

    def generate(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
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
