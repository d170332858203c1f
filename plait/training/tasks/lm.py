"""Language modelling: next-token prediction on a token folder written by ``plait prepare-text``.

Batches are windows of ``block_size + 1`` tokens: ``input_ids`` the first ``block_size``,
``targets`` the same shifted by one. The loss is cross-entropy (with ``train.label_smoothing``);
the evaluation is plain cross-entropy over every target of the validation split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.training.config import TrainConfig
from plait.training.distributed import Dist
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task, mean_loss


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


def _batch(x: Tensor, y: Tensor) -> Batch:
    return {"input_ids": x, "targets": y}


class LMTask(Task):
    """Next-token prediction: cross-entropy of ``model(input_ids)`` against ``targets``."""

    data_config = LMData
    units = {"loss": "nats/token"}

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

    def train_batch(self, step: int, micro: int) -> Batch:
        index = step * self.train.grad_accum + micro  # global micro-batch number
        return _batch(*self.train_set.get_batch(index, self.data.batch_size, self.block_size,
                                                self.dist.rank, self.dist.world))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(model(batch["input_ids"]), batch["targets"])  # (B, T, V), (B, T)

    def count(self, batch: Batch) -> int:
        return batch["targets"].numel()

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        B = self.data.eval_batch_size or self.data.batch_size
        windows = self.val_set.iter_eval_batches(self.block_size, B, self.dist.rank,
                                                 self.dist.world)
        if max_batches is not None:
            windows = itertools.islice(windows, max_batches)  # per rank
        batches = (_batch(x, y) for x, y in windows)
        # eval loss is plain cross-entropy, with no label smoothing, so runs compare
        plain = CrossEntropy()
        return {"loss": mean_loss(lambda m, b: plain(m(b["input_ids"]), b["targets"]), model,
                                  batches, self.count, self.dist, device)}

    def files(self) -> list[Path]:
        return [Path(self.data.dir) / "tokenizer.json"]
