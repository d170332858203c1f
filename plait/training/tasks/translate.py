"""Translation into canonical form: written dates and numbers (``plait.data.translate``).

An encoder–decoder (``arch = "seq2seq"``) reads "jeudi 9 mars 2017" (its words as single
tokens, the rest as characters) and writes the characters of "2017-03-09". Batches: the
source's tokens (right-padded), the decoder input (start token + target) and the labels
(target + end token, padding ignored). The loss is
cross-entropy with ``train.label_smoothing``; the evaluation decodes the held-out set (years
ending in 7, numbers ending in 37: never trained on) and reports exact match and sacreBLEU,
overall and per kind and language (:mod:`plait.evaluation.translate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import translate as data
from plait.data.masking import hide_tokens, past_start
from plait.text.base import pad_batch
from plait.text.char import CharTokenizer
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import IGNORE_INDEX, CrossEntropy
from plait.training.tasks import Batch, Task

SPECIALS = ("<pad>", "<s>", "</s>")


@dataclass(frozen=True)
class TranslateData(Config):
    """``[data]`` for the dates-and-numbers task."""

    date_locales: tuple[str, ...] = data.DATE_LOCALES
    number_langs: tuple[str, ...] = data.NUMBER_LANGS
    batch_size: int = 128  # global batch (split across ranks)
    heldout_per_group: int = 100  # held-out examples per (kind, language) in the final eval
    eval_per_group: int = 10  # ... in the periodic evals
    # share of the decoder's input tokens (after the start token) hidden while training: the
    # decoder must then read the source rather than continue the outputs it has seen before
    decoder_dropout: float = 0.0
    # whole words of the sources (month, weekday and number words) as single tokens, the rest
    # characters: "тридцать" and "триста" are then two symbols, not spellings sharing "три"
    words: bool = True
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.batch_size, self.heldout_per_group, self.eval_per_group) <= 0:
            raise ValueError("data.batch_size, heldout_per_group and eval_per_group must be > 0")
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise ValueError(f"data.decoder_dropout must be in [0, 1), got {self.decoder_dropout}")
        for name, known, given in (("date_locales", data.KNOWN_DATE_LOCALES, self.date_locales),
                                   ("number_langs", data.KNOWN_NUMBER_LANGS,
                                    self.number_langs)):
            bad = sorted(set(given) - set(known))
            if bad or not given:
                raise ValueError(f"data.{name} must be a non-empty subset of {', '.join(known)};"
                                 f" got {bad or 'none'}")


class TranslateTask(Task):
    """Dates and numbers into ISO dates and digits, on an encoder–decoder."""

    data_config = TranslateData
    units = {"loss": "nats/char", "exact": "fraction", "exact_beam4": "fraction",
             "bleu": "sacreBLEU (char)"}

    def __init__(self, data_cfg: TranslateData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        if data_cfg.batch_size % d.world:
            raise ValueError(f"data.batch_size {data_cfg.batch_size} must divide evenly over"
                             f" {d.world} ranks")
        self.langs = {"date_locales": tuple(data_cfg.date_locales),
                      "number_langs": tuple(data_cfg.number_langs)}
        text = data.vocabulary_text(**self.langs).replace("\n", " ")
        self.tokenizer = CharTokenizer.train(text, SPECIALS, min_word_count=int(data_cfg.words))
        self.criterion = CrossEntropy(train.label_smoothing)
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)

    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "decoder_start_token_id"):
            raise ConfigError("task 'translate' needs an encoder-decoder: model.arch = 'seq2seq'")
        t = self.tokenizer
        return config.replace(vocab_size=t.vocab_size, pad_token_id=t.pad_token_id,
                              eos_token_id=t.eos_token_id, decoder_start_token_id=t.bos_token_id)

    def batch(self, examples: list[data.Example]) -> Batch:
        """Right-padded sources, decoder inputs (start + target), labels (target + end)."""
        t = self.tokenizer
        src, src_mask = pad_batch([t.encode(e.source) for e in examples], t.pad_token_id)
        tgt = [t.encode(e.target) for e in examples]
        dec, _ = pad_batch([[t.bos_token_id, *r] for r in tgt], t.pad_token_id)
        labels, lab_mask = pad_batch([[*r, t.eos_token_id] for r in tgt], IGNORE_INDEX)
        return {"input_ids": src, "attention_mask": src_mask, "decoder_input_ids": dec,
                "labels": labels.masked_fill(lab_mask == 0, IGNORE_INDEX)}

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        seed = self.data.seed + self.train.seed
        rows = data.train_examples(seed, step, micro, B, **self.langs)
        batch = self.batch(rows[r * B // W:(r + 1) * B // W])
        if self.data.decoder_dropout > 0:
            g = torch.Generator().manual_seed(hash((seed, step, micro, r)) % 2**63)
            dec = batch["decoder_input_ids"]
            batch["decoder_input_ids"] = hide_tokens(dec, self.data.decoder_dropout,
                                                     self.tokenizer.pad_token_id,
                                                     past_start(dec), g)
        return batch

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
        return self.criterion(logits, batch["labels"])  # (B, T, V), (B, T)

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Teacher-forced loss and decoded exact match on held-out examples; the whole held-out
        set (and beam search, and every group) at the end, a slice of it periodically."""
        from plait.evaluation.translate import score
        from plait.inference.seq2seq import Translator

        full = max_batches is None
        per_group = self.data.heldout_per_group if full else self.data.eval_per_group
        examples = data.heldout_examples(self.data.seed, per_group, **self.langs)
        translator = Translator(unwrap(model), self.tokenizer)
        losses, n = 0.0, 0
        for i in range(0, len(examples), 256):
            batch = {k: v.to(device) for k, v in self.batch(examples[i:i + 256]).items()}
            k = self.count(batch)
            losses += float(CrossEntropy()(model(batch["input_ids"], batch["attention_mask"],
                                                 batch["decoder_input_ids"]),
                                           batch["labels"])) * k
            n += k
        metrics = {"loss": losses / max(n, 1)}
        metrics.update(score(translator, examples, beams=(1, 4) if full else (1,),
                             per_group=full))
        return metrics

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]
