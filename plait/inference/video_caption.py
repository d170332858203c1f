"""Caption clips with a trained folder (``plait train configs/video_caption.toml``): the facts
the model reads (each shape's colour, kind and motion) told as one sentence
(:mod:`plait.text.events`).

A clip is a list of frames (PIL images, any size): it is resampled in time to the model's
``n_frames`` by :func:`plait.vision.video.read_clip` when read from a file, and each frame is
resized whole to the model's square input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from plait.text.events import Fact, sentence
from plait.vision import ImageConfig, normalize, read_preprocessor_config, to_tensor


class ClipDescriber:
    def __init__(self, model, config: ImageConfig):
        self.model, self.config = model, config

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> ClipDescriber:
        from plait.loading import load_as
        from plait.models.video_caption import ClipCaptioner

        model = load_as(folder, ClipCaptioner, "a clip captioner", "configs/video_caption.toml",
                        device)
        return cls(model, read_preprocessor_config(folder))

    @property
    def n_frames(self) -> int:
        return self.model.config.n_frames

    def pixels(self, clips: list[list[Image.Image]]) -> torch.Tensor:
        s, c = self.config.crop_size, self.config
        device = next(self.model.parameters()).device
        out = []
        for frames in clips:
            if len(frames) != self.n_frames:
                raise ValueError(f"a clip for this model has {self.n_frames} frames, got"
                                 f" {len(frames)}")
            x = torch.stack([to_tensor(f.convert("RGB").resize((s, s), Image.BICUBIC))
                             for f in frames])
            out.append(normalize(x, c.mean, c.std))
        return torch.stack(out).to(device)

    def facts(self, clips: list[list[Image.Image]]) -> list[list[Fact]]:
        """Per clip, the (colour, kind, motion, direction) of each shape the model finds."""
        return self.model.describe(self.pixels(clips))

    def caption(self, clips: list[list[Image.Image]]) -> list[str]:
        return [sentence(f, self.model.config.colours) for f in self.facts(clips)]


__all__ = ["ClipDescriber"]
