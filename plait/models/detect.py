"""Object detection as set prediction: a ViT, a small Transformer decoder over its patches, and
one box, objectness and class per query (DETR: Carion et al. 2020, arXiv:2005.12872), with each
query tied to an anchor point (Anchor DETR: Wang et al. 2021, arXiv:2109.07107).

    memory  M = W_m ViT(pixels)_patches + F(p_patch)                 (N, d)
    queries q_j = e_j + F(a_j),   a_j on a g x g grid of anchors      (Q, d)
            q   = Decoder(q; memory = M)                              (self- + cross-attention)
    outputs o_j = w_o . q_j                        objectness (a logit)
            b_j = (a_j + tanh(u_j) / g, sigmoid(v_j))  centre and size  ->  [x0, y0, x1, y1]
            r_j = mean_{p in b_j} S(x_p)       the box's pixels (2 x 2 means; S: an MLP per pixel)
            c_j = W_c r_j,  k_j = W_k q_j          colour and kind logits, apart

``F`` maps a point of the unit square to Fourier features (sin and cos of each coordinate at
``n_embd / 4`` frequencies), the same map for patches and anchors, so a query starts out
looking near its anchor. A box's centre stays within one anchor spacing of its anchor. Training
matches queries to objects one to one (Hungarian matching, ``plait.training.tasks.detect``);
a query left unmatched learns objectness 0.

Classes are a colour and a kind, predicted apart: ``p(red circle) = p(red) p(circle)``, so a
pair never seen in training (the scenes' held-out pairs) is as reachable as any other. The
colour is read from the pixels inside the query's box (pooled like a two-stage detector's
region features, Sparse R-CNN: Sun et al. 2021, arXiv:2011.12450), not from the query: a query
state learns which colours go with which kinds in training, and read from it, the colour of a
held-out pair follows the kind (held-out pairs' AP@0.5 fell from 0.61 to 0.47 between steps
1,000 and 2,000 that way), while the box's pixels only show what colour they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.models.base import TransformerConfig, build_stack
from plait.models.vit import ViT, ViTConfig
from plait.nn import AttnInputs

COLOUR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple")
KIND_NAMES = ("circle", "square", "triangle", "star")


@dataclass(frozen=True)
class DetectorConfig(TransformerConfig):
    """The decoder's sizes; ``vision``: the ViT's table (its ``image_size`` is ours)."""

    vision: dict[str, Any] = field(default_factory=dict)
    image_size: int = 48
    n_queries: int = 9  # a square number: the anchors' grid
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    stem: int = 16  # width of the per-pixel features the colour reads
    colours: tuple[str, ...] = COLOUR_NAMES
    kinds: tuple[str, ...] = KIND_NAMES

    def __post_init__(self) -> None:
        self.check_transformer(("image_size", "n_queries", "stem"))
        if math.isqrt(self.n_queries) ** 2 != self.n_queries:
            raise ValueError(f"n_queries must be a square number (an anchor grid), got"
                             f" {self.n_queries}")
        if self.n_embd % 4:
            raise ValueError(f"n_embd must be divisible by 4 (Fourier positions), got"
                             f" {self.n_embd}")
        if not self.colours or not self.kinds:
            raise ValueError("a detector needs at least one colour and one kind")

    @property
    def vit(self) -> ViTConfig:
        return ViTConfig(**{**self.vision, "image_size": self.image_size})

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"{c} {k}" for c in self.colours for k in self.kinds)


def fourier(points: Tensor, dim: int) -> Tensor:
    """(P, 2) points of the unit square -> (P, dim): sin and cos of x, then of y, at dim/4
    frequencies from pi to 64 pi (geometric)."""
    n = dim // 4
    freq = math.pi * 64.0 ** (torch.arange(n, dtype=torch.float32, device=points.device)
                              / max(n - 1, 1))
    x, y = points[:, :1] * freq, points[:, 1:] * freq
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def grid_points(g: int) -> Tensor:
    """(g * g, 2) centres of a g x g grid over the unit square, row-major, as (x, y)."""
    c = (torch.arange(g, dtype=torch.float32) + 0.5) / g
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def box_mean(features: Tensor, boxes: Tensor) -> Tensor:
    """(B, C, H, W) features, (B, Q, 4) boxes as fractions -> (B, Q, C): the mean feature over
    the pixels whose centres lie in each box (the nearest pixel for a box holding none)."""
    B, C, H, W = features.shape
    ys = (torch.arange(H, device=features.device, dtype=features.dtype) + 0.5) / H
    xs = (torch.arange(W, device=features.device, dtype=features.dtype) + 0.5) / W
    x0, y0, x1, y1 = boxes.unbind(-1)  # (B, Q) each
    # widen a box that holds no pixel centre to the one nearest its centre
    x0, x1 = torch.minimum(x0, (x0 + x1) / 2 - 0.5 / W), torch.maximum(x1, (x0 + x1) / 2 + 0.5 / W)
    y0, y1 = torch.minimum(y0, (y0 + y1) / 2 - 0.5 / H), torch.maximum(y1, (y0 + y1) / 2 + 0.5 / H)
    in_x = ((xs >= x0[..., None]) & (xs <= x1[..., None])).to(features.dtype)  # (B, Q, W)
    in_y = ((ys >= y0[..., None]) & (ys <= y1[..., None])).to(features.dtype)  # (B, Q, H)
    weights = in_y[..., :, None] * in_x[..., None, :]  # (B, Q, H, W)
    total = torch.einsum("bqhw,bchw->bqc", weights, features)
    return total / weights.sum((-1, -2))[..., None].clamp(min=1.0)


class Detector(nn.Module):
    config_class = DetectorConfig

    def __init__(self, config: DetectorConfig):
        super().__init__()
        c = self.config = config
        self.vision = ViT(c.vit)
        v = c.vit
        self.memory_proj = nn.Linear(v.n_embd, c.n_embd)
        self.register_buffer("memory_pos", fourier(grid_points(v.grid), c.n_embd),
                             persistent=False)
        g = math.isqrt(c.n_queries)
        self.register_buffer("anchors", grid_points(g), persistent=False)
        self.register_buffer("query_pos", fourier(self.anchors, c.n_embd), persistent=False)
        self.query = nn.Parameter(torch.randn(c.n_queries, c.n_embd) * 0.02)
        self.decoder = build_stack(c, memory_dim=c.n_embd)
        self.objectness = nn.Linear(c.n_embd, 1)
        # each pixel alone (its colour, not its shape), on 2 x 2 means (a quarter of the work)
        self.stem = nn.Sequential(nn.Linear(3, c.stem), nn.GELU(), nn.Linear(c.stem, c.stem),
                                  nn.GELU())
        self.colour = nn.Linear(c.stem, len(c.colours))
        self.kind = nn.Linear(c.n_embd, len(c.kinds))
        self.box = nn.Sequential(nn.Linear(c.n_embd, c.n_embd), nn.GELU(),
                                 nn.Linear(c.n_embd, 4))

    def forward(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) -> ``objectness`` (B, Q) logits, ``colour`` (B, Q, n_colours) and
        ``kind`` (B, Q, n_kinds) logits, ``boxes`` (B, Q, 4) ``[x0, y0, x1, y1]`` as
        fractions of the image."""
        h = self.vision(pixel_values)
        if self.config.vit.pooling == "cls":
            h = h[:, 1:]
        memory = self.memory_proj(h) + self.memory_pos
        q = (self.query + self.query_pos).expand(len(h), -1, -1)
        q = self.decoder(q, AttnInputs(), memory)
        u = self.box(q)
        g = math.isqrt(self.config.n_queries)
        centre = self.anchors + torch.tanh(u[..., :2]) / g
        half = torch.sigmoid(u[..., 2:]) / 2
        boxes = torch.cat([centre - half, centre + half], -1)
        small = F.avg_pool2d(pixel_values, 2).permute(0, 2, 3, 1)  # (B, H/2, W/2, 3)
        region = box_mean(self.stem(small).permute(0, 3, 1, 2), boxes.detach())
        return {"objectness": self.objectness(q).squeeze(-1), "colour": self.colour(region),
                "kind": self.kind(q), "boxes": boxes}

    @torch.no_grad()
    def detect(self, pixel_values: Tensor) -> list[list[tuple[str, float, Tensor]]]:
        """Every query's best class, its score p(object) p(colour) p(kind) and box (fractions),
        per image, best first."""
        out = self(pixel_values)
        pc, pk = out["colour"].softmax(-1).max(-1), out["kind"].softmax(-1).max(-1)
        score = torch.sigmoid(out["objectness"]) * pc.values * pk.values
        c = self.config
        result = []
        for b in range(len(score)):
            order = score[b].argsort(descending=True).tolist()
            result.append([(f"{c.colours[int(pc.indices[b, j])]} {c.kinds[int(pk.indices[b, j])]}",
                            float(score[b, j]), out["boxes"][b, j]) for j in order])
        return result


__all__ = ["Detector", "DetectorConfig", "box_mean", "fourier", "grid_points"]
