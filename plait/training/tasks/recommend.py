"""Recommendation from pictures and captions: a two-tower model over a frozen CLIP's embeddings
(:mod:`plait.models.two_tower`) learns, from synthetic users' histories, which catalogue items
they will pick next (:mod:`plait.data.recommend`: hidden tastes over colours, kinds and sizes).

Training is leave-one-out over the histories: for each user of a batch, one history item is
the target and a random subset of the others (``min_context`` or more) the history the user
tower reads; the loss is the softmax over the whole warm catalogue, the user's other picks
left out of it (they are not negatives):

    L = -log( exp s(u, t) / sum_{i in warm, i not in H \\ {t}} exp s(u, i) )

The evaluation reads each user's whole history and ranks (1) the warm items not in it, scored
against the held-out picks, and (2) the cold-start items, no one's history holds, against the
held-out cold picks: recall@10 and NDCG@10 (:mod:`plait.evaluation.recommend`), beside the
popularity and TruncatedSVD baselines and the oracle's ceiling in the final evaluation.

The CLIP is ``data.clip``, else the ``init_from`` folder when it is a CLIP (the recipe's first
stage), else ``<init_from>/clip`` (a trained recommender folder keeps its CLIP there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import recommend as data
from plait.evaluation.recommend import baselines, scores_of
from plait.inference.recommend import picture_key
from plait.io import atomic_write_text, write_safetensors
from plait.training.config import TrainConfig
from plait.training.distributed import Dist
from plait.training.tasks import Batch, Task

K = 10  # recall@K, NDCG@K


@dataclass(frozen=True)
class RecommendData(Config):
    """``[data]`` for recommendation: the world (:func:`plait.data.recommend.build`) and the
    batches."""

    n_warm: int = 600  # catalogue items users pick from in training
    n_cold: int = 150  # items no history holds (cold start)
    n_users: int = 2000
    history: int = 10  # picks per user a model learns from
    heldout: int = 5  # further warm picks per user, scored
    heldout_cold: int = 3  # cold picks per user, scored
    temperature: float = 0.5  # of the softmax users pick by
    appeal: float = 0.5  # spread of the items' hidden appeal
    batch_size: int = 256  # users per step
    min_context: int = 1  # fewest history items the user tower reads in training
    clip: str = ""  # the CLIP folder ("" = init_from, or <init_from>/clip)
    seed: int = 0
    dir: str = ""

    def __post_init__(self) -> None:
        if min(self.batch_size, self.min_context) <= 0:
            raise ValueError("data.batch_size and data.min_context must be > 0")
        if self.min_context >= self.history:
            raise ValueError(f"data.min_context {self.min_context} must be below data.history"
                             f" {self.history} (one history item is the target)")


def clip_folder(data_cfg: RecommendData, init_from: str) -> Path:
    """Where the CLIP is (see the module docstring)."""
    if data_cfg.clip:
        return Path(data_cfg.clip)
    if not init_from:
        raise ConfigError("task 'recommend' needs a CLIP: set data.clip or train.init_from (a"
                          " CLIP stage, as configs/recommend.toml has)")
    root = Path(init_from)
    return root / "clip" if (root / "clip").is_dir() else root


class RecommendTask(Task):
    data_config = RecommendData
    units = {"loss": "nats/pick", **{f"{p}{m}@{K}": "fraction" for p in ("", "cold_")
                                     for m in ("recall", "ndcg")}}

    def __init__(self, data_cfg: RecommendData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        c = data_cfg
        self.world = data.build(c.n_warm, c.n_cold, c.n_users, c.history, c.heldout,
                                c.heldout_cold, c.temperature, c.appeal, c.seed)
        self.clip = clip_folder(data_cfg, train.init_from)

    @cached_property
    def encoder(self):
        from plait.inference import ClipEncoder

        return ClipEncoder.from_folder(self.clip)

    @cached_property
    def features(self) -> tuple[Tensor, Tensor]:
        """(image, text) CLIP embeddings of every catalogue item, (N, D) each, in id order."""
        enc = self.encoder
        size = enc.processor.config.crop_size
        images = enc.embed_images([s.render(size) for s in self.world.scenes])
        return images, enc.embed_texts(list(self.world.captions))

    def model_config(self, config: Config) -> Config:
        from plait.models.two_tower import TwoTowerConfig

        if not isinstance(config, TwoTowerConfig):
            raise ConfigError("task 'recommend' needs model.arch = 'two-tower'")
        image, text = self.features
        return config.replace(image_dim=image.shape[1], text_dim=text.shape[1],
                              n_items=self.world.n_warm)

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        """Around a CLIP folder: a fresh two-tower model (the CLIP stays outside it, frozen:
        its embeddings are the towers' inputs)."""
        from plait.models.two_tower import TwoTower

        if isinstance(source, TwoTower):
            return None
        if not hasattr(source, "encode_image"):
            raise ValueError(f"train.init_from {where}: a {type(source).__name__} is neither a"
                             " CLIP nor a two-tower recommender")
        if self.dist.is_main:
            print(f"init_from {where}: the CLIP's item embeddings; the towers new", flush=True)
        return TwoTower(self.model_config(config))

    # -- batches --------------------------------------------------------------------------------
    def train_batch(self, step: int, micro: int) -> Batch:
        """Leave-one-out over the histories of this step's users (a pure function of the seeds,
        ``step`` and ``micro``)."""
        c, w = self.data, self.world
        rng = np.random.default_rng([c.seed, self.train.seed, step, micro])
        B, W, r = c.batch_size, self.dist.world, self.dist.rank
        users = rng.integers(w.n_users, size=B)[r * B // W:(r + 1) * B // W]
        H = w.history.shape[1]
        order = np.argsort(rng.random((len(users), H)), axis=1)
        rows = np.take_along_axis(w.history[users], order, axis=1)  # shuffled histories
        target, context = rows[:, 0], rows[:, 1:]
        sizes = rng.integers(c.min_context, H, size=len(users))  # 1 .. H-1 items read
        mask = np.arange(H - 1)[None, :] < sizes[:, None]
        seen = np.zeros((len(users), w.n_warm), dtype=bool)
        np.put_along_axis(seen, context, True, axis=1)
        image, text = self.features
        return {"history": image[torch.from_numpy(context)],
                "mask": torch.from_numpy(mask), "target": torch.from_numpy(target),
                "seen": torch.from_numpy(seen), "image": image[:w.n_warm],
                "text": text[:w.n_warm]}

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        scores = model(batch["history"], batch["mask"], batch["image"], batch["text"])
        return F.cross_entropy(scores.masked_fill(batch["seen"], float("-inf")), batch["target"])

    def count(self, batch: Batch) -> int:
        return len(batch["target"])

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, model: nn.Module, users: np.ndarray, device: torch.device) -> np.ndarray:
        """(U, N) scores of every catalogue item for ``users``, each read from their whole
        history."""
        image, text = (f.to(device) for f in self.features)
        out = []
        for i in range(0, len(users), 512):
            hist = image[torch.from_numpy(self.world.history[users[i:i + 512]]).to(device)]
            out.append(model(hist, None, image, text).float().cpu())
        return torch.cat(out).numpy()

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Recall@10 and NDCG@10 on held-out warm and cold picks (every user in the final
        evaluation, the first quarter otherwise), the baselines in the final one."""
        w = self.world
        n = w.n_users if max_batches is None else max(1, w.n_users // 4)
        users = np.arange(n)
        s = self.scores(model, users, device)
        seen, W = w.seen()[users], w.n_warm
        warm = torch.from_numpy(s[:, :W]).masked_fill(torch.from_numpy(seen > 0), float("-inf"))
        targets = torch.from_numpy(w.heldout[users])
        loss = F.cross_entropy(warm.repeat_interleave(targets.shape[1], 0), targets.reshape(-1))
        out = {"loss": float(loss),
               **scores_of(s[:, :W], w.heldout[users], K, seen),
               **scores_of(s[:, W:], w.heldout_cold[users] - W, K, None, "cold_")}
        if max_batches is None:
            out.update(baselines(w, K, self.data.seed))
        return out

    # -- the catalogue beside the weights ---------------------------------------------------------
    def prepare(self) -> None:
        """Write the catalogue: its pictures (``items/``), captions and embeddings, for
        ``plait recommend``."""
        if not self.dist.is_main:
            return
        out = Path(self.train.out_dir)
        (out / "items").mkdir(parents=True, exist_ok=True)
        size = self.encoder.processor.config.crop_size
        items = []
        for i, (scene, caption) in enumerate(zip(self.world.scenes, self.world.captions,
                                                 strict=True)):
            name, picture = f"items/{i:04d}.png", scene.render(size)
            picture.save(out / name)
            items.append({"id": i, "caption": caption, "image": name,
                          "cold": i >= self.world.n_warm, "key": picture_key(picture)})
        self.data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.data_dir / "catalogue.json",
                          json.dumps({"clip": self._clip_path(out), "items": items}, indent=1))
        image, text = self.features
        write_safetensors(self.data_dir / "catalogue.safetensors",
                          {"image": image.contiguous(), "text": text.contiguous()})

    def _clip_path(self, out: Path) -> str:
        """The CLIP folder as the catalogue records it: relative to the model folder when
        inside it (the recipe's stage), else absolute."""
        clip, out = self.clip.resolve(), out.resolve()
        return str(clip.relative_to(out)) if clip.is_relative_to(out) else str(clip)

    def files(self) -> list[Path]:
        return [self.data_dir / "catalogue.json", self.data_dir / "catalogue.safetensors"]
