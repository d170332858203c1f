"""Axis-aligned boxes in torch: areas, formats, pairwise (generalized) IoU, Hungarian matching
and the tight box of a mask.

A box is ``[x0, y0, x1, y1]`` with ``x1 >= x0`` and ``y1 >= y0`` (pixel edges or fractions of
the picture; the functions do not care which). For boxes ``A`` and ``B``:

    |A|      = (x1 - x0) (y1 - y0)
    |A ∩ B|  = max(0, min(x1_A, x1_B) - max(x0_A, x0_B)) * max(0, min(y1_A, y1_B) - max(y0_A, y0_B))
    |A ∪ B|  = |A| + |B| - |A ∩ B|
    IoU      = |A ∩ B| / |A ∪ B|                   (0 where |A ∪ B| = 0)
    GIoU     = IoU - (|C| - |A ∪ B|) / |C|         (Rezatofighi et al. 2019, arXiv:1902.09630)

with ``C`` the smallest box enclosing both. IoU lies in [0, 1] and GIoU in (-1, 1] with
GIoU <= IoU; unlike IoU, GIoU still has a gradient when the boxes do not overlap, so
``1 - GIoU`` serves as a box loss. Its denominators are clamped at a small ``eps`` so that
degenerate (zero-area) boxes give finite values and gradients.

The centre format is ``[cx, cy, w, h]`` with ``cx = (x0 + x1) / 2``, ``w = x1 - x0``.

:func:`hungarian_match` solves the assignment problem ``min_σ sum_j C[σ(j), j]`` over
one-to-one maps between rows and columns of a cost matrix (scipy's ``linear_sum_assignment``,
imported when first used).
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """(...) areas of (..., 4) ``[x0, y0, x1, y1]`` boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) ``[cx, cy, w, h]`` -> ``[x0, y0, x1, y1]``."""
    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) ``[x0, y0, x1, y1]`` -> ``[cx, cy, w, h]``."""
    low, high = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(low + high) / 2, high - low], dim=-1)


def _intersection_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(N, M) pairwise |A ∩ B| and |A ∪ B| of (N, 4) and (M, 4) boxes."""
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (high - low).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, M) IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4); 0 where the
    union is empty (both boxes degenerate), never NaN."""
    inter, union = _intersection_union(a, b)
    positive = union > 0
    safe = torch.where(positive, union, torch.ones_like(union))
    return torch.where(positive, inter / safe, torch.zeros_like(inter))


def generalized_box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """(N, M) GIoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4).

    ``IoU - (|C| - |A ∪ B|) / |C|`` with ``C`` the enclosing box; both denominators are
    clamped at ``eps`` so degenerate boxes give finite values and gradients (for boxes whose
    areas are well above ``eps`` the clamp changes nothing). Differentiable in both inputs;
    for matched pairs take ``generalized_box_iou(p, t).diagonal()``.
    """
    inter, union = _intersection_union(a, b)
    iou = inter / union.clamp(min=eps)
    low = torch.minimum(a[:, None, :2], b[None, :, :2])
    high = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = (high - low).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of a (Q, T) cost matrix (Q predictions, T targets).

    Solved by ``scipy.optimize.linear_sum_assignment`` on the detached matrix as CPU float64;
    ``min(Q, T)`` pairs are returned as ``(pred_idx, target_idx)``, int64 tensors on
    ``cost``'s device, in scipy's order: sorted by prediction (row) index, so ``target_idx`` is
    generally not sorted. Either side empty gives two empty tensors. The matrix must be finite
    (scipy rejects NaN and reports an all-infinite assignment as infeasible).
    """
    from scipy.optimize import linear_sum_assignment

    if cost.dim() != 2:
        raise ValueError(f"cost must be (Q, T), got shape {tuple(cost.shape)}")
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=cost.device)
        return empty, empty.clone()
    rows, cols = linear_sum_assignment(cost.detach().to("cpu", torch.float64).numpy())
    return (torch.as_tensor(rows, dtype=torch.int64, device=cost.device),
            torch.as_tensor(cols, dtype=torch.int64, device=cost.device))


def masks_to_boxes(masks: Tensor) -> Tensor:
    """(N, 4) float32 tight boxes of (N, H, W) masks in pixel-edge coordinates: ``x0`` the
    first column holding a pixel, ``x1`` the last one plus 1 (rows likewise); an empty mask
    gives ``[0, 0, 0, 0]``."""
    if masks.dim() != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    masks = masks.bool()
    n, height, width = masks.shape
    if n == 0 or height == 0 or width == 0:
        return torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    cols = masks.any(dim=1).to(torch.int64)  # (N, W)
    rows = masks.any(dim=2).to(torch.int64)  # (N, H)
    x0 = cols.argmax(dim=1)
    x1 = width - cols.flip(1).argmax(dim=1)
    y0 = rows.argmax(dim=1)
    y1 = height - rows.flip(1).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    nonempty = cols.any(dim=1)
    return torch.where(nonempty[:, None], boxes, torch.zeros_like(boxes))


__all__ = ["box_area", "box_iou", "cxcywh_to_xyxy", "generalized_box_iou", "hungarian_match",
           "masks_to_boxes", "xyxy_to_cxcywh"]
