"""A clip question-answering model with its tokenizer and frame preprocessing: clips +
questions -> answers (the label the classifier scores highest).

A question is ``<s>`` + its tokens, lower-cased (:func:`question_ids`, which training uses too).
A clip is a GIF or a folder of frames, resampled in time to the model's ``n_frames``
(:func:`plait.vision.video.read_clip`), each frame resized and normalised as an image.

``VideoAsker.from_folder(dir)`` reads a plait folder of a ``visualbert-video`` model
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``preprocessor_config.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from plait.text.base import pad_batch
from plait.vision import ImageConfig, ImageProcessor, read_preprocessor_config

VIDEO_MODEL = "visualbert-video"  # the plait.models.MODELS name of the clip model


def question_ids(tokenizer, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Questions -> right-padded (ids (B, L), attention mask (B, L)), each ``<s>`` first."""
    rows = [[tokenizer.bos_token_id, *tokenizer.encode(q.strip().lower())] for q in questions]
    return pad_batch(rows, tokenizer.pad_token_id)


def is_video_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model that reads clips (by its ``config.json``)."""
    from plait.checkpoint import MODEL_KEY, read_model_config

    return read_model_config(folder).get(MODEL_KEY) == VIDEO_MODEL


class VideoAsker:
    """``ask(clips, questions)`` -> one answer per clip; ``ask_file(path, question)``."""

    def __init__(self, model, tokenizer, image_config: ImageConfig, batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.processor = ImageProcessor(image_config)
        self.batch_size = batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> VideoAsker:
        from plait.loading import load
        from plait.text.load import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        if not is_video_folder(folder):
            raise ValueError(f"{folder} holds no video model: it cannot read clips (train one"
                             " with configs/video_qa.toml)")
        model = load(folder, device=device)
        return cls(model, load_tokenizer(folder), read_preprocessor_config(folder))

    @property
    def n_frames(self) -> int:
        return self.model.config.n_frames

    def pixels(self, frames: Sequence[Image.Image]) -> Tensor:
        """One clip's frames -> (T, 3, H, W), each preprocessed as an image."""
        return self.processor.batch(list(frames))

    @torch.no_grad()
    def ask_file(self, path: str | Path, question: str) -> str:
        """The answer to a question about a GIF or a folder of frames."""
        from plait.vision.video import read_clip

        frames = read_clip(path, self.n_frames, self.processor.config.max_pixels)
        return self.ask(self.pixels(frames)[None], [question])[0]

    @torch.no_grad()
    def ask(self, clips: Tensor, questions: Sequence[str]) -> list[str]:
        """``clips`` (B, T, 3, H, W) preprocessed; the answer to ``questions[i]`` about clip i."""
        if len(clips) != len(questions):
            raise ValueError(f"{len(clips)} clip(s) but {len(questions)} question(s): give one"
                             " question per clip")
        labels = self.model.config.labels
        return [labels[i] for i in self.predict(clips, questions).tolist()]

    @torch.no_grad()
    def logits(self, clips: Tensor, questions: Sequence[str]) -> Tensor:
        """Answer scores (B, labels), in batches of ``batch_size``."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(questions), self.batch_size):
            ids, mask = question_ids(self.tokenizer, questions[i:i + self.batch_size])
            px = clips[i:i + self.batch_size].to(device)
            out.append(self.model(ids.to(device), mask.to(device), px).float().cpu())
        return torch.cat(out)

    def predict(self, clips: Tensor, questions: Sequence[str]) -> Tensor:
        return self.logits(clips, questions).argmax(-1)


__all__ = ["VIDEO_MODEL", "VideoAsker", "is_video_folder", "question_ids"]
