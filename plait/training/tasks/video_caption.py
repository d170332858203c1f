"""Video captioning of the moving-shape clips (:mod:`plait.data.clips`): the model reads a clip
and names each shape's colour, kind and motion (:mod:`plait.models.video_caption`); the
caption is the sentence those facts make (:mod:`plait.data.clip_captions`).

The model reads one slot per colour (a clip's colours are distinct); training reads each clip's
own colours and absent ones up to ``MAX_SHAPES + 1`` slots, and the loss is binary
cross-entropy of every slot's objectness (is that colour's shape in the clip?), cross-entropy of
every pixel's colour (or background), and, over the slots that hold a shape, cross-entropy of
its kind and its event.

Training clips are fresh at every step, none showing a held-out colour + kind pair; the
evaluation captions held-out clips (each showing one) and scores content (the share of
captions stating exactly the clip's facts), fact precision and recall, and BLEU-4 against
the clip's own sentence (sacreBLEU).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data.clip_captions import caption, content_scores, sentence
from plait.data.clips import Clip, clip_at, palette_frames
from plait.data.scenes import COLOURS, KINDS
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.tasks import Batch, Task
from plait.vision import ImageConfig, normalize, write_preprocessor_config

MAX_SHAPES = 3


@dataclass(frozen=True)
class VideoCaptionData(Config):
    image_size: int = 48
    n_frames: int = 8
    batch_size: int = 32
    heldout: int = 500  # held-out clips in the final evaluation (a fifth in periodic ones)
    # the share of training clips drawn larger (up to 3x) and resized to image_size, as
    # `plait caption` reads a larger clip: edges blend into colours of their own
    resample: float = 0.0
    seed: int = 0
    dir: str = ""

    def __post_init__(self) -> None:
        if min(self.image_size, self.batch_size, self.heldout) <= 0 or self.n_frames < 2:
            raise ValueError("data.image_size, batch_size and heldout must be > 0 and"
                             " n_frames >= 2")
        if not 0.0 <= self.resample <= 1.0:
            raise ValueError(f"data.resample must be in [0, 1], got {self.resample}")


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

    def batch(self, clips: list[Clip], rng: random.Random | None = None) -> Batch:
        """Frames, per-pixel palette indices and per-slot targets. The slots are every colour
        in order, or with ``rng`` (training) the clip's own colours and absent ones drawn by
        it, ``MAX_SHAPES + 1`` in all (the absent ones teach objectness)."""
        from plait.models.video_caption import EVENTS

        colours = list(COLOURS)
        B, S = len(clips), len(colours) if rng is None else MAX_SHAPES + 1
        slots = torch.zeros(B, S, dtype=torch.long)
        targets = {k: torch.full((B, S), -1) for k in ("kind", "event")}
        present = torch.zeros(B, S)
        for b, clip in enumerate(clips):
            own = {colours.index(t.shape.colour): t for t in clip.tracks}
            if rng is None:
                order = list(range(len(colours)))
            else:
                absent = [i for i in range(len(colours)) if i not in own]
                order = (list(own) + rng.sample(absent, len(absent)))[:S]
            slots[b] = torch.tensor(order)
            for j, colour in enumerate(order):
                if (t := own.get(colour)) is not None:
                    present[b, j] = 1.0
                    targets["kind"][b, j] = KINDS.index(t.shape.kind)
                    targets["event"][b, j] = EVENTS.index((t.motion, t.direction))
        size = self.data.image_size
        # every other pixel's palette index: 0 the background, else 1 + the colour's index in
        # COLOURS
        pixel = torch.from_numpy(np.stack([palette_frames(c, size)[:, ::2, ::2] for c in clips])
                                 .astype(np.int64))
        frames = [self.draw(clip, rng) for clip in clips]
        return {"frames": clip_pixels(frames, self.image_config), "pixel_colour": pixel,
                "slots": slots, "present": present, **targets}

    def draw(self, clip: Clip, rng: random.Random | None) -> list[Image.Image]:
        """The clip's frames at the model's size: drawn there, or (training, a ``resample``
        share) drawn larger and resized as `plait caption` resizes, its pixel targets still
        the drawing at the model's size."""
        size = self.data.image_size
        if rng is None or rng.random() >= self.data.resample:
            return clip.frames(size)
        big = rng.randint(size + 1, 3 * size)
        return [f.resize((size, size), Image.BICUBIC) for f in clip.frames(big)]

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        first = ((self.train.seed * 1_000_003 + step) * 64 + micro) * B
        return self.batch([clip_at(first + i, "train", self.data.seed, self.data.n_frames)
                           for i in range(r * B // W, (r + 1) * B // W)],
                          random.Random(first + r))

    def count(self, batch: Batch) -> int:
        return len(batch["frames"])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        out = model(batch["frames"], batch["slots"])
        loss = (F.binary_cross_entropy_with_logits(out["objectness"], batch["present"])
                + F.cross_entropy(out["pixel_colour"].flatten(0, 3),
                                  batch["pixel_colour"].flatten()))
        for k in ("kind", "event"):
            loss = loss + F.cross_entropy(out[k].flatten(0, 1), batch[k].flatten(),
                                          ignore_index=-1)
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
