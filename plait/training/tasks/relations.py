"""Relation extraction with entity markers: which relation, if any, holds from one entity of a
sentence to another (:mod:`plait.data.relations`; held out: unseen frames and entity strings).

Each candidate pair (an ordered pair of entities whose types a relation can join) becomes one
example: the sentence with ``[E1] ... [/E1]`` around the head and ``[E2] ... [/E2]`` around
the tail (Baldini Soares et al. 2019, "Matching the Blanks", arXiv:1906.03158, the "entity
markers" input), and the label is read from the two opening markers' final states side by side
(their "entity start" representation, the best of the variants in that paper's Table 2):

    p(r | x, e1, e2) = softmax(W [h_[E1]; h_[E2]] + b)   over "none" and the relation e1's
                                                        and e2's types allow

The four markers are tokens added to the tokenizer (one id each, matched in the raw text
before WordPiece); the encoder usually starts from the recipe's entity-tagger stage, whose
token table grows by their four rows (``plait.training.build.start_from``). The evaluation
scores every candidate pair of the held-out sentences: micro precision, recall and F1 over the
four relations ("none" is the negative class), per relation, and the same for the baseline no
one here wrote, scikit-learn's logistic regression on the words between the two entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import relations as data
from plait.data.relation_grammar import compose
from plait.text.relations import allowed, encode_pairs, typed_logits, with_markers
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task


@dataclass(frozen=True)
class RelationsData(Config):
    """``[data]`` for relation extraction."""

    batch_size: int = 32  # candidate pairs per step
    max_length: int = 96  # WordPiece pieces per marked sentence, [CLS] and [SEP] included
    vocab_size: int = 8000  # only when no tokenizer comes with init_from
    heldout: int = 600  # held-out sentences (all their pairs) in the final evaluation
    baseline_train: int = 3000  # training sentences the baseline is fitted on
    vary_words: float = 0.0  # share of a frame's non-relation words swapped for random words
    joined: float = 0.0  # share of training texts made of two frames in a row
    composed: float = 0.0  # share of training frames composed from clauses (relation_grammar)
    seed: int = 0
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.batch_size, self.vocab_size, self.heldout, self.baseline_train) <= 0:
            raise ValueError("data.batch_size, vocab_size, heldout and baseline_train must be"
                             " > 0")
        if self.max_length < 8:
            raise ValueError(f"data.max_length must be at least 8, got {self.max_length}")
        if not all(0 <= x <= 1 for x in (self.vary_words, self.joined, self.composed)):
            raise ValueError("data.vary_words, data.joined and data.composed must be in [0, 1]")


@lru_cache(maxsize=4)
def baseline_scores(train_sentences: int, heldout_sentences: int, seed: int,
                    composed: float = 0.0) -> dict[str, float]:
    """:func:`plait.data.relations.baseline` on this split (fitted on the same share of
    composed frames as the model), computed once per process."""
    return data.baseline(data.sample_pairs("train", train_sentences, seed, composed, compose),
                         data.sample_pairs("heldout", heldout_sentences, seed))


class RelationsTask(Task):
    """Classify every candidate entity pair of a sentence: a relation of
    :data:`plait.data.relations.RELATIONS` or "none"."""

    data_config = RelationsData
    units = {"loss": "nats/pair", "f1": "micro F1", "precision": "fraction",
             "recall": "fraction", "baseline_f1": "micro F1"}

    def __init__(self, data_cfg: RelationsData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        self.max_length = data_cfg.max_length  # model_config caps it by the model's positions
        self.tokenizer = with_markers(self._tokenizer())
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
        self.criterion = CrossEntropy(train.label_smoothing)

    def _tokenizer(self) -> Any:
        from plait.data.ner import common_words
        from plait.text import load_tokenizer
        from plait.text.wordpiece import WordPieceTokenizer

        if self.train.init_from:
            return load_tokenizer(self.train.init_from)
        texts = [p.text for p in data.sample_pairs("train", 5000, self.data.seed)]
        return WordPieceTokenizer.train([*texts, " ".join(common_words())],
                                        self.data.vocab_size, do_lower_case=False)

    def model_config(self, config: Config) -> Config:
        self.max_length = min(self.data.max_length, config.block_size)
        if not hasattr(config, "type_vocab_size"):
            raise ConfigError("task 'relations' needs a BERT-family encoder: model.arch = 'bert'")
        return config.replace(labels=data.LABELS, head="classify", num_labels=len(data.LABELS),
                              pooling="markers", vocab_size=self.tokenizer.vocab_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    def batch(self, pairs: list[data.Pair], skip_long: bool = False) -> Batch:
        ids, mask, starts, kept = encode_pairs(self.tokenizer, pairs, self.max_length, skip_long)
        labels = torch.tensor([data.LABELS.index(pairs[k].label) for k in kept])
        return {"input_ids": ids, "attention_mask": mask, "starts": starts, "labels": labels,
                "allowed": allowed([pairs[k] for k in kept])}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        pairs = data.batch_pairs(self.data.seed + self.train.seed, step, micro, B,
                                 self.data.vary_words, self.data.joined, self.data.composed,
                                 compose)
        return self.batch(pairs[r * B // W:(r + 1) * B // W], skip_long=True)

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """Through the (possibly DDP-wrapped) encoder, then [h_E1; h_E2] and the head; the
        labels the pair's types rule out masked."""
        m = unwrap(model)
        h = model(batch["input_ids"], batch["attention_mask"])  # (B, T, C)
        return typed_logits(m.head(m.pool_markers(h, batch["starts"])), batch["allowed"])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(self.logits(model, batch), batch["labels"])

    def count(self, batch: Batch) -> int:
        return len(batch["labels"])

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Micro P / R / F1 over every candidate pair of the held-out sentences (a fifth of
        them in periodic evaluations), per relation, and, in the final evaluation, the
        baseline's micro F1 on the same sentences."""
        n = self.data.heldout if max_batches is None else max(50, self.data.heldout // 5)
        pairs = data.sample_pairs("heldout", n, self.data.seed)
        pred, total = [], 0.0
        for i in range(0, len(pairs), 64):
            batch = {k: v.to(device) for k, v in self.batch(pairs[i:i + 64]).items()}
            logits = self.logits(model, batch)
            total += float(CrossEntropy()(logits, batch["labels"])) * len(logits)
            pred += [data.LABELS[j] for j in logits.argmax(-1).tolist()]
        out = {"loss": total / len(pairs), **data.micro_scores([p.label for p in pairs], pred)}
        if max_batches is None:  # the final evaluation (a minute or two of cross-validation)
            base = baseline_scores(self.data.baseline_train, self.data.heldout, self.data.seed,
                                   self.data.composed)
            out["baseline_f1"] = base["f1"]
        return out

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]
