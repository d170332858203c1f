"""SpecAugment (Park et al. 2019, arXiv:1904.08779, §2): mask random bands of a log-mel batch.

A recogniser trained on a few synthetic voices learns their exact formants; hiding a band of
mel channels (frequency masking) or a stretch of frames (time masking) makes it read the rest,
which is what carries over to a voice it has never heard. Time warping, the paper's third
part, is left out: espeak-ng's speed already varies per utterance (``plait.data.speech``).
Instead the mel axis can be warped (``warp``): each utterance's spectrum stretched or squeezed
by a factor near 1, as vocal tract length perturbation does (Jaitly and Hinton 2013): a voice
whose formants sit a few percent higher or lower than any training voice's is one the model
has then seen.

Masks are filled with each utterance's mean feature (the paper's "mean value"), and time masks
fall inside the spoken part of the window (``lengths``), never only on the padded silence
after it, where they would hide nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plait.config import Config


@dataclass(frozen=True)
class SpecAugment(Config):
    """How many masks of which largest width; the defaults hide nothing."""

    freq_masks: int = 0  # bands of mel channels per utterance
    freq_width: int = 0  # widest band, in mel channels (F in the paper)
    time_masks: int = 0  # stretches of frames per utterance
    time_width: int = 0  # longest stretch, in frames of 10 ms (T in the paper)
    # a time mask covers at most this share of the spoken frames: a 40-frame mask on a 0.6 s
    # "seven" would hide the whole word and teach the model to guess (the paper's p)
    time_share: float = 0.2
    warp: float = 0.0  # mel axis scaled by a factor uniform in [1 - warp, 1 + warp]

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"SpecAugment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.warp < 0.5:
            raise ValueError(f"SpecAugment.warp must be in [0, 0.5), got {self.warp}")
        if not 0.0 <= self.time_share <= 1.0:
            raise ValueError(f"SpecAugment.time_share must be in [0, 1], got {self.time_share}")

    @property
    def active(self) -> bool:
        return bool(self.freq_masks * self.freq_width or self.time_masks * self.time_width
                    or self.warp)


def spec_augment(features: Tensor, lengths: Tensor, cfg: SpecAugment,
                 generator: torch.Generator) -> Tensor:
    """A masked copy of ``features`` (B, n_mels, T); ``lengths`` (B,) are the spoken frames of
    each row. The masks are a pure function of ``generator``'s state."""
    if not cfg.active:
        return features
    if cfg.warp:
        features = warp_mels(features, 1 + cfg.warp * (2 * torch.rand(len(features),
                                                                       generator=generator) - 1))
    B, M, T = features.shape
    keep = torch.ones(B, M, T, dtype=torch.bool)
    for _ in range(cfg.freq_masks):
        keep &= ~_band(B, M, torch.full((B,), cfg.freq_width), torch.full((B,), M),
                       generator)[:, :, None]
    spoken = lengths.clamp(1, T)
    widest = torch.minimum(torch.full((B,), cfg.time_width),
                           (spoken.float() * cfg.time_share).long())
    for _ in range(cfg.time_masks):
        keep &= ~_band(B, T, widest, spoken, generator)[:, None, :]
    mean = features.float().mean(dim=(1, 2), keepdim=True).to(features.dtype)  # (B, 1, 1)
    return torch.where(keep, features, mean)


def warp_mels(features: Tensor, factors: Tensor) -> Tensor:
    """Each row's mel axis scaled by its factor (B,): output channel m reads input channel
    m / factor, linearly interpolated (a factor above 1 moves formants up); channels read
    beyond the top repeat the last one."""
    B, M, _ = features.shape
    pos = (torch.arange(M, dtype=torch.float32)[None] / factors[:, None]).clamp(max=M - 1)
    lo = pos.floor().long()  # (B, M)
    frac = (pos - lo).to(features.dtype)[:, :, None]  # (B, M, 1)
    hi = (lo + 1).clamp(max=M - 1)
    rows = torch.arange(B)[:, None]
    return features[rows, lo] * (1 - frac) + features[rows, hi] * frac


def _band(B: int, size: int, widest: Tensor, within: Tensor, g: torch.Generator) -> Tensor:
    """(B, size) bool: per row a run of width uniform in [0, widest] starting uniformly so that
    it ends inside the first ``within`` positions."""
    width = (torch.rand(B, generator=g) * (widest + 1).float()).long()  # 0..widest
    start = (torch.rand(B, generator=g) * (within - width + 1).clamp(min=1).float()).long()
    pos = torch.arange(size)[None]  # (1, size)
    return (pos >= start[:, None]) & (pos < (start + width)[:, None])
