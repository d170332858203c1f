"""Asking a fusion folder (:mod:`plait.models.fusion`): a picture, a recording and a question
in, one answer out. Any of the three may be left out where the model's mode allows it (a set
fusion: add, gated, gmu, cross-attention); a ``concat`` model, or a model built without that
modality, says so in one line.

    asker = FusionAsker.from_folder("runs/fusion_scenes")
    asker.ask_files("scene.png", "said.wav", "is the number said equal to the number of red"
                    " shapes?")                                   # -> ("yes", 0.98)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from plait.audio import HOP_LENGTH, SAMPLING_RATE, log_mel
from plait.inference.video import question_ids
from plait.vision import ImageProcessor, read_preprocessor_config

FUSION_MODEL = "fusion"


def is_fusion_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a fusion model (by its ``config.json``)."""
    from plait.checkpoint import MODEL_KEY, read_model_config

    return read_model_config(folder).get(MODEL_KEY) == FUSION_MODEL


class FusionAsker:
    """``ask(image, audio, question) -> (answer, probability)``; each input may be None."""

    def __init__(self, model, tokenizer, processor: ImageProcessor | None):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> FusionAsker:
        from plait.loading import load
        from plait.text.load import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        if not is_fusion_folder(folder):
            raise ValueError(f"{folder} holds no fusion model (train one with"
                             " configs/fusion_scenes.toml)")
        model = load(folder, device=device)
        has_image = "image" in model.config.modalities
        processor = ImageProcessor(read_preprocessor_config(folder)) if has_image else None
        return cls(model, load_tokenizer(folder), processor)

    @property
    def window(self) -> int:
        """Samples the audio encoder hears: its frames x the 10 ms hop."""
        return self.model.config.audio_config.n_frames * HOP_LENGTH

    def features(self, audio: np.ndarray, name: str = "the recording") -> torch.Tensor:
        """(1, n_mels, n_frames) log-mel features of a 16 kHz mono recording."""
        if len(audio) == 0:
            raise ValueError(f"{name}: the recording has no samples")
        if len(audio) > self.window:
            raise ValueError(f"{name} is {len(audio) / SAMPLING_RATE:.2f} s long; this model"
                             f" hears one word of at most {self.window / SAMPLING_RATE:.2f} s")
        return log_mel([audio], n_mels=self.model.config.audio_config.n_mels,
                       n_samples=self.window)

    @torch.no_grad()
    def ask(self, image: Image.Image | None, audio: np.ndarray | None,
            question: str | None) -> tuple[str, float]:
        """The answer and the model's probability for it."""
        if question is not None and not question.strip():
            raise ValueError("the question is empty")
        device = next(self.model.parameters()).device
        inputs: dict[str, torch.Tensor] = {}
        if question is not None:
            ids, mask = question_ids(self.tokenizer, [question])
            inputs |= {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if image is not None:
            if self.processor is None:
                raise ValueError("this fusion model was built without image (its modalities:"
                                 f" {', '.join(self.model.config.modalities)})")
            inputs["pixel_values"] = self.processor.batch([image]).to(device)
        if audio is not None:
            inputs["input_features"] = self.features(audio).to(device)
        probs = self.model(**inputs).float().softmax(-1)[0]
        k = int(probs.argmax())
        return self.model.config.labels[k], float(probs[k])

    def ask_files(self, image: str | Path | None, audio: str | Path | None,
                  question: str | None) -> tuple[str, float]:
        """:meth:`ask` with the picture and the recording read from files."""
        from plait.audio import load as load_audio
        from plait.vision import open_image

        picture = open_image(image) if image is not None else None
        sound = None
        if audio is not None:
            sound = load_audio(audio)
            self.features(sound, str(audio))  # checked before anything runs
        return self.ask(picture, sound, question)


__all__ = ["FUSION_MODEL", "FusionAsker", "is_fusion_folder"]
