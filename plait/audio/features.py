"""Whisper's log-mel spectrogram, batched in torch, equal to transformers' within float rounding.

The steps, as in openai/whisper ``audio.py:log_mel_spectrogram`` and transformers'
``WhisperFeatureExtractor`` (``docs/audio.md`` sets them side by side):

    1. pad with zeros or cut each recording to 30 s (480,000 samples at 16 kHz)
    2. centred STFT: reflect-pad 200 samples each side, 400-sample frames every 160 samples,
       periodic Hann window, 400-point FFT -> 201 bins; the last of the 3,001 frames is dropped
    3. power spectrum |X|^2 (not the magnitude)
    4. Slaney mel filterbank, 0-8 kHz, area-normalised (librosa's default ``norm="slaney"``)
    5. log10(max(mel, 1e-10))
    6. per recording: max(x, x.max() - 8), a floor 80 dB under the loudest bin
    7. (x + 4) / 4

``n_samples`` sets a shorter window for models of short clips (a 4 s window has 400 frames).
For a recording that ends at least 41 samples before the window does, the result is the first
frames of the 30 s one: the last frame's reflect padding then mirrors only silence, and the
extra zeros' log is log10(1e-10) = -10, under any floor, so the per-recording max is the same.

The maths is transformers' (outputs ~1e-7 apart), arranged to do less work: the 30 s and the
reflect padding are written into one buffer; ``unfold`` frames it and keeps only the 3,000
frames Whisper uses, so no last frame is cut off with a copy; and the power is re^2 + im^2,
where ``abs() ** 2`` takes a square root only to square it again (on CPU that pass cost
transformers about as much as the FFT itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from plait.audio.decode import SAMPLING_RATE

N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop: 100 frames per second
CHUNK_SECONDS = 30  # Whisper's encoder sees exactly 30 s
N_SAMPLES = CHUNK_SECONDS * SAMPLING_RATE  # 480,000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000
F_MAX = 8_000.0  # Nyquist at 16 kHz

# Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False): linear below 1 kHz at
# 3 mels per 200 Hz, logarithmic above, 27 mels per factor 6.4 (so it is continuous at 15 mels)
_LOG_START_HZ = 1000.0
_LOG_START_MEL = 15.0  # = 3 * 1000 / 200
_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies in Hz -> Slaney mels (float64)."""
    hz = np.asarray(hz, dtype=np.float64)
    octaves = np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ)  # clipped: no log(0)
    log_part = _LOG_START_MEL + octaves * _MELS_PER_LOG_HZ
    return np.where(hz >= _LOG_START_HZ, log_part, 3.0 * hz / 200.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Slaney mels -> Hz (float64), the inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _LOG_START_HZ * np.exp((np.maximum(mel, _LOG_START_MEL) - _LOG_START_MEL)
                                      / _MELS_PER_LOG_HZ)
    return np.where(mel >= _LOG_START_MEL, log_part, 200.0 * mel / 3.0)


def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sampling_rate: int = SAMPLING_RATE,
                f_max: float = F_MAX) -> np.ndarray:
    """Slaney-normalised triangular mel filters, (n_fft // 2 + 1, n_mels) float64.

    Filter m rises from edge m to its peak at edge m + 1 and falls to zero at edge m + 2,
    the n_mels + 2 edges spaced evenly in mels from 0 Hz to ``f_max``. Each triangle is scaled
    by 2 / (its width in Hz), so it has unit area: wide high-frequency filters do not collect
    more energy than narrow low ones (librosa ``filters.mel(norm="slaney")``).
    """
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sampling_rate)[:, None]  # (F, 1) in Hz
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(f_max), n_mels + 2))
    lower, peak, upper = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (bins - lower) / (peak - lower)  # (F, M)
    falling = (upper - bins) / (upper - peak)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))


@lru_cache(maxsize=4)
def _filters(n_mels: int) -> Tensor:
    # (M, F), Whisper's own layout: (M, F) @ (B, F, T) with the spectrum's T contiguous
    # is the fastest way round for BLAS here, and it yields (B, M, T) directly
    return torch.from_numpy(mel_filters(n_mels).T).float().contiguous()


@lru_cache(maxsize=1)
def _window() -> Tensor:
    return torch.hann_window(N_FFT)  # periodic, as Whisper's torch.stft uses it


def log_mel(audio: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
            sampling_rate: int = SAMPLING_RATE, n_mels: int = 80,
            n_samples: int = N_SAMPLES) -> Tensor:
    """Whisper's input features of one 16 kHz mono recording or a list of them.

    Each recording is padded with silence or cut to its first ``n_samples`` (Whisper's 30 s
    unless a model made for shorter clips asks for less; 4 s is ``n_samples=64_000``). Computed
    on the device of the first tensor given (CPU for numpy input), in float32, without autograd.

    Returns:
        (B, n_mels, n_samples // 160) float32, B = 1 for a single recording: (B, 80, 3000)
        by default.
    """
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"log_mel needs {SAMPLING_RATE} Hz audio, got sampling_rate="
                         f"{sampling_rate}: resample first (plait.audio.load does)")
    check_window(n_samples)
    with torch.no_grad():
        items = recordings(audio)
        power = power_spectrum(padded_batch(items, n_samples))  # (B, T, F)
        mel = _filters(n_mels).to(power.device) @ power.transpose(1, 2)  # (B, M, T)
        log = mel.clamp_(min=1e-10).log10_()
        # the floor is per recording: a batch-wide max would let a loud companion
        # change a quiet recording's features (openai/whisper PR #2862)
        peak = log.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        if not torch.isfinite(peak).all():  # NaN and inf reach every peak they touch
            bad = torch.nonzero(~torch.isfinite(peak.flatten())).flatten().tolist()
            raise ValueError(f"recording(s) {bad} contain NaN or infinite samples")
        log = torch.maximum(log, peak - 8.0, out=log)
        return log.add_(4.0).div_(4.0)


def check_window(n_samples: int) -> None:
    """A window must be whole 10 ms hops (so it has exactly n_samples / 160 frames) and at
    least one FFT frame long (the reflect padding mirrors 200 samples inside it)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < N_FFT \
            or n_samples % HOP_LENGTH:
        raise ValueError(f"n_samples must be an int multiple of {HOP_LENGTH} (10 ms) and at "
                         f"least {N_FFT}, got {n_samples!r}: e.g. 64_000 for 4 s, "
                         f"{N_SAMPLES} (Whisper's 30 s)")


def padded_batch(items: list[Tensor], n_samples: int = N_SAMPLES) -> Tensor:
    """Recordings -> (B, n_samples + N_FFT) float32, ready to frame.

    Each recording is cut or padded with zeros (silence) to exactly ``n_samples`` (30 s by
    default), as Whisper does before its STFT, and then reflect-padded by N_FFT // 2 on both
    sides, as ``torch.stft(center=True)`` does: written straight into one buffer, not padded
    twice.
    """
    half = N_FFT // 2
    x = torch.zeros(len(items), n_samples + N_FFT, device=items[0].device)
    body = x[:, half:half + n_samples]  # (B, n_samples), a view
    for row, a in zip(body, items, strict=True):
        n = min(a.shape[0], n_samples)
        row[:n] = a[:n]  # casts float64 to float32 as transformers does before its STFT
    # reflect: sample -i mirrors sample i (the edge itself is not repeated)
    x[:, :half] = body[:, 1:half + 1].flip(-1)
    x[:, -half:] = body[:, -half - 1:-1].flip(-1)
    return x


def power_spectrum(x: Tensor) -> Tensor:
    """|STFT|^2 of (B, n_samples + N_FFT) padded audio, frames first: (B, T, F).

    Equal to ``torch.stft(audio, N_FFT, HOP_LENGTH, window=hann, center=True)`` without its
    last frame: T = n_samples // 160 (N_FRAMES = 3000 for 30 s), F = N_FFT // 2 + 1 = 201
    bins of 40 Hz.
    """
    n_frames = (x.shape[-1] - N_FFT) // HOP_LENGTH
    frames = x.unfold(-1, N_FFT, HOP_LENGTH)[:, :n_frames]  # (B, T, N_FFT), a view
    spec = torch.fft.rfft(frames * _window().to(x.device), dim=-1)  # (B, T, F) complex
    return spec.real.square() + spec.imag.square()  # no square root, unlike |X| ** 2


def recordings(audio: np.ndarray | Tensor | Sequence[np.ndarray | Tensor]) -> list[Tensor]:
    """One recording or a list of them -> a list of 1-D float tensors (shared, not copied)."""
    items = list(audio) if isinstance(audio, (list, tuple)) else [audio]
    if not items:
        raise ValueError("log_mel got an empty list: pass at least one recording")
    out = []
    for i, a in enumerate(items):
        if isinstance(a, np.ndarray):  # torch shares only writable, positive-stride memory
            a = torch.from_numpy(np.require(a, requirements=["C", "W"]))
        if not isinstance(a, Tensor):
            raise TypeError(f"recording {i} is a {type(a).__name__}: pass 1-D numpy arrays or"
                            " torch tensors (np.asarray(x, dtype=np.float32) for a list)")
        if a.dim() != 1:
            raise ValueError(f"recording {i} has shape {tuple(a.shape)}; log_mel takes 1-D mono"
                             " samples: mix channels down (plait.audio.load does) and pass a"
                             " batch as a list of 1-D recordings")
        if not a.is_floating_point():
            raise ValueError(f"recording {i} holds {a.dtype} samples; log_mel expects floats in"
                             " [-1, 1]: scale integer PCM (int16: x / 32768) or use"
                             " plait.audio.load")
        out.append(a.detach())
    return out
