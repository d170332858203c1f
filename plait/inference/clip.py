"""A CLIP model with its tokenizer and image preprocessing: texts and images -> unit embeddings.

``ClipEncoder.from_folder(dir)`` reads a plait CLIP folder (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``preprocessor_config.json``) or a Hugging Face CLIP folder: both keep the
image size and normalisation in ``preprocessor_config.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from plait.vision import ImageConfig, ImageProcessor, read_preprocessor_config


def tokenize(tokenizer, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), right-padded, both (B, T) int64."""
    from plait.text.base import pad_batch

    return pad_batch([tokenizer.encode(t) for t in texts], tokenizer.pad_token_id, "right")


class ClipEncoder:
    """``embed_texts(list[str])`` and ``embed_images(list[PIL] | Tensor)`` -> (N, D), unit norm."""

    def __init__(self, model, tokenizer, image_config: ImageConfig, batch_size: int = 64):
        self.model, self._tokenizer = model, tokenizer
        self.processor = ImageProcessor(image_config)
        self.batch_size = batch_size
        self.folder: Path | None = None

    @property
    def tokenizer(self):
        """Loaded on first use, so indexing images needs no tokenizer files."""
        if self._tokenizer is None:
            from plait.text.load import load_tokenizer

            self._tokenizer = load_tokenizer(self.folder)
        return self._tokenizer

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu",
                    quantize: str | None = None) -> ClipEncoder:
        """``quantize``: "int8" or "int4" weights (:func:`plait.load`)."""
        from plait.loading import load

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        model = load(folder, device=device, quantize=quantize)
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise ValueError(f"{folder} holds a {type(model).__name__}, not a CLIP model"
                             " (it needs encode_image and encode_text)")
        enc = cls(model, None, read_preprocessor_config(folder))
        enc.folder = folder
        return enc

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = tokenize(self.tokenizer, texts[i:i + self.batch_size])
            out.append(self.model.encode_text(ids.to(self.device), mask.to(self.device)))
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()  # (N, D)

    @torch.no_grad()
    def embed_pixels(self, pixels: Tensor) -> Tensor:
        """Already preprocessed (N, 3, H, W) -> (N, D)."""
        out = [self.model.encode_image(pixels[i:i + self.batch_size].to(self.device))
               for i in range(0, len(pixels), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        return self.embed_pixels(self.processor.batch(list(images)))
