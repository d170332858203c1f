"""A vision–language model with its tokenizer and image preprocessing: images + questions ->
answers, images -> captions.

The prompt of a turn is ``<s>`` + one ``<image>`` placeholder per image token + the question +
a newline (the question before the placeholders for a model with ``question_first``, as the
folder's ``config.json`` says); the answer follows and ends with ``</s>`` (:func:`prompt_ids`,
:func:`turn_ids`, which training uses too, so the two never drift apart). A caption is the
answer to :data:`CAPTION_QUESTION`.

``VisionAsker.from_folder(dir)`` reads a plait VLM folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``preprocessor_config.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from plait.text.base import pad_batch
from plait.vision import ImageConfig, ImageProcessor, read_preprocessor_config

IMAGE_TOKEN = "<image>"
SPECIALS = ("<pad>", "<s>", "</s>", IMAGE_TOKEN)
CAPTION_QUESTION = "describe the image."
# what else asks for a caption in training (the first is the one captioning uses)
CAPTION_QUESTIONS = (CAPTION_QUESTION, "what is in the picture?", "caption this image.",
                     "what do you see?")


def prompt_ids(tokenizer, question: str, n_image_tokens: int, n_images: int = 1,
               question_first: bool = False) -> list[int]:
    """``<s> <image> x n  question \n``: what the model reads before it answers. A question
    may place its images itself with ``<image>`` (one per image); else they come first, or with
    ``question_first`` (``VLMConfig.question_first``) after it: ``<s> question <image> x n \n``,
    so that the image tokens read the question."""
    image = [tokenizer.specials.index(IMAGE_TOKEN)] * n_image_tokens
    parts = question.strip().lower().split(IMAGE_TOKEN)
    holes = len(parts) - 1
    if holes and holes != n_images:
        raise ValueError(f"the question holds {holes} {IMAGE_TOKEN} placeholder(s) but"
                         f" {n_images} image(s) were given: one placeholder per image, or none")
    if not holes and question_first and n_images:
        return [tokenizer.bos_token_id, *tokenizer.encode(parts[0] + " "), *image * n_images,
                *tokenizer.encode("\n")]
    if not holes:
        return [tokenizer.bos_token_id, *image * n_images, *tokenizer.encode(parts[0] + "\n")]
    ids = [tokenizer.bos_token_id, *tokenizer.encode(parts[0])]
    for part in parts[1:]:
        ids += image + tokenizer.encode(part)
    return ids + tokenizer.encode("\n")


def turn_ids(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(the question's ids, the answer's ids + ``</s>``) of one turn after the image."""
    return (tokenizer.encode(question.strip().lower() + "\n"),
            [*tokenizer.encode(answer), tokenizer.eos_token_id])


class VisionAsker:
    """``ask(images, questions)`` and ``caption(images)`` -> one string per image."""

    def __init__(self, model, tokenizer, image_config: ImageConfig, batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.processor = ImageProcessor(image_config)
        self.batch_size = batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu",
                    quantize: str | None = None) -> VisionAsker:
        """``quantize``: "int8" or "int4" weights (:func:`plait.load`)."""
        from plait.loading import load
        from plait.text.load import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        model = load(folder, device=device, quantize=quantize)
        if not hasattr(model, "image_features"):
            raise ValueError(f"{folder} holds a {type(model).__name__}, not a vision-language"
                             " model: it cannot read images (train one with"
                             " configs/vlm_scenes.toml)")
        return cls(model, load_tokenizer(folder), read_preprocessor_config(folder))

    @property
    def tokens_per_image(self) -> int:
        return self.model.config.tokens_per_image

    @property
    def question_first(self) -> bool:
        """Whether prompts put the question before the image (``VLMConfig.question_first``)."""
        return self.model.config.question_first

    def pixels(self, images: Sequence[Image.Image] | Tensor) -> Tensor:
        if isinstance(images, Tensor):
            return images
        return self.processor.batch(list(images))

    @torch.no_grad()
    def ask(self, images: Sequence[Image.Image] | Tensor, questions: Sequence[str],
            max_new_tokens: int = 32, num_beams: int = 1) -> list[str]:
        """The answer to ``questions[i]`` about ``images[i]``, greedy (or beam) decoding."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} image(s) but {len(questions)} question(s): give"
                             " one question per image")
        out: list[str] = []
        for i in range(0, len(questions), self.batch_size):
            out += self._answer(self.pixels(images[i:i + self.batch_size]),
                                questions[i:i + self.batch_size], max_new_tokens, num_beams)
        return out

    @torch.no_grad()
    def ask_one(self, images: Sequence[Image.Image], question: str, max_new_tokens: int = 32,
                num_beams: int = 1) -> str:
        """The answer to one question about one or more images (placed by ``<image>`` in the
        question, or all before it; after it for a ``question_first`` model)."""
        pixels = self.pixels(images)[None]  # (1, K, 3, H, W)
        row = prompt_ids(self.tokenizer, question, self.tokens_per_image, len(images),
                         self.question_first)
        return self._generate([row], pixels, max_new_tokens, num_beams)[0]

    def caption(self, images: Sequence[Image.Image] | Tensor, max_new_tokens: int = 48,
                num_beams: int = 1) -> list[str]:
        return self.ask(images, [CAPTION_QUESTION] * len(images), max_new_tokens, num_beams)

    def _answer(self, pixels: Tensor, questions: Sequence[str], max_new_tokens: int,
                num_beams: int) -> list[str]:
        rows = [prompt_ids(self.tokenizer, q, self.tokens_per_image,
                           question_first=self.question_first) for q in questions]
        return self._generate(rows, pixels, max_new_tokens, num_beams)

    def _generate(self, rows: list[list[int]], pixels: Tensor, max_new_tokens: int,
                  num_beams: int) -> list[str]:
        t = self.tokenizer
        ids, mask = pad_batch(rows, t.pad_token_id, "left")
        device = next(self.model.parameters()).device
        new = self.model.generate(ids.to(device), mask.to(device),
                                  pixel_values=pixels.to(device), max_new_tokens=max_new_tokens,
                                  num_beams=num_beams, eos_token_id=t.eos_token_id,
                                  pad_token_id=t.pad_token_id)[:, ids.shape[1]:]
        answers = []
        for row in new.tolist():
            if t.eos_token_id in row:
                row = row[:row.index(t.eos_token_id)]
            answers.append(t.decode(row).strip())
        return answers


__all__ = ["CAPTION_QUESTION", "CAPTION_QUESTIONS", "IMAGE_TOKEN", "VisionAsker", "prompt_ids",
           "turn_ids"]
