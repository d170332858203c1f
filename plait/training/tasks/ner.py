"""Named-entity recognition with a BERT-family tagger (``head = "tag"``) on the sentences of
:mod:`plait.data.ner` (held out: unseen frames and unseen entity strings).

Words are split as BERT's pre-tokenizer splits them; a word's BIO tag is the label of its
*first* WordPiece, and its other pieces (and [CLS], [SEP], padding) carry -100, so a long name
cut into five pieces counts once (the alignment transformers users get wrong most often). The
evaluation tags held-out sentences and reports entity-level precision, recall and F1 with
``seqeval`` (Ramshaw & Marcus 1995 BIO; CoNLL scoring).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import ner as data
from plait.data.masking import IGNORE_INDEX
from plait.data.ner import first_piece_labels
from plait.text.base import pad_batch
from plait.text.wordpiece import word_pieces
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task


@dataclass(frozen=True)
class NERData(Config):
    """``[data]`` for the entity tagger."""

    batch_size: int = 32
    vocab_size: int = 8000  # cased WordPiece learned from training sentences and English words
    vocab_sentences: int = 20000  # how many training sentences the vocabulary is learned from
    heldout: int = 1000  # held-out sentences in the final evaluation (periodic: a fifth)
    max_length: int = 96
    vary_words: float = 0.6  # share of a frame's own words swapped for random English words
    join: float = 0.5  # share of training examples made of two frames in a row
    # share of training examples that are instead sentences of the relation frames
    # (plait.data.relations, training split): a tagger for relation extraction then also knows
    # its appositions and relative clauses ("Anna Weber, a native of Lyon, ...")
    relation_frames: float = 0.0
    seed: int = 0
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.batch_size, self.vocab_size, self.vocab_sentences, self.heldout) <= 0:
            raise ValueError("data.batch_size, vocab_size, vocab_sentences and heldout must be"
                             " > 0")
        if not 0 <= self.relation_frames <= 1:
            raise ValueError("data.relation_frames must be in [0, 1]")


class NERTask(Task):
    """Tag every word of a sentence PER / LOC / ORG / DATE (BIO) or O."""

    data_config = NERData
    units = {"loss": "nats/word", "f1": "entity F1", "precision": "fraction",
             "recall": "fraction"}

    def __init__(self, data_cfg: NERData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        self.max_length = data_cfg.max_length  # model_config caps it by the model's positions
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
        # the training sentences (varied as in training) and the English they vary with
        texts = [s.text for s in data.batch_sentences(self.data.seed, -1, 0,
                                                      self.data.vocab_sentences,
                                                      self.data.vary_words)]
        return WordPieceTokenizer.train([*texts, " ".join(data.common_words())],
                                        self.data.vocab_size, do_lower_case=False)

    def model_config(self, config: Config) -> Config:
        # pieces per text: the data's cap, within what the model's positions reach
        self.max_length = min(self.data.max_length, config.block_size)
        if not hasattr(config, "type_vocab_size"):
            raise ConfigError("task 'ner' needs a BERT-family encoder: model.arch = 'bert'")
        return config.replace(labels=data.LABELS, head="tag", num_labels=len(data.LABELS),
                              vocab_size=self.tokenizer.vocab_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    def batch(self, sentences: list[data.Sentence]) -> Batch:
        rows, labels = [], []
        for s in sentences:
            ids, wids = word_pieces(self.tokenizer, list(s.words), self.max_length)
            rows.append(ids)
            labels.append(first_piece_labels(wids, [data.LABELS.index(t) for t in s.tags]))
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id)
        lab, _ = pad_batch(labels, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": lab}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        rows = data.batch_sentences(self.data.seed + self.train.seed, step, micro, B,
                                    self.data.vary_words, self.data.join)
        if self.data.relation_frames > 0:
            rows = self.with_relation_sentences(rows, step, micro)
        return self.batch(rows[r * B // W:(r + 1) * B // W])

    def with_relation_sentences(self, rows: list[data.Sentence], step: int,
                                micro: int) -> list[data.Sentence]:
        """Each row replaced, with probability ``relation_frames``, by a training sentence of
        the relation frames, tagged from its entity spans."""
        from plait.data import relations

        rng = random.Random(f"ner-relations/{self.data.seed + self.train.seed}/{step}/{micro}")
        fs = relations.frames("train")
        out = []
        for row in rows:
            if rng.random() < self.data.relation_frames:
                s = relations.sentence(rng.choice(fs), "train", rng)
                row = data.tagged(s.text, [(e.type, e.start, e.end) for e in s.entities])
            out.append(row)
        return out

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """Through the (possibly DDP-wrapped) encoder, then the tagging head: (B, T, labels)."""
        return unwrap(model).head(model(batch["input_ids"], batch["attention_mask"]))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(self.logits(model, batch), batch["labels"])

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        n = self.data.heldout if max_batches is None else max(50, self.data.heldout // 5)
        sentences = data.sentences("heldout", n, self.data.seed)
        truth, pred, total, words = [], [], 0.0, 0
        for i in range(0, len(sentences), 64):
            chunk = sentences[i:i + 64]
            batch = {k: v.to(device) for k, v in self.batch(chunk).items()}
            logits = self.logits(model, batch)
            k = self.count(batch)
            total += float(CrossEntropy()(logits, batch["labels"])) * k
            words += k
            best = logits.argmax(-1)
            for row, s in enumerate(chunk):
                keep = batch["labels"][row] != IGNORE_INDEX
                tags = [data.LABELS[j] for j in best[row][keep].tolist()]
                truth.append(list(s.tags[:len(tags)]))
                pred.append(tags)
        return {"loss": total / max(words, 1), "f1": f1_score(truth, pred),
                "precision": precision_score(truth, pred), "recall": recall_score(truth, pred)}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]
