"""Video captioning of the moving-shape clips (:mod:`plait.data.clips`): the model reads a clip
and names each shape's colour, kind and motion (:mod:`plait.models.video_caption`); the
caption is the sentence those facts make (:mod:`plait.data.clip_captions`).

Each clip's queries are matched one to one to its shapes by the Hungarian algorithm on
``-p(object) p(colour) p(kind) p(event)``, and the loss is binary cross-entropy of every
query's objectness, cross-entropy of every pixel's colour (or background), and, over matched
pairs, cross-entropy of colour, kind and event.

Training clips are fresh at every step, none showing a held-out colour + kind pair; the
evaluation captions held-out clips (each showing one) and scores content (the share of
captions stating exactly the clip's facts), fact precision and recall, and BLEU-4 against
the clip's own sentence (sacreBLEU).
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
from plait.data.clip_captions import caption, content_scores, sentence
from plait.data.clips import Clip, clip_at, palette_frames
from plait.data.scenes import COLOURS, KINDS
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.tasks import Batch, Task
from plait.training.tasks.detect import set_loss
from plait.vision import ImageConfig, normalize, write_preprocessor_config
from plait.vision.boxes import hungarian_match

MAX_SHAPES = 3


@dataclass(frozen=True)
class VideoCaptionData(Config):
    image_size: int = 48
    n_frames: int = 8
    batch_size: int = 32
    heldout: int = 500  # held-out clips in the final evaluation (a fifth in periodic ones)
    seed: int = 0
    dir: str = ""

    def __post_init__(self) -> None:
        if min(self.image_size, self.batch_size, self.heldout) <= 0 or self.n_frames < 2:
            raise ValueError("data.image_size, batch_size and heldout must be > 0 and"
                             " n_frames >= 2")


def clip_pixels(frames: list[list], config: ImageConfig) -> Tensor:
    """Clips as lists of frames (PIL images at the model's size) -> (B, T, 3, H, W)."""
    x = torch.from_numpy(np.stack([np.stack([np.asarray(f) for f in clip]) for clip in frames]))
    x = x.permute(0, 1, 4, 2, 3).float() / 255.0
    return normalize(x.flatten(0, 1), config.mean, config.std).reshape(x.shape)


class VideoCaptionTask(Task):
    data_config = VideoCaptionData
    units = {"loss": "nats", "content": "fraction", "fact_precision": "fraction",
             "fact_recall": "fraction", "bleu4": "BLEU"}

    def __init__(self, data_cfg: VideoCaptionData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        size = data_cfg.image_size
        self.image_config = ImageConfig(size=size, crop_size=size)
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_preprocessor_config(self.data_dir, self.image_config)

    def model_config(self, config: Config) -> Config:
        from plait.models.video_caption import ClipCaptionerConfig

        if not isinstance(config, ClipCaptionerConfig):
            raise ConfigError("task 'video-caption' needs model.arch = 'clip-captioner'")
        return config.replace(image_size=self.data.image_size, n_frames=self.data.n_frames,
                              colours=tuple(COLOURS), kinds=tuple(KINDS))

    def batch(self, clips: list[Clip]) -> Batch:
        from plait.models.video_caption import EVENTS

        B = len(clips)
        targets = {k: torch.full((B, MAX_SHAPES), -1) for k in ("colour", "kind", "event")}
        for b, clip in enumerate(clips):
            for j, t in enumerate(clip.tracks):
                targets["colour"][b, j] = list(COLOURS).index(t.shape.colour)
                targets["kind"][b, j] = KINDS.index(t.shape.kind)
                targets["event"][b, j] = EVENTS.index((t.motion, t.direction))
        frames = [clip.frames(self.data.image_size) for clip in clips]
        # each 2 x 2 block's palette index (its top-left pixel's): 0 the background, else 1 +
        # the colour's index in COLOURS
        pixel = torch.from_numpy(np.stack([palette_frames(c, self.data.image_size)[:, ::2, ::2]
                                           for c in clips]).astype(np.int64))
        return {"frames": clip_pixels(frames, self.image_config), "pixel_colour": pixel,
                **targets}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        first = ((self.train.seed * 1_000_003 + step) * 64 + micro) * B
        return self.batch([clip_at(first + i, "train", self.data.seed, self.data.n_frames)
                           for i in range(r * B // W, (r + 1) * B // W)])

    def count(self, batch: Batch) -> int:
        return len(batch["frames"])

    def match(self, out: dict[str, Tensor], batch: Batch) -> list[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            p = torch.sigmoid(out["objectness"])
            probs = {k: out[k].softmax(-1) for k in ("colour", "kind", "event")}
            pairs = []
            for b in range(len(p)):
                n = int((batch["colour"][b] >= 0).sum())
                joint = p[b, :, None]
                for k, pk in probs.items():
                    joint = joint * pk[b][:, batch[k][b, :n]]
                pairs.append(hungarian_match(-joint))
        return pairs

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        out = model(batch["frames"])
        loss, pred, tgt = set_loss(out["objectness"], self.match(out, batch))
        if "pixel_colour" in batch:
            loss = loss + F.cross_entropy(out["pixel_colour"].flatten(0, 3),
                                          batch["pixel_colour"].flatten())
        for k in ("colour", "kind", "event"):
            loss = loss + F.cross_entropy(out[k][pred], batch[k][tgt])
        return loss

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        import sacrebleu

        n = self.data.heldout if max_batches is None else max(20, self.data.heldout // 5)
        clips = [clip_at(i, "heldout", self.data.seed, self.data.n_frames) for i in range(n)]
        m, captions, total = unwrap(model), [], 0.0
        for i in range(0, n, 50):
            batch = {k: v.to(device) for k, v in self.batch(clips[i:i + 50]).items()}
            total += float(self.loss(model, batch)) * len(batch["frames"])
            captions += [sentence(f, m.config.colours) for f in m.describe(batch["frames"])]
        refs = [caption(c) for c in clips]
        return {"loss": total / n, **content_scores(captions, clips),
                "bleu4": sacrebleu.corpus_bleu(captions, [refs]).score}

    def files(self) -> list[Path]:
        return [self.data_dir / "preprocessor_config.json"]
