"""Speech to text with a Whisper-architecture folder: ``Transcriber.from_folder(dir)``.

The folder is one ``plait train configs/speech.toml`` leaves: ``config.json`` (a Whisper
whose window is ``2 * n_audio_ctx`` frames, 4 s for the recipe's model) and ``tokenizer.json``
(the transcripts' characters, ``<pad> <s> </s>`` first). Audio is read by
:func:`plait.audio.load` (wav, flac: anything libsndfile decodes, any rate, mixed to mono),
turned into Whisper's log-mel features over the model's window, and decoded greedily or with
beams from the start token; the text is what the tokenizer decodes up to ``</s>``.

A recording longer than the window is refused, naming both lengths: the model never heard
the end of a longer one, and cutting it silently would drop words. Hugging Face Whisper
checkpoints need language and task tokens and their BPE vocabulary, which this class does
not handle (``plait.hf.whisper`` loads them for parity tests).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plait.audio import HOP_LENGTH, SAMPLING_RATE, load, log_mel
from plait.models.whisper import cut_frames


class Transcriber:
    """A Whisper and its tokenizer: ``transcribe(recordings) -> texts``."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._lock = threading.Lock()  # one generation at a time on one model object

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> Transcriber:
        from plait.loading import load as load_model
        from plait.text import load_tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        model = load_model(folder, device=device)
        if not hasattr(model, "stem"):
            raise ValueError(f"{folder} holds a {type(model).__name__}, not a speech recogniser:"
                             " transcription needs a Whisper-architecture folder (plait train"
                             " configs/speech.toml)")
        tokenizer = load_tokenizer(folder)
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError(f"{folder}: its tokenizer has no <s> and </s>; plait transcribe"
                             " reads folders trained by plait's speech task")
        return cls(model, tokenizer)

    @property
    def window(self) -> int:
        """Samples of 16 kHz audio the model hears at once: 2 * n_audio_ctx frames of 160."""
        return self.model.n_frames * HOP_LENGTH

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check(self, audio: np.ndarray, name: str) -> None:
        """Raise ValueError (one line naming ``name``) unless ``audio`` fits the window."""
        if len(audio) == 0:
            raise ValueError(f"{name}: the recording has no samples")
        if len(audio) > self.window:
            raise ValueError(f"{name} is {len(audio) / SAMPLING_RATE:.2f} s long; this model"
                             f" hears at most {self.window / SAMPLING_RATE:.2f} s: cut the"
                             " recording into pieces that short")

    def read(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """Every file decoded and checked (all before any is transcribed)."""
        out = []
        for p in paths:
            audio = load(p)
            self.check(audio, str(p))
            out.append(audio)
        return out

    def features(self, recordings: Sequence[np.ndarray]) -> Tensor:
        """(B, n_mels, frames) log-mel features over the model's window."""
        for i, audio in enumerate(recordings):
            self.check(audio, f"recording {i}")
        return log_mel(list(recordings), n_mels=self.model.config.n_mels,
                       n_samples=self.window)

    def transcribe(self, recordings: Sequence[np.ndarray], num_beams: int = 1,
                   max_new_tokens: int | None = None) -> list[str]:
        """One transcript per 16 kHz mono recording, in order."""
        out: list[str] = []
        for i in range(0, len(recordings), 4 * self.batch_size):
            part = recordings[i:i + 4 * self.batch_size]
            frames = [-(-len(a) // HOP_LENGTH) for a in part]
            out += self.decode_all(self.features(part), frames, num_beams, max_new_tokens)
        return out

    def decode_all(self, features: Tensor, frames: Sequence[int], num_beams: int = 1,
                   max_new_tokens: int | None = None) -> list[str]:
        """Transcripts of window-long ``features`` (N, n_mels, window) of recordings spanning
        ``frames``, in batches. A ``variable_window`` model (trained on features cut to each
        batch's longest recording) gets each recording cut to
        :func:`~plait.models.whisper.cut_frames` of its own length, batched with those cut
        alike, so what it hears does not depend on the other recordings in the call."""
        window = features.shape[-1]
        variable = getattr(self.model.config, "variable_window", False)
        cuts = [cut_frames(f, window) if variable else window for f in frames]
        out = [""] * len(cuts)
        for length in sorted(set(cuts)):
            same = [i for i, c in enumerate(cuts) if c == length]
            for j in range(0, len(same), self.batch_size):
                rows = same[j:j + self.batch_size]
                texts = self.decode(features[rows, :, :length], num_beams, max_new_tokens)
                for i, text in zip(rows, texts, strict=True):
                    out[i] = text
        return out

    @torch.no_grad()
    def decode(self, features: Tensor, num_beams: int = 1,
               max_new_tokens: int | None = None) -> list[str]:
        """Transcripts of log-mel ``features`` (B, n_mels, frames), up to each ``</s>``. With
        beams and a model whose ``config.ctc_weight`` w is above 0 (trained with a CTC loss on
        its encoder beside the decoder's), every beam's transcript is scored
        w * log p_ctc + (1 - w) * log p_decoder and the best kept (:func:`joint_pick`)."""
        t = self.tokenizer
        limit = self.model.config.block_size - 1  # the decoder's positions, start token first
        steps = limit if max_new_tokens is None else min(max_new_tokens, limit)
        w = float(getattr(self.model.config, "ctc_weight", 0.0))
        n = num_beams if w > 0 and num_beams > 1 else 1
        with self._lock:
            memory = self.model.encode(features.to(self.device))
            out = self.model.generate_over(memory, None, num_beams=num_beams,
                                           num_return_sequences=n, max_new_tokens=steps,
                                           eos_token_id=t.eos_token_id,
                                           pad_token_id=t.pad_token_id)
            rows = [_ids(row, t.eos_token_id) for row in out[:, 1:].tolist()]
            if n > 1:
                rows = joint_pick(self.model, memory, rows, n, w, t.pad_token_id,
                                  t.eos_token_id)
        return [t.decode(row).strip() for row in rows]


def _ids(row: list[int], eos: int) -> list[int]:
    """A generated row's tokens before its first ``eos`` (padding after it dropped)."""
    return row[:row.index(eos)] if eos in row else row


def joint_pick(model: Any, memory: Tensor, rows: list[list[int]], n: int, weight: float,
               blank: int, eos: int) -> list[list[int]]:
    """Of each utterance's ``n`` candidate transcripts (``rows``, n per utterance in order),
    the one with the highest weight * log p_ctc(y | audio) + (1 - weight) * log p_dec(y | audio)
    (hybrid CTC/attention scoring, Watanabe et al. 2017, applied to the beams: "rescoring").

    log p_dec is the decoder's, teacher-forced, ``</s>`` included; log p_ctc sums every
    alignment of y to the encoder's frames under the model's output layer applied to them,
    with ``blank`` (the pad token) between tokens, as the speech task's CTC loss trains it.
    The decoder alone can write a fluent sentence the audio does not hold ("the blue shape is
    which one" for "which shape is blue"); CTC cannot reorder or add words the frames lack."""
    import torch.nn.functional as F

    B, dev = memory.shape[0], memory.device
    lengths = torch.tensor([len(r) for r in rows], device=dev)
    longest = int(lengths.max()) + 1
    start = model.config.decoder_start_token_id
    inp = torch.full((B * n, longest), blank, dtype=torch.long, device=dev)
    labels = torch.full((B * n, longest), -1, dtype=torch.long, device=dev)
    for i, r in enumerate(rows):
        inp[i, :len(r) + 1] = torch.tensor([start, *r])
        labels[i, :len(r) + 1] = torch.tensor([*r, eos])
    mem = memory.repeat_interleave(n, 0)
    logp = model.decode(inp, mem).float().log_softmax(-1)
    dec = (logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * (labels >= 0)).sum(1)
    frames = model.lm_head(mem).float().log_softmax(-1).transpose(0, 1)  # (S, B * n, V)
    ctc = -F.ctc_loss(frames, labels[:, :-1].clamp(min=0), torch.full_like(lengths, len(frames)),
                      lengths, blank=blank, reduction="none")
    ctc = ctc.clamp(min=-1e30)  # y cannot fit the frames: last, and 0 x it stays 0
    best = (weight * ctc + (1 - weight) * dec).view(B, n).argmax(1)
    return [rows[b * n + int(k)] for b, k in enumerate(best)]


