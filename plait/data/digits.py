"""Handwritten digits with captions, for CLIP training and zero-shot classification.

The images are scikit-learn's bundled 8x8 digits (the UCI "Optical Recognition of Handwritten
Digits" test set, 1797 images, values 0-16), upsampled with bicubic interpolation and drawn as
dark ink on white. Captions name the digit in words ("a handwritten seven").

Zero-shot protocol (Radford et al. 2021, arXiv:2103.00020, §3.1.4): a class's text embedding is
the mean of its prompts' normalised embeddings over a template ensemble, and the ZERO_SHOT
templates below are never used in training captions, so the model must transfer from the digit
word, not memorise a sentence. Evaluation images are a held-out 30% of the samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = ("a handwritten {}", "the digit {}", "a drawing of the number {}",
                   "a {} written by hand", "number {}")
# never in a training caption: used only for zero-shot evaluation
ZERO_SHOT_TEMPLATES = ("a scan of a handwritten {}", "an image of the digit {}",
                       "the number {} drawn by hand", "a picture of a {}")
HELDOUT_FRACTION = 0.3


@dataclass
class Digit:
    pixels: np.ndarray  # (8, 8) float in [0, 16]
    label: int
    captions: list[str]

    def render(self, size: int = 32) -> Image.Image:
        return render_digit(self.pixels, size)


def render_digit(pixels: np.ndarray, size: int = 32) -> Image.Image:
    """(8, 8) values 0-16 -> (size, size) RGB, dark ink on white, bicubic upsampling."""
    ink = (255.0 - np.clip(pixels, 0, 16) * (255.0 / 16)).astype(np.uint8)
    img = Image.fromarray(ink, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    return img.convert("RGB")


def digit_captions(label: int, rng: random.Random, n: int = 3) -> list[str]:
    return [t.format(WORDS[label]) for t in rng.sample(TRAIN_TEMPLATES, n)]


def load_digits_split(split: str = "train", seed: int = 0) -> list[Digit]:
    """'train' (70%) or 'heldout' (30%) of sklearn's digits, split by a seeded permutation."""
    if split not in ("train", "heldout"):
        raise ValueError(f"digits split must be 'train' or 'heldout', got {split!r}")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    n_held = int(round(HELDOUT_FRACTION * len(order)))
    idx = order[:n_held] if split == "heldout" else order[n_held:]
    rng = random.Random(f"digits/{seed}/{split}")
    return [Digit(data.images[i], int(data.target[i]),
                  digit_captions(int(data.target[i]), rng)) for i in sorted(idx)]


def class_prompts(templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES) -> list[list[str]]:
    """For each digit 0-9, its prompts under every template (the zero-shot ensemble)."""
    return [[t.format(w) for t in templates] for w in WORDS]
