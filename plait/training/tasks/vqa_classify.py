"""Scene questions answered by classification (``scenes-vqa-classify``): VisualBERT or ViLBERT
(:mod:`plait.models.vl_encoders`) over the same images, questions and held-out split as the
generative VLM (:mod:`plait.training.tasks.vlm`), so the three compare on one table.

The answers are the distinct answers of the training scenes; a held-out answer outside them
(a relation naming a held-out pair, "left of the red triangle") cannot be given, and counts as
wrong: that is what a classifier over seen answers costs beside a model that writes its answer.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.data.scenes import QUESTION_KINDS, rephrase
from plait.text.base import pad_batch
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch
from plait.training.tasks.vlm import ScenesCaptionTask, ScenesData


class AroundTower:
    """A task mixin: ``train.init_from`` a CLIP (or a bare ViT) folder builds the recipe's
    classifier around that image tower, its weights copied, the rest new."""

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        from plait.models import model_class_for

        tower = getattr(source, "vision", source)
        if not hasattr(tower, "features"):
            raise ValueError(f"train.init_from {where}: a {type(source).__name__} has no ViT"
                             " image tower to read images with")
        config = self.model_config(config.replace(vision=tower.config.to_dict()))
        model = model_class_for(config)(config)
        model.vision.load_state_dict(tower.state_dict())
        if self.dist.is_main:
            print(f"init_from {where}: the image tower of a {type(source).__name__}; the rest"
                  " new", flush=True)
        return model


class ScenesVQAClassifyTask(AroundTower, ScenesCaptionTask):
    """One question per row, its answer a label among the training answers."""

    name = "scenes-vqa-classify"
    data_config = ScenesData
    units = {"loss": "nats/question", "vqa_accuracy": "fraction",
             **{f"vqa_{k}": "fraction" for k in QUESTION_KINDS}}

    def __init__(self, data: ScenesData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.answers = tuple(sorted({q.answer for s in self.items for q in s.qa}))
        self.criterion = CrossEntropy(train.label_smoothing)

    def model_config(self, config: Config) -> Config:
        vision = {**config.vision, "image_size": self.data.image_size}
        return config.replace(vision=vision, vocab_size=self.tokenizer.vocab_size,
                              labels=self.answers, pad_token_id=self.tokenizer.pad_token_id)

    def questions(self, questions: list[str], answers: list[str], uint8: Tensor) -> Batch:
        t = self.tokenizer
        ids, mask = pad_batch([[t.bos_token_id, *t.encode(q.lower())] for q in questions],
                              t.pad_token_id)
        index = {a: i for i, a in enumerate(self.answers)}
        labels = torch.tensor([index.get(a, -100) for a in answers])  # unseen: no target
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "pixel_values": self.pixels(uint8)}

    def train_batch(self, step: int, micro: int) -> Batch:
        rng = random.Random(f"{self.name}/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        picks = [rng.randrange(len(self.items)) for _ in range(B)][r * B // W:(r + 1) * B // W]
        qa = [rng.choice(self.items[i].qa) for i in picks]
        return self.questions([rephrase(q, rng) for q in qa], [q.answer for q in qa],
                              self.uint8[picks])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        return self.criterion(logits, batch["labels"])

    def count(self, batch: Batch) -> int:
        return len(batch["labels"])

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Accuracy on every question of the held-out scenes (first phrasing), by kind."""
        from plait.training.tasks import to_device

        m = unwrap(model)
        held, uint8 = self.heldout(self.data.n_eval)
        asked = [(i, q) for i, s in enumerate(held) for q in s.qa]
        right: dict[str, list[bool]] = defaultdict(list)
        total, n = 0.0, 0
        for k in range(0, len(asked), 64):
            part = asked[k:k + 64]
            batch = to_device(self.questions([q.question for _, q in part],
                                             [q.answer for _, q in part],
                                             uint8[[i for i, _ in part]]), device)
            logits = m(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
            seen = batch["labels"] != -100
            if seen.any():
                total += float(self.criterion(logits, batch["labels"])) * int(seen.sum())
                n += int(seen.sum())
            for (_, q), p in zip(part, logits.argmax(-1).tolist(), strict=True):
                right[q.kind].append(self.answers[p] == q.answer)
        out = {"loss": total / max(n, 1),
               "vqa_accuracy": sum(sum(v) for v in right.values()) / len(asked)}
        return out | {f"vqa_{k}": sum(right[k]) / len(right[k]) for k in QUESTION_KINDS
                      if right[k]}
