"""Masked-language-model pretraining of a BERT-family encoder (Devlin 2018 §3.1; RoBERTa's
dynamic masking and full-sentence packing, Liu 2019 §4).

The corpus (a text file, or tiny Shakespeare without the held-out speeches of the speaker
task) is tokenized once by a WordPiece vocabulary trained on it, the pieces of every segment
concatenated into one stream. A training row is a window of ``block_size - 2`` pieces between
``[CLS]`` and ``[SEP]``, at a place drawn from (seed, step, micro); its masks are drawn the
same way (:func:`plait.data.masking.mask_tokens`: 15 %, 80/10/10, never a special token). The
last ``val_fraction`` of the stream is never trained on: the evaluation masks it with a fixed
seed and reports the masked-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data.masking import IGNORE_INDEX, mask_tokens
from plait.text.wordpiece import WordPieceTokenizer
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task, mean_loss


@dataclass(frozen=True)
class MLMData(Config):
    """``[data]`` for masked-LM pretraining."""

    text: str = "data/tinyshakespeare.txt"
    # speakers: without the held-out speeches; speakers-validation: nor the validation ones
    corpus: Literal["text", "speakers", "speakers-validation"] = "text"
    vocab_size: int = 4000  # WordPiece vocabulary learned from the corpus
    cased: bool = False  # keep capitals (a tagger needs them)
    block_size: int = 128  # pieces per row, [CLS] and [SEP] included
    batch_size: int = 32
    mask_prob: float = 0.15
    val_fraction: float = 0.05  # the end of the stream, never trained on
    eval_batches: int = 8  # rows of 32 in the final evaluation (periodic: a quarter)
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.block_size - 2, self.batch_size, self.eval_batches) <= 0:
            raise ValueError("data.vocab_size, batch_size, eval_batches must be > 0 and"
                             " data.block_size > 2")
        if not 0 < self.mask_prob < 1 or not 0 < self.val_fraction < 0.5:
            raise ValueError(f"data.mask_prob must be in (0, 1) and data.val_fraction in"
                             f" (0, 0.5); got {self.mask_prob}, {self.val_fraction}")


def corpus(data: MLMData) -> list[str]:
    """The segments of text to pretrain on."""
    if data.corpus in ("speakers", "speakers-validation"):
        from plait.data.speakers import pretraining_text

        return pretraining_text(data.text, validation=data.corpus == "speakers-validation")
    path = Path(data.text)
    if not path.is_file():
        raise FileNotFoundError(f"data.text not found: {path}")
    return [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


class MLMTask(Task):
    """Masked-LM loss on packed windows of a WordPiece stream."""

    data_config = MLMData
    units = {"loss": "nats/masked token"}

    def __init__(self, data: MLMData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        segments = corpus(data)
        self.tokenizer = WordPieceTokenizer.train(segments, data.vocab_size,
                                                  do_lower_case=not data.cased)
        t = self.tokenizer
        self.specials = (t.pad_token_id, t.unk_token_id, t.cls_token_id, t.sep_token_id,
                         t.mask_token_id)
        stream = [i for s in segments for i in t.encode(s)[1:-1]]  # without [CLS] / [SEP]
        cut = int(len(stream) * (1 - data.val_fraction))
        self.train_ids = torch.tensor(stream[:cut])
        self.val_ids = torch.tensor(stream[cut:])
        if len(self.val_ids) < data.block_size:
            raise ValueError(f"the corpus is too small: {len(stream)} pieces leave"
                             f" {len(self.val_ids)} for validation, under one block")
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            t.save(self.data_dir)
        self.criterion = CrossEntropy(train.label_smoothing)

    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "type_vocab_size"):
            raise ConfigError("task 'mlm' needs a BERT-family encoder: model.arch = 'bert'")
        return config.replace(head="mlm", vocab_size=self.tokenizer.vocab_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    def rows(self, ids: Tensor, starts: Tensor) -> Tensor:
        """[CLS] window [SEP] for each start: (B, block_size)."""
        n = self.data.block_size - 2
        body = torch.stack([ids[s:s + n] for s in starts.tolist()])
        t = self.tokenizer
        cls_ = torch.full((len(starts), 1), t.cls_token_id)
        sep = torch.full((len(starts), 1), t.sep_token_id)
        return torch.cat([cls_, body, sep], 1)

    def masked(self, ids: Tensor, g: torch.Generator) -> Batch:
        t = self.tokenizer
        inputs, labels = mask_tokens(ids, None, self.specials, t.mask_token_id, t.vocab_size, g,
                                     p=self.data.mask_prob)
        return {"input_ids": inputs, "labels": labels}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        g = self.generator(step, micro)
        n = self.data.block_size - 2
        starts = torch.randint(0, len(self.train_ids) - n, (B,), generator=g)
        batch = self.masked(self.rows(self.train_ids, starts), g)  # the whole global batch
        return {k: v[r * B // W:(r + 1) * B // W] for k, v in batch.items()}

    def logits(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """(logits (N, V), labels (N,)) of the N chosen tokens: the encoder runs over every
        position, the masked-LM head (the vocabulary-wide matmul) over the chosen ones only."""
        hidden = model(batch["input_ids"])  # (B, T, C), through DDP when wrapped
        chosen = batch["labels"] != IGNORE_INDEX  # (B, T)
        return unwrap(model).head(hidden[chosen]), batch["labels"][chosen]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(*self.logits(model, batch))

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        g = torch.Generator().manual_seed(0)  # the same masks every time
        n = self.data.block_size - 2
        starts = torch.arange(0, len(self.val_ids) - n, n)
        rows = self.rows(self.val_ids, starts)
        limit = self.data.eval_batches if max_batches is None else max(1, max_batches // 4)
        batches = [self.masked(rows[i:i + 32], g) for i in range(0, len(rows), 32)][:limit]
        mine = batches[self.dist.rank::self.dist.world]
        plain = CrossEntropy()
        return {"loss": mean_loss(lambda m, b: plain(*self.logits(m, b)), model, mine,
                                  self.count, self.dist, device)}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]

