"""Speech from text with a TTS folder (``plait train configs/tts.toml``).

    from plait.inference.tts import Speaker
    speaker = Speaker.from_folder("runs/tts")
    audio = speaker.speak(["set a timer for 25 minutes"])[0]   # float32, 16 kHz mono

Text is normalised first (:func:`normalise`): lower case, digits written out as words
("25" -> "twenty five", with ``num2words``, as the training phrases say them), anything outside
the model's alphabet dropped. The model writes log-mel features (:mod:`plait.models.tts`);
:func:`plait.audio.vocoder.features_to_audio` turns them into a waveform (Griffin-Lim).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from plait.audio.vocoder import features_to_audio
from plait.models.tts import TTS
from plait.text.base import pad_batch


def _number(m: re.Match) -> str:
    from num2words import num2words

    words = num2words(int(m.group(0).replace(",", "")), lang="en")
    return " " + " ".join(w for w in re.split(r"[\s,-]+", words) if w != "and") + " "


def normalise(text: str, alphabet: str) -> str:
    """What the model reads: lower case, numbers in words ("4,821" -> "four thousand eight
    hundred twenty one"), only ``alphabet``'s characters, single spaces, one space either
    side (silence before and after)."""
    text = re.sub(r"\d[\d,]*", _number, text.lower())
    kept = "".join(c if c in alphabet else " " for c in text)
    words = kept.split()
    if not any(any(c.isalpha() for c in w) for w in words):
        raise ValueError(f"nothing to say in {text.strip()[:60]!r}: give words (letters or"
                         " digits)")
    return " " + " ".join(words) + " "


def encode_texts(texts: Sequence[str], alphabet: str) -> tuple[Tensor, Tensor]:
    """Normalised texts -> character ids (B, N) (0 padding) and their mask."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    return pad_batch([[index[c] for c in normalise(t, alphabet)] for t in texts], 0)


class Speaker:
    """``speak(texts) -> [waveform, ...]`` and ``features(texts) -> (B, 80, frames)``."""

    def __init__(self, model: TTS, n_iter: int = 32):
        self.model, self.n_iter = model.eval(), n_iter
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> Speaker:
        from plait.loading import load_as

        return cls(load_as(folder, TTS, "a text-to-speech model", "configs/tts.toml", device))

    def features(self, texts: Sequence[str], pace: float = 1.0) -> list[Tensor]:
        """Each text's log-mel features (80, frames), its own length."""
        if not texts:
            raise ValueError("no text to speak")
        if not 0.25 <= pace <= 4.0:
            raise ValueError(f"pace must be in [0.25, 4], got {pace}")
        device = next(self.model.parameters()).device
        chars, mask = encode_texts(texts, self.model.config.alphabet)
        with self._lock:
            out = self.model.synthesise(chars.to(device), mask.to(device), pace)
        spoken = (out > -1.5).any(1)  # (B, frames): frames the model spoke
        ends = [int(row.nonzero().max()) + 1 if row.any() else 1 for row in spoken]
        return [f[:, :e].float().cpu() for f, e in zip(out, ends, strict=True)]

    def speak(self, texts: Sequence[str], pace: float = 1.0) -> list[np.ndarray]:
        """16 kHz mono float32 waveforms, one per text."""
        return [features_to_audio(f, self.n_iter) for f in self.features(texts, pace)]
