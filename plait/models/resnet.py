"""A small ResNet: the convolutional image tower for CLIP, and a classifier on its own.

    y = relu(x + F(x)),  F = conv3x3 -> BN -> relu -> conv3x3 -> BN      (He et al. 2016,
                                                                        arXiv:1512.03385, Eq. 1)

With a change of shape the shortcut is a strided 1x1 conv + BN ("option B", §3.3). Images go
stem -> stages of basic blocks (each later stage halves H and W and widens C) -> global average
pool, giving one (B, C) vector per image. ``head`` is a Linear to ``num_classes`` when that is
set, or ``nn.Identity`` for a feature tower (CLIP adds its own projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.models.base import block_index


@dataclass(frozen=True)
class ResNetConfig(Config):
    """Widths and depths per stage; defaults give a ~0.7M-parameter net for 32-96 px images."""

    in_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)
    stem_stride: int = 2  # 64 px in -> 32 px into the first stage
    num_classes: int = 0  # 0 = feature tower: forward returns the pooled (B, C)

    def __post_init__(self) -> None:
        if not self.widths or len(self.widths) != len(self.depths):
            raise ValueError(f"ResNetConfig: widths {self.widths} and depths {self.depths} need"
                             " one entry per stage")
        if min(self.widths) <= 0 or min(self.depths) <= 0 or self.stem_stride <= 0:
            raise ValueError("ResNetConfig: widths, depths and stem_stride must be positive")

    @property
    def hidden_size(self) -> int:
        """Width of the pooled feature vector."""
        return self.widths[-1]

    def feature_shape(self, image_size: int, layer: int = -1) -> tuple[int, int]:
        """(side, channels) of the map after block ``layer`` (0: the stem; -1: the last block)
        for ``image_size`` pictures: each stride-2 convolution (padding 1) takes the side to
        ceil(side / 2)."""
        strides = [1 if i == 0 or j else 2 for i, d in enumerate(self.depths) for j in range(d)]
        widths = [w for w, d in zip(self.widths, self.depths, strict=True) for _ in range(d)]
        n = len(strides)
        k = block_index(layer, n)
        side = -(-image_size // self.stem_stride)
        for s in strides[:k]:
            side = -(-side // s)
        return side, ([self.widths[0], *widths])[k]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; the first conv carries the stride."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        nn.init.zeros_(self.bn2.weight)  # each block starts as identity (Goyal 2017, §5.1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.shortcut(x) + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    """``model(pixels (B, 3, H, W)) -> (B, C)`` pooled features, or (B, num_classes) logits."""

    config_class = ResNetConfig

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = c = config
        w0 = c.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(c.in_channels, w0, 3, c.stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = w0
        for i, (width, depth) in enumerate(zip(c.widths, c.depths, strict=True)):
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, c.num_classes) if c.num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixels: Tensor) -> Tensor:
        self._check(pixels)
        x = self.blocks(self.stem(pixels))  # (B, C, H', W')
        return self.head(self.pool(x).flatten(1))  # (B, C) or (B, num_classes)

    def features(self, pixels: Tensor, layer: int = -1) -> Tensor:
        """The map after block ``layer`` (0: the stem, -1: the last block) as (B, H' W', C)
        tokens in reading order, as a ViT's patch states (a fusion or VLM model reads either).
        Blocks past ``layer`` do not run."""
        self._check(pixels)
        n = len(self.blocks)
        k = block_index(layer, n)
        x = self.blocks[:k](self.stem(pixels))
        return x.flatten(2).transpose(1, 2)

    def _check(self, pixels: Tensor) -> None:
        if pixels.dim() != 4 or pixels.shape[1] != self.config.in_channels:
            raise ValueError(f"ResNet expects pixels (B, {self.config.in_channels}, H, W), got"
                             f" shape {tuple(pixels.shape)}")
