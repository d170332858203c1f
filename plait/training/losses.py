"""Losses as modules (one per idea, like open_clip's ``loss.py``); a task maps a batch to one.

``CrossEntropy`` for tokens and labels, ``ClipLoss`` for image-text pairs (below).

Cross-entropy with label smoothing (Szegedy et al. 2016, arXiv:1512.00567, §7): the target is
``(1 - eps) * one_hot(y) + eps / V`` over V classes, so per position

    loss = (1 - eps) * (-log p_y) + eps * mean_v(-log p_v)

which is exactly what ``F.cross_entropy(..., label_smoothing=eps)`` computes (the test checks it
against this formula). Positions whose target is ``ignore_index`` count for nothing.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
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


class CTC(nn.Module):
    """Connectionist temporal classification (Graves et al. 2006): the log-likelihood of a
    target sequence summed over every monotonic alignment of it to the frames, with ``blank``
    between and around its tokens. Per row divided by the target's length, then averaged
    (``F.ctc_loss``'s ``"mean"``); an impossible alignment (a target longer than the frames)
    counts zero instead of infinity."""

    def __init__(self, blank: int, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.blank, self.ignore_index = blank, ignore_index

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """logits (B, S, V) per frame; targets (B, T), each row its tokens then
        ``ignore_index`` -> scalar mean loss."""
        lengths = (targets != self.ignore_index).sum(dim=1)  # (B,)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (S, B, V), fp32 as above
        frames = torch.full_like(lengths, logits.shape[1])
        return F.ctc_loss(log_probs, targets.clamp(min=0), frames, lengths, blank=self.blank,
                          zero_infinity=True)


# -- contrastive: CLIP's symmetric InfoNCE --------------------------------------------------------
MAX_LOGIT_SCALE = math.log(100.0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the SUM over ranks of its slice's gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, rank: int, world_size: int) -> Tensor:  # (B, D) -> (W * B, D)
        ctx.rank, ctx.world_size = rank, world_size
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # (W * B, D) -> (B, D)
        # every rank's loss touched every slice: rank r's input gets all ranks' grads of slice r
        grad = grad.contiguous()
        dist.all_reduce(grad)
        B = grad.shape[0] // ctx.world_size
        return grad[ctx.rank * B:(ctx.rank + 1) * B], None, None


def gather_with_grad(x: Tensor, rank: int, world_size: int) -> Tensor:
    """Concatenate ``x`` (B, D) from every rank into (W * B, D), keeping the autograd graph."""
    return x if world_size == 1 else _GatherWithGrad.apply(x, rank, world_size)


def infonce(logits_i2t: Tensor, logits_t2i: Tensor, labels: Tensor) -> Tensor:
    """(CE(image rows) + CE(text rows)) / 2; ``labels[i]`` is row i's matching column."""
    return (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the global batch of ``world_size`` data-parallel ranks.

    With L2-normalised image features I (N, D), text features T (N, D) for N matching pairs and
    a learned temperature s = exp(t) (Radford et al. 2021, arXiv:2103.00020, Fig. 3; van den
    Oord et al. 2018, arXiv:1807.03748, Eq. 4):

        L = ( CE(s * I T^T, arange(N)) + CE(s * T I^T, arange(N)) ) / 2

    Row i of ``s * I T^T`` scores image i against every text; its "class" is text i. s is
    clipped at 100 (t <= ln 100) so the softmax cannot collapse onto one pair.

    Data parallel: each rank holds B of the N = W * B pairs. It gathers every rank's features
    with a differentiable all-gather (its backward all-reduces the gradient and keeps this
    rank's slice) and scores its own B rows against all N columns, labels offset by
    ``rank * B`` (open_clip's ``local_loss=True, gather_with_grad=True``). The mean over ranks
    of these local losses is L over the global batch, and DDP's gradient averaging gives the
    one-process gradient exactly: 2 processes == 1 process (tests/test_clip_train.py).
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
        self.rank, self.world_size = rank, world_size

    def logits(self, image_features: Tensor, text_features: Tensor,
               logit_scale: Tensor) -> tuple[Tensor, Tensor]:
        """Local rows vs global columns: (B, W*B) image->text and text->image logits."""
        img = F.normalize(image_features, dim=-1)  # (B, D)
        txt = F.normalize(text_features, dim=-1)  # (B, D)
        all_img = gather_with_grad(img, self.rank, self.world_size)  # (W*B, D)
        all_txt = gather_with_grad(txt, self.rank, self.world_size)
        s = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        return s * img @ all_txt.T, s * txt @ all_img.T

    def forward(self, image_features: Tensor, text_features: Tensor,
                logit_scale: Tensor) -> Tensor:
        """Args: features (B, D) each, unnormalised, row i matching row i; ``logit_scale`` the
        scalar log-temperature t. Returns the scalar loss."""
        if image_features.shape != text_features.shape:
            raise ValueError(f"image features {tuple(image_features.shape)} and text features"
                             f" {tuple(text_features.shape)} must have the same shape (B, D)")
        B = image_features.shape[0]
        logits_i2t, logits_t2i = self.logits(image_features, text_features, logit_scale)
        labels = torch.arange(B, device=image_features.device) + self.rank * B  # (B,)
        return infonce(logits_i2t, logits_t2i, labels)
