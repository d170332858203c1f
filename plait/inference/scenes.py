"""Detect and segment shapes in pictures with a trained folder (``plait train
configs/detect_scenes.toml`` or ``configs/segment_scenes.toml``).

A picture of any size is resized to the model's square input (its ``preprocessor_config.json``)
and the results are mapped back to its own pixels: boxes scaled, masks resized by nearest
neighbour.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from plait.vision import ImageConfig, normalize, read_preprocessor_config, to_tensor


def load_kind(folder: str | Path, cls: type, what: str, recipe: str, device: str):
    """(the model in ``folder``, checked to be a ``cls``; its image preprocessing)."""
    from plait.loading import load_as

    return load_as(folder, cls, what, recipe, device), read_preprocessor_config(folder)


def to_pixels(images: list[Image.Image], config: ImageConfig, device) -> torch.Tensor:
    """Each picture resized (whole, no crop) to the model's square input, normalised."""
    s = config.crop_size
    x = torch.stack([to_tensor(im.convert("RGB").resize((s, s), Image.BICUBIC))
                     for im in images])
    return normalize(x, config.mean, config.std).to(device)


class ShapeDetector:
    def __init__(self, model, config: ImageConfig):
        self.model, self.config = model, config

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> ShapeDetector:
        from plait.models.detect import Detector

        return cls(*load_kind(folder, Detector, "a detector", "configs/detect_scenes.toml",
                              device))

    @torch.no_grad()
    def detect(self, images: list[Image.Image], threshold: float = 0.5
               ) -> list[list[dict[str, Any]]]:
        """Per picture, the shapes found with a score >= ``threshold``, best first:
        ``{"label", "score", "box": [x0, y0, x1, y1]}`` in the picture's pixels."""
        device = next(self.model.parameters()).device
        found = self.model.detect(to_pixels(images, self.config, device))
        out = []
        for im, dets in zip(images, found, strict=True):
            scale = torch.tensor([im.width, im.height, im.width, im.height], dtype=torch.float32)
            out.append([{"label": lab, "score": round(s, 4),
                         "box": [round(float(v), 1) for v in (box.cpu().clamp(0, 1) * scale)]}
                        for lab, s, box in dets if s >= threshold])
        return out


def palette(labels: tuple[str, ...]) -> list[int]:
    """A PNG palette: black background, then one hue per colour name and one brightness per
    kind, in class-id order (a flat [r, g, b, ...] list)."""
    colours = list(dict.fromkeys(lab.split(" ")[0] for lab in labels))
    kinds = list(dict.fromkeys(lab.split(" ")[1] for lab in labels))
    flat = [0, 0, 0]
    for lab in labels:
        c, k = lab.split(" ")
        hue = colours.index(c) / len(colours)
        value = 1.0 - 0.5 * kinds.index(k) / max(len(kinds), 1)
        flat += [round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.9, value)]
    return flat


class ShapeSegmenter:
    def __init__(self, model, config: ImageConfig):
        self.model, self.config = model, config

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> ShapeSegmenter:
        from plait.models.segment import Segmenter

        return cls(*load_kind(folder, Segmenter, "a segmenter", "configs/segment_scenes.toml",
                              device))

    @torch.no_grad()
    def segment(self, image: Image.Image) -> tuple[Image.Image, list[dict[str, Any]]]:
        """(the class map at the picture's size, a paletted PNG image whose pixel values are
        class ids: 0 background, 1 + the label's index; the shapes found, best first:
        ``{"label", "score", "box", "pixels"}`` in the picture's pixels)."""
        device = next(self.model.parameters()).device
        ids, prob = self.model.predict(to_pixels([image], self.config, device))
        size = (image.width, image.height)
        mask = Image.fromarray(ids[0].cpu().numpy().astype(np.uint8), mode="P")
        mask.putpalette(palette(self.model.config.labels))
        mask = mask.resize(size, Image.NEAREST)
        shapes = []
        for lab, score, m in self.model.instances(ids[0], prob[0]):
            big = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size,
                                                                                 Image.NEAREST))
            rows, cols = np.flatnonzero(big.any(1)), np.flatnonzero(big.any(0))
            if not len(rows):
                continue
            shapes.append({"label": lab, "score": round(score, 4),
                           "box": [int(cols[0]), int(rows[0]), int(cols[-1]) + 1,
                                   int(rows[-1]) + 1], "pixels": int((big > 0).sum())})
        return mask, shapes


def overlay(image: Image.Image, mask: Image.Image, alpha: float = 0.55) -> Image.Image:
    """The picture with the class map's colours blended over its shapes."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = np.asarray(mask.convert("RGB"), dtype=np.float32)
    fg = (np.asarray(mask) > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb)
    return Image.fromarray(out.round().astype(np.uint8))


__all__ = ["ShapeDetector", "ShapeSegmenter", "overlay", "palette", "to_pixels"]
