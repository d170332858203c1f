"""Summarisation: a short synthetic news article into its one-sentence summary
(:mod:`plait.data.summarise`), on a pointer-generator (``arch = "pointer-generator"``).

A batch holds the article's words (vocabulary ids, shape and identity buckets, extended ids),
the decoder's inputs (start + summary) and the labels (summary + end) as extended ids. The loss
is the negative log-likelihood of each label under the mixture of writing and copying:

    loss = - mean_t log( p_gen P_vocab(y_t) + (1 - p_gen) sum_{s: x_s = y_t} a_t,s )

The evaluation decodes held-out articles (frames and entity strings never in training) and
reports ROUGE-1/2/L (``rouge-score``), the share of the summaries' facts (names, numbers, dates)
not found in the article (``hallucination``), fact precision and recall against the reference,
and the same for the lead-sentence baseline (:mod:`plait.evaluation.summarise`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import summarise as data
from plait.inference.summarise import BOS_WORD, Summariser, words_batch
from plait.models.pointer import Words
from plait.text.base import pad_batch
from plait.text.words import (
    BOS,
    EOS,
    N_SHAPES,
    N_SLOTS,
    PAD,
    UNK,
    CopyVocab,
    Word,
    copy_positions,
    split_words,
)
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import IGNORE_INDEX
from plait.training.tasks import Batch, Task

PARTS = ("ids", "shapes", "slots", "ext")


@dataclass(frozen=True)
class SummariseData(Config):
    """``[data]`` for the news-summary task."""

    batch_size: int = 32
    n_heldout: int = 500  # held-out articles in the final evaluation
    n_eval: int = 100  # ... in the periodic ones
    vocab_articles: int = 4000  # training articles the vocabulary is counted on
    min_count: int = 3  # a lower-case word enters the vocabulary after this many uses
    dir: str = ""  # where copy_vocab.json is written; "" = <train.out_dir>/data
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.batch_size, self.n_heldout, self.n_eval, self.vocab_articles,
               self.min_count) <= 0:
            raise ValueError("data.batch_size, n_heldout, n_eval, vocab_articles and min_count"
                             " must be > 0")


class SummariseTask(Task):
    """Articles into one-sentence summaries, writing or copying each word."""

    data_config = SummariseData
    units = {"loss": "nats/word", "rouge1": "F1", "rouge2": "F1", "rougeL": "F1",
             "hallucination": "fraction", "lead_rougeL": "F1"}

    def __init__(self, data_cfg: SummariseData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        if data_cfg.batch_size % d.world:
            raise ValueError(f"data.batch_size {data_cfg.batch_size} must divide evenly over"
                             f" {d.world} ranks")
        counted = data.articles("train", data_cfg.vocab_articles, data_cfg.seed)
        self.vocab = CopyVocab.train((t for a in counted for t in (a.text, a.summary)),
                                     data_cfg.min_count)
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.vocab.save(self.data_dir)

    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "unk_token_id"):
            raise ConfigError("task 'summarise' needs model.arch = 'pointer-generator'")
        return config.replace(vocab_size=self.vocab.vocab_size, pad_token_id=PAD,
                              eos_token_id=EOS, decoder_start_token_id=BOS, unk_token_id=UNK,
                              n_shapes=N_SHAPES, n_slots=N_SLOTS)

    def batch(self, articles: list[data.Article], rng: random.Random | None = None) -> Batch:
        """Padded tensors of some articles; ``rng`` numbers their slots at random
        (:meth:`CopyVocab.slots`), else in order of appearance."""
        sources = [split_words(a.text) for a in articles]
        targets = [split_words(a.summary) for a in articles]
        slots = [self.vocab.slots(s, rng) for s in sources]
        src, src_mask = words_batch(self.vocab, sources, sources, slots)
        dec, _ = words_batch(self.vocab, [[BOS_WORD, *t] for t in targets], sources, slots)
        end = Word("</s>", False)
        lab, lab_mask = words_batch(self.vocab, [[*t, end] for t in targets], sources, slots)
        dec_pos, _ = pad_batch([[-1, *copy_positions(t, s)] for t, s in
                                zip(targets, sources, strict=True)], -1)
        labels = lab.ext.masked_fill(lab_mask == 0, IGNORE_INDEX)
        return {**{f"src_{k}": getattr(src, k) for k in PARTS}, "src_mask": src_mask,
                **{f"dec_{k}": getattr(dec, k) for k in PARTS}, "dec_pos": dec_pos,
                "labels": labels}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        seed = self.data.seed + self.train.seed
        rows = data.train_articles(seed, step, micro, B)
        rng = random.Random(f"summarise-slots/{seed}/{step}/{micro}/{r}")
        return self.batch(rows[r * B // W:(r + 1) * B // W], rng)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        src = Words(*(batch[f"src_{k}"] for k in PARTS))
        dec = Words(*(batch[f"dec_{k}"] for k in PARTS))
        logp = model(src, batch["src_mask"], dec, batch["dec_pos"])  # (B, T, V + S)
        return F.nll_loss(logp.flatten(0, 1), batch["labels"].flatten(),
                          ignore_index=IGNORE_INDEX)

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Teacher-forced loss and greedy summaries of held-out articles: all
        ``data.n_heldout`` of them at the end (with the lead baseline beside), ``n_eval``
        periodically."""
        from plait.evaluation.summarise import fact_scores, lead_baseline, rouge

        full = max_batches is None
        heldout = data.articles("heldout", self.data.n_heldout if full else self.data.n_eval,
                                self.data.seed)
        total, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(heldout), 64):
                batch = {k: v.to(device) for k, v in self.batch(heldout[i:i + 64]).items()}
                k = self.count(batch)
                total += float(self.loss(model, batch)) * k
                n += k
        summaries = Summariser(unwrap(model), self.vocab).summarise([a.text for a in heldout])
        texts, refs = [a.text for a in heldout], [a.summary for a in heldout]
        metrics = {"loss": total / max(n, 1), **rouge(refs, summaries),
                   **fact_scores(texts, refs, summaries)}
        if full:
            metrics.update(lead_baseline(texts, refs))
        return metrics

    def files(self) -> list[Path]:
        return [self.data_dir / "copy_vocab.json"]
