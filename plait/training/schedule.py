"""Learning-rate schedule: linear warmup, then a decay to a floor, cosine (Loshchilov & Hutter
2017, arXiv:1608.03983, without restarts) or linear (Bergsma et al. 2025, arXiv:2502.15938,
find linear decay to zero the better end point). The warmup follows Goyal et al. 2017,
arXiv:1706.02677.

    lr(s) = lr_max * (s + 1) / W                                  s < W
    lr(s) = lr_min + (lr_max - lr_min) * (1 + cos(pi * r)) / 2    W <= s <= S   (cosine)
    lr(s) = lr_min + (lr_max - lr_min) * (1 - r)                  W <= s <= S   (linear)
    lr(s) = lr_min                                                s > S

with W = warmup_steps, S = decay_steps, r = (s - W) / (S - W). The rate is a pure function of
the step, so a resumed run needs nothing but the step to continue the schedule exactly.
"""

from __future__ import annotations

import math
from typing import Literal

Decay = Literal["cosine", "linear"]


def lr_at(step: int, lr_max: float, lr_min: float, warmup_steps: int, decay_steps: int,
          decay: Decay = "cosine") -> float:
    """The learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    if step >= decay_steps:
        return lr_min
    r = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    if decay == "linear":
        return lr_min + (1.0 - r) * (lr_max - lr_min)
    if decay == "cosine":
        return lr_min + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr_max - lr_min)
    raise ValueError(f"unknown lr decay {decay!r} (allowed: cosine, linear)")
