"""Boxes, masks and class maps of the shapes of a scene, for detection and segmentation.

A scene (:mod:`plait.data.scenes`) is drawn without anti-aliasing, so every pixel belongs to the
background or to one shape; the targets are exact:

- a shape's **box** is the tight box of its own drawn pixels, ``[x0, y0, x1, y1]`` in pixel
  edges (``x1`` = its last column + 1), whatever covers it;
- its **mask** is the pixels it shows (shapes drawn later cover earlier ones, as in the
  picture);
- the **class map** holds, per pixel, 0 for the background or ``1 + LABELS.index(label)``.

A shape's label is its colour and kind ("red circle"): 24 classes, 6 of them (the held-out
pairs of :data:`plait.data.scenes.HELDOUT_PAIRS`) never in a training scene, always in a
held-out one. A model has to compose them from colours and kinds it has seen apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from plait.data.scenes import COLOURS, KINDS, Scene, Shape, draw_shape, scene_at
from plait.vision.boxes import masks_to_boxes

LABELS = tuple(f"{c} {k}" for c in COLOURS for k in KINDS)


def label(s: Shape) -> str:
    return f"{s.colour} {s.kind}"


def shape_masks(shapes: list[Shape], size: int) -> np.ndarray:
    """(n, size, size) bool: each shape's own pixels, drawn alone."""
    out = np.zeros((len(shapes), size, size), dtype=bool)
    for i, s in enumerate(shapes):
        canvas = Image.new("L", (size, size), 0)
        draw_shape(ImageDraw.Draw(canvas), s, size, fill=255)
        out[i] = np.asarray(canvas) > 0
    return out


def visible_masks(shapes: list[Shape], size: int) -> np.ndarray:
    """(n, size, size) bool: the pixels each shape shows in the picture."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for i, s in enumerate(shapes):
        draw_shape(draw, s, size, fill=i + 1)
    index = np.asarray(canvas)
    return np.stack([index == i + 1 for i in range(len(shapes))]) if shapes else np.zeros(
        (0, size, size), dtype=bool)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, 4) float32 ``[x0, y0, x1, y1]`` pixel edges of (n, H, W) masks (zeros if empty)."""
    return masks_to_boxes(torch.from_numpy(masks)).numpy()


def class_map(shapes: list[Shape], masks: np.ndarray) -> np.ndarray:
    """(H, W) int64: 0 background, else 1 + the label's index in :data:`LABELS`."""
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    for s, m in zip(shapes, masks, strict=True):
        out[m] = 1 + LABELS.index(label(s))
    return out


@dataclass(frozen=True, eq=False)
class Example:
    """One picture and its targets."""

    scene: Scene
    image: Image.Image
    labels: tuple[str, ...]
    boxes: np.ndarray  # (n, 4) float32 pixels
    masks: np.ndarray  # (n, size, size) bool, visible pixels
    classes: np.ndarray  # (size, size) int64 class map


def example(index: int, split: str, seed: int, size: int) -> Example:
    """Scene ``index`` of ``split`` rendered at ``size`` pixels, with its targets."""
    scene = scene_at(index, split, seed)
    shapes = scene.shapes
    masks = visible_masks(shapes, size)
    return Example(scene, scene.render(size), tuple(label(s) for s in shapes),
                   tight_boxes(shape_masks(shapes, size)), masks, class_map(shapes, masks))


__all__ = ["LABELS", "Example", "class_map", "example", "label", "shape_masks", "tight_boxes",
           "visible_masks"]
