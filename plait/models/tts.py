"""Text to log-mel: a non-autoregressive Transformer TTS that learns its own alignment.

FastSpeech's shape (Ren et al. 2019, arXiv:1905.09263: encoder, durations, length regulator,
decoder), with the durations found by Glow-TTS's monotonic alignment search (Kim et al. 2020,
arXiv:2005.11129) instead of a teacher model:

    h = Encoder(chars)                                  (B, N, C)
    mu = W_mu h                                         each character's mean frame group
    A = argmax over monotonic paths of sum_j log N(y_j; mu_a(j), I)   (MAS, no gradient)
    y_hat = Decoder(A^T h + positions) W_out            (B, T/R, R * n_mels)
    d_hat = DurationPredictor(stop_grad(h))             log(1 + frames) per character

Frames are grouped ``reduction`` at a time (R = 2: 50 groups a second). The losses: the
Gaussian prior ``||y - A^T mu||^2 / 2`` (it drives the alignment), L1 between ``y_hat`` and
``y``, and the squared error of the log durations. At inference the predicted durations
(rounded, at least one group) replace A. The features are :func:`plait.audio.log_mel`'s, so a
recogniser hears them directly and :mod:`plait.audio.vocoder` turns them into a waveform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from plait.models.base import TransformerConfig, build_stack
from plait.nn import AttnInputs, Linear, PreNormBlock, Sinusoidal, make_attn_mask, normal_init

ALPHABET = " abcdefghijklmnopqrstuvwxyz?',."  # id 0 is padding; characters from 1


@dataclass(frozen=True)
class TTSConfig(TransformerConfig):
    """Character encoder, duration predictor and frame decoder."""

    n_layer: int = 3  # encoder blocks
    n_decoder_layer: int = 3
    n_head: int = 4
    n_embd: int = 192
    n_inner: int | None = 768
    mlp: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    bias: bool = True
    dropout: float = 0.0
    attn_scale: float | None = None
    block_size: int = 256  # longest text in characters
    max_groups: int = 512  # longest output, in frame groups (512 x 2 x 10 ms = 10 s)
    n_mels: int = 80
    reduction: int = 2  # frames per decoder position
    alphabet: str = ALPHABET

    def __post_init__(self) -> None:
        self.check_transformer(("n_decoder_layer", "block_size", "max_groups", "n_mels",
                                "reduction"))
        if self.n_embd % 2:
            raise ValueError(f"TTSConfig.n_embd must be even (sinusoidal positions), got"
                             f" {self.n_embd}")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError("TTSConfig.alphabet must not repeat a character")

    @property
    def n_chars(self) -> int:
        return len(self.alphabet) + 1

    @property
    def frame_dim(self) -> int:
        return self.n_mels * self.reduction


class TTS(nn.Module):
    """``model(chars, char_mask, groups, group_mask) -> (y_hat, mu_aligned, durations, log_d)``
    for training; ``model.synthesise(chars, char_mask)`` -> features (B, n_mels, frames)."""

    config_class = TTSConfig

    def __init__(self, config: TTSConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.n_chars, c.n_embd, padding_idx=0)
        self.pos = Sinusoidal(c.n_embd)
        stack = dict(block=PreNormBlock, norm=c.norm, final_norm=True, bias=c.bias,
                     attn_scale=c.attn_scale)
        self.encoder = build_stack(c, **stack)
        self.decoder = build_stack(c, n_layer=c.n_decoder_layer, **stack)
        self.to_mu = Linear(c.n_embd, c.frame_dim)
        self.to_frames = Linear(c.n_embd, c.frame_dim)
        self.durations = nn.Sequential(Linear(c.n_embd, c.n_embd), nn.GELU(),
                                       Linear(c.n_embd, 1))
        self.apply(normal_init)

    def _stack(self, stack: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
        T = x.shape[1]
        x = x + self.pos.embed(torch.arange(T, device=x.device)[None]).to(x.dtype)
        attn, _ = make_attn_mask(T, T, causal=False, key_padding=mask)
        return stack(x, AttnInputs(attn, False))

    def encode(self, chars: Tensor, char_mask: Tensor) -> Tensor:
        """(B, N) character ids -> (B, N, C)."""
        if chars.shape[1] > self.config.block_size:
            raise ValueError(f"the text has {chars.shape[1]} characters; this model reads at"
                             f" most {self.config.block_size}")
        return self._stack(self.encoder, self.embed(chars) * math.sqrt(self.config.n_embd),
                           char_mask)

    def decode(self, expanded: Tensor, group_mask: Tensor) -> Tensor:
        """(B, G, C) character states repeated over their frame groups -> (B, G, R * M)."""
        return self.to_frames(self._stack(self.decoder, expanded, group_mask))

    def log_durations(self, h: Tensor) -> Tensor:
        return self.durations(h.detach()).squeeze(-1)  # (B, N)

    def forward(self, chars: Tensor, char_mask: Tensor, groups: Tensor, group_mask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Teacher-forced: (y_hat (B, G, R*M), A^T mu (B, G, R*M), durations (B, N) from the
        alignment, predicted log durations (B, N))."""
        h = self.encode(chars, char_mask)
        mu = self.to_mu(h)  # (B, N, R*M)
        with torch.no_grad():
            logp = -0.5 * torch.cdist(mu.float(), groups.float()).square()  # (B, N, G)
            path = monotonic_alignment(logp, char_mask.sum(1), group_mask.sum(1))
        path = path.to(h.dtype)
        aligned = path.transpose(1, 2) @ mu  # (B, G, R*M)
        y_hat = self.decode(path.transpose(1, 2) @ h, group_mask)
        return y_hat, aligned, path.sum(-1), self.log_durations(h)

    @torch.no_grad()
    def synthesise(self, chars: Tensor, char_mask: Tensor, pace: float = 1.0) -> Tensor:
        """Log-mel features (B, n_mels, frames) of some texts, the shorter ones padded with
        -1.5, below any recording's floor (silence); ``pace`` > 1 speaks slower."""
        c = self.config
        h = self.encode(chars, char_mask)
        d = (torch.exp(self.log_durations(h)) - 1).mul(pace).round().clamp(min=1)
        d = d.masked_fill(char_mask == 0, 0).long()  # (B, N)
        G = int(d.sum(1).max())
        if c.max_groups < G:
            raise ValueError(f"the speech would last {G * c.reduction / 100:.1f} s; this model"
                             f" speaks at most {c.max_groups * c.reduction / 100:.1f} s")
        path = durations_to_path(d, G).to(h.dtype)  # (B, N, G)
        group_mask = path.sum(1) > 0
        y = self.decode(path.transpose(1, 2) @ h, group_mask.long())  # (B, G, R*M)
        y = y.masked_fill(~group_mask[..., None], -1.5)
        B = y.shape[0]
        return y.reshape(B, G * c.reduction, c.n_mels).transpose(1, 2)  # (B, M, frames)


def durations_to_path(d: Tensor, G: int) -> Tensor:
    """Durations (B, N) -> a 0/1 alignment (B, N, G): character i covers groups
    [sum(d[:i]), sum(d[:i+1]))."""
    end = d.cumsum(1)  # (B, N)
    start = end - d
    g = torch.arange(G, device=d.device)[None, None]  # (1, 1, G)
    return ((g >= start[..., None]) & (g < end[..., None])).long()


def monotonic_alignment(logp: Tensor, n_chars: Tensor, n_groups: Tensor) -> Tensor:
    """The most likely monotonic alignment (Glow-TTS's MAS): each of the first ``n_groups[b]``
    frame groups goes to one character, in order, every one of the first ``n_chars[b]``
    characters gets at least one group, the path starts at character 0 and ends at the last.
    ``logp`` (B, N, G) is log p(group j | character i). Returns a 0/1 path (B, N, G).

    Dynamic programming over groups: Q[i, j] = logp[i, j] + max(Q[i, j-1], Q[i-1, j-1]),
    vectorised over the batch and the characters."""
    B, N, G = logp.shape
    if bool((n_groups < n_chars).any()):
        raise ValueError("every character needs at least one frame group: a text is longer"
                         " than its audio")
    logp = logp.float().masked_fill(
        torch.arange(N, device=logp.device)[None, :, None] >= n_chars[:, None, None],
        -math.inf)
    q = torch.full((B, N), -math.inf, device=logp.device)
    q[:, 0] = logp[:, 0, 0]
    moved = torch.zeros(B, N, G, dtype=torch.bool, device=logp.device)
    for j in range(1, G):
        diag = torch.cat([q.new_full((B, 1), -math.inf), q[:, :-1]], 1)
        step = diag > q
        new = torch.maximum(q, diag) + logp[:, :, j]
        live = (j < n_groups)[:, None]
        moved[:, :, j] = step & live
        q = torch.where(live, new, q)
    path = torch.zeros(B, N, G, dtype=torch.long, device=logp.device)
    i = (n_chars - 1).clone()
    rows = torch.arange(B, device=logp.device)
    for j in range(G - 1, -1, -1):
        live = j < n_groups
        path[rows[live], i[live], j] = 1
        i = i - (moved[rows, i, j] & live).long()
    return path
