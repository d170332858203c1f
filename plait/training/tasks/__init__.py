"""Tasks: what a kind of training supplies to the one loop in ``trainer.py``.

The loop owns precision, accumulation, clipping, the schedule, evaluation, checkpoints, logging,
progress and distribution; a task owns its data, its loss and its metrics. A task is a
:class:`Task` subclass registered in :data:`TASKS` (``task = "name"`` in a recipe); its
``data_config`` reads the recipe's ``[data]`` table. ``docs/training.md`` walks through adding
one. The contract, method by method:

- ``train_batch(step, micro) -> dict``: this rank's share of micro-batch ``micro`` of optimizer
  step ``step``, on the CPU, as named tensors (``{"input_ids": ..., "targets": ...}``). A pure
  function of ``(seed, step, micro)``: that is what makes a resumed run identical to an
  uninterrupted one and every rank draw from the same global batch.
- ``loss(model, batch) -> Tensor``: the scalar mean loss of a batch (the model may be DDP- or
  compile-wrapped: call it, do not reach inside).
- ``evaluate(model, device, max_batches) -> dict[str, float]``: named metrics on the validation
  split, ``"loss"`` among them (early stopping watches it); ``max_batches=None`` means all of
  it. Every rank calls it and must return the same numbers (:func:`mean_loss` shards the
  batches and sums over ranks). The trainer prints and logs every metric with ``units``;
  a task never prints.
- ``count(batch) -> int``: items in a batch (tokens, pairs), for throughput and eval weights.
- ``units``: metric name -> unit, for what the trainer prints.
- ``model_config(config)``, ``init_model(model)``, ``fit_model(model)``,
  ``build_from(source, config, where)``, ``param_groups(model)``, ``prepare()``, ``files()``:
  fit the architecture's config to the data, re-initialise a fresh model, set what a model
  takes from the data, build the model around an ``init_from`` folder of another
  architecture, group the parameters for the optimizer (default: ``train.freeze`` /
  ``train.part_lr``), build the training data an evaluation does not need, name files to
  copy beside the weights. Each has a default that does the usual thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.registry import Registry
from plait.training import distributed
from plait.training.config import TrainConfig
from plait.training.distributed import Dist
from plait.training.optim import param_groups

Batch = dict[str, Any]

# recipe ``task = "..."`` -> its Task class, imported on first use (so a task that needs vision
# or audio code costs nothing to language-model runs)
TASKS = Registry("task", {
    "lm": "plait.training.tasks.lm:LMTask",
    "clip": "plait.training.tasks.clip:ClipTask",
    "translate": "plait.training.tasks.translate:TranslateTask",
    "mlm": "plait.training.tasks.mlm:MLMTask",
    "classify": "plait.training.tasks.classify:ClassifyTask",
    "classify-speakers": "plait.training.tasks.classify:SpeakersTask",
    "ner": "plait.training.tasks.ner:NERTask",
    "relations": "plait.training.tasks.relations:RelationsTask",
    "summarise": "plait.training.tasks.summarise:SummariseTask",
    "recommend": "plait.training.tasks.recommend:RecommendTask",
    "detect": "plait.training.tasks.detect:DetectTask",
    "segment": "plait.training.tasks.segment:SegmentTask",
    "video-caption": "plait.training.tasks.video_caption:VideoCaptionTask",
    "scenes-caption": "plait.training.tasks.vlm:ScenesCaptionTask",
    "scenes-vqa": "plait.training.tasks.vlm:ScenesVQATask",
    "scenes-vqa-classify": "plait.training.tasks.vqa_classify:ScenesVQAClassifyTask",
    "speech": "plait.training.tasks.speech:SpeechTask",
    "tts": "plait.training.tasks.tts:TTSTask",
    "video-qa": "plait.training.tasks.video_qa:VideoQATask",
    "fusion": "plait.training.tasks.fusion:FusionTask",
    "imagine": "plait.training.tasks.imagine:ImagineTask",
    "chat": "plait.training.tasks.chat:ChatTask",
})


def get_task(name: str) -> type[Task]:
    """The Task class registered under ``name`` in ``TASKS``."""
    return TASKS.get(name)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/tuple/list batch to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def mean_loss(loss: Callable[[nn.Module, Batch], Tensor], model: nn.Module,
              batches: Iterable[Batch], count: Callable[[Batch], int], d: Dist,
              device: torch.device) -> float:
    """Item-weighted mean of ``loss`` over ``batches`` (already this rank's shard), summed over
    ranks, so every rank returns the mean over the whole split."""
    total, n = 0.0, 0
    for batch in batches:
        batch = to_device(batch, device)
        k = count(batch)
        total += float(loss(model, batch)) * k
        n += k
    total, n = distributed.all_sum([total, float(n)], d, device)
    return total / max(n, 1.0)


class Task:
    """Base class; see the module docstring for the contract."""

    data_config: type[Config]
    units: dict[str, str] = {"loss": "nats"}

    def __init__(self, data: Config, train: TrainConfig, d: Dist):
        self.data, self.train, self.dist = data, train, d

    def generator(self, step: int, micro: int) -> torch.Generator:
        """Random draws for a batch, seeded by (``train.seed``, step, micro-step): the same on
        every rank and on every rerun."""
        return torch.Generator().manual_seed((self.train.seed * 1_000_003 + step) * 1_000_003
                                             + micro)

    # -- what every task must provide --------------------------------------------------------
    def train_batch(self, step: int, micro: int) -> Batch:
        raise NotImplementedError(f"{type(self).__name__}.train_batch")

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.loss")

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__}.evaluate")

    # -- what a task may change ----------------------------------------------------------------
    def count(self, batch: Batch) -> int:
        """Items in a batch: by default its rows (the first tensor's length)."""
        first = next(v for v in batch.values() if isinstance(v, Tensor))
        return len(first)

    def model_config(self, config: Config) -> Config:
        """The model config adjusted to the data (e.g. the tokenizer's vocab size)."""
        return config

    def init_model(self, model: nn.Module) -> None:
        """Called on a freshly built model (not on resume or fine-tuning); default: keep the
        model's own initialisation."""

    def fit_model(self, model: nn.Module) -> None:
        """Called on the model to train however it started (fresh or from ``init_from``) to
        set what it takes from the data rather than from training (a classifier's pooling
        weights); on resume the saved weights then replace it. Default: nothing."""

    def build_from(self, source: nn.Module, config: Config, where: str) -> nn.Module | None:
        """A new model of the recipe's architecture (``config``) built around ``source``, a
        ``train.init_from`` folder of another architecture (a CLIP whose image tower a VLM
        reads); None, the default: ``source`` itself is fine-tuned."""
        return None

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: weight decay on 2-D weights, ``train.part_lr``'s
        peak rates, ``train.freeze``'s parts frozen (:mod:`plait.training.optim`)."""
        return param_groups(model, self.train)

    def prepare(self) -> None:
        """Build what training needs and evaluation does not (the trainer calls it before its
        clock starts, so a time budget is spent on steps); default: nothing."""

    def files(self) -> list[Path]:
        """Files copied into the output folder next to the model (e.g. ``tokenizer.json``)."""
        return []

    def unit(self, metric: str) -> str:
        return self.units.get(metric, "")

    @property
    def data_dir(self) -> Path:
        """Where the task writes the files it builds (tokenizers): ``data.dir`` if the data
        config has one set, else ``<train.out_dir>/data``."""
        given = getattr(self.data, "dir", "")
        return Path(given) if given else Path(self.train.out_dir) / "data"


__all__ = ["TASKS", "Batch", "Task", "get_task", "mean_loss", "to_device"]
