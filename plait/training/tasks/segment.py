"""Semantic and instance segmentation of the shape scenes (:mod:`plait.models.segment`): per
pixel, the background or a colour + kind; per shape, its mask.

    L = mean_pixels CE(colour logits, colour or background)
        + mean_shape_pixels CE(kind logits, kind)

Training pictures are fresh scenes at every step; the evaluation is on held-out scenes (each
holding at least one pair no training scene has): mean IoU over the 25 classes (background and
the 24 colour + kind pairs, those present in the held-out pictures or predicted), mean IoU over
the held-out pairs' classes alone, and mask AP at IoU 0.5 and COCO's [.5:.95]
(:mod:`plait.evaluation.detection`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import detect as data
from plait.data.scenes import COLOURS, HELDOUT_PAIRS, KINDS
from plait.evaluation.detection import (
    COCO_THRESHOLDS,
    average_precision,
    confusion_matrix,
    mask_iou_matrix,
    mean_iou,
)
from plait.training.distributed import unwrap
from plait.training.tasks import Batch
from plait.training.tasks.detect import SceneTask, pixels_of


class SegmentTask(SceneTask):
    units = {"loss": "nats/pixel", "mIoU": "IoU", "mIoU_heldout_pairs": "IoU",
             "mask_AP50": "AP", "mask_AP": "AP"}

    def model_config(self, config: Config) -> Config:
        from plait.models.segment import SegmenterConfig

        if not isinstance(config, SegmenterConfig):
            raise ConfigError("task 'segment' needs model.arch = 'segmenter'")
        return config.replace(image_size=self.data.image_size, colours=tuple(COLOURS),
                              kinds=tuple(KINDS))

    def batch(self, examples: list[data.Example]) -> Batch:
        """Pictures, each pixel's colour id (0 background) and kind id (-1 background)."""
        classes = torch.from_numpy(np.stack([ex.classes for ex in examples]))  # 0 or 1 + label
        nk = len(KINDS)
        colour = torch.where(classes > 0, 1 + (classes - 1) // nk, 0)
        kind = torch.where(classes > 0, (classes - 1) % nk, -1)
        return {"pixel_values": pixels_of([ex.image for ex in examples], self.image_config),
                "colour": colour, "kind": kind}

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(self.examples(step, micro))

    def count(self, batch: Batch) -> int:
        return len(batch["pixel_values"])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        out = model(batch["pixel_values"])
        return (F.cross_entropy(out["colour"], batch["colour"])
                + F.cross_entropy(out["kind"], batch["kind"], ignore_index=-1))

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        n = self.data.heldout if max_batches is None else max(20, self.data.heldout // 5)
        examples = self.heldout(n)
        m = unwrap(model)
        n_classes = 1 + len(data.LABELS)
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        found, truths, total = [], [], 0.0
        for i in range(0, n, 100):
            chunk = examples[i:i + 100]
            batch = {k: v.to(device) for k, v in self.batch(chunk).items()}
            total += float(self.loss(model, batch)) * len(chunk)
            ids, prob = m.predict(batch["pixel_values"])
            for ex, pred, p in zip(chunk, ids, prob, strict=True):
                confusion += confusion_matrix(pred.cpu().numpy(), ex.classes, n_classes)
                found.append(m.instances(pred, p))
                truths.append(list(zip(ex.labels, ex.masks, strict=True)))
        miou, per_class = mean_iou(confusion)
        held = [per_class[1 + data.LABELS.index(f"{c} {k}")] for c, k in HELDOUT_PAIRS]
        ap = [average_precision(found, truths, t, iou=mask_iou_matrix)["mAP"]
              for t in COCO_THRESHOLDS]
        return {"loss": total / n, "mIoU": miou, "mIoU_heldout_pairs": float(np.nanmean(held)),
                "mask_AP50": float(ap[0]), "mask_AP": float(np.mean(ap))}
