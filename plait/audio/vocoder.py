"""Whisper-style log-mel features back to a waveform: mel inversion + fast Griffin-Lim.

For a text-to-speech model whose output is :func:`plait.audio.features.log_mel` features:

    1. :func:`mel_to_power` undoes ``(x + 4) / 4`` and the log10, then solves
       ``filters @ power = mel`` for a non-negative linear power spectrum (201 bins)
    2. :func:`griffin_lim` finds a phase for ``sqrt(power)`` with the fast Griffin-Lim of
       Perraudin, Balazs and Sondergaard (2013), on the STFT that ``log_mel`` uses

:func:`features_to_audio` does both. The 80 dB floor of the features is lost: floored bins
come back at floor level, a faint noise 80 dB under the loudest bin.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from plait.audio.features import HOP_LENGTH, N_FFT, _filters, _window

N_BINS = N_FFT // 2 + 1  # 201 linear-frequency bins of 40 Hz


@lru_cache(maxsize=4)
def _pinv(n_mels: int) -> Tensor:
    return torch.linalg.pinv(_filters(n_mels).double()).float()  # (F, M)


def _batched(x: Tensor, rows: int, what: str, name: str) -> tuple[Tensor, bool]:
    """(rows, T) or (B, rows, T) -> (B, rows, T) float32, and whether a batch axis was given."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} takes a torch tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3) or x.shape[-2] != rows:
        raise ValueError(f"{name} expects {what} of shape ({rows}, T) or (B, {rows}, T), "
                         f"got {tuple(x.shape)}")
    return (x if x.dim() == 3 else x[None]).float(), x.dim() == 3


def mel_to_power(features: Tensor, n_iter: int = 100) -> Tensor:
    """Log-mel features (B, 80, T) or (80, T) -> non-negative power spectrum (B, 201, T).

    The mel power ``10 ** (4 * x - 4)`` is inverted by ``n_iter`` multiplicative updates
    (Lee-Seung, KL divergence: relative errors count, so quiet bins are fitted as well as loud
    ones) from the pseudo-inverse's absolute value. Bins no filter covers (0 Hz, 8 kHz) are 0.
    """
    feats, _ = _batched(features, 80, "log-mel features", "mel_to_power")
    with torch.no_grad():
        mel = torch.pow(10.0, 4.0 * feats - 4.0)  # (B, M, T)
        fb = _filters(80).to(mel.device)  # (M, F)
        power = (_pinv(80).to(mel.device) @ mel).abs_()  # (B, F, T)
        power.clamp_(min=1e-12)  # a zero would stay zero under multiplicative updates
        norm = fb.sum(0)[:, None]  # (F, 1); 0 for uncovered bins, which the update zeroes
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        fb_t = fb.T.contiguous()
        for _ in range(n_iter):
            ratio = mel / (fb @ power).clamp_(min=1e-30)  # (B, M, T)
            power.mul_(fb_t @ ratio).div_(norm)
        return power


def griffin_lim(magnitude: Tensor, n_iter: int = 32, momentum: float = 0.99,
                length: int | None = None, seed: int = 0) -> Tensor:
    """A waveform whose STFT magnitude approximates ``magnitude``: (B, 201, T) -> (B, length)
    or (201, T) -> (length,).

    Frame t matches frame t of ``power_spectrum`` (400-point periodic Hann, hop 160,
    centred with reflect padding): T frames are T * 160 samples, whose ``torch.stft`` has one
    frame more, filled by repeating the last. The result is cut or zero-padded to ``length``
    (default T * 160). The initial phase is random from ``seed`` and the same for every item,
    so a batch gives what its items give one by one.
    """
    mag, batched = _batched(magnitude, N_BINS, "a magnitude spectrogram", "griffin_lim")
    if mag.shape[-1] < 2:  # torch.stft's reflect padding (200) needs over 200 samples
        raise ValueError(f"griffin_lim needs at least 2 frames, got {tuple(magnitude.shape)}")
    n = mag.shape[-1] * HOP_LENGTH
    length = n if length is None else length
    mag = torch.cat([mag, mag[..., -1:]], dim=-1)  # (B, F, T + 1)
    window = _window().to(mag.device)
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(mag.shape[1:], generator=gen).to(mag.device) * (2 * torch.pi)

    def istft(spec: Tensor) -> Tensor:
        return torch.istft(spec, N_FFT, HOP_LENGTH, window=window, center=True, length=n)

    def stft(x: Tensor) -> Tensor:
        return torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True,
                          pad_mode="reflect", return_complex=True)

    with torch.no_grad():
        angles = torch.polar(torch.ones_like(phase), phase).expand_as(mag)
        previous = torch.zeros_like(mag, dtype=angles.dtype)
        for _ in range(n_iter):
            rebuilt = stft(istft(mag * angles))  # the nearest consistent spectrogram
            accelerated = rebuilt + momentum * (rebuilt - previous)
            angles = accelerated / accelerated.abs().clamp_(min=1e-16)
            previous = rebuilt
        audio = istft(mag * angles)
        if length != n:
            audio = audio[..., :length] if length < n else torch.nn.functional.pad(
                audio, (0, length - n))
    return audio if batched else audio[0]


def features_to_audio(features: Tensor, n_iter: int = 32) -> np.ndarray | list[np.ndarray]:
    """Log-mel features (80, T) -> float32 samples (T * 160,) at 16 kHz, or (B, 80, T) -> a
    list of B such arrays. Audio peaking above 1 is scaled to peak at 0.9; quieter audio is
    left at the level the features give."""
    feats, batched = _batched(features, 80, "log-mel features", "features_to_audio")
    audio = griffin_lim(mel_to_power(feats).sqrt_(), n_iter=n_iter)  # (B, N)
    peak = audio.abs().amax(dim=-1, keepdim=True)
    audio = torch.where(peak > 1.0, audio * (0.9 / peak.clamp(min=1e-12)), audio)
    out = [a.cpu().numpy().astype(np.float32) for a in audio]
    return out if batched else out[0]
