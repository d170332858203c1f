"""Prompts and pictures for text to image (``imagine``), and the pixel check that judges a
drawn picture against its prompt.

A prompt describes a scene of one or two shapes in the captions' own words
(:func:`plait.data.scenes.describe` in a training template: "a picture of a small red circle
left of a blue square"). Its picture is the scene drawn at 48 x 48 in palette indices
(:mod:`plait.data.palette`). Three splits, each a pure function of ``(seed, split, index)``:

- ``train``: shapes of training colour-shape pairs only;
- ``heldout``: new draws of training pairs (other positions, sizes and phrasings);
- ``heldout-pair``: the first shape a held-out pair (:data:`plait.data.scenes.HELDOUT_PAIRS`),
  a colour and a shape never pictured together in training.

**The pixel check** (:func:`check`): the picture's shapes are the 8-connected regions of one
colour once a pixel is peeled off every edge (so two shapes that touch count as two), of at
least ``MIN_PIXELS`` pixels (the smallest drawn shape keeps ~25); it passes when
their colours, counted, are exactly the prompt's (two red shapes for "a red circle and a red
square"). Real pictures pass it 99.5-99.8 % of the time: two shapes of one colour that touch
along an edge are one region (``tests/test_imagine.py``).
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
from scipy import ndimage

from plait.data.palette import to_indices
from plait.data.scenes import (
    COLOURS,
    KINDS,
    SIZES,
    TRAIN_TEMPLATES,
    Shape,
    describe,
    mentioned,
    render,
    sample_shapes,
)

SPLITS = ("train", "heldout", "heldout-pair")
MIN_PIXELS = 8  # a region's core smaller than this is a speck, not a shape
RELATION_WORDS = ("left", "right", "of", "above", "below", "and")


def vocabulary() -> tuple[str, ...]:
    """Every word a prompt of the scenes may use (``a``/``an``, colours, kinds, sizes,
    relations, the training templates' words and the comma), sorted."""
    words = {"a", "an", ",", *COLOURS, *KINDS, *SIZES, *RELATION_WORDS}
    for template in TRAIN_TEMPLATES:
        words.update(template.format("").split())
    return tuple(sorted(words))


def draw(rng: random.Random, split: str, max_shapes: int = 2) -> tuple[list[Shape], str]:
    """One scene of 1..``max_shapes`` shapes of ``split`` and a prompt describing it."""
    if split not in SPLITS:
        raise ValueError(f"imagine split must be one of {', '.join(SPLITS)}, got {split!r}")
    n = rng.randint(1, max_shapes)
    shapes = sample_shapes(rng, n, heldout=split == "heldout-pair")
    return shapes, rng.choice(TRAIN_TEMPLATES).format(describe(shapes, rng))


def prompt_at(index: int, split: str, seed: int = 0,
              max_shapes: int = 2) -> tuple[list[Shape], str]:
    """Scene and prompt ``index`` of ``split``, a pure function of the arguments."""
    return draw(random.Random(f"imagine/{seed}/{split}/{index}"), split, max_shapes)


def plan(shapes: list[Shape], grid: int = 3) -> list[int]:
    """The scene's plan (:mod:`plait.models.imagine`): per region of a ``grid`` x ``grid``
    split, 0 if no shape is centred there, else ``1 + colour * len(KINDS) + kind``."""
    out = [0] * grid * grid
    colours = list(COLOURS)
    for s in shapes:
        region = min(int(s.y * grid), grid - 1) * grid + min(int(s.x * grid), grid - 1)
        if out[region]:
            raise ValueError(f"two shapes in one region of a {grid} x {grid} plan; use a"
                             " finer one (a multiple of 3)")
        out[region] = 1 + colours.index(s.colour) * len(KINDS) + KINDS.index(s.kind)
    return out


def picture(shapes: list[Shape], size: int = 48) -> np.ndarray:
    """The scene drawn in palette indices, (size, size) uint8."""
    return to_indices(np.asarray(render(shapes, size)))


def shapes_drawn(indices: np.ndarray, min_pixels: int = MIN_PIXELS) -> Counter[str]:
    """Colour name -> how many separate regions of it (of ``min_pixels`` or more) a palette
    picture holds."""
    names = list(COLOURS)
    found: Counter[str] = Counter()
    eight = np.ones((3, 3), dtype=bool)
    for c, name in enumerate(names, start=1):
        # one pixel peeled off first: two shapes of a colour that touch part at the neck
        core = ndimage.binary_erosion(indices == c)
        labels, n = ndimage.label(core, structure=eight)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            found[name] = int((sizes >= min_pixels).sum())
    return +found


def wanted(prompt: str) -> Counter[str]:
    """Colour name -> how many shapes of it the prompt asks for."""
    return Counter(colour for colour, _ in mentioned(prompt))


def check(indices: np.ndarray, prompt: str) -> bool:
    """Whether the picture holds exactly the prompt's colours, each as many times as asked."""
    return shapes_drawn(indices) == wanted(prompt)


__all__ = ["MIN_PIXELS", "SPLITS", "check", "draw", "picture", "plan", "prompt_at",
           "shapes_drawn", "vocabulary", "wanted"]
