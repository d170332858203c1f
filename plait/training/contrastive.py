"""Symmetric InfoNCE, the CLIP loss, with features gathered across data-parallel ranks.

With L2-normalised image features I (N, D), text features T (N, D) for N matching pairs and a
learned temperature s = exp(t) (Radford et al. 2021, arXiv:2103.00020, Fig. 3; van den Oord
et al. 2018, arXiv:1807.03748, Eq. 4):

    L = ( CE(s * I T^T, arange(N)) + CE(s * T I^T, arange(N)) ) / 2

Row i of ``s * I T^T`` scores image i against every text; its "class" is text i. CLIP clips s at
100 (t <= ln 100) so the softmax cannot collapse onto one pair.

Data parallel: each rank holds B of the N = W * B pairs. It gathers every rank's features with a
DIFFERENTIABLE all-gather (``_GatherWithGrad``: its backward all-reduces the gradient and keeps
this rank's slice, i.e. sums what every rank's loss sends back to it) and scores its own B rows
against all N columns, labels offset by ``rank * B`` (open_clip's ``local_loss=True,
gather_with_grad=True``). The mean over ranks of these local losses is L over the global batch,
and DDP's gradient averaging gives exactly the one-process gradient: 2 processes == 1 process
(tests/test_clip_train.py).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from plait.config import Config
from plait.data.digits import load_digits_split
from plait.data.scenes import distinct_scenes, scenes
from plait.nn.positions import Learned
from plait.text.base import pad_batch
from plait.training.distributed import Dist, unwrap
from plait.training.recipe import TrainConfig
from plait.training.tasks import Task
from plait.vision import ImageConfig, ImageProcessor, normalize, write_preprocessor_config

MAX_LOGIT_SCALE = math.log(100.0)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the SUM over ranks of its slice's gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # (B, D) -> (W * B, D)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # (W * B, D) -> (B, D)
        # every rank's loss touched every slice: rank r's input gets all ranks' grads of slice r
        grad = grad.contiguous()
        dist.all_reduce(grad)
        B = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * B:(dist.get_rank() + 1) * B]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, D) from every rank into (W * B, D), keeping the autograd graph."""
    _, world_size = world()
    return x if world_size == 1 else _GatherWithGrad.apply(x)


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
    return infonce(logits_i2t, logits_t2i, labels)


def infonce(logits_i2t: Tensor, logits_t2i: Tensor, labels: Tensor) -> Tensor:
    """(CE(image rows) + CE(text rows)) / 2; ``labels[i]`` is row i's matching column."""
    return (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2


# -- the CLIP task for plait.training.trainer ----------------------------------------------------
@dataclass(frozen=True)
class ClipData(Config):
    """``[data]`` for CLIP training on the built-in captioned images."""

    dataset: Literal["shapes", "digits"] = "shapes"
    image_size: int = 48
    n_train: int = 8000  # shapes: training scenes (digits always use the 70% training split)
    n_gallery: int = 100  # shapes: held-out retrieval gallery
    batch_size: int = 128  # global batch (split across ranks)
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random-resized-crop area; (1, 1) = off
    init: Literal["fan_in", "model"] = "fan_in"  # re-initialise a fresh model (see fan_in_init)
    dir: str = "runs/clip_shapes/data"  # tokenizer.json + preprocessor_config.json go here
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.image_size, self.n_train, self.n_gallery, self.batch_size) <= 0:
            raise ValueError("data.image_size, n_train, n_gallery and batch_size must be > 0")


def caption_tokenizer(captions: Iterable[str]):
    """A word-level tokenizer over the training captions (WordPiece with whole words only:
    an unseen word becomes [UNK]); encodes ``[CLS] words [SEP]``."""
    from plait.text.wordpiece import SPECIALS, WordPieceTokenizer

    words = sorted({w for c in captions for w in re.findall(r"\w+|[^\w\s]", c.lower())})
    vocab = {tok: i for i, tok in enumerate([*SPECIALS.values(), *words])}
    return WordPieceTokenizer.from_vocab(vocab)


@contextlib.contextmanager
def _forward_as(module: nn.Module, fn: Callable[..., Any]):
    """Temporarily make ``fn`` the module's forward. DDP all-reduces gradients only for work
    done inside ``ddp(...)``, so the two encoders must run through its ``__call__``."""
    module.forward = fn
    try:
        yield
    finally:
        del module.forward


def embed_pair(model: nn.Module, pixels: Tensor, ids: Tensor,
               mask: Tensor) -> tuple[Tensor, Tensor]:
    """(image features, text features) of a CLIP, DDP-wrapped or not."""
    inner = unwrap(model)
    pair = lambda p, i, m: (inner.encode_image(p), inner.encode_text(i, m))  # noqa: E731
    if inner is model:
        return pair(pixels, ids, mask)
    with _forward_as(inner, pair):
        return model(pixels, ids, mask)


class ClipTask(Task):
    """Contrastive image-text training on shapes or digits; evaluates retrieval / zero-shot."""

    data_config = ClipData

    def __init__(self, data: ClipData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
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
            Path(data.dir).mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(data.dir)
            write_preprocessor_config(data.dir, self.image_config)

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
        """Called by the trainer on a freshly built model (not on resume or fine-tuning)."""
        if self.data.init == "fan_in":
            fan_in_init(model)

    def train_batch(self, step: int, micro: int) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's rows of global batch (step, micro): (pixels, input_ids, attention_mask)."""
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
        return (pixels, *pad_batch(rows, self.tokenizer.pad_token_id))

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        pixels, ids, mask = batch
        img, txt = embed_pair(model, pixels, ids, mask)
        return clip_loss(img, txt, unwrap(model).logit_scale)

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Retrieval (shapes) or zero-shot accuracy (digits), plus the InfoNCE of the held-out
        gallery with one caption per image. Every rank computes the same numbers."""
        from plait.evaluation.clip_eval import eval_digits, eval_shapes
        from plait.evaluation.encoder import ClipEncoder

        inner = unwrap(model)
        enc = ClipEncoder(inner, self.tokenizer, self.image_config)
        size = self.data.image_size
        if self.data.dataset == "shapes":
            metrics = eval_shapes(enc, size, self.data.n_gallery, self.data.seed)
        else:
            metrics = eval_digits(enc, size, self.data.seed)
        held = _items(self.data, "heldout")[:256]
        img = enc.embed_images([it.render(size) for it in held])
        txt = enc.embed_texts([it.captions[0] for it in held])
        s = enc.logit_scale
        labels = torch.arange(len(held))
        metrics["loss"] = infonce(s * img @ txt.T, s * txt @ img.T, labels).item()
        if self.dist.is_main:
            print("eval " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
        return metrics

    def count(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return len(batch[0])

    def files(self) -> list[Path]:
        return [Path(self.data.dir) / "tokenizer.json",
                Path(self.data.dir) / "preprocessor_config.json"]


def fan_in_init(model: nn.Module) -> None:
    """PyTorch's default fan-in init for every Linear / Conv2d, unit-variance embeddings.

    The std=0.02 init of GPT-2 / HF CLIP suits widths of 512-768; at width 64 it starts every
    signal several times too small, and a 3-minute CPU run stalls: on clip_shapes, recall@1
    after 100 steps was 0.05 with the model's init and 0.52 with this one (docs/clip.md).
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
        if split == "train":
            return scenes(data.n_train, "train", data.seed)
        return distinct_scenes(data.n_gallery, "heldout", data.seed)
    return load_digits_split(split, data.seed)


def _uint8(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
