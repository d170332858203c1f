"""Tasks: what a kind of training supplies to the one loop in ``trainer.py``.

The loop owns precision, accumulation, clipping, schedule, evaluation, checkpoints, logging
and distribution; a task owns its data and its loss. To add one (CLIP, classification ...),
subclass :class:`Task`, set ``data_config`` to a frozen Config that reads the recipe's ``[data]``
section, implement the three abstract methods, and add one line to ``TASKS`` (a class, or a
``"module:Class"`` string imported on first use):

- ``train_batch(step, micro)``: this rank's share of micro-batch ``micro`` of optimizer step
  ``step``, on the CPU. It must be a pure function of ``(seed, step, micro)``: that is what makes
  a resumed run identical to an uninterrupted one and every rank draw from the same global batch.
- ``loss(model, batch)``: the scalar mean loss of a batch (the model may be DDP/compile-wrapped).
- ``evaluate(model, device, max_batches)``: ``{"loss": ..., other metrics}`` on the validation
  split (``max_batches=None``: all of it). Every rank calls it and must get the same numbers;
  :func:`mean_loss` does that by sharding the batches and summing over ranks.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.training import distributed
from plait.training.distributed import Dist
from plait.training.losses import CrossEntropy
from plait.training.recipe import TrainConfig


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def mean_loss(loss: Callable[[nn.Module, Any], Tensor], model: nn.Module, batches: Iterable[Any],
              count: Callable[[Any], int], d: Dist, device: torch.device) -> float:
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

    def __init__(self, data: Config, train: TrainConfig, d: Dist):
        self.data, self.train, self.dist = data, train, d

    def model_config(self, config: Config) -> Config:
        """The model config adjusted to the data (e.g. the tokenizer's vocab size)."""
        return config

    def train_batch(self, step: int, micro: int) -> Any:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        raise NotImplementedError

    def count(self, batch: Any) -> int:
        """Items in a batch (tokens for a language model), for throughput and eval weights."""
        return len(batch[0])

    def files(self) -> list[Path]:
        """Files copied into the output folder next to the model (e.g. ``tokenizer.json``)."""
        return []


@dataclass(frozen=True)
class LMData(Config):
    """``[data]`` for language modelling on a folder written by ``plait prepare-text``."""

    dir: str = "data/shakespeare_char"
    text: str = ""  # a UTF-8 file to tokenize into ``dir`` first if ``dir`` is not prepared
    tokenizer: str = "char"  # used only with ``text``: "char" or "bpe"
    batch_size: int = 12  # rows of the global batch (split across ranks), per micro-step
    block_size: int = 0  # tokens per row; 0 = the model's block_size
    eval_batch_size: int = 0  # 0 = batch_size

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.block_size < 0 or self.eval_batch_size < 0:
            raise ValueError(f"data.batch_size must be > 0 and data.block_size,"
                             f" data.eval_batch_size >= 0; got {self.batch_size},"
                             f" {self.block_size}, {self.eval_batch_size}")


class LMTask(Task):
    """Next-token prediction: windows of ``block_size + 1`` tokens, cross-entropy on the shift."""

    data_config = LMData

    def __init__(self, data: LMData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        from plait.data.tokens import TokenDataset, prepare_text

        folder = Path(data.dir)
        if data.text and not (folder / "meta.json").is_file() and d.is_main:
            prepare_text(data.text, folder, tokenizer=data.tokenizer)
        if data.text and d.enabled:
            torch.distributed.barrier()  # other ranks wait for rank 0's preparation
        self.train_set = TokenDataset(folder, "train", seed=train.seed)
        self.val_set = TokenDataset(folder, "val", seed=train.seed)
        self.criterion = CrossEntropy(train.label_smoothing)
        self.block_size = data.block_size

    def model_config(self, config: Config) -> Config:
        vocab = self.train_set.vocab_size
        config = config.replace(vocab_size=vocab)  # the tokenizer decides the vocabulary
        if self.block_size == 0:
            self.block_size = config.block_size
        elif self.block_size > config.block_size:
            raise ValueError(f"data.block_size {self.block_size} exceeds model.block_size"
                             f" {config.block_size}; lower it or raise the model's")
        return config

    def train_batch(self, step: int, micro: int) -> tuple[Tensor, Tensor]:
        index = step * self.train.grad_accum + micro  # global micro-batch number
        return self.train_set.get_batch(index, self.data.batch_size, self.block_size,
                                        self.dist.rank, self.dist.world)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch  # (B, T) each
        return self.criterion(model(x), y)

    def count(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[1].numel()

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        B = self.data.eval_batch_size or self.data.batch_size
        batches = self.val_set.iter_eval_batches(self.block_size, B, self.dist.rank,
                                                 self.dist.world)
        if max_batches is not None:
            batches = itertools.islice(batches, max_batches)  # per rank
        # eval loss is plain cross-entropy, with no label smoothing, so runs compare
        return {"loss": mean_loss(lambda m, b: _plain_ce(m, b), model, batches, self.count,
                                  self.dist, device)}

    def files(self) -> list[Path]:
        return [Path(self.data.dir) / "tokenizer.json"]


def _plain_ce(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return CrossEntropy()(model(x), y)


# recipe ``task = "..."`` -> Task class, or "module:Class" imported on first use (so a task that
# needs vision or audio code costs nothing to language-model runs)
TASKS: dict[str, type[Task] | str] = {"lm": LMTask, "clip": "plait.training.contrastive:ClipTask"}


def get_task(name: str) -> type[Task]:
    """The Task class registered under ``name`` in ``TASKS``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    entry = TASKS[name]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = TASKS[name] = getattr(importlib.import_module(module), cls)
    return entry
