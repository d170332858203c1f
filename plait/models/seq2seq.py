"""The encoder–decoder Transformer (Vaswani et al. 2017, arXiv:1706.03762, Fig. 1), and by
configuration BART (Lewis et al. 2019, arXiv:1910.13461), Marian (Junczys-Dowmunt et al. 2018)
and T5 (Raffel et al. 2019, arXiv:1910.10683).

    memory = Encoder(embed(src) + pos)                      N blocks: self-attention, MLP
    logits = Decoder(embed(tgt) + pos, memory) W_out        N blocks: causal self-attention,
                                                            cross-attention to memory, MLP

Both stacks are :func:`plait.models.base.build_stack`; the decoder's blocks carry
``CrossAttention``, whose keys and values come from the encoder output once per source
(cached while generating). What the families change is all configuration:

| field | Transformer | BART | Marian | T5 |
|---|---|---|---|---|
| ``pos_encoding`` | sinusoidal | learned (offset 2) | sinusoidal (halves) | relative buckets |
| ``pre_norm`` | False (post) | False | False | True (+ final norms) |
| ``norm`` / ``bias`` | layernorm / on | layernorm / on | layernorm / on | rmsnorm / off |
| ``embed_scale`` | sqrt(C) | off | sqrt(C) | off |
| ``embed_norm`` | off | on | off | off |
| ``attn_scale`` | 1/sqrt(hs) | 1/sqrt(hs) | 1/sqrt(hs) | 1 |

``model(input_ids, attention_mask, decoder_input_ids)`` returns logits (B, T_dec, V);
``model.generate(input_ids, attention_mask, ...)`` returns what ``transformers`` returns: the
decoder start token, then the new tokens. For generation the model is a
:class:`plait.generation.Decoder` over its decoder, the encoder output its prefill input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import require_choice, require_positive
from plait.models.base import TransformerConfig, build_stack
from plait.nn import (
    AttnInputs,
    Learned,
    Linear,
    NoPositions,
    PositionEncoding,
    PostNormBlock,
    PreNormBlock,
    RelativeBias,
    Sinusoidal,
    dropout_layer,
    gemv_layout,
    make_attn_mask,
    make_norm,
    normal_init,
)


@dataclass(frozen=True)
class Seq2SeqConfig(TransformerConfig):
    """An encoder–decoder; defaults are the base Transformer of Vaswani et al. (2017)."""

    vocab_size: int = 32000
    n_layer: int = 6  # encoder blocks
    n_decoder_layer: int | None = None  # default: n_layer
    n_head: int = 8
    n_embd: int = 512
    d_head: int | None = None  # width of one head; default n_embd / n_head (T5: d_kv)
    n_inner: int | None = 2048
    block_size: int = 1024  # longest source or target (learned positions)
    mlp: str = "relu"  # an activation, or a gated kind ("geglu": T5 v1.1, "swiglu")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    bias: bool = True
    dropout: float = 0.1
    pre_norm: bool = False  # x + f(norm(x)) with a final norm per stack; else norm(x + f(x))
    pos_encoding: Literal["sinusoidal", "learned", "relative"] = "sinusoidal"
    # the decoder's own, when it differs (None: pos_encoding); e.g. sinusoidal positions for
    # the encoder, whose states cross-attention reads by position, relative ones for the decoder
    decoder_pos_encoding: Literal["sinusoidal", "learned", "relative", "none"] | None = None
    sinusoid_layout: Literal["interleaved", "halves"] = "interleaved"  # Marian/fairseq: halves
    pos_offset: int = 0  # learned positions start at this row of the table (BART: 2)
    rel_buckets: int = 32  # relative positions: buckets and the largest distance told apart
    rel_max_distance: int = 128
    embed_scale: bool = True  # multiply token embeddings by sqrt(n_embd)
    embed_norm: bool = False  # a LayerNorm after embeddings + positions (BART)
    attn_scale: float | None = None  # None: 1/sqrt(head_dim); T5 uses 1
    share_embeddings: bool = True  # encoder and decoder read one token table
    tie_embeddings: bool = True  # the output layer is the decoder's token table
    head_scale: bool = False  # scale the last hidden state by n_embd**-0.5 first (tied T5)
    final_logits_bias: bool = False  # a trained bias on the logits (BART, Marian)
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    forced_bos_token_id: int | None = None  # generation defaults the checkpoint comes with
    forced_eos_token_id: int | None = None

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size"))
        for name in ("n_decoder_layer", "d_head"):
            if getattr(self, name) is not None:
                require_positive(self, (name,))
        require_choice(self, "norm", ("layernorm", "rmsnorm"))
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"Seq2SeqConfig.{name} ({getattr(self, name)}) must be a token"
                                 f" id in [0, vocab_size={self.vocab_size})")
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal positions need an even n_embd, got {self.n_embd}")

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layer or self.n_layer


def make_positions(c: Seq2SeqConfig, decoder: bool) -> PositionEncoding:
    """One stack's positions: a table, fixed sinusoids, or T5's bucketed relative bias."""
    kind = c.decoder_pos_encoding if decoder and c.decoder_pos_encoding else c.pos_encoding
    if kind == "none":  # causal attention alone tells a decoder where it is (NoPE)
        return NoPositions()
    if kind == "learned":
        return Learned(c.block_size + c.pos_offset, c.n_embd)
    if kind == "sinusoidal":
        return Sinusoidal(c.n_embd, halves=c.sinusoid_layout == "halves")
    return RelativeBias(c.n_head, c.rel_buckets, c.rel_max_distance, bidirectional=not decoder)


class Seq2Seq(nn.Module):
    """``model(input_ids, attention_mask, decoder_input_ids) -> logits (B, T_dec, V)``."""

    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        block = PreNormBlock if c.pre_norm else PostNormBlock
        stack = dict(block=block, norm=c.norm, final_norm=c.pre_norm, bias=c.bias,
                     attn_scale=c.attn_scale)
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.dec_wte = self.wte if c.share_embeddings else nn.Embedding(c.vocab_size, c.n_embd)
        self.enc_pos, self.dec_pos = self.encoder_positions(), make_positions(c, True)
        self.enc_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.embed_norm else (
            nn.Identity())
        self.dec_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.embed_norm else (
            nn.Identity())
        self.drop = dropout_layer(c.dropout)
        self.encoder = build_stack(c, **stack)
        self.decoder = build_stack(c, n_layer=c.decoder_layers, memory_dim=c.n_embd, **stack)
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.dec_wte.weight
        if c.final_logits_bias:
            self.register_buffer("logits_bias", torch.zeros(1, c.vocab_size))
        self.apply(normal_init)

    def encoder_positions(self) -> PositionEncoding:
        """The encoder's positions; a model whose encoder reads something other than tokens
        (Whisper: audio frames) overrides it."""
        return make_positions(self.config, False)

    # -- the two halves ---------------------------------------------------------------------
    def embed(self, ids: Tensor, table: nn.Embedding, pos: PositionEncoding, norm: nn.Module,
              start: int = 0) -> tuple[Tensor, Tensor]:
        """Token embeddings + positions (B, T, C), and the positions (1, T) they used."""
        c = self.config
        T = ids.shape[1]
        positions = torch.arange(start, start + T, device=ids.device)[None]  # (1, T)
        if isinstance(pos, Learned) and start + T > c.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size {c.block_size}")
        x = table(ids)
        if c.embed_scale:
            x = x * math.sqrt(c.n_embd)
        pe = pos.embed(positions + c.pos_offset)
        if pe is not None:
            x = x + pe.to(x.dtype)
        return self.drop(norm(x)), positions

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The encoder's output (B, S, C) for right-padded sources; padding never reaches a
        real position (it is masked as a key)."""
        _check_ids(input_ids, attention_mask, "input_ids")
        x, positions = self.embed(input_ids, self.wte, self.enc_pos, self.enc_norm)
        S = input_ids.shape[1]
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        mask, _ = make_attn_mask(S, S, causal=False, key_padding=attention_mask,
                                 bias=self.enc_pos.bias(positions, positions))
        return self.encoder(x, AttnInputs(mask, False))

    def decode(self, decoder_input_ids: Tensor, memory: Tensor | None,
               memory_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
               input_pos: int | None = None, last_only: bool = False) -> Tensor:
        """Logits (B, T, V) for decoder tokens reading ``memory``; with ``input_pos`` the tokens
        continue the cache from there (memory None reuses the cached one)."""
        _check_ids(decoder_input_ids, None, "decoder_input_ids")
        start = input_pos or 0
        T = decoder_input_ids.shape[1]
        x, q_pos = self.embed(decoder_input_ids, self.dec_wte, self.dec_pos, self.dec_norm, start)
        k_len = start + T
        k_pos = torch.arange(k_len, device=x.device)[None]
        pad = decoder_attention_mask
        if pad is not None:
            if pad.shape != (decoder_input_ids.shape[0], k_len):
                raise ValueError(f"decoder_attention_mask must be"
                                 f" {(decoder_input_ids.shape[0], k_len)}, got {tuple(pad.shape)}")
            pad = None if bool(pad.all()) else pad
        mask, is_causal = make_attn_mask(T, k_len, causal=True, key_padding=pad,
                                         bias=self.dec_pos.bias(q_pos, k_pos), device=x.device)
        if memory_mask is not None and bool(memory_mask.all()):
            memory_mask = None
        h = self.decoder(x, AttnInputs(mask, is_causal, None, input_pos), memory, memory_mask)
        if last_only:
            h = h[:, -1:]
        if self.config.head_scale:
            h = h * self.config.n_embd ** -0.5
        logits = self.lm_head(h)
        if self.config.final_logits_bias:
            logits = logits + self.logits_bias
        return logits

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, T_dec, V) of ``decoder_input_ids`` given the source."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required: the decoder start token, then the"
                             " target shifted right (shift_right(labels))")
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask)

    def shift_right(self, labels: Tensor) -> Tensor:
        """Decoder inputs for teacher forcing: the start token, then labels[:, :-1]; ignored
        positions (-100) become padding."""
        c = self.config
        out = labels.new_full(labels.shape, c.pad_token_id)
        out[:, 0] = c.decoder_start_token_id
        out[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, c.pad_token_id)
        return out

    # -- the decoding protocol (plait.generation.Decoder), over the decoder ---------------------
    @property
    def max_source_len(self) -> int | None:
        """The encoder's longest source (a learned table's rows), or None."""
        return self.config.block_size if isinstance(self.enc_pos, Learned) else None

    @property
    def max_len(self) -> int | None:
        """The decoder's longest sequence (a learned table's rows), or None."""
        return self.config.block_size if isinstance(self.dec_pos, Learned) else None

    def setup_cache(self, batch: int, max_len: int) -> None:
        gemv_layout(self)
        p = self.dec_wte.weight
        self.decoder.setup_cache(batch, max_len, p.dtype, p.device)

    def reorder_cache(self, index: Tensor) -> None:
        self.decoder.reorder_cache(index)

    def clear_cache(self) -> None:
        self.decoder.clear_cache()

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                encoder_hidden_states: Tensor, encoder_attention_mask: Tensor | None = None
                ) -> Tensor:
        """The decoder prompt (start token, ...) over the encoder output; logits (B, V)."""
        return self.decode(input_ids, encoder_hidden_states, encoder_attention_mask,
                           attention_mask, input_pos=0, last_only=True)[:, -1]

    def step(self, input_ids: Tensor, attention_mask: Tensor | None, input_pos: int) -> Tensor:
        return self.decode(input_ids, None, None, attention_mask, input_pos=input_pos,
                           last_only=True)[:, -1]

    @torch.inference_mode()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 decoder_input_ids: Tensor | None = None, **kwargs) -> Tensor:
        """Translate: the encoder runs once, then the decoder generates from the start token
        (or ``decoder_input_ids``). Returns (B * num_return_sequences, 1 + new) as
        ``transformers`` does; arguments as in :func:`plait.generation.generate`."""
        memory = self.encode(input_ids, attention_mask)
        return self.generate_over(memory, attention_mask, decoder_input_ids, **kwargs)

    def generate_over(self, memory: Tensor, memory_mask: Tensor | None,
                      decoder_input_ids: Tensor | None = None, **kwargs) -> Tensor:
        """Generate over an encoder output ``memory`` (B, S, C) (its padding ``memory_mask``
        (B, S), or None): from the start token, or the prompt ``decoder_input_ids`` (B, T0);
        the generation ids default to the config's."""
        from plait.generation import generate

        c = self.config
        if decoder_input_ids is None:
            decoder_input_ids = torch.full((memory.shape[0], 1), c.decoder_start_token_id,
                                           dtype=torch.long, device=memory.device)
        for name in ("eos_token_id", "pad_token_id", "forced_bos_token_id",
                     "forced_eos_token_id"):
            kwargs.setdefault(name, getattr(c, name))
        return generate(self, decoder_input_ids, None, encoder_hidden_states=memory,
                        encoder_attention_mask=memory_mask, **kwargs)


def _check_ids(ids: Tensor, mask: Tensor | None, name: str) -> None:
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (batch, seq_len), got shape {tuple(ids.shape)}")
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(f"attention_mask must be {tuple(ids.shape)}, got {tuple(mask.shape)}")
