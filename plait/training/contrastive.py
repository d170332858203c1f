"""Symmetric InfoNCE, the CLIP loss, with features gathered across data-parallel ranks.

With L2-normalised image features I (N, D), text features T (N, D) for N matching pairs and a
learned temperature s = exp(t) (Radford et al. 2021, arXiv:2103.00020, Fig. 3; van den Oord
et al. 2018, arXiv:1807.03748, Eq. 4):

    L = ( CE(s * I T^T, arange(N)) + CE(s * T I^T, arange(N)) ) / 2

Row i of ``s * I T^T`` scores image i against every text; its "class" is text i. CLIP clips s at
100 (t <= ln 100) so the softmax cannot collapse onto one pair.

Data parallel: each rank holds B of the N = W * B pairs. It gathers every rank's features with a
DIFFERENTIABLE all-gather (``torch.distributed.nn.functional.all_gather``, whose backward sums
the gradients sent back to each rank) and scores its own B rows against all N columns, labels
offset by ``rank * B`` (open_clip's ``local_loss=True, gather_with_grad=True``). The mean over
ranks of these local losses is L over the global batch, and DDP's gradient averaging gives
exactly the one-process gradient: 2 processes == 1 process (tests/test_clip_train.py).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

MAX_LOGIT_SCALE = math.log(100.0)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, D) from every rank into (W * B, D), keeping the autograd graph."""
    _, world_size = world()
    if world_size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def clip_logits(image_features: Tensor, text_features: Tensor,
                logit_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Local rows vs global columns: (B, W*B) image->text and text->image logits."""
    img = F.normalize(image_features, dim=-1)  # (B, D)
    txt = F.normalize(text_features, dim=-1)  # (B, D)
    all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)  # (W*B, D)
    s = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    return s * img @ all_txt.T, s * txt @ all_img.T


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the (global) batch; pair i of this rank is global pair rank*B + i.

    Args:
        image_features, text_features: (B, D), not necessarily normalised; row i matches row i.
        logit_scale: scalar log-temperature t (s = exp(t), clamped at 100).
    """
    if image_features.shape != text_features.shape:
        raise ValueError(f"image features {tuple(image_features.shape)} and text features"
                         f" {tuple(text_features.shape)} must have the same shape (B, D)")
    rank, _ = world()
    B = image_features.shape[0]
    logits_i2t, logits_t2i = clip_logits(image_features, text_features, logit_scale)
    labels = torch.arange(B, device=image_features.device) + rank * B  # (B,)
    return (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2
