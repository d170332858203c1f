"""A voice assistant: a spoken question about an image, transcribed by a speech folder and
answered by a vision-language folder.

The recogniser writes transcripts, lower case without punctuation ("what colour is the
circle"); a VLM was taught questions as written. ``punctuate`` turns one into the other: for
the scene VLM, :func:`plait.data.speech.written_question` puts back the mark of the phrasing a
transcript matches ("count the shapes."), else "?"; the caller passes it in, as the inference
layer knows no dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from plait.inference.speech import Transcriber
from plait.inference.vlm import VisionAsker


def add_question_mark(transcript: str) -> str:
    """The default ``punctuate``: "what colour is the circle" -> "... circle?"."""
    return transcript.strip() + "?"


@dataclass
class Heard:
    transcript: str  # what the recogniser wrote
    question: str  # what the VLM was asked
    answer: str


class VoiceAsker:
    """``ask(images, recordings) -> [Heard]``: each recording transcribed, punctuated and asked
    about its image."""

    def __init__(self, transcriber: Transcriber, asker: VisionAsker,
                 punctuate: Callable[[str], str] = add_question_mark):
        self.transcriber, self.asker, self.punctuate = transcriber, asker, punctuate

    @classmethod
    def from_folders(cls, vlm: str, asr: str, device: str = "cpu",
                     punctuate: Callable[[str], str] = add_question_mark) -> VoiceAsker:
        return cls(Transcriber.from_folder(asr, device), VisionAsker.from_folder(vlm, device),
                   punctuate)

    def ask(self, images: Sequence[Image.Image], recordings: Sequence[np.ndarray],
            num_beams: int = 1, max_new_tokens: int = 32,
            asr_beams: int | None = None) -> list[Heard]:
        """``num_beams`` for the answers, and for the transcripts unless ``asr_beams`` is
        given (a recogniser trained with CTC picks among its beams by both scores)."""
        heard = self.transcriber.transcribe(list(recordings), asr_beams or num_beams)
        questions = [self.punctuate(t) for t in heard]
        answers = self.asker.ask(list(images), questions, max_new_tokens, num_beams)
        return [Heard(*row) for row in zip(heard, questions, answers, strict=True)]
