"""Questions about clips of moving shapes, answered by classification (``video-qa``):
a frame-sequence VisualBERT (:mod:`plait.models.video`) over the clips of
:mod:`plait.data.clips`.

A training row is one clip and one of its questions: the kind drawn first, uniformly (so each
kind is a third of the rows, though "which shape moves?" is asked of only half the clips), then
a clip that answers it and a question of that kind in a drawn phrasing. Clips are drawn from
the first ``data.n_train`` of the training split, made and rendered once before training
(:func:`plait.data.clips.draw_clips`: about 5 ms of CPU a clip, which every step would
otherwise spend again) and kept as one byte per pixel. The labels are every answer a question
can have (:data:`plait.data.clips.ANSWERS`): all of them occur in training.

The evaluation asks every question of the first ``data.n_eval`` held-out clips (each shows a
colour+kind pair no training clip shows) in its first phrasing: accuracy overall and per kind,
and for the questions about a held-out pair alone (``*_heldout_pair``: the direction of that
shape, or the kind of a moving held-out pair).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.data.clips import (
    ANSWERS,
    FRAMES,
    PALETTE,
    PHRASINGS,
    QUESTION_KINDS,
    Clip,
    clip_at,
    draw_clips,
    palette_frames,
)
from plait.data.scenes import HELDOUT_PAIRS, QA, mentioned, rephrase
from plait.inference.video import VideoAsker, question_ids
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task
from plait.training.tasks.vlm import scene_tokenizer
from plait.training.tasks.vqa_classify import AroundTower
from plait.vision import ImageConfig, normalize, write_preprocessor_config


@dataclass(frozen=True)
class ClipsData(Config):
    """``[data]`` of ``video-qa``."""

    n_frames: int = FRAMES
    image_size: int = 48
    n_train: int = 12_000  # training clips rows are drawn from (8 frames of 48 px: 220 MB)
    n_eval: int = 300  # held-out clips every question is asked of
    batch_size: int = 32  # rows: a clip and one question each
    seed: int = 0
    # how often each question kind (direction, leave, mover) is drawn for a training row
    kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    workers: int = 2  # processes drawing the training clips
    dir: str = ""  # tokenizer.json + preprocessor_config.json; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.image_size, self.n_train, self.n_eval, self.batch_size, self.workers) <= 0:
            raise ValueError("data.image_size, n_train, n_eval, batch_size and workers must be"
                             " > 0")
        if len(self.kind_weights) != len(QUESTION_KINDS) or min(self.kind_weights) < 0 or not \
                sum(self.kind_weights):
            raise ValueError(f"data.kind_weights must be {len(QUESTION_KINDS)} weights >= 0"
                             f" (for {', '.join(QUESTION_KINDS)}), not all 0")
        if self.n_frames < 2:
            raise ValueError(f"data.n_frames must be at least 2, got {self.n_frames}")


def clip_tokenizer():
    """The scenes' word tokenizer, with the clip questions' and answers' words too."""
    return scene_tokenizer([*(p for forms in PHRASINGS.values() for p in forms), *ANSWERS])


def about_heldout_pair(clip: Clip, qa: QA) -> bool:
    """Whether a question is about a held-out pair: names one, or asks for a moving one."""
    if qa.kind == "direction":
        return any(p in HELDOUT_PAIRS for p in mentioned(qa.question))
    return qa.kind == "mover" and clip.movers[0].shape.pair in HELDOUT_PAIRS


class VideoQATask(AroundTower, Task):
    """One clip and one question per row; the answer is one of :data:`ANSWERS`."""

    name = "video-qa"
    data_config = ClipsData
    units = {"loss": "nats/question", "vqa_accuracy": "fraction",
             **{f"vqa_{k}": "fraction" for k in QUESTION_KINDS},
             **{f"vqa_{k}_heldout_pair": "fraction" for k in ("direction", "mover")}}

    def __init__(self, data: ClipsData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.tokenizer = clip_tokenizer()
        self.image_config = ImageConfig(size=data.image_size, crop_size=data.image_size)
        self.criterion = CrossEntropy(train.label_smoothing)
        self.index = {a: i for i, a in enumerate(ANSWERS)}
        self._train: tuple[list[Clip], Tensor] | None = None  # drawn on first use
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            write_preprocessor_config(self.data_dir, self.image_config)

    def model_config(self, config: Config) -> Config:
        vision = {**config.vision, "image_size": self.data.image_size}
        return config.replace(vision=vision, vocab_size=self.tokenizer.vocab_size,
                              labels=ANSWERS, pad_token_id=self.tokenizer.pad_token_id,
                              n_frames=self.data.n_frames)

    def clip(self, index: int, split: str = "train") -> Clip:
        return clip_at(index, split, self.data.seed, self.data.n_frames)

    def pixels(self, clips: list[Clip]) -> Tensor:
        """Clips drawn and normalised: (B, T, 3, H, W)."""
        return self.normalised(torch.from_numpy(
            np.stack([palette_frames(c, self.data.image_size) for c in clips])))

    def normalised(self, index: Tensor) -> Tensor:
        """Palette indices (B, T, H, W) -> normalised pixels (B, T, 3, H, W)."""
        rgb = torch.from_numpy(PALETTE)[index.long()].permute(0, 1, 4, 2, 3)
        c = self.image_config
        return normalize(rgb.float() / 255.0, c.mean, c.std)

    def prepare(self) -> None:
        self.training_clips()

    def training_clips(self) -> tuple[list[Clip], Tensor]:
        """The first ``data.n_train`` training clips and their frames (palette indices)."""
        if self._train is None:
            c = self.data
            made, frames = draw_clips(c.n_train, "train", c.seed, c.n_frames, c.image_size,
                                      c.workers)
            self._train = made, torch.from_numpy(frames)
        return self._train

    def batch(self, pixels: Tensor, questions: list[str], answers: list[str]) -> Batch:
        ids, mask = question_ids(self.tokenizer, questions)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
                "labels": torch.tensor([self.index[a] for a in answers])}

    def train_batch(self, step: int, micro: int) -> Batch:
        rng = random.Random(f"{self.name}/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        rows = [random.Random(rng.random()) for _ in range(B)]  # a rank draws its rows alone
        picked = [self.row(g) for g in rows[r * B // W:(r + 1) * B // W]]
        frames = self.training_clips()[1][[i for i, _, _ in picked]]
        return self.batch(self.normalised(frames), [q for _, q, _ in picked],
                          [a for _, _, a in picked])

    def row(self, rng: random.Random) -> tuple[int, str, str]:
        """(clip index, question in a drawn phrasing, answer): the kind drawn first,
        uniformly, then a training clip that answers it (half the clips have a "which shape
        moves?")."""
        made = self.training_clips()[0]
        kind = rng.choices(QUESTION_KINDS, self.data.kind_weights)[0]
        while True:
            i = rng.randrange(len(made))
            asked = [q for q in made[i].qa if q.kind == kind]
            if asked:
                q = rng.choice(asked)
                return i, rephrase(q, rng, PHRASINGS), q.answer

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        return self.criterion(logits, batch["labels"])

    def count(self, batch: Batch) -> int:
        return len(batch["labels"])

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Every question of the held-out clips (first phrasing): accuracy by kind."""
        m = unwrap(model)
        n = self.data.n_eval if max_batches is None else min(self.data.n_eval, 64)
        asker = VideoAsker(m, self.tokenizer, self.image_config)
        held = [self.clip(i, "heldout") for i in range(n)]
        pixels = self.pixels(held)  # each clip drawn once, then one row per question
        asked = [(c, q) for c in held for q in c.qa]
        of_clip = torch.tensor([i for i, c in enumerate(held) for _ in c.qa])
        questions = [q.question for _, q in asked]
        logits = torch.cat([asker.logits(pixels[of_clip[k:k + 256]], questions[k:k + 256])
                            for k in range(0, len(asked), 256)])  # 256 clip copies at a time
        labels = torch.tensor([self.index[q.answer] for _, q in asked])
        right: dict[str, list[bool]] = defaultdict(list)
        for (c, q), ok in zip(asked, (logits.argmax(-1) == labels).tolist(), strict=True):
            right[q.kind].append(ok)
            if about_heldout_pair(c, q):
                right[f"{q.kind}_heldout_pair"].append(ok)
        out = {"loss": float(self.criterion(logits, labels)),
               "vqa_accuracy": sum(sum(right[k]) for k in QUESTION_KINDS) / len(asked)}
        names = [*QUESTION_KINDS, "direction_heldout_pair", "mover_heldout_pair"]
        return out | {f"vqa_{k}": sum(right[k]) / len(right[k]) for k in names if right[k]}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "preprocessor_config.json"]
