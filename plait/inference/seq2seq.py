"""Text to text with an encoder–decoder: ``Translator.from_folder(dir).translate(texts)``.

The folder holds a :class:`plait.models.Seq2Seq` (plait's, or a Hugging Face BART, Marian or
T5) and its tokenizer. Sources are batched and right-padded; each output is decoded without
the start and end tokens. A source longer than the model accepts, or with characters its
vocabulary lacks, is a one-line ValueError naming the text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from plait.text.base import pad_batch


class Translator:
    """An encoder–decoder and its tokenizer: ``translate(texts) -> texts``."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self._lock = threading.Lock()  # one generation at a time on one model object

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> Translator:
        from plait.loading import load
        from plait.models import Seq2Seq
        from plait.text import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        model = load(folder, device=device)
        if type(model) is not Seq2Seq:  # a Whisper is a Seq2Seq too, but it reads audio
            raise ValueError(f"{folder} holds a {type(model).__name__}, not an encoder-decoder"
                             " of text; translation needs one (plait train"
                             " configs/translate.toml)")
        return cls(model, load_tokenizer(folder))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        limit = self.model.max_source_len
        for text in texts:
            if not text.strip():
                raise ValueError("an empty text: give something to translate")
            try:
                ids = self.tokenizer.encode(text)
            except ValueError as e:
                raise ValueError(f"{text[:40]!r}: {e}") from None
            if limit is not None and len(ids) > limit:
                raise ValueError(f"{text[:40]!r} is {len(ids)} tokens; this model reads at most"
                                 f" {limit}")
            rows.append(ids)
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def translate(self, texts: Sequence[str], num_beams: int = 1, max_new_tokens: int = 64,
                  batch_size: int = 128) -> list[str]:
        """One output per text, in order."""
        out: list[str] = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                ids, mask = self.encode(texts[i:i + batch_size])
                gen = self.model.generate(ids, mask, num_beams=num_beams,
                                          max_new_tokens=max_new_tokens)
                out += [self.tokenizer.decode(row[1:].tolist()) for row in gen]
        return out
