"""Contrastive image-text training (CLIP) on the built-in captioned images: shapes or digits.

Batches are ``{"pixel_values", "input_ids", "attention_mask"}`` of matching image-caption
pairs; the loss is :class:`plait.training.losses.ClipLoss` over the global batch (rank and
world size given to it explicitly); the evaluation reports held-out retrieval recall@K (shapes)
or zero-shot accuracy (digits) beside the InfoNCE of a held-out gallery.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch import Tensor

from plait.config import Config
from plait.data.digits import load_digits_split
from plait.data.scenes import distinct_scenes, scenes, with_placed_captions
from plait.nn.positions import Learned
from plait.text.base import pad_batch
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import ClipLoss, infonce
from plait.training.tasks import Batch, Task
from plait.vision import ImageConfig, ImageProcessor, normalize, write_preprocessor_config


@dataclass(frozen=True)
class ClipData(Config):
    """``[data]`` for CLIP training on the built-in captioned images."""

    dataset: Literal["shapes", "digits"] = "shapes"
    image_size: int = 48
    n_train: int = 8000  # shapes: training scenes (digits always use the 70% training split)
    n_gallery: int = 100  # shapes: held-out retrieval gallery
    batch_size: int = 128  # global batch (split across ranks)
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random-resized-crop area; (1, 1) = off
    # shapes: "placed" captions state every shape's grid cell ("a red circle in the top left
    # and ..."), so the contrastive loss asks the image tower for the layout (docs/vlm.md §5)
    captions: Literal["scene", "placed"] = "scene"
    init: Literal["fan_in", "model"] = "fan_in"  # re-initialise a fresh model (see fan_in_init)
    dir: str = ""  # tokenizer.json + preprocessor_config.json; "" = <train.out_dir>/data
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.image_size, self.n_train, self.n_gallery, self.batch_size) <= 0:
            raise ValueError("data.image_size, n_train, n_gallery and batch_size must be > 0")
        if self.captions == "placed" and self.dataset != "shapes":
            raise ValueError("data.captions = 'placed' places the shapes of scenes: it needs"
                             " data.dataset = 'shapes'")


def caption_tokenizer(captions: Iterable[str]):
    """A word-level tokenizer over the training captions (WordPiece with whole words only:
    an unseen word becomes [UNK]); encodes ``[CLS] words [SEP]``."""
    from plait.text.wordpiece import SPECIALS, WordPieceTokenizer

    words = sorted({w for c in captions for w in re.findall(r"\w+|[^\w\s]", c.lower())})
    vocab = {tok: i for i, tok in enumerate([*SPECIALS.values(), *words])}
    return WordPieceTokenizer.from_vocab(vocab)


class ClipTask(Task):
    """Contrastive image-text training on shapes or digits; evaluates retrieval / zero-shot."""

    data_config = ClipData
    units = {"loss": "nats/pair", "zero_shot_acc": "accuracy",
             **{f"{d}_r{k}": "recall" for d in ("t2i", "i2t") for k in (1, 5, 10)}}

    def __init__(self, data: ClipData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.criterion = ClipLoss(d.rank, d.world)
        if data.batch_size % d.world:
            raise ValueError(f"data.batch_size {data.batch_size} must divide evenly over"
                             f" {d.world} ranks")
        self.items = _items(data)
        self.image_config = ImageConfig(size=data.image_size, crop_size=data.image_size,
                                        crop_scale=tuple(data.crop_scale))
        self.processor = ImageProcessor(self.image_config)
        self.uint8 = torch.stack([_uint8(it.render(data.image_size)) for it in self.items])
        self.tokenizer = caption_tokenizer(c for it in self.items for c in it.captions)
        self.ids = [[self.tokenizer.encode(c) for c in it.captions] for it in self.items]
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            write_preprocessor_config(self.data_dir, self.image_config)

    def model_config(self, config: Config) -> Config:
        text = {**config.text, "vocab_size": self.tokenizer.vocab_size}
        vision = dict(config.vision)
        if vision.get("kind", "vit") == "vit":
            vision["image_size"] = self.data.image_size
        longest = max(len(r) for rows in self.ids for r in rows)
        if longest > text.get("block_size", 77):
            raise ValueError(f"captions have up to {longest} tokens; raise model.text.block_size")
        return config.replace(text=text, vision=vision)

    def init_model(self, model: nn.Module) -> None:
        """Re-initialise a fresh model (``data.init = "fan_in"``, see :func:`fan_in_init`)."""
        if self.data.init == "fan_in":
            fan_in_init(model)

    def train_batch(self, step: int, micro: int) -> Batch:
        """This rank's rows of global batch (step, micro)."""
        rng = random.Random(f"clip/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        # draw the whole global batch (images, caption choice, crop seed), then keep our rows:
        # every rank sees the same draws, so W ranks together see the one-process batch
        draws = [(i, rng.randrange(len(self.ids[i])), rng.getrandbits(32))
                 for i in (rng.randrange(len(self.items)) for _ in range(B))]
        mine = draws[r * B // W:(r + 1) * B // W]
        picks = [i for i, _, _ in mine]
        rows = [self.ids[i][j] for i, j, _ in mine]
        if self.data.crop_scale[0] < 1.0:  # augment: re-render and random-crop each image
            size = self.data.image_size
            pixels = torch.stack([self.processor(self.items[i].render(size), train=True,
                                                 rng=random.Random(seed)) for i, _, seed in mine])
        else:
            c = self.image_config
            pixels = normalize(self.uint8[picks].float() / 255.0, c.mean, c.std)
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id)
        return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(*model(**batch))  # image and text embeddings, log-temperature

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Retrieval (shapes) or zero-shot accuracy (digits), plus the InfoNCE of the held-out
        gallery with one caption per image. Every rank computes the same numbers."""
        from plait.evaluation.clip_eval import eval_digits, eval_shapes
        from plait.inference import ClipEncoder

        inner = unwrap(model)
        enc = ClipEncoder(inner, self.tokenizer, self.image_config)
        size = self.data.image_size
        if self.data.dataset == "shapes":
            metrics = eval_shapes(enc, size, self.data.n_gallery, self.data.seed,
                                  placed=self.data.captions == "placed")
        else:
            metrics = eval_digits(enc, size, self.data.seed)
        held = _items(self.data, "heldout")[:256]
        img = enc.embed_images([it.render(size) for it in held])
        txt = enc.embed_texts([it.captions[0] for it in held])
        s = enc.logit_scale
        labels = torch.arange(len(held))
        metrics["loss"] = infonce(s * img @ txt.T, s * txt @ img.T, labels).item()
        return metrics

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "preprocessor_config.json"]


def fan_in_init(model: nn.Module) -> None:
    """PyTorch's default fan-in init for every Linear / Conv2d, unit-variance embeddings.

    The std=0.02 init of GPT-2 / HF CLIP suits widths of 512-768; at width 64 it starts every
    signal several times too small, and a 3-minute CPU run stalls (the recall measured with
    each init is in docs/clip.md).
    """
    positions = {id(m.wpe) for m in model.modules() if isinstance(m, Learned)}  # keep small
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            m.reset_parameters()
        elif isinstance(m, nn.Embedding) and id(m) not in positions:
            nn.init.normal_(m.weight, std=1.0)


def _items(data: ClipData, split: str = "train") -> list:
    """Objects with ``.render(size)`` and ``.captions``: scenes or digits."""
    if data.dataset == "shapes":
        items = (scenes(data.n_train, "train", data.seed) if split == "train" else
                 distinct_scenes(data.n_gallery, "heldout", data.seed))
        return with_placed_captions(items, split) if data.captions == "placed" else items
    return load_digits_split(split, data.seed)


def _uint8(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
