"""Object detection on the shape scenes: a set of boxes with colour + kind labels per picture
(:mod:`plait.models.detect`, :mod:`plait.data.detect`).

Each picture's queries are matched one to one to its shapes by the Hungarian algorithm on
DETR's cost (Carion et al. 2020, Eq. 1-2; scipy's ``linear_sum_assignment``):

    C_ij = -w_cls p_i(object) p_i(colour_j) p_i(kind_j) + w_L1 |b_i - b_j|_1
           + w_giou (1 - GIoU(b_i, b_j))

and the loss is, over the matched pairs (averaged over shapes) and every query's objectness
(averaged over queries):

    L = BCE(o, matched) + mean_j [CE(c_i, colour_j) + CE(k_i, kind_j)
        + w_L1 |b_i - b_j|_1 + w_giou (1 - GIoU(b_i, b_j))]

Training pictures are fresh scenes at every step (no held-out pair in any); the evaluation is
on held-out scenes, each holding at least one of the six pairs no training scene has:
mAP@0.5 and COCO's mAP@[.5:.95] (:mod:`plait.evaluation.detection`), and mAP@0.5 over the
held-out pairs' classes alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import detect as data
from plait.data.scenes import COLOURS, HELDOUT_PAIRS, KINDS
from plait.evaluation.detection import COCO_THRESHOLDS, average_precision
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.tasks import Batch, Task
from plait.vision import ImageConfig, normalize, to_tensor, write_preprocessor_config
from plait.vision.boxes import generalized_box_iou, hungarian_match

MAX_SHAPES = 3


@dataclass(frozen=True)
class DetectData(Config):
    """``[data]`` for detection and segmentation on the shape scenes."""

    image_size: int = 48
    batch_size: int = 64
    heldout: int = 500  # held-out scenes in the final evaluation (a fifth in periodic ones)
    w_cls: float = 2.0  # matching cost weights (DETR's)
    w_l1: float = 5.0
    w_giou: float = 2.0
    seed: int = 0
    dir: str = ""

    def __post_init__(self) -> None:
        if min(self.image_size, self.batch_size, self.heldout) <= 0:
            raise ValueError("data.image_size, batch_size and heldout must be > 0")


def pixels_of(images: list, config: ImageConfig) -> Tensor:
    """Pictures already at the model's size -> (B, 3, H, W) normalised."""
    return normalize(torch.stack([to_tensor(im) for im in images]), config.mean, config.std)


def set_loss(objectness: Tensor, pairs: list[tuple[Tensor, Tensor]]
             ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A set predictor's matched pairs over a batch: (the objectness loss, binary cross-entropy
    with 1 for every matched query and 0 for the rest; the matched (picture, query) indices;
    the matched (picture, object) indices)."""
    b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(pairs)])
    q_idx = torch.cat([q for q, _ in pairs])
    t_idx = torch.cat([t for _, t in pairs])
    target = torch.zeros_like(objectness)
    target[b_idx, q_idx] = 1.0
    return (F.binary_cross_entropy_with_logits(objectness, target), (b_idx, q_idx),
            (b_idx, t_idx))


class SceneTask(Task):
    """What detection and segmentation share: the pictures, fresh each step, and held-out
    scenes; the preprocessing written beside the weights."""

    data_config = DetectData

    def __init__(self, data_cfg: DetectData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        size = data_cfg.image_size
        self.image_config = ImageConfig(size=size, crop_size=size)
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_preprocessor_config(self.data_dir, self.image_config)

    def examples(self, step: int, micro: int) -> list[data.Example]:
        """This rank's share of the batch: fresh training scenes, a pure function of the
        seeds, ``step`` and ``micro``."""
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        first = ((self.train.seed * 1_000_003 + step) * 64 + micro) * B
        return [data.example(first + i, "train", self.data.seed, self.data.image_size)
                for i in range(r * B // W, (r + 1) * B // W)]

    def heldout(self, n: int) -> list[data.Example]:
        return [data.example(i, "heldout", self.data.seed, self.data.image_size)
                for i in range(n)]

    def files(self) -> list[Path]:
        return [self.data_dir / "preprocessor_config.json"]


class DetectTask(SceneTask):
    units = {"loss": "nats", "mAP50": "AP", "mAP": "AP", "mAP50_heldout_pairs": "AP"}

    def model_config(self, config: Config) -> Config:
        from plait.models.detect import DetectorConfig

        if not isinstance(config, DetectorConfig):
            raise ConfigError("task 'detect' needs model.arch = 'detector'")
        return config.replace(image_size=self.data.image_size, colours=tuple(COLOURS),
                              kinds=tuple(KINDS))

    def batch(self, examples: list[data.Example]) -> Batch:
        """Pictures and padded targets: colour and kind ids (-1 past a picture's shapes),
        boxes as fractions of the picture."""
        B, S = len(examples), self.data.image_size
        colour = torch.full((B, MAX_SHAPES), -1)
        kind = torch.full((B, MAX_SHAPES), -1)
        boxes = torch.zeros(B, MAX_SHAPES, 4)
        for b, ex in enumerate(examples):
            for j, lab in enumerate(ex.labels):
                c, k = lab.split(" ")
                colour[b, j], kind[b, j] = list(COLOURS).index(c), KINDS.index(k)
            boxes[b, :len(ex.labels)] = torch.from_numpy(ex.boxes) / S
        return {"pixel_values": pixels_of([ex.image for ex in examples], self.image_config),
                "colour": colour, "kind": kind, "boxes": boxes}

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(self.examples(step, micro))

    def count(self, batch: Batch) -> int:
        return len(batch["pixel_values"])

    def match(self, out: dict[str, Tensor], batch: Batch) -> list[tuple[Tensor, Tensor]]:
        """Per picture, (query ids, shape ids) of the minimum-cost matching."""
        c = self.data
        with torch.no_grad():
            p_obj = torch.sigmoid(out["objectness"])
            p_col, p_kind = out["colour"].softmax(-1), out["kind"].softmax(-1)
            pairs = []
            for b in range(len(p_obj)):
                n = int((batch["colour"][b] >= 0).sum())
                col, kind, box = batch["colour"][b, :n], batch["kind"][b, :n], batch["boxes"][b, :n]
                prob = p_obj[b, :, None] * p_col[b][:, col] * p_kind[b][:, kind]  # (Q, n)
                cost = (-c.w_cls * prob + c.w_l1 * torch.cdist(out["boxes"][b], box, p=1)
                        + c.w_giou * (1 - generalized_box_iou(out["boxes"][b], box)))
                pairs.append(hungarian_match(cost))
        return pairs

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        out = model(batch["pixel_values"])
        loss, pred, tgt = set_loss(out["objectness"], self.match(out, batch))
        if len(pred[0]):
            pred_box, box = out["boxes"][pred], batch["boxes"][tgt]
            c = self.data
            loss = loss + (F.cross_entropy(out["colour"][pred], batch["colour"][tgt])
                           + F.cross_entropy(out["kind"][pred], batch["kind"][tgt])
                           + c.w_l1 * (pred_box - box).abs().sum(-1).mean()
                           + c.w_giou * (1 - generalized_box_iou(pred_box, box).diagonal()).mean())
        return loss

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """mAP@0.5, mAP@[.5:.95] and mAP@0.5 over the held-out pairs' classes, on held-out
        scenes, and the loss on them."""
        n = self.data.heldout if max_batches is None else max(20, self.data.heldout // 5)
        examples = self.heldout(n)
        m, S = unwrap(model), self.data.image_size
        dets, truths, total = [], [], 0.0
        for i in range(0, n, 100):
            batch = {k: v.to(device) for k, v in self.batch(examples[i:i + 100]).items()}
            total += float(self.loss(model, batch)) * len(batch["colour"])
            for found in m.detect(batch["pixel_values"]):
                dets.append([(lab, s, (box * S).cpu().numpy()) for lab, s, box in found])
        truths = [list(zip(ex.labels, ex.boxes, strict=True)) for ex in examples]
        at50 = average_precision(dets, truths, 0.5)
        held = [v for k, v in at50.items() if k.startswith("AP/")
                and tuple(k[3:].split(" ")) in HELDOUT_PAIRS]
        coco = np.mean([average_precision(dets, truths, t)["mAP"] for t in COCO_THRESHOLDS])
        return {"loss": total / n, "mAP50": at50["mAP"], "mAP": float(coco),
                "mAP50_heldout_pairs": float(np.mean(held)) if held else float("nan")}
