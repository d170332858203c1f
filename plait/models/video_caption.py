"""Video captioning as a set of events: what each shape of a clip is and how it moves, read one
colour at a time, then told by the grammar of :mod:`plait.data.clip_captions` ("a red circle
moves left and a blue square leaves the picture moving up").

A clip's shapes have distinct colours (the grammar lists its events by colour), so each colour
of the palette is a slot that holds at most one shape, and the slot's colour *is* the shape's
colour. Per slot ``c`` and frame ``t``:

    pixels   C_p = MLP(x_p)                    per-pixel colour logits, background first
    mask     m_c,t = softmax(C)_c              where colour c is (detached): no colour left in it
    frame    f_c,t = CNN(crop(m_c,t)) + W_g g(m_c,t) + P_t
             g: the mask's mass and centroid; crop: the window centred on that centroid
    clip     h_c = Encoder([e_cls; f_c,1..T])_cls      a Transformer over the frames (ViViT's
                                                       factorised temporal encoder)
    heads    o_c = w_o h_c,  k_c = W_k h_c,  e_c = W_e h_c      objectness, kind, event

The CNN and the encoder see one colour's silhouette at a time and never which colour it is, so
a kind cannot follow its colour: a held-out colour + kind pair is read as its kind alone, as
the segmenter reads kinds from a colourless silhouette (docs/tasks.md §4). The event is one of
``still`` and ``cross`` / ``leave`` / ``enter`` in each of four directions (13 classes).

A first version (docs/tasks.md §5) read the whole clip's silhouette as tubelet tokens with a
few DETR queries and took each query's colour from the pixels it pointed at: it found the shapes
and their motions but not their kinds (content 0.23 on held-out clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.models.base import TransformerConfig, build_stack
from plait.models.detect import COLOUR_NAMES, KIND_NAMES
from plait.nn import AttnInputs

DIRECTION_NAMES = ("left", "right", "up", "down")
EVENTS = (("still", "still"), *((m, d) for m in ("cross", "leave", "enter")
                                for d in DIRECTION_NAMES))


@dataclass(frozen=True)
class ClipCaptionerConfig(TransformerConfig):
    image_size: int = 48
    n_frames: int = 8
    crop: int = 24  # the window the CNN reads, centred on the mask's centroid
    channels: tuple[int, ...] = (16, 32, 64)  # the per-frame CNN: 3 x 3, stride 2 each
    n_layer: int = 2  # temporal encoder blocks
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    stem: int = 8  # width of the per-pixel colour MLP
    colours: tuple[str, ...] = COLOUR_NAMES
    kinds: tuple[str, ...] = KIND_NAMES

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        self.check_transformer(("image_size", "n_frames", "stem", "crop"))
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"channels must be positive widths, got {self.channels}")
        if self.crop % 2 ** len(self.channels):
            raise ValueError(f"crop ({self.crop}) must be a multiple of"
                             f" {2 ** len(self.channels)} ({len(self.channels)} stride-2"
                             " convolutions)")

    @property
    def cnn_grid(self) -> int:
        return self.crop // 2 ** len(self.channels)


def mask_moments(mask: Tensor) -> Tensor:
    """(N, H, W) masks -> (N, 3): the mean mask value (how much of the picture it covers) and
    its centroid (x, y) in [-1, 1] (0, 0 where the mask is empty)."""
    H, W = mask.shape[-2:]
    ys = torch.linspace(-1, 1, H, device=mask.device, dtype=mask.dtype)
    xs = torch.linspace(-1, 1, W, device=mask.device, dtype=mask.dtype)
    total = mask.sum((-2, -1))
    safe = total.clamp_min(1e-6)
    cx = (mask.sum(-2) * xs).sum(-1) / safe
    cy = (mask.sum(-1) * ys).sum(-1) / safe
    return torch.stack([total / (H * W), cx, cy], -1)


def crop_around(masks: Tensor, size: int, moments: Tensor) -> Tensor:
    """(N, H, W) masks and their :func:`mask_moments` -> (N, size, size): each mask's window
    whose pixel ``(size // 2, size // 2)`` is the one nearest its centroid, zeros outside the
    picture. The CNN then reads every shape centred wherever it is in the picture."""
    N, H, W = masks.shape
    col = ((moments[:, 1] + 1) / 2 * (W - 1)).round().long()
    row = ((moments[:, 2] + 1) / 2 * (H - 1)).round().long()
    half = size // 2
    padded = F.pad(masks, (half, size - half, half, size - half))
    steps = torch.arange(size, device=masks.device)
    rows, cols = row[:, None] + steps, col[:, None] + steps  # padded coordinates
    return padded[torch.arange(N, device=masks.device)[:, None, None], rows[:, :, None],
                  cols[:, None, :]]


class ClipCaptioner(nn.Module):
    config_class = ClipCaptionerConfig

    def __init__(self, config: ClipCaptionerConfig):
        super().__init__()
        c = self.config = config
        layers: list[nn.Module] = []
        width = 1
        for ch in c.channels:
            layers += [nn.Conv2d(width, ch, 3, stride=2, padding=1), nn.GELU()]
            width = ch
        self.cnn = nn.Sequential(*layers, nn.Flatten(),
                                 nn.Linear(width * c.cnn_grid**2, c.n_embd))
        self.moments = nn.Linear(3, c.n_embd)
        self.time = nn.Parameter(torch.randn(c.n_frames, c.n_embd) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, c.n_embd) * 0.02)
        self.encoder = build_stack(c)
        self.objectness = nn.Linear(c.n_embd, 1)
        self.kind = nn.Linear(c.n_embd, len(c.kinds))
        self.event = nn.Linear(c.n_embd, len(EVENTS))
        self.pixel = nn.Sequential(nn.Linear(3, c.stem), nn.GELU(), nn.Linear(c.stem, c.stem),
                                   nn.GELU(), nn.Linear(c.stem, 1 + len(c.colours)))

    def masks(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) -> per-pixel colour logits of every other row and column
        (B, T, H/2, W/2, 1 + n_colours), what the colour is trained on, and every colour's mask
        at full resolution, its probability, detached (B, n_colours, T, H, W)."""
        x = frames.permute(0, 1, 3, 4, 2)
        with torch.no_grad():
            masks = self.pixel(x).movedim(-1, 1).softmax(1)[:, 1:]  # (softmax on dim 1: fast)
        return self.pixel(x[:, :, ::2, ::2]), masks

    def read(self, masks: Tensor) -> dict[str, Tensor]:
        """(B, S, T, H, W) masks, one per slot -> ``objectness`` (B, S), ``kind`` (B, S, K)
        and ``event`` (B, S, E) logits."""
        B, S, T, H, W = masks.shape
        flat = masks.reshape(B * S * T, H, W)
        g = mask_moments(flat)
        f = self.cnn(crop_around(flat, self.config.crop, g).unsqueeze(1)) + self.moments(g)
        f = f.view(B * S, T, -1) + self.time
        h = self.encoder(torch.cat([self.cls.expand(B * S, -1, -1), f], 1), AttnInputs())
        h = h[:, 0].view(B, S, -1)
        return {"objectness": self.objectness(h).squeeze(-1), "kind": self.kind(h),
                "event": self.event(h)}

    def forward(self, frames: Tensor, slots: Tensor | None = None) -> dict[str, Tensor]:
        """(B, T, 3, H, W) normalised frames -> per slot ``objectness`` (B, S), ``kind`` and
        ``event`` logits (B, S, ·), and ``pixel_colour`` logits of every other pixel's
        colour (B, T, H/2, W/2, 1 + n_colours). ``slots`` (B, S) are the colour indices to
        read (default: every colour, S = n_colours); training reads a clip's colours and a few
        absent ones."""
        c = self.config
        if frames.dim() != 5 or tuple(frames.shape[1:]) != (c.n_frames, 3, c.image_size,
                                                            c.image_size):
            raise ValueError(f"frames must be (batch, {c.n_frames}, 3, {c.image_size},"
                             f" {c.image_size}), got {tuple(frames.shape)}")
        logits, masks = self.masks(frames)
        if slots is not None:
            masks = masks[torch.arange(len(masks), device=masks.device)[:, None], slots]
        return {**self.read(masks), "pixel_colour": logits}

    @torch.no_grad()
    def describe(self, frames: Tensor, threshold: float = 0.5
                 ) -> list[list[tuple[str, str, str, str]]]:
        """Per clip, the (colour, kind, motion, direction) of every colour whose objectness is
        at least ``threshold``, in colour order."""
        out = self(frames)
        p = torch.sigmoid(out["objectness"])
        kinds, events = out["kind"].argmax(-1), out["event"].argmax(-1)
        c = self.config
        return [[(colour, c.kinds[int(kinds[b, j])], *EVENTS[int(events[b, j])])
                 for j, colour in enumerate(c.colours) if p[b, j] >= threshold]
                for b in range(len(p))]


__all__ = ["EVENTS", "ClipCaptioner", "ClipCaptionerConfig", "crop_around", "mask_moments"]
