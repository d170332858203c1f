"""Losses as modules (one per idea, like open_clip's ``loss.py``); a task maps a batch to one.

Cross-entropy with label smoothing (Szegedy et al. 2016, arXiv:1512.00567, §7): the target is
``(1 - eps) * one_hot(y) + eps / V`` over V classes, so per position

    loss = (1 - eps) * (-log p_y) + eps * mean_v(-log p_v)

which is exactly what ``F.cross_entropy(..., label_smoothing=eps)`` computes (the test checks it
against this formula). Positions whose target is ``ignore_index`` count for nothing.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # the target id of positions that carry no loss (padding, prompts)


class CrossEntropy(nn.Module):
    """Mean next-token cross-entropy over positions whose target is not ``ignore_index``."""

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """logits (B, T, V) or (N, V); targets (B, T) or (N,) -> scalar mean loss."""
        V = logits.size(-1)
        # cross-entropy in fp32 even under bf16 autocast: log-softmax over V needs the range
        return F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1),
                               ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)
