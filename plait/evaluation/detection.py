"""Detection and segmentation metrics in numpy: IoU of boxes and masks, COCO-style average
precision, and the mean IoU of a semantic segmentation.

**IoU** of two regions (boxes ``[x0, y0, x1, y1]`` or boolean masks) is
``|A ∩ B| / |A ∪ B|``, 0 where the union is empty. (GIoU, the training loss's variant, lives in
:mod:`plait.vision.boxes`.)

**Average precision** at an IoU threshold ``t``, per class: the class's detections over all
images, sorted by score (descending, stable), are matched greedily, each to the unmatched
ground truth of that class in its own image with the highest IoU >= ``t`` (a true positive),
else it is a false positive (duplicates of a matched ground truth included). After the k-th
detection

    recall_k    = TP_k / n_gt,    precision_k = TP_k / (TP_k + FP_k)

The precision is made monotone, ``p̂_k = max_{j >= k} precision_j``, and sampled at COCO's 101
recall points:

    AP = 1/101 sum_{r in {0, 0.01, ..., 1}} max{p̂_k : recall_k >= r}    (0 where none)

Classes without ground truth in any image are skipped; ``mAP`` is the mean AP over the rest,
and COCO's ``mAP@[.5:.95]`` the mean of it over the thresholds 0.5, 0.55, ..., 0.95. (Recall
is compared with ``r`` up to 1e-9, so a recall of exactly 7/10 reaches ``r = 0.70`` despite
``0.70`` being stored as 0.70000000000000007; pycocotools misses such points.)

**Mean IoU** of a semantic segmentation, from the confusion matrix ``M`` (rows: true class,
columns: predicted class):

    IoU_c = M_cc / (sum_j M_cj + sum_i M_ic - M_cc) = TP / (TP + FN + FP)
    mIoU  = mean of IoU_c over the classes with TP + FN + FP > 0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

COCO_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.round(np.arange(0.5, 0.951, 0.05), 2))  # 0.5, 0.55, ..., 0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_RECALL_TOL = 1e-9

Detection = tuple[str, float, Any]  # (label, score, box (4,) or mask (H, W))
Truth = tuple[str, Any]  # (label, box or mask)
IoU = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0."""
    positive = den > 0
    return np.where(positive, num / np.where(positive, den, 1.0), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) ``[x0, y0, x1, y1]`` boxes, in float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(high - low, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return _safe_ratio(inter, area_a[:, None] + area_b[None, :] - inter)


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, H, W) and (M, H, W) boolean masks (pixel counts, exact in float64)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return _safe_ratio(inter, union)


def _match_class(dets: list[tuple[int, float, Any]], truths: dict[int, list[Any]],
                 threshold: float, iou: IoU) -> np.ndarray:
    """(D,) 1/0 true positives of one class's detections ``(image, score, region)``, taken in
    order (already sorted by score), against ``truths`` (image -> regions)."""
    by_image: dict[int, list[int]] = {}
    for k, (img, _, _) in enumerate(dets):
        by_image.setdefault(img, []).append(k)
    tp = np.zeros(len(dets))
    for img, ks in by_image.items():
        gts = truths.get(img, [])
        if not gts:
            continue
        ious = iou(np.stack([np.asarray(dets[k][2]) for k in ks]),
                   np.stack([np.asarray(g) for g in gts]))
        taken = np.zeros(len(gts), dtype=bool)
        for row, k in enumerate(ks):  # in score order; IoU ties go to the first ground truth
            cand = np.where(taken | (ious[row] < threshold), -np.inf, ious[row])
            best = int(np.argmax(cand))
            if np.isfinite(cand[best]):
                taken[best] = True
                tp[k] = 1.0
    return tp


def interpolated_ap(tp: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point AP of a ranked list's true-positive flags ``tp`` (best first) with
    ``n_gt`` ground truths."""
    if n_gt <= 0:
        raise ValueError("AP needs at least one ground truth")
    if len(tp) == 0:
        return 0.0
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / n_gt
    precision = tp_cum / (tp_cum + fp_cum)
    monotone = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, RECALL_POINTS - _RECALL_TOL, side="left")
    sampled = np.where(first < len(recall), monotone[np.minimum(first, len(recall) - 1)], 0.0)
    return float(sampled.mean())


def average_precision(detections: Sequence[Sequence[Detection]],
                      ground_truths: Sequence[Sequence[Truth]], iou_threshold: float,
                      iou: IoU = iou_matrix) -> dict[str, float]:
    """Per-class COCO AP at ``iou_threshold`` and their mean.

    ``detections[i]``: image i's ``(label, score, region)``; ``ground_truths[i]``: its
    ``(label, region)``; a region is a (4,) box (``iou=iou_matrix``) or an (H, W) boolean
    mask (``iou=mask_iou_matrix``). Returns ``{"mAP": ..., "AP/<label>": ...}`` over the
    classes with ground truth (``mAP`` is NaN when there are none).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections, {len(ground_truths)} of "
                         "ground truth")
    truths: dict[str, dict[int, list[Any]]] = {}
    for img, items in enumerate(ground_truths):
        for label, region in items:
            truths.setdefault(label, {}).setdefault(img, []).append(region)
    found: dict[str, list[tuple[int, float, Any]]] = {label: [] for label in truths}
    for img, items in enumerate(detections):
        for label, score, region in items:
            if label in found:
                found[label].append((img, float(score), region))
    result: dict[str, float] = {}
    for label in sorted(truths):
        dets = found[label]
        order = np.argsort(-np.array([s for _, s, _ in dets], dtype=np.float64), kind="stable")
        dets = [dets[k] for k in order]
        tp = _match_class(dets, truths[label], iou_threshold, iou)
        n_gt = sum(len(v) for v in truths[label].values())
        result[f"AP/{label}"] = interpolated_ap(tp, n_gt)
    aps = list(result.values())
    return {"mAP": float(np.mean(aps)) if aps else float("nan"), **result}


def mean_average_precision(detections: Sequence[Sequence[Detection]],
                           ground_truths: Sequence[Sequence[Truth]],
                           thresholds: Sequence[float] = (0.5,),
                           iou: IoU = iou_matrix) -> float:
    """Mean over ``thresholds`` of :func:`average_precision`'s ``mAP``
    (``thresholds=COCO_THRESHOLDS`` gives mAP@[.5:.95])."""
    return float(np.mean([average_precision(detections, ground_truths, t, iou)["mAP"]
                          for t in thresholds]))


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, ``[t, p]`` = how many positions have target ``t``
    and prediction ``p``, of two integer label maps of the same (any) shape."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, target {target.shape}")
    p = pred.ravel().astype(np.int64)
    t = target.ravel().astype(np.int64)
    for name, v in (("pred", p), ("target", t)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} labels must lie in [0, {n_classes})")
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def mean_iou(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) of a confusion matrix (rows target, columns prediction); a class
    with TP + FP + FN = 0 is NaN in the per-class array and left out of the mean (the mean is
    NaN when every class is)."""
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1) - tp
    per_class = np.full(len(tp), np.nan)
    present = denom > 0
    per_class[present] = tp[present] / denom[present]
    mean = float(per_class[present].mean()) if present.any() else float("nan")
    return mean, per_class


__all__ = ["COCO_THRESHOLDS", "average_precision", "confusion_matrix", "interpolated_ap",
           "iou_matrix", "mask_iou_matrix", "mean_average_precision", "mean_iou"]
