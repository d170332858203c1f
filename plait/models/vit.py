"""ViT: a Transformer encoder over image patches (Dosovitskiy et al. 2020, arXiv:2010.11929).

pixels (B, 3, H, W) -> non-overlapping P x P patches, each linearly embedded (a Conv2d with
stride P, Eq. 1) -> [class token] + patches + positions -> N pre-norm blocks -> final norm
-> hidden states (B, 1 + N, C). ``pooled`` takes the class token (ViT, CLIP) or the mean of
the patch tokens (Beyer et al. 2022, "Better plain ViT baselines", arXiv:2205.01580, which
also uses fixed 2-D sin-cos positions: ``pos_embedding="sincos2d"``).

CLIP's image tower is this model with ``pre_norm=True`` (a LayerNorm before the blocks),
``patch_bias=False``, ``mlp="quick_gelu"``. Heads (``head``): ``"none"``; ``"tanh"``,
Hugging Face ``ViTModel``'s pooler (dense + tanh on the class token); ``"classify"``, a Linear
over the pooled vector (``ViTForImageClassification``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import require_positive
from plait.models.base import TransformerConfig, block_index, build_stack
from plait.nn import AttnInputs, sincos_2d


@dataclass(frozen=True)
class ViTConfig(TransformerConfig):
    """Hyperparameters of a Vision Transformer."""

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None  # MLP width; default 4 * n_embd
    pooling: Literal["cls", "mean"] = "cls"  # "mean" has no class token
    pos_embedding: Literal["learned", "sincos2d"] = "learned"
    norm_eps: float = 1e-12
    mlp: str = "gelu"
    qkv_bias: bool = True
    patch_bias: bool = True
    pre_norm: bool = False  # CLIP: LayerNorm on the embeddings before the blocks
    dropout: float = 0.0
    head: Literal["none", "tanh", "classify"] = "none"
    num_labels: int = 1000  # classify head only

    def __post_init__(self) -> None:
        self.check_transformer()
        require_positive(self, ("image_size", "patch_size", "num_channels", "num_labels"))
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig.image_size ({self.image_size}) must be a multiple of"
                             f" patch_size ({self.patch_size})")
        if self.pos_embedding == "sincos2d" and self.n_embd % 4:
            raise ValueError(f"sincos2d positions need n_embd divisible by 4, got {self.n_embd}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_tokens(self) -> int:
        return self.grid**2 + (self.pooling == "cls")


class ViT(nn.Module):
    """``model(pixel_values) -> hidden states (B, 1 + N, C)``; ``model.pooled(...) -> (B, C)``."""

    config_class = ViTConfig

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = c = config
        P = c.patch_size
        self.patch = nn.Conv2d(c.num_channels, c.n_embd, P, stride=P, bias=c.patch_bias)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.n_embd)) if c.pooling == "cls" else None
        if c.pos_embedding == "learned":
            self.pos = nn.Parameter(torch.zeros(1, c.n_tokens, c.n_embd))
        else:  # fixed; the class token (if any) gets position zero
            table = sincos_2d(c.grid, c.n_embd)
            if c.pooling == "cls":
                table = torch.cat((torch.zeros(1, c.n_embd), table))
            self.register_buffer("pos", table[None], persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.norm_pre = nn.LayerNorm(c.n_embd, eps=c.norm_eps) if c.pre_norm else nn.Identity()
        self.encoder = build_stack(c, qkv_bias=c.qkv_bias)
        self.head = make_head(c)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.cls, self.pos):
            if isinstance(p, nn.Parameter):
                nn.init.trunc_normal_(p, std=0.02)

    def forward(self, pixel_values: Tensor, rows: Tensor | int | None = None) -> Tensor:
        """Hidden states (B, 1 + N, C), or (B, N, C) with mean pooling (no class token).

        ``rows`` (B,): only those positions' states, (B, 1, C), computed in the last layer
        for them alone (``Stack.forward``).
        """
        self._check(pixel_values)
        return self.encoder(self.embed(pixel_values), AttnInputs(), rows=rows)

    def embed(self, pixel_values: Tensor) -> Tensor:
        """Patches + class token + positions (+ CLIP's pre-norm): the blocks' input (B, T, C)."""
        x = self.patch(pixel_values.to(self.patch.weight.dtype))  # (B, C, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        if self.cls is not None:
            x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 1 + N, C)
        return self.norm_pre(self.drop(x + self.pos.to(x.dtype)))

    def features(self, pixel_values: Tensor, layer: int = -1) -> Tensor:
        """The states after block ``layer`` (B, T, C), without the final norm: Hugging Face's
        ``hidden_states[layer]`` (0 the embeddings, -1 the last block, -2 the one before, which
        LLaVA reads). Blocks past ``layer`` do not run."""
        n = len(self.encoder.blocks)
        k = block_index(layer, n)
        self._check(pixel_values)
        x, ctx = self.embed(pixel_values), AttnInputs()
        for block in self.encoder.blocks[:k]:
            x = block(x, ctx)
        return x

    def _check(self, pixel_values: Tensor) -> None:
        c = self.config
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (
                c.num_channels, c.image_size, c.image_size):
            raise ValueError(f"pixel_values must be (batch, {c.num_channels}, {c.image_size},"
                             f" {c.image_size}), got {tuple(pixel_values.shape)}; resize the"
                             " images to the model's image_size")

    def pool(self, hidden: Tensor) -> Tensor:
        """(B, T, C) hidden states -> (B, C): the class token or the patch mean."""
        return hidden[:, 0] if self.config.pooling == "cls" else hidden.mean(dim=1)

    def pooled(self, pixel_values: Tensor) -> Tensor:
        """One vector per image (B, C), before any head."""
        if self.config.pooling == "cls":  # the last layer runs for the class token alone
            return self(pixel_values, rows=0)[:, 0]
        return self.pool(self(pixel_values))

    def logits(self, pixel_values: Tensor) -> Tensor:
        """The head on the pooled vector: tanh pooler (B, C), classifier (B, num_labels)."""
        return self.head(self.pooled(pixel_values))


def make_head(c: ViTConfig) -> nn.Module:
    if c.head == "tanh":
        return nn.Sequential(nn.Linear(c.n_embd, c.n_embd), nn.Tanh())
    if c.head == "classify":
        return nn.Linear(c.n_embd, c.num_labels)
    return nn.Identity()
