"""A pointer-generator: an encoder–decoder that writes common words and copies the rest from
its source (See et al. 2017, arXiv:1704.04368), on plait's Transformer encoder–decoder.

At decoder step t, with h_t the decoder's last hidden state and m_s the encoder's outputs:

    P_vocab   = softmax(W_out h_t)                                    over the vocabulary
    a_t       = softmax_s((W_q h_t) . (W_k m_s) / sqrt(C))           copy attention
    p_gen     = sigmoid(w_g . h_t)
    P(w)      = p_gen P_vocab(w) + (1 - p_gen) sum_{s: src_s = w} a_t,s

over the *extended* vocabulary (:mod:`plait.text.words`: the vocabulary, then one id per source
position), so names and numbers absent from the vocabulary are still written, and only as they
stand in the source. Two additions to See et al.:

- every word's embedding adds its hashed **shape** and its **slot** (an unknown name is not a
  blank ``<unk>``, and its mentions share a number; :mod:`plait.text.words`);
- a decoder input that was copied also carries the encoder's state where it was copied from
  (``dec_pos``, :func:`plait.text.words.copy_positions`; at inference the occurrence the copy
  attention chose), so the decoder knows *which* word it just copied and can go on with the
  next one ("Anna" -> "Weber").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig
from plait.nn import AttnInputs, Linear, make_attn_mask

EPS = 1e-9


@dataclass(frozen=True)
class PointerConfig(Seq2SeqConfig):
    """A :class:`Seq2SeqConfig` whose decoder also copies; ``unk_token_id`` is what an
    out-of-vocabulary word reads as."""

    unk_token_id: int = 3
    n_shapes: int = 128  # hash buckets of word shapes (plait.text.words)
    n_slots: int = 256  # slot numbers of a source's out-of-vocabulary words
    pos_encoding: Literal["sinusoidal", "learned", "relative"] = "learned"
    block_size: int = 256
    dropout: float = 0.0
    pre_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.unk_token_id < self.vocab_size:
            raise ValueError(f"PointerConfig.unk_token_id ({self.unk_token_id}) must be a token"
                             f" id in [0, vocab_size={self.vocab_size})")


@dataclass
class Words:
    """A padded batch of words: vocabulary ids (with ``<unk>``), shape buckets, slot numbers,
    extended ids; all (B, T)."""

    ids: Tensor
    shapes: Tensor
    slots: Tensor
    ext: Tensor


class PointerGenerator(Seq2Seq):
    """``model(src, src_mask, dec, dec_pos) -> log P`` (B, T_dec, V + S), the extended
    vocabulary."""

    config_class = PointerConfig

    def __init__(self, config: PointerConfig):
        super().__init__(config)
        C = config.n_embd
        self.shape_emb = nn.Embedding(config.n_shapes, C)
        self.slot_emb = nn.Embedding(config.n_slots, C)
        self.copy_feed = Linear(C, C, bias=False)
        self.copy_q = Linear(C, C, bias=False)
        self.copy_k = Linear(C, C, bias=False)
        self.gen_gate = Linear(C, 1)
        for emb in (self.shape_emb, self.slot_emb):
            nn.init.normal_(emb.weight, std=0.02)

    def word_embed(self, w: Words, table: nn.Embedding) -> Tensor:
        return table(w.ids) + self.shape_emb(w.shapes) + self.slot_emb(w.slots)  # (B, T, C)

    def encode_words(self, src: Words, src_mask: Tensor) -> Tensor:
        """The encoder's output (B, S, C) over a right-padded source."""
        c = self.config
        x = self.word_embed(src, self.wte)
        if c.embed_scale:
            x = x * math.sqrt(c.n_embd)
        S = x.shape[1]
        if c.block_size < S:
            raise ValueError(f"the source has {S} words; this model reads at most"
                             f" {c.block_size}")
        positions = torch.arange(S, device=x.device)[None]
        pe = self.enc_pos.embed(positions + c.pos_offset)
        x = self.drop(self.enc_norm(x if pe is None else x + pe))
        mask, _ = make_attn_mask(S, S, causal=False, key_padding=src_mask,
                                 bias=self.enc_pos.bias(positions, positions))
        return self.encoder(x, AttnInputs(mask, False))

    def decode_words(self, dec: Words, dec_pos: Tensor, memory: Tensor, src: Words,
                     src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """log P (B, T, V + S) of the next word after each decoder input, and the copy
        attention (B, T, S); ``dec_pos`` (B, T) is where each input was copied from (-1:
        nowhere)."""
        c = self.config
        T = dec.ids.shape[1]
        if c.block_size < T:
            raise ValueError(f"the summary has {T} words; this model writes at most"
                             f" {c.block_size}")
        x = self.word_embed(dec, self.dec_wte)
        if c.embed_scale:
            x = x * math.sqrt(c.n_embd)
        # what a copied input stands for: the encoder's state where it was copied from
        at = dec_pos.clamp(min=0)[..., None].expand(-1, -1, memory.shape[-1])  # (B, T, C)
        copied = memory.gather(1, at) * (dec_pos >= 0)[..., None].to(memory.dtype)
        x = x + self.copy_feed(copied)
        positions = torch.arange(T, device=x.device)[None]
        pe = self.dec_pos.embed(positions + c.pos_offset)
        x = self.drop(self.dec_norm(x if pe is None else x + pe))
        mask, is_causal = make_attn_mask(T, T, causal=True,
                                         bias=self.dec_pos.bias(positions, positions),
                                         device=x.device)
        h = self.decoder(x, AttnInputs(mask, is_causal), memory, src_mask)  # (B, T, C)
        return self.mix(h, memory, src, src_mask)

    def mix(self, h: Tensor, memory: Tensor, src: Words, src_mask: Tensor
            ) -> tuple[Tensor, Tensor]:
        """p_gen P_vocab + (1 - p_gen) copy, as log-probabilities (B, T, V + S), and the copy
        attention (B, T, S)."""
        B, T, _ = h.shape
        V, S = self.config.vocab_size, memory.shape[1]
        p_vocab = self.lm_head(h).float().softmax(-1)  # (B, T, V)
        scores = self.copy_q(h) @ self.copy_k(memory).transpose(1, 2)  # (B, T, S)
        scores = scores.float() / math.sqrt(h.shape[-1])
        attn = scores.masked_fill(~src_mask[:, None, :].bool(), float("-inf")).softmax(-1)
        p_gen = torch.sigmoid(self.gen_gate(h).float())  # (B, T, 1)
        out = torch.zeros(B, T, V + S, device=h.device)
        out[..., :V] = p_gen * p_vocab
        index = src.ext[:, None, :].expand(B, T, S)
        out.scatter_add_(-1, index, (1 - p_gen) * attn)
        return out.clamp(min=EPS).log(), attn

    def forward(self, src: Words, src_mask: Tensor, dec: Words,  # type: ignore[override]
                dec_pos: Tensor) -> Tensor:
        """Teacher-forced log P (B, T_dec, V + S)."""
        memory = self.encode_words(src, src_mask)
        return self.decode_words(dec, dec_pos, memory, src, src_mask)[0]
