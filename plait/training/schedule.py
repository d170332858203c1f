"""Learning-rate schedule: linear warmup, then cosine decay to a floor (Loshchilov & Hutter 2017,
arXiv:1608.03983, without restarts; the warmup follows Goyal et al. 2017, arXiv:1706.02677).

    lr(s) = lr_max * (s + 1) / W                                  s < W
    lr(s) = lr_min + (lr_max - lr_min) * (1 + cos(pi * r)) / 2    W <= s <= S, r = (s-W) / (S-W)
    lr(s) = lr_min                                                s > S

with W = warmup_steps, S = decay_steps. The rate is a pure function of the step, so a resumed
run needs nothing but the step to continue the schedule exactly.
"""

from __future__ import annotations

import math


def lr_at(step: int, lr_max: float, lr_min: float, warmup_steps: int, decay_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    if step >= decay_steps:
        return lr_min
    r = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    return lr_min + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr_max - lr_min)
