"""Sequence classification with a BERT-family encoder: who speaks a speech of tiny Shakespeare
(:mod:`plait.data.speakers`; the held-out speeches are every tenth of each speaker's list).

Batches are right-padded WordPiece ids and labels; the loss is cross-entropy of the head over
the pooled [CLS] vector. The tokenizer is the pretraining stage's (``train.init_from``), or one
trained on the training speeches when the encoder starts from scratch. The evaluation reports
accuracy on the held-out speeches beside a baseline no one here wrote: TF-IDF features and
logistic regression from scikit-learn, fitted on the same training speeches, its settings
chosen by cross-validation on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import speakers as S
from plait.text.base import pad_batch
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task


@dataclass(frozen=True)
class SpeakersData(Config):
    """``[data]`` for the speaker task."""

    text: str = "data/tinyshakespeare.txt"
    batch_size: int = 32
    max_length: int = 128  # WordPiece pieces per speech, [CLS] and [SEP] included
    vocab_size: int = 4000  # only when no pretrained tokenizer comes with init_from
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.batch_size, self.max_length - 2, self.vocab_size) <= 0:
            raise ValueError("data.batch_size and vocab_size must be > 0, max_length > 2")


@lru_cache(maxsize=4)
def speakers_baseline(text: str) -> float:
    """:func:`tfidf_baseline` on the speaker split of ``text``, computed once per process."""
    return tfidf_baseline(S.speeches(text, "train"), S.speeches(text, "heldout"))


def tfidf_baseline(train: list[S.Speech], heldout: list[S.Speech]) -> float:
    """Held-out accuracy of TF-IDF (sublinear tf) + logistic regression, its word n-gram range
    and C chosen by 5-fold cross-validation on the training speeches alone (so the baseline is
    as strong as its own data can make it, and the held-out speeches choose nothing)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    pipe = Pipeline([("tfidf", TfidfVectorizer(sublinear_tf=True)),
                     ("lr", LogisticRegression(max_iter=2000))])
    grid = {"tfidf__ngram_range": [(1, 1), (1, 2)], "lr__C": [1.0, 10.0, 100.0]}
    search = GridSearchCV(pipe, grid, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    search.fit([s.text for s in train], [s.speaker for s in train])
    pred = search.predict([s.text for s in heldout])
    return float(sum(p == s.speaker for p, s in zip(pred, heldout, strict=True)) / len(heldout))


class SpeakersTask(Task):
    """Ten-way speaker classification of held-out speeches."""

    data_config = SpeakersData
    units = {"loss": "nats/speech", "accuracy": "fraction", "baseline_accuracy": "fraction"}

    def __init__(self, data: SpeakersData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.max_length = data.max_length  # model_config caps it by the model's positions
        self.labels = S.speakers(data.text)
        self.train_set = S.speeches(data.text, "train")
        self.heldout = S.speeches(data.text, "heldout")
        self.tokenizer = self._tokenizer()
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
        self.criterion = CrossEntropy(train.label_smoothing)

    def _tokenizer(self):
        from plait.text import load_tokenizer
        from plait.text.wordpiece import WordPieceTokenizer

        if self.train.init_from:
            return load_tokenizer(self.train.init_from)
        return WordPieceTokenizer.train([s.text for s in self.train_set], self.data.vocab_size)

    def model_config(self, config: Config) -> Config:
        # pieces per text: the data's cap, within what the model's positions reach
        self.max_length = min(self.data.max_length, config.block_size)
        if not hasattr(config, "type_vocab_size"):
            raise ConfigError("task 'classify-speakers' needs a BERT-family encoder:"
                              " model.arch = 'bert'")
        return config.replace(labels=tuple(self.labels), head="classify",
                              num_labels=len(self.labels), vocab_size=self.tokenizer.vocab_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    def batch(self, speeches: list[S.Speech]) -> Batch:
        t = self.tokenizer
        ids, mask = pad_batch([t.encode(s.text, max_length=self.max_length)
                               for s in speeches], t.pad_token_id)
        labels = torch.tensor([self.labels.index(s.speaker) for s in speeches])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def train_batch(self, step: int, micro: int) -> Batch:
        rng = random.Random(f"speakers/{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        picks = [rng.randrange(len(self.train_set)) for _ in range(B)]
        return self.batch([self.train_set[i] for i in picks[r * B // W:(r + 1) * B // W]])

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """Through the (possibly DDP-wrapped) encoder, then its pooler and head: (B, labels)."""
        m = unwrap(model)
        mask = batch["attention_mask"]
        return m.head(m.pool(model(batch["input_ids"], mask), mask))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(self.logits(model, batch), batch["labels"])

    @property
    def baseline(self) -> float:
        return speakers_baseline(self.data.text)

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Loss and accuracy on every held-out speech (each rank computes all of them: 153
        speeches are cheap), and the TF-IDF baseline's accuracy on the same split."""
        total, correct = 0.0, 0
        for i in range(0, len(self.heldout), 64):
            batch = {k: v.to(device) for k, v in self.batch(self.heldout[i:i + 64]).items()}
            logits = self.logits(model, batch)
            total += float(CrossEntropy()(logits, batch["labels"])) * len(logits)
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
        n = len(self.heldout)
        return {"loss": total / n, "accuracy": correct / n, "baseline_accuracy": self.baseline}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]
