"""BERT: a bidirectional Transformer encoder (Devlin et al. 2018, arXiv:1810.04805).

token ids -> word + learned position + token-type embeddings -> LayerNorm -> N post-norm blocks
(Vaswani 2017 §3.1: x = LN(x + Sublayer(x))) -> hidden states (B, T, C).

Heads are modules chosen by ``BertConfig.head``:

- ``"none"``: the encoder plus BERT's pooler (tanh(W h_[CLS] + b), Devlin §3 "C").
- ``"mlm"``: masked-LM head, dense -> act -> LayerNorm -> decoder tied to the word embedding
  (+ a per-token bias) (Devlin §3.1 task #1).
- ``"classify"``: pooler -> dropout -> Linear(num_labels) (Devlin §4.1).
- ``"tag"``: dropout -> Linear(num_labels) at every position (Devlin §4.3, NER).

RoBERTa (Liu et al. 2019, arXiv:1907.11692) is this model with position rows counted from
``pos_offset`` (padding id + 1) and one token type; ALBERT (Lan et al. 2019,
arXiv:1909.11942) factorises the embedding (``embedding_size`` E < C, then a Linear E -> C) and
runs one shared block ``n_layer`` times (``share_layers``): a different training recipe, not a
different architecture, so both are configurations of this file.

``model(input_ids, attention_mask, token_type_ids)`` always returns hidden states;
``model.logits(...)`` runs the head; ``model.mean_pooled(...)`` averages the real tokens.
"""

from __future__ import annotations

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
    PostNormBlock,
    PreNormBlock,
    Rotary,
    Stack,
    make_attn_mask,
)
from plait.nn.layers import ACTIVATIONS, normal_init

HeadKind = Literal["none", "mlm", "classify", "tag"]


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
    num_labels: int = 2  # classify / tag heads
    labels: tuple[str, ...] = ()  # their names (Hugging Face's id2label), when known
    classifier_dropout: float | None = None  # None: use dropout
    tie_embeddings: bool = True  # mlm decoder shares the word embedding
    embedding_size: int | None = None  # ALBERT: embeddings this wide, then a Linear to n_embd
    share_layers: bool = False  # ALBERT: one block's weights for all n_layer blocks
    pos_offset: int = 0  # RoBERTa: position rows start here (padding id + 1)
    # x + f(norm(x)) blocks and a final norm (Xiong et al. 2020): no Hugging Face BERT has
    # them, but a small model pretrained from scratch leaves the unigram plateau far sooner
    pre_norm: bool = False
    # "rope": rotary positions in every attention instead of a learned table (RoFormer, Su et
    # al. 2021; ModernBERT): attention to neighbours needs no table to be learned first
    pos_encoding: Literal["learned", "rope"] = "learned"
    rope_base: float = 10000.0
    # what the pooler (and so the classify head) reads: [CLS], as BERT; or the mean of the real
    # tokens (Reimers 2019), a bag of contextual words that a small fine-tuning set fits sooner;
    # or "markers": the states of two entity-start markers side by side, [h_E1; h_E2] (Baldini
    # Soares et al. 2019, relation extraction), so the head is 2 n_embd wide; or "weighted":
    # the mean with each token weighted by its piece's entry in the ``pool_weight`` buffer,
    # which a task fills from its data (SIF's a / (a + p(piece)), Arora et al. 2017)
    pooling: Literal["cls", "mean", "markers", "weighted"] = "cls"
    # > 0: an auxiliary classifier over the pooled vector (``aux_head``), trained beside the
    # head on a second task (where in the corpus a text comes from)
    aux_labels: int = 0
    # what the classify head's model predicts with: the head; or "aux", the label through the
    # auxiliary classes, p(label | x) = sum_a p(a | x) aux_table[a, label], the ``aux_table``
    # buffer (aux_labels, num_labels) holding how the labels share each auxiliary class
    read: Literal["head", "aux"] = "head"

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size", "type_vocab_size"))
        require_positive(self, ("num_labels",))
        if self.embedding_size is not None:
            require_positive(self, ("embedding_size",))
        require_positive(self, ("pos_offset", "aux_labels"), zero_ok=True)
        if self.labels and len(self.labels) != self.num_labels:
            raise ValueError(f"BertConfig.labels has {len(self.labels)} names for num_labels ="
                             f" {self.num_labels}")
        require_choice(self, "mlp", ACTIVATIONS)  # the MLM head's transform uses it too
        require_choice(self, "pos_encoding", ("learned", "rope"))
        require_choice(self, "pooling", ("cls", "mean", "markers", "weighted"))
        require_choice(self, "read", ("head", "aux"))

    @property
    def pools_tokens(self) -> bool:
        """Whether the pooled vector is a mean over the tokens, so a text too long for the
        positions can be read in pieces pooled together (``owner``)."""
        return self.pooling in ("mean", "weighted")

    @property
    def embed_dim(self) -> int:
        """Width of the embeddings (E): ``embedding_size``, or ``n_embd``."""
        return self.embedding_size or self.n_embd


def masked_mean(h: Tensor, attention_mask: Tensor | None, owner: Tensor | None = None) -> Tensor:
    """The mean over the real tokens of h (B, T, C): (B, C), the mask's entries as weights.

    ``owner`` (B,): row b is a piece of text ``owner[b]`` (a text longer than the model's
    positions, read in pieces): the mean over all its pieces' tokens, (texts, C)."""
    if attention_mask is None and owner is None:
        return h.mean(1)
    if attention_mask is None:
        attention_mask = h.new_ones(h.shape[:2])
    m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    total, weight = (h * m).sum(1), m.sum(1)  # (B, C), (B, 1)
    if owner is not None:
        n = int(owner.max()) + 1
        total = h.new_zeros(n, h.shape[-1]).index_add_(0, owner, total)
        weight = h.new_zeros(n, 1).index_add_(0, owner, weight)
    return total / weight.clamp(min=1e-9)


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
    """dense (C -> E) -> act -> LayerNorm -> decoder (tied to the word embedding) + bias."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = nn.Linear(c.n_embd, c.embed_dim)
        self.act = ACTIVATIONS[c.mlp]()
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.decoder = nn.Linear(c.embed_dim, c.vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.transform(h))))  # (B, T, V)


class Classifier(nn.Module):
    """dropout -> Linear: over the pooled [CLS] vector (classify) or every position (tag)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        p = c.dropout if c.classifier_dropout is None else c.classifier_dropout
        self.drop = nn.Dropout(p)
        pair = c.head == "classify" and c.pooling == "markers"  # [h_E1; h_E2]
        self.out = nn.Linear(c.n_embd * (2 if pair else 1), c.num_labels)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.drop(h))  # (B, num_labels) or (B, T, num_labels)


def make_head(c: BertConfig) -> nn.Module:
    if c.head == "mlm":
        return MLMHead(c)
    if c.head in ("classify", "tag"):
        return Classifier(c)
    return nn.Identity()


def shared_stack(c: BertConfig) -> Stack:
    """BERT's post-norm stack (or pre-norm, with a final norm); with ``share_layers`` one block
    repeated (ALBERT): the ModuleList holds the same module ``n_layer`` times, so there is one
    set of weights."""
    stack = build_stack(c, block=PreNormBlock if c.pre_norm else PostNormBlock,
                        final_norm=c.pre_norm, n_layer=1 if c.share_layers else None)
    if c.share_layers:
        stack.blocks = nn.ModuleList([stack.blocks[0]] * c.n_layer)
    return stack


class Bert(nn.Module):
    """``model(input_ids, attention_mask=None, token_type_ids=None) -> hidden (B, T, C)``."""

    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        E = c.embed_dim
        self.wte = nn.Embedding(c.vocab_size, E)
        self.pos = (Rotary(c.head_dim, c.rope_base) if c.pos_encoding == "rope"
                    else Learned(c.block_size + c.pos_offset, E))
        self.wtt = nn.Embedding(c.type_vocab_size, E)
        self.norm_emb = nn.LayerNorm(E, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.emb_proj = nn.Linear(E, c.n_embd) if c.n_embd != E else nn.Identity()
        self.encoder = shared_stack(c)
        # masked-LM and tagging checkpoints have no pooler: their pooled vector is [CLS]'s
        pooled = c.head in ("none", "classify") and c.pooling != "markers"
        self.pooler = Pooler(c.n_embd) if pooled else ClsToken()
        if c.pooling == "weighted":  # saved with the weights: prediction pools as training did
            self.register_buffer("pool_weight", torch.ones(c.vocab_size))
        self.head = make_head(c)
        if c.aux_labels:
            self.aux_head = nn.Linear(c.n_embd, c.aux_labels)
        if c.read == "aux" and c.head == "classify":  # filled by the task, saved with the weights
            if not c.aux_labels:
                raise ValueError("BertConfig.read = 'aux' reads through the auxiliary classes:"
                                 " it needs aux_labels > 0")
            self.register_buffer("aux_table", torch.full((c.aux_labels, c.num_labels),
                                                         1 / c.num_labels))
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
        # (1, T): BERT pads on the right, so real tokens sit at 0 .. n-1 (RoBERTa: + offset)
        pos = torch.arange(T, device=input_ids.device)[None] + self.config.pos_offset
        x = self.wte(input_ids) + self.wtt(token_type_ids)  # (B, T, E)
        table = self.pos.embed(pos)  # (1, T, E), or None for rotary positions
        x = x if table is None else x + table
        x = self.emb_proj(self.drop(self.norm_emb(x)))  # (B, T, C)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        mask, _ = make_attn_mask(T, T, causal=False, key_padding=attention_mask)
        return self.encoder(x, AttnInputs(mask, rope=self.pos.rotary(pos)), rows=rows)

    def pool(self, h: Tensor, attention_mask: Tensor | None = None,
             input_ids: Tensor | None = None, owner: Tensor | None = None) -> Tensor:
        """Hidden states (B, T, C) -> the pooled vector (B, C), by ``config.pooling``
        ("weighted" reads each token's weight by its id in ``input_ids``); with ``owner`` (B,),
        rows that are pieces of one text pool together, (texts, C) (:func:`masked_mean`)."""
        pooling = self.config.pooling
        if pooling == "markers":
            raise ValueError("pooling 'markers' reads two marker positions: use pool_markers")
        if owner is not None and not self.config.pools_tokens:
            raise ValueError("a text read in pieces needs pooling 'mean' or 'weighted'")
        if pooling == "weighted":
            if input_ids is None:
                raise ValueError("pooling 'weighted' weighs each token by its id: pass input_ids")
            weight = self.pool_weight[input_ids]  # (B, T)
            attention_mask = weight if attention_mask is None else weight * attention_mask
        if pooling in ("mean", "weighted"):
            h = masked_mean(h, attention_mask, owner)[:, None]  # (B, 1, C): the pooler reads row 0
        return self.pooler(h)

    def pool_markers(self, h: Tensor, starts: Tensor) -> Tensor:
        """Hidden states (B, T, C) and the two marker positions of each row (B, 2) -> their
        states side by side, (B, 2 C)."""
        rows = torch.arange(h.shape[0], device=h.device)[:, None]  # (B, 1)
        return h[rows, starts].flatten(1)  # (B, 2, C) -> (B, 2 C)

    def pooled(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None, owner: Tensor | None = None) -> Tensor:
        """BERT's pooled vector (B, C); for [CLS], the last layer runs for [CLS] alone. With
        ``owner`` (B,), rows that are pieces of one text pool together: (texts, C)."""
        if self.config.pooling in ("mean", "markers", "weighted") or owner is not None:
            return self.pool(self(input_ids, attention_mask, token_type_ids), attention_mask,
                             input_ids, owner)
        return self.pooler(self(input_ids, attention_mask, token_type_ids, rows=0))

    def mean_pooled(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                    token_type_ids: Tensor | None = None) -> Tensor:
        """The mean of the real tokens' states (B, C): sentence embeddings (Reimers 2019)."""
        return masked_mean(self(input_ids, attention_mask, token_type_ids), attention_mask)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None, owner: Tensor | None = None) -> Tensor:
        """The head's output: mlm (B, T, V), tag (B, T, num_labels), classify
        (B, num_labels) (:meth:`classify`; ``owner`` as in :meth:`pooled`), none: pooled
        (B, C)."""
        if self.config.head in ("mlm", "tag"):
            return self.head(self(input_ids, attention_mask, token_type_ids))
        pooled = self.pooled(input_ids, attention_mask, token_type_ids, owner)
        return self.classify(pooled) if self.config.head == "classify" else pooled

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled vectors (B, C) -> the classify logits (B, num_labels): the head's, or with
        ``read = "aux"`` log sum_a p(a | x) aux_table[a, label] (log-probabilities)."""
        if self.config.read == "head" or self.config.head != "classify":
            return self.head(pooled)
        return (self.aux_head(pooled).softmax(-1) @ self.aux_table).clamp(min=1e-30).log()

    def num_params(self) -> int:
        """Distinct parameters (ALBERT's shared block and tied tables counted once)."""
        return sum(p.numel() for p in self.parameters())
