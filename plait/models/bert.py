"""BERT: a bidirectional Transformer encoder (Devlin et al. 2018, arXiv:1810.04805).

token ids -> word + learned position + token-type embeddings -> LayerNorm -> N post-norm blocks
(Vaswani 2017 §3.1: x = LN(x + Sublayer(x))) -> hidden states (B, T, C).

Heads are modules chosen by ``BertConfig.head``:

- ``"none"``: the encoder plus BERT's pooler (tanh(W h_[CLS] + b), Devlin §3 "C").
- ``"mlm"``: masked-LM head, dense -> act -> LayerNorm -> decoder tied to the word embedding
  (+ a per-token bias) (Devlin §3.1 task #1).
- ``"classify"``: pooler -> dropout -> Linear(num_labels) (Devlin §4.1).

``model(input_ids, attention_mask, token_type_ids)`` always returns hidden states;
``model.logits(...)`` runs the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import require_choice, require_positive
from plait.models.base import TransformerConfig, build_stack
from plait.nn import AttnInputs, Learned, PostNormBlock, make_attn_mask
from plait.nn.layers import ACTIVATIONS, normal_init

HeadKind = Literal["none", "mlm", "classify"]


@dataclass(frozen=True)
class BertConfig(TransformerConfig):
    """Hyperparameters of a BERT encoder (GPT-2-style names; HF names in comments)."""

    vocab_size: int = 30522
    n_layer: int = 12  # num_hidden_layers
    n_head: int = 12  # num_attention_heads
    n_embd: int = 768  # hidden_size
    n_inner: int = 3072  # intermediate_size
    block_size: int = 512  # max_position_embeddings
    type_vocab_size: int = 2
    mlp: str = "gelu"  # hidden_act
    norm_eps: float = 1e-12  # layer_norm_eps
    dropout: float = 0.1  # hidden_dropout_prob
    pad_token_id: int = 0
    head: HeadKind = "none"
    num_labels: int = 2  # classify head only
    classifier_dropout: float | None = None  # None: use dropout
    tie_embeddings: bool = True  # mlm decoder shares the word embedding

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size", "type_vocab_size"))
        require_positive(self, ("num_labels",))
        require_choice(self, "mlp", ACTIVATIONS)  # the MLM head's transform uses it too


class Pooler(nn.Module):
    """tanh(W h_0 + b): the [CLS] summary BERT's next-sentence task trained."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.dense = nn.Linear(n_embd, n_embd)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, C)


class ClsToken(nn.Module):
    """h_0, the [CLS] position's hidden state."""

    def forward(self, h: Tensor) -> Tensor:
        return h[:, 0]  # (B, C)


class MLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder (tied to the word embedding) + bias."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = nn.Linear(c.n_embd, c.n_embd)
        self.act = ACTIVATIONS[c.mlp]()
        self.norm = nn.LayerNorm(c.n_embd, eps=c.norm_eps)
        self.decoder = nn.Linear(c.n_embd, c.vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.transform(h))))  # (B, T, V)


class Classifier(nn.Module):
    """dropout -> Linear over the pooled [CLS] vector."""

    def __init__(self, c: BertConfig):
        super().__init__()
        p = c.dropout if c.classifier_dropout is None else c.classifier_dropout
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(c.n_embd, c.num_labels)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.out(self.drop(pooled))  # (B, num_labels)


def make_head(c: BertConfig) -> nn.Module:
    if c.head == "mlm":
        return MLMHead(c)
    if c.head == "classify":
        return Classifier(c)
    return nn.Identity()


class Bert(nn.Module):
    """``model(input_ids, attention_mask=None, token_type_ids=None) -> hidden (B, T, C)``."""

    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = Learned(c.block_size, c.n_embd)
        self.wtt = nn.Embedding(c.type_vocab_size, c.n_embd)
        self.norm_emb = nn.LayerNorm(c.n_embd, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = build_stack(c, block=PostNormBlock, final_norm=False)
        # masked-LM checkpoints have no pooler: their pooled vector is the plain [CLS] state
        self.pooler = Pooler(c.n_embd) if c.head != "mlm" else ClsToken()
        self.head = make_head(c)
        self.apply(normal_init)
        if c.head == "mlm" and c.tie_embeddings:
            self.head.decoder.weight = self.wte.weight

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, rows: Tensor | int | None = None) -> Tensor:
        """Hidden states (B, T, C); ``attention_mask`` (B, T) is 1 for tokens, 0 for padding.

        ``rows`` (B,): only those positions' states, (B, 1, C), computed in the last layer for
        them alone (``Stack.forward``).
        """
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if input_ids.shape[1] > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings"
                             f" {self.config.block_size}; truncate the input")
        if attention_mask is not None and attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask must be {(B, T)}, got {tuple(attention_mask.shape)}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(T, device=input_ids.device)[None]  # (1, T): BERT pads on the right
        x = self.wte(input_ids) + self.wtt(token_type_ids) + self.pos.embed(pos)  # (B, T, C)
        x = self.drop(self.norm_emb(x))
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        mask, _ = make_attn_mask(T, T, causal=False, key_padding=attention_mask)
        return self.encoder(x, AttnInputs(mask), rows=rows)

    def pooled(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> Tensor:
        """BERT's pooled [CLS] vector (B, C); the last layer runs for [CLS] alone."""
        return self.pooler(self(input_ids, attention_mask, token_type_ids, rows=0))

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> Tensor:
        """The head's output: mlm (B, T, V), classify (B, num_labels), none: pooled (B, C)."""
        if self.config.head == "mlm":
            return self.head(self(input_ids, attention_mask, token_type_ids))
        return self.head(self.pooled(input_ids, attention_mask, token_type_ids))
