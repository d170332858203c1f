"""Vision–language encoders that answer by classification: VisualBERT's single stream and
ViLBERT's two streams with co-attention, wired from the same blocks as everything else.

VisualBERT (Li et al. 2019, arXiv:1908.03557): text tokens and image regions (here the image
tower's patch states, projected) are one sequence, each with a segment embedding, through one
bidirectional Transformer; the first token's state is classified.

    x = [E_w(ids) + P_t + S_0 ;  W_v V + P_v + S_1]       (B, T + N, C)
    logits = W_o h_0,   h = Encoder(x)

ViLBERT (Lu et al. 2019, arXiv:1908.02265): a text stream and an image stream, and in every
layer each stream's queries attend to the other stream (co-attention: a block with
cross-attention whose memory is the other stream's states from the layer before); the answer
reads the product of the two pooled vectors (§3.2, "element-wise product").

    t_l = Block_t(t_{l-1}; memory = v_{l-1}),  v_l = Block_v(v_{l-1}; memory = t_{l-1})
    logits = W_o (t_L[0] * mean(v_L))

Both read the image through a plait :class:`~plait.models.vit.ViT` (the tower of a CLIP
folder, frozen by the recipe) at ``feature_layer``, as the VLM does, so the three differ only in
how text and image meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait.models.base import TransformerConfig, build_stack, complete_tables
from plait.models.vit import ViT, ViTConfig
from plait.nn import AttnInputs, make_attn_mask


@dataclass(frozen=True)
class VisualBertConfig(TransformerConfig):
    """The image tower's table, the text side, and the answers the head can give."""

    vision: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 100
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None
    block_size: int = 64  # text positions
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    feature_layer: int = -2  # the tower's block whose patch states are read
    labels: tuple[str, ...] = ("no", "yes")  # the head's answers, in order
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        self.check_transformer(("vocab_size", "block_size"))
        complete_tables(self, (("vision", ViTConfig),))
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError("model.labels must be distinct answers, at least one")

    @property
    def vision_config(self) -> ViTConfig:
        return ViTConfig.from_dict(self.vision)

    @property
    def image_tokens(self) -> int:
        """Tokens one image adds to the sequence: its patches."""
        return self.vision_config.grid**2

    @property
    def image_width(self) -> int:
        """Width of one image token before the projection."""
        return self.vision_config.n_embd


@dataclass(frozen=True)
class ViLBertConfig(VisualBertConfig):
    """ViLBERT: the same fields; ``n_layer`` co-attention layers in each stream."""


class _TextAndImage(nn.Module):
    """What both encoders share: the image tower, its projection, the text embeddings."""

    def __init__(self, c: VisualBertConfig):
        super().__init__()
        self.config = c
        v = c.vision_config
        self.vision = ViT(v)
        self.visual_proj = nn.Linear(c.image_width, c.n_embd)
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.text_pos = nn.Parameter(torch.zeros(1, c.block_size, c.n_embd))
        self.image_pos = nn.Parameter(torch.zeros(1, c.image_tokens, c.n_embd))
        self.segment = nn.Parameter(torch.zeros(2, c.n_embd))  # text, image
        self.head = nn.Linear(c.n_embd, len(c.labels))
        for p in (self.text_pos, self.image_pos, self.segment):
            nn.init.normal_(p, std=0.02)

    def streams(self, input_ids: Tensor, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """(text (B, T, C), image (B, N, C)) inputs: embeddings + positions + segments."""
        n_text, limit = input_ids.shape[1], self.config.block_size
        if n_text > limit:
            raise ValueError(f"a question of {n_text} tokens exceeds the model's {limit}")
        text = self.wte(input_ids) + self.text_pos[:, :n_text] + self.segment[0]
        return text, self.image_input(pixel_values)

    def image_input(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) -> projected patches + positions + segment (B, N, C)."""
        return self.visual_proj(self.patches(pixel_values)) + self.image_pos + self.segment[1]

    def patches(self, pixel_values: Tensor) -> Tensor:
        """The tower's patch states at ``feature_layer``, class token dropped: (B, N, Cv)."""
        patches = self.vision.features(pixel_values, self.config.feature_layer)
        return patches[:, 1:] if self.vision.cls is not None else patches

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class VisualBert(_TextAndImage):
    """``model(input_ids, attention_mask, pixel_values) -> answer logits (B, labels)``."""

    config_class = VisualBertConfig

    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.encoder = build_stack(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None,
                pixel_values: Tensor) -> Tensor:
        text, image = self.streams(input_ids, pixel_values)
        x = torch.cat([text, image], dim=1)  # (B, T + N, C): one stream
        keep = None
        if attention_mask is not None:
            ones = attention_mask.new_ones(image.shape[:2])
            keep = torch.cat([attention_mask, ones], dim=1)
        mask, _ = make_attn_mask(x.shape[1], x.shape[1], causal=False, key_padding=keep)
        h = self.encoder(x, AttnInputs(mask), rows=0)  # only the first token's state
        return self.head(h[:, 0])


class ViLBert(_TextAndImage):
    """Two streams with co-attention; same call as :class:`VisualBert`."""

    config_class = ViLBertConfig

    def __init__(self, config: ViLBertConfig):
        super().__init__(config)
        self.text_stream = build_stack(config, memory_dim=config.n_embd)
        self.image_stream = build_stack(config, memory_dim=config.n_embd)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None,
                pixel_values: Tensor) -> Tensor:
        t, v = self.streams(input_ids, pixel_values)
        T = t.shape[1]
        t_mask, _ = make_attn_mask(T, T, causal=False, key_padding=attention_mask)
        t_ctx, v_ctx = AttnInputs(t_mask), AttnInputs(None)
        for tb, vb in zip(self.text_stream.blocks, self.image_stream.blocks, strict=True):
            t, v = (self.text_stream.run(tb, t, t_ctx, v, None),  # both read the old t, v
                    self.image_stream.run(vb, v, v_ctx, t, attention_mask))
        t, v = self.text_stream.norm(t), self.image_stream.norm(v)
        return self.head(t[:, 0] * v.mean(dim=1))
