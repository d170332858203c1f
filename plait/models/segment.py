"""Semantic and instance segmentation: colour from each pixel, kind from the silhouette.

    colour logits  C_p = MLP(x_p)                       (1 + n_colours per pixel, background first)
    silhouette     s_p = 1 - softmax(C_p)_background    (detached: the kind cannot reshape it)
    kind logits    K   = upsample_bilinear(W_k ViT(s)_patches)     (n_kinds per pixel)

A pixel's colour is a property of that pixel alone, so a per-pixel MLP reads it (and says
where the background is); a shape's kind is a property of its outline, so a ViT reads the
silhouette, a one-channel picture with no colour in it. Neither can learn which colours go
with which kinds in training, so a pair no training picture holds (the scenes' held-out pairs)
is segmented like any other: the class of a pixel is its colour and its kind, predicted apart.
The ViT's patch logits are upsampled to the pixels (SETR, Zheng et al. 2021,
arXiv:2012.15840, decodes ViT patches by upsampling, with more layers); the mask's edges come
from the colour, pixel by pixel.

``kind_input = "rgb"`` reads the kind from the picture itself instead (the ablation in
docs/tasks.md).

Instances (:meth:`Segmenter.instances`): the connected regions of each predicted class, each
scored by its mean class probability; a scene never holds two shapes of one class, so a
region is a shape unless two touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, require_positive
from plait.models.detect import COLOUR_NAMES, KIND_NAMES
from plait.models.vit import ViT, ViTConfig

MIN_PIXELS = 4  # smaller predicted regions are not reported as instances


@dataclass(frozen=True)
class SegmenterConfig(Config):
    vision: dict[str, Any] = field(default_factory=dict)  # the ViT's table
    image_size: int = 48
    n_embd: int = 32  # the per-pixel colour MLP's width
    kind_input: str = "silhouette"  # what the ViT reads: "silhouette" or "rgb"
    colours: tuple[str, ...] = COLOUR_NAMES
    kinds: tuple[str, ...] = KIND_NAMES

    def __post_init__(self) -> None:
        require_positive(self, ("image_size", "n_embd"))
        if self.kind_input not in ("silhouette", "rgb"):
            raise ValueError(f"kind_input must be 'silhouette' or 'rgb', got {self.kind_input!r}")
        if not self.colours or not self.kinds:
            raise ValueError("a segmenter needs at least one colour and one kind")

    @property
    def vit(self) -> ViTConfig:
        channels = 1 if self.kind_input == "silhouette" else 3
        return ViTConfig(**{**self.vision, "image_size": self.image_size,
                            "num_channels": channels})

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names of the class map's ids 1, 2, ... (0 is the background)."""
        return tuple(f"{c} {k}" for c in self.colours for k in self.kinds)


class Segmenter(nn.Module):
    config_class = SegmenterConfig

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        c = self.config = config
        self.colour = nn.Sequential(nn.Linear(3, c.n_embd), nn.GELU(),
                                    nn.Linear(c.n_embd, c.n_embd), nn.GELU(),
                                    nn.Linear(c.n_embd, 1 + len(c.colours)))
        self.vision = ViT(c.vit)
        self.kind = nn.Linear(c.vit.n_embd, len(c.kinds))

    def forward(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) -> ``colour`` (B, 1 + n_colours, H, W) and ``kind`` (B, n_kinds, H, W)
        logits."""
        v = self.config.vit
        colour = self.colour(pixel_values.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.config.kind_input == "silhouette":
            seen = 1.0 - colour.detach().softmax(1)[:, :1]  # (B, 1, H, W)
        else:
            seen = pixel_values
        h = self.vision(seen)
        if v.pooling == "cls":
            h = h[:, 1:]
        B = len(h)
        logits = self.kind(h).transpose(1, 2).reshape(B, -1, v.grid, v.grid)
        kind = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear",
                             align_corners=False)
        return {"colour": colour, "kind": kind}

    @staticmethod
    def n_features(c: SegmenterConfig) -> int:
        return 1 + len(c.colours) + len(c.kinds)

    def features(self, pixel_values: Tensor, layer: int = -1) -> Tensor:
        """What each patch holds, as a vision-language model's image tower gives it
        (:mod:`plait.models.vlm`): (B, grid^2, 1 + n_colours + n_kinds), per patch in reading
        order the share of its pixels that are background or each colour, then that are each
        kind (a kind's probability times the pixel's chance of being a shape). ``layer`` is
        the ViT's signature; the segmenter has one reading."""
        out = self(pixel_values)
        colour = out["colour"].softmax(1)  # (B, 1 + n_colours, H, W)
        kind = out["kind"].softmax(1) * (1.0 - colour[:, :1])  # (B, n_kinds, H, W)
        shares = F.avg_pool2d(torch.cat([colour, kind], 1), self.config.vit.patch_size)
        return shares.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def predict(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """(class map (B, H, W): 0 background, else 1 + colour * n_kinds + kind; the
        probability of each pixel's class (B, H, W))."""
        out = self(pixel_values)
        pc, pk = out["colour"].softmax(1).max(1), out["kind"].softmax(1).max(1)
        fg = pc.indices > 0
        ids = torch.where(fg, 1 + (pc.indices - 1) * len(self.config.kinds) + pk.indices, 0)
        return ids, torch.where(fg, pc.values * pk.values, pc.values)

    def instances(self, ids: Tensor, prob: Tensor) -> list[tuple[str, float, np.ndarray]]:
        """One picture's (H, W) class map and probabilities -> (label, score, mask) per
        connected region of a class, best first."""
        from scipy import ndimage

        ids_np, prob_np = ids.cpu().numpy(), prob.cpu().numpy()
        out = []
        for cls in np.unique(ids_np[ids_np > 0]):
            regions, n = ndimage.label(ids_np == cls)
            for r in range(1, n + 1):
                mask = regions == r
                if mask.sum() >= MIN_PIXELS:
                    out.append((self.config.labels[cls - 1], float(prob_np[mask].mean()), mask))
        return sorted(out, key=lambda t: -t[1])


__all__ = ["Segmenter", "SegmenterConfig"]
