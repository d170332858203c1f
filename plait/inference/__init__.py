"""Using a trained model: the one place the CLI, the demo, evaluations and a server all call.

- :class:`TextGenerator`: a language model and its tokenizer; ``generate(text)`` and
  ``stream(text)`` with sampling, beams and stop strings.
- :class:`ClipEncoder`: a CLIP with its tokenizer and image preprocessing; texts and images to
  unit vectors in one space.
- :class:`SentenceEncoder`: a sentence-transformers folder (or a BERT); texts to vectors.
- :class:`VisionAsker`: a vision-language model with its tokenizer and image preprocessing;
  images and questions to answers, images to captions.
- :class:`Transcriber` (``plait.inference.speech``): a Whisper-architecture folder and its
  tokenizer; recordings to transcripts. :class:`VoiceAsker` (``plait.inference.voice``) puts
  one in front of a VisionAsker: spoken questions about images.

Each is built ``from_folder(dir, device)`` from a plait or a Hugging Face folder, and
:func:`from_folder` picks the right one for what a folder holds. An object serves one caller at
a time (a model's KV cache lives on its modules): :class:`TextGenerator` queues concurrent
callers; a raw model given to ``plait.generation.generate`` twice at once refuses the second
with ``ModelBusyError``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from plait.inference.clip import ClipEncoder
from plait.inference.sentence import SentenceEncoder
from plait.inference.text import StopText, TextGenerator
from plait.inference.vlm import VisionAsker


def from_folder(folder: str | Path, device: str | torch.device = "cpu",
                quantize: str | None = None
                ) -> TextGenerator | ClipEncoder | SentenceEncoder | VisionAsker:
    """The inference object for what ``folder`` holds: a language model -> TextGenerator, a
    CLIP -> ClipEncoder, a sentence-transformers folder or a BERT -> SentenceEncoder, a
    vision-language model -> VisionAsker. ``quantize``: "int8" or "int4" weights."""
    from plait.checkpoint import MODEL_KEY, read_model_config

    folder = Path(folder)
    if (folder / "modules.json").is_file():
        return SentenceEncoder.from_folder(folder, device, quantize=quantize)
    cfg = read_model_config(folder)
    kind = cfg.get(MODEL_KEY) or cfg.get("model_type")
    if kind in ("gpt", "gpt2"):
        return TextGenerator.from_folder(folder, device, quantize=quantize)
    if kind == "clip":
        return ClipEncoder.from_folder(folder, str(device), quantize=quantize)
    if kind == "bert":
        return SentenceEncoder.from_folder(folder, device, quantize=quantize)
    if kind == "vlm":
        return VisionAsker.from_folder(folder, str(device), quantize=quantize)
    raise ValueError(f"{folder}: nothing to serve for a {kind!r} model (plait serves language"
                     " models, vision-language models, CLIP and sentence encoders)")


__all__ = ["ClipEncoder", "SentenceEncoder", "StopText", "TextGenerator", "VisionAsker",
           "from_folder"]
