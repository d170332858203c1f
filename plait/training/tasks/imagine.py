"""Text to image (``imagine``): a GPT (:class:`plait.models.imagine.Imagine`) learns to write a
scene's palette tokens after a prompt that describes it (:mod:`plait.data.imagine`).

A training row is a fresh scene of one or two shapes of training colour-shape pairs, drawn at
``data.image_size``, its tokens under a fixed mask codebook (the ``data.codebook_size`` most
frequent masks of ``data.codebook_pictures`` training pictures, stored in the model's config)
and one of its descriptions as the prompt; a ``data.uncond`` share of rows loses its prompt
(classifier-free guidance). The evaluation draws a picture for each of the first ``data.n_eval``
prompts of the ``heldout`` and ``heldout-pair`` splits (``data.temperature``, ``data.top_k``,
``data.guidance``, one seeded generator) and reports the share that pass the pixel check, and,
when a CLIP judge is at hand (``data.judge``, or the recipe's ``clip`` stage), the judge's
recall@1 of the prompt from each drawn picture among the split's prompts, beside the same for
the real pictures (the judge's own ceiling).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, require_fraction
from plait.data import imagine as prompts
from plait.data.palette import PALETTE, BlockCodebook, to_rgb
from plait.data.scenes import KINDS, Shape
from plait.models.imagine import PAD, prompt_ids
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.tasks import Batch, Task


@dataclass(frozen=True)
class ImagineData(Config):
    """``[data]`` of ``imagine``."""

    image_size: int = 48
    block: int = 4
    codebook_size: int = 256  # masks in the codebook (K)
    codebook_pictures: int = 2000  # training pictures the masks are counted on
    max_shapes: int = 2
    batch_size: int = 32
    uncond: float = 0.1  # share of rows trained without their prompt
    n_eval: int = 200  # prompts of each held-out split drawn at the end
    temperature: float = 0.6  # how the evaluation samples (plait imagine's defaults too)
    top_k: int = 0
    guidance: float = 1.5
    judge: str = ""  # a CLIP folder; "" = the recipe's clip stage, when there is one
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.image_size, self.block, self.codebook_size, self.codebook_pictures,
               self.max_shapes, self.batch_size, self.n_eval) <= 0:
            raise ValueError("data.image_size, block, codebook_size, codebook_pictures,"
                             " max_shapes, batch_size and n_eval must be > 0")
        require_fraction(self, "uncond")
        if self.max_shapes > 3:
            raise ValueError(f"data.max_shapes must be 1..3 (the prompts describe at most"
                             f" three shapes), got {self.max_shapes}")
        if self.temperature < 0 or self.top_k < 0 or self.guidance < 0:
            raise ValueError("data.temperature, top_k and guidance must be >= 0")


def build_codebook(data: ImagineData) -> BlockCodebook:
    """The mask codebook of ``data``: a pure function of its settings."""
    rng = random.Random(f"imagine/{data.seed}/codebook")
    pictures = (prompts.picture(prompts.draw(rng, "train", data.max_shapes)[0], data.image_size)
                for _ in range(data.codebook_pictures))
    return BlockCodebook.build(pictures, data.block, data.image_size, data.codebook_size)


def mask_ints(codebook: BlockCodebook) -> tuple[int, ...]:
    """Each mask as an integer, bit ``i`` = pixel ``i`` of the square (ImagineConfig.masks)."""
    weights = 1 << np.arange(codebook.masks.shape[1], dtype=object)
    return tuple(int((m.astype(object) * weights).sum()) for m in codebook.masks)


class ImagineTask(Task):
    """Prompt -> picture tokens; the evaluation draws pictures and judges them."""

    name = "imagine"
    data_config = ImagineData
    units = {"loss": "nats/token", "pixel_heldout": "fraction",
             "pixel_heldout_pair": "fraction",
             **{f"clip_r1_{s}{r}": "recall" for s in ("heldout", "heldout_pair")
                for r in ("", "_real")}}

    def __init__(self, data: ImagineData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.codebook = build_codebook(data)
        self.words = (PAD, *prompts.vocabulary())
        self.max_words, self.plan_grid = 16, 3  # the model's, once model_config has seen it
        self._judge = None

    # -- the model ------------------------------------------------------------------------------
    def model_config(self, config: Config) -> Config:
        c = self.data
        if config.plan_grid % 3:
            raise ValueError(f"model.plan_grid must be a multiple of 3 (the scenes' shapes sit"
                             f" in a 3 x 3 grid), got {config.plan_grid}")
        self.max_words, self.plan_grid = config.max_words, config.plan_grid
        return config.replace(words=self.words, masks=mask_ints(self.codebook),
                              palette=tuple(tuple(rgb) for rgb in PALETTE.tolist()),
                              block=c.block, size=c.image_size, kinds=len(KINDS))

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        """A CLIP folder before this stage is the judge, not a start: a fresh model."""
        from plait.models.imagine import Imagine

        if isinstance(source, Imagine):
            return None
        if self.dist.is_main:
            print(f"init_from {where}: a {type(source).__name__}, kept as the judge; the"
                  " imagine model starts fresh", flush=True)
        return Imagine(self.model_config(config))

    # -- data -----------------------------------------------------------------------------------
    def rows(self, step: int, micro: int) -> list[tuple[list[Shape], str]]:
        """This rank's (shapes, prompt) rows of a training batch; a dropped prompt is ''."""
        rng = random.Random(f"{self.name}/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        gens = [random.Random(rng.random()) for _ in range(B)][r * B // W:(r + 1) * B // W]
        out = []
        for g in gens:
            shapes, prompt = prompts.draw(g, "train", self.data.max_shapes)
            out.append((shapes, "" if g.random() < self.data.uncond else prompt))
        return out

    def batch(self, rows: list[tuple[list[Shape], str]]) -> Batch:
        size, L = self.data.image_size, self.max_words
        tokens = np.stack([self.codebook.encode(prompts.picture(s, size)) for s, _ in rows])
        ids = [prompt_ids(p, self.words, L) if p else [] for _, p in rows]
        word = torch.tensor([[0] * (L - len(r)) + r for r in ids])
        plan = torch.tensor([prompts.plan(s, self.plan_grid) for s, _ in rows])
        return {"word_ids": word, "plan": plan, "tokens": torch.from_numpy(tokens)}

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(self.rows(step, micro))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(batch["word_ids"], batch["plan"], batch["tokens"], return_loss=True)

    def count(self, batch: Batch) -> int:
        return batch["tokens"].numel()

    # -- evaluation -----------------------------------------------------------------------------
    def heldout(self, split: str, n: int) -> list[tuple[list[Shape], str]]:
        c = self.data
        return [prompts.prompt_at(i, split, c.seed, c.max_shapes) for i in range(n)]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Teacher-forced loss on held-out pictures; then pictures drawn for held-out prompts,
        judged by pixels and (with a judge) by CLIP."""
        from plait.training.tasks import to_device

        m = unwrap(model)
        self.max_words, self.plan_grid = m.config.max_words, m.config.plan_grid
        n = self.data.n_eval if max_batches is None else min(self.data.n_eval, 32)
        out: dict[str, float] = {}
        losses, judged = [], {}
        for split in ("heldout", "heldout-pair"):
            rows = self.heldout(split, n)
            batch = to_device(self.batch(rows), device)
            losses.append(float(m.loss(batch["word_ids"], batch["plan"], batch["tokens"])))
            texts = [p for _, p in rows]
            pictures = draw(m, texts, self.data, device)
            ok = [prompts.check(pic, p) for pic, p in zip(pictures, texts, strict=True)]
            name = split.replace("-", "_")
            out[f"pixel_{name}"] = sum(ok) / len(ok)
            real = [prompts.picture(s, self.data.image_size) for s, _ in rows]
            judged[name] = pictures, real, texts
        out = {"loss": sum(losses) / len(losses), **out}
        judge = self.judge()
        if judge is not None:
            for name, (pictures, real, texts) in judged.items():
                out[f"clip_r1_{name}"] = clip_recall(judge, pictures, texts)
                out[f"clip_r1_{name}_real"] = clip_recall(judge, real, texts)
        return out

    def judge(self):
        """The CLIP that judges drawn pictures (ClipEncoder), or None when there is none."""
        if self._judge is None:
            from plait.inference import ClipEncoder

            folder = find_judge(self.data.judge, self.train.init_from)
            self._judge = ClipEncoder.from_folder(folder) if folder else False
        return self._judge or None


def find_judge(given: str, init_from: str | None) -> str | None:
    """``given``; else ``init_from`` when it is a CLIP folder (the recipe's clip stage); else
    ``<init_from>/clip`` (a finished recipe's folder, evaluated later); else None."""
    from plait.checkpoint import MODEL_KEY, read_model_config

    if given:
        if not Path(given).is_dir():
            raise FileNotFoundError(f"data.judge: no CLIP folder at {given}")
        return given
    for folder in ([Path(init_from), Path(init_from) / "clip"] if init_from else []):
        if (folder / "config.json").is_file() and \
                read_model_config(folder).get(MODEL_KEY) == "clip":
            return str(folder)
    return None


def draw(model, texts: list[str], data: ImagineData, device: torch.device,
         chunk: int = 100) -> list[np.ndarray]:
    """Palette pictures the model draws for ``texts`` with ``data``'s sampling settings, one
    generator seeded by ``data.seed``."""
    gen = torch.Generator(device=device).manual_seed(data.seed)
    out = []
    for k in range(0, len(texts), chunk):
        drawn = model.draw(texts[k:k + chunk], temperature=data.temperature, top_k=data.top_k,
                           guidance=data.guidance, generator=gen)
        out += list(drawn.cpu().numpy().astype(np.uint8))
    return out


def clip_recall(judge, pictures: list[np.ndarray], texts: list[str]) -> float:
    """Share of pictures whose nearest prompt (by the judge, among ``texts``) describes the same
    shapes as their own (prompts of equal content are one answer)."""
    from PIL import Image

    from plait.data.scenes import mentioned

    images = [Image.fromarray(to_rgb(p)) for p in pictures]
    sim = judge.embed_images(images) @ judge.embed_texts(texts).T  # (N, N)
    best = sim.argmax(-1).tolist()
    return sum(mentioned(texts[b]) == mentioned(t) for b, t in zip(best, texts, strict=True)) \
        / len(texts)
