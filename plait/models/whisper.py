"""Whisper (Radford et al. 2022, arXiv:2212.04356, Fig. 1 and §2.3): the encoder–decoder of
:mod:`plait.models.seq2seq`, its encoder reading log-mel features instead of tokens.

    x      = GELU(Conv1d_s2(GELU(Conv1d(mel))))^T + sinusoids          (B, S, C), S = frames / 2
    memory = LayerNorm(N pre-norm blocks(x))
    logits = LayerNorm(N pre-norm blocks(embed(tokens) + learned positions, memory)) E^T

Only the front of the encoder is new: two convolutions over time (kernel 3; the second, stride
2, halves 100 frames a second to 50) and a fixed table of Whisper's own sinusoids
(:func:`plait.nn.whisper_sinusoids`), one row per encoder position. Everything after it is a
:class:`Seq2Seq` configured as Whisper is: pre-norm LayerNorm blocks with biases and a final
norm per stack, GELU MLPs, learned decoder positions, token embeddings neither scaled nor
normed, the output layer tied to the decoder's token table. Decoding (KV cache, cross-attention
keys and values computed once per utterance, greedy and beam search) is Seq2Seq's.

Whisper's key projections have no bias. Here the fused projections keep one, holding zeros in
the key rows when loaded: any key bias adds the same q.b to every score of a query, which the
softmax ignores, so the outputs are Whisper's whatever those rows hold.

``model(input_features, decoder_input_ids)`` gives logits (B, T, V);
``model.generate(input_features, decoder_input_ids=prompt, ...)`` returns the prompt (by
default the start token alone) and the new tokens, as ``transformers``' generic ``generate``.
What the decoding does not replicate of ``WhisperForConditionalGeneration.generate``: language
detection, the task and language tokens (pass them in the prompt), ``suppress_tokens`` and
``begin_suppress_tokens``, timestamps, long-form (> 30 s) windows, temperature fallback and the
compression and log-probability thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import require_positive
from plait.models.seq2seq import Seq2Seq, Seq2SeqConfig
from plait.nn import AttnInputs, Learned, PositionEncoding, whisper_sinusoids


@dataclass(frozen=True)
class WhisperConfig(Seq2SeqConfig):
    """Whisper's sizes; the defaults are whisper-tiny (4 + 4 layers, 384 wide, 6 heads)."""

    vocab_size: int = 51865
    n_layer: int = 4  # encoder blocks
    n_head: int = 6
    n_embd: int = 384
    n_inner: int | None = 1536
    block_size: int = 448  # the decoder's positions (n_text_ctx)
    mlp: str = "gelu"
    dropout: float = 0.0
    pre_norm: bool = True
    # the decoder's positions; the encoder's are the fixed table
    pos_encoding: Literal["sinusoidal", "learned", "relative"] = "learned"
    embed_scale: bool = False
    n_mels: int = 80  # mel bands of the input features
    n_audio_ctx: int = 1500  # encoder positions; the input has 2 * n_audio_ctx frames (30 s)
    pad_token_id: int = 50256
    eos_token_id: int = 50256
    decoder_start_token_id: int = 50257  # <|startoftranscript|>
    # False (Whisper): every input is exactly 2 * n_audio_ctx frames, shorter audio padded
    # with silence. True: any even number of frames up to that, for a model trained on
    # features cut to the longest recording of each batch (plait's speech task,
    # data.cut_window); it must then be given audio cut the same way (Transcriber does)
    variable_window: bool = False
    # > 0: the output layer was also trained on the encoder's frames with a CTC loss (plait's
    # speech task, data.ctc_weight), and beam search picks among its beams by this weight of
    # the CTC score beside the decoder's (plait.inference.speech.joint_pick); 0: Whisper's
    # decoder alone
    ctc_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, ("n_mels", "n_audio_ctx"))
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"WhisperConfig.ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if not self.share_embeddings:
            raise ValueError("WhisperConfig.share_embeddings must be True: the encoder reads"
                             " audio, so the decoder's token table is the only one")


def cut_frames(longest: int, window: int) -> int:
    """Frames a ``variable_window`` model is given for recordings of at most ``longest``
    frames: rounded up to a multiple of 16 (even, as the stride-2 stem needs, and a little
    silence after the speech), at most the ``window``."""
    return min(window, max(16, -(-longest // 16) * 16))


class ConvStem(nn.Module):
    """Log-mel features (B, n_mels, T) -> frame vectors (B, T / 2, C): Conv1d (kernel 3) and
    GELU, then a stride-2 Conv1d and GELU (Whisper §2.3). The GELU is the exact one whatever
    the MLPs use, as in the reference."""

    def __init__(self, n_mels: int, n_embd: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_embd, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_embd, n_embd, kernel_size=3, stride=2, padding=1)

    def forward(self, mel: Tensor) -> Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))  # (B, C, T / 2)
        return x.transpose(1, 2)  # (B, T / 2, C)


class Whisper(Seq2Seq):
    """``model(input_features, decoder_input_ids) -> logits (B, T_dec, V)``."""

    config_class = WhisperConfig

    def __init__(self, config: WhisperConfig):
        super().__init__(config)
        self.stem = ConvStem(config.n_mels, config.n_embd)
        table = self.enc_pos.wpe.weight
        with torch.no_grad():
            table.copy_(whisper_sinusoids(config.n_audio_ctx, config.n_embd))
        table.requires_grad_(False)  # fixed, as in the reference (a buffer there)

    def encoder_positions(self) -> PositionEncoding:
        """One row per encoder position (the stem's output frames), filled with the fixed
        sinusoids in ``__init__`` and copied from the checkpoint when one is loaded."""
        return Learned(self.config.n_audio_ctx, self.config.n_embd)

    @property
    def n_frames(self) -> int:
        """Input frames per utterance: 2 * n_audio_ctx (3000, 30 s at 100 frames a second)."""
        return 2 * self.config.n_audio_ctx

    @property
    def max_source_len(self) -> int:
        return self.n_frames

    def encode(self, input_features: Tensor) -> Tensor:
        """Log-mel features (B, n_mels, 2 * n_audio_ctx) -> the encoder output (B, S, C).

        The length is fixed, as for transformers and openai/whisper: the model only ever saw
        30-second windows (shorter audio padded with silence), and its positions are those.
        With ``config.variable_window`` any even number of frames up to that is accepted."""
        c = self.config
        shape = tuple(input_features.shape)
        frames = shape[-1] if input_features.dim() == 3 else -1
        fits = (0 < frames <= self.n_frames and frames % 2 == 0 if c.variable_window
                else frames == self.n_frames)
        if input_features.dim() != 3 or shape[1] != c.n_mels or not fits:
            want = (f"an even number of frames up to {self.n_frames}" if c.variable_window
                    else f"frames={self.n_frames}")
            raise ValueError(f"input_features must be (batch, n_mels={c.n_mels}, {want}), got"
                             f" {shape}; pad or cut the log-mel features to the model's window"
                             " (2 * n_audio_ctx frames)")
        x = self.stem(input_features.to(self.stem.conv1.weight.dtype))  # (B, S, C)
        positions = torch.arange(x.shape[1], device=x.device)[None]  # (1, S)
        x = self.drop(x + self.enc_pos.embed(positions).to(x.dtype))
        return self.encoder(x, AttnInputs())

    def forward(self, input_features: Tensor, decoder_input_ids: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, T_dec, V) of ``decoder_input_ids`` given the audio."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required: the start token (and task tokens),"
                             " then the target shifted right (shift_right(labels))")
        memory = self.encode(input_features)
        return self.decode(decoder_input_ids, memory, None, decoder_attention_mask)

    @torch.inference_mode()
    def generate(self, input_features: Tensor, decoder_input_ids: Tensor | None = None,
                 **kwargs) -> Tensor:
        """Transcribe: the encoder runs once, then the decoder continues ``decoder_input_ids``
        (B, T0) (default: the start token). Returns (B * num_return_sequences, T0 + new);
        arguments as in :func:`plait.generation.generate`. See the module docstring for what
        this does not do of transformers' Whisper ``generate``."""
        return self.generate_over(self.encode(input_features), None, decoder_input_ids,
                                  **kwargs)
