"""Sequence classification with a BERT-family encoder: your own labelled texts (``classify``)
or who speaks a speech of tiny Shakespeare (``classify-speakers``, :mod:`plait.data.speakers`;
the held-out speeches are every tenth of each speaker's list).

``classify`` reads JSON Lines files, one ``{"text": ..., "label": ...}`` per line
(``data.train_file``, ``data.eval_file``); the labels are ``data.labels`` when given, else the
training file's, sorted. A malformed line, an empty text or a label outside that list is one
error naming the file, the line and the label.

Batches are right-padded WordPiece ids and labels; the loss is cross-entropy of the head over
the pooled vector (``model.pooling``: [CLS] or the mean of the tokens). The tokenizer is the
pretraining stage's (``train.init_from``), or one trained on the training texts when the
encoder starts from scratch. The speaker task reports its held-out accuracy beside a baseline
no one here wrote: TF-IDF features and logistic regression from scikit-learn, fitted on the
same training speeches, its settings chosen by cross-validation on them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import speakers as S
from plait.data.masking import drop_tokens
from plait.nn.ragged import by_length
from plait.text.base import Tokenizer, encode_texts
from plait.training.config import TrainConfig
from plait.training.distill import soft_cross_entropy, teacher_probs
from plait.training.distributed import Dist, unwrap
from plait.training.losses import CrossEntropy
from plait.training.tasks import Batch, Task

Row = tuple[str, str]  # (text, label)


@dataclass(frozen=True)
class TextsData(Config):
    """``[data]`` keys every classification task has."""

    batch_size: int = 32
    max_length: int = 128  # WordPiece pieces per text, [CLS] and [SEP] included
    vocab_size: int = 4000  # only when no pretrained tokenizer comes with init_from
    dir: str = ""  # where tokenizer.json is written; "" = <train.out_dir>/data
    # model.pooling = "weighted": a piece of frequency p in the training texts weighs
    # sif / (sif + p) in the mean (Arora et al. 2017's smooth inverse frequency)
    sif: float = 1e-3
    # > 0: word dropout while training, each piece but [CLS] / [SEP] removed with this chance
    token_dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.batch_size, self.max_length - 2, self.vocab_size, self.sif) <= 0:
            raise ValueError("data.batch_size, vocab_size and sif must be > 0, max_length > 2")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"data.token_dropout must be in [0, 1), got {self.token_dropout}")


@dataclass(frozen=True)
class ClassifyData(TextsData):
    """``[data]`` for your own labelled texts."""

    train_file: str = ""  # JSON Lines: {"text": ..., "label": ...}
    eval_file: str = ""  # the same, held out
    labels: tuple[str, ...] = ()  # their order (the head's outputs); () = the training file's

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_file or not self.eval_file:
            raise ValueError("task 'classify' needs data.train_file and data.eval_file (JSON"
                             ' Lines of {"text": ..., "label": ...})')
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"data.labels has duplicates: {list(self.labels)}")


def read_labelled(path: str | Path, labels: tuple[str, ...] | None = None) -> list[Row]:
    """(text, label) rows of a JSON Lines file; with ``labels``, any other label is an error
    naming its line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows: list[Row] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {n}: not JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not isinstance(
                item.get("label"), str):
            raise ValueError(f'{path} line {n}: expected {{"text": str, "label": str}}')
        if not item["text"].strip():
            raise ValueError(f"{path} line {n}: empty text")
        if labels is not None and item["label"] not in labels:
            raise ValueError(f"{path} line {n}: unknown label {item['label']!r} (the labels are"
                             f" {', '.join(labels)})")
        rows.append((item["text"], item["label"]))
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


@dataclass(frozen=True)
class SpeakersData(TextsData):
    """``[data]`` for the speaker task."""

    text: str = "data/tinyshakespeare.txt"
    # score every ninth training speech instead of the held-out ones (pretrain with
    # corpus = "speakers-validation" so they are unseen): for comparing recipes
    validation: bool = False
    # > 0: beside each batch, as many speeches of the rest of the text (any speaker) for an
    # auxiliary head that names which run of this many speeches of the file each comes from:
    # where in the plays it is, learned from five times the labelled speeches
    window: int = 0
    window_weight: float = 1.0  # that head's loss, times this, is added to the speaker loss
    # folders (or earlier stages) of speaker classifiers fine-tuned from other seeds: the
    # model also learns their mean probabilities on the rest of the text (plait.training.distill)
    teachers: tuple[str, ...] = ()
    distill: float = 1.0  # that loss, times this, is added to the speaker loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.window, self.window_weight, self.distill) < 0:
            raise ValueError("data.window, window_weight and distill must be >= 0")


def sif_weights(tokenizer: Tokenizer, texts: list[str], a: float) -> Tensor:
    """Each piece's weight a / (a + p) in pooling "weighted" (Arora et al. 2017), p its share
    of the pieces of ``texts`` ([CLS] and [SEP] included): the rarer a piece, the more it
    counts; one never seen weighs 1. (vocab_size,)"""
    counts = torch.zeros(tokenizer.vocab_size, dtype=torch.float64)
    for text in texts:
        ids = torch.tensor(tokenizer.encode(text))
        counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
    return (a / (a + counts / counts.sum())).float()


@lru_cache(maxsize=4)
def speakers_baseline(text: str, validation: bool = False) -> float:
    """:func:`tfidf_baseline` on the speaker split of ``text``, computed once per process."""
    return tfidf_baseline(S.speeches(text, "train", validation),
                          S.speeches(text, "heldout", validation))


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


class ClassifyTask(Task):
    """Classification of labelled texts, measured by accuracy on the held-out ones."""

    name = "classify"
    data_config: type[Config] = ClassifyData
    units = {"loss": "nats/text", "accuracy": "fraction"}

    def __init__(self, data: TextsData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        self.max_length = data.max_length  # model_config caps it by the model's positions
        self.labels, self.train_set, self.heldout = self.examples()
        self.tokenizer = self._tokenizer()
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
        self.criterion = CrossEntropy(train.label_smoothing)

    def examples(self) -> tuple[tuple[str, ...], list[Row], list[Row]]:
        """(labels, training rows, held-out rows)."""
        given = tuple(self.data.labels) or None
        train_rows = read_labelled(self.data.train_file, given)
        labels = given or tuple(sorted({label for _, label in train_rows}))
        return labels, train_rows, read_labelled(self.data.eval_file, labels)

    def _tokenizer(self):
        from plait.text import load_tokenizer
        from plait.text.wordpiece import WordPieceTokenizer

        if self.train.init_from:
            return load_tokenizer(self.train.init_from)
        return WordPieceTokenizer.train([text for text, _ in self.train_set], self.data.vocab_size)

    def model_config(self, config: Config) -> Config:
        # pieces per text: the data's cap, within what the model's positions reach
        self.max_length = min(self.data.max_length, config.block_size)
        if not hasattr(config, "type_vocab_size"):
            raise ConfigError(f"task '{self.name}' needs a BERT-family encoder:"
                              " model.arch = 'bert'")
        return config.replace(labels=tuple(self.labels), head="classify",
                              num_labels=len(self.labels), vocab_size=self.tokenizer.vocab_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    def fit_model(self, model: nn.Module) -> None:
        """Pooling "weighted": the pieces' weights from the training texts (:func:`sif_weights`)."""
        if model.config.pooling == "weighted":
            texts = [text for text, _ in self.train_set]
            model.pool_weight.copy_(sif_weights(self.tokenizer, texts, self.data.sif))
        if model.config.read == "aux":
            model.aux_table.copy_(self.aux_table())

    def aux_table(self) -> Tensor:
        """How the labels share each auxiliary class, (aux_labels, labels), for ``read = "aux"``."""
        raise ConfigError(f"task '{self.name}' has no auxiliary classes to read the label"
                          " through: model.read = 'head'")

    def batch(self, rows: list[Row], unlabelled: list[str] | None = None,
              whole: bool = False) -> Batch:
        """Right-padded ids of the rows' texts, then of ``unlabelled`` texts (no labels), each
        cut to ``max_length`` pieces; ``whole``: a longer text in runs of that many instead,
        each row's text in ``"owner"`` (``in_pieces``)."""
        texts = [text for text, _ in rows] + (unlabelled or [])
        ids, mask, owner = encode_texts(self.tokenizer, texts, self.max_length, whole)
        labels = torch.tensor([self.labels.index(label) for _, label in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                **({"owner": owner} if whole else {})}

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.dropped(self.batch(self.draw(self.train_set, "", step, micro)), step, micro)

    def dropped(self, batch: Batch, step: int, micro: int) -> Batch:
        """The batch with ``data.token_dropout`` of its pieces removed (:func:`drop_tokens`),
        drawn from (seed, step, micro)."""
        if not self.data.token_dropout:
            return batch
        t = self.tokenizer
        ids, mask = drop_tokens(batch["input_ids"], batch["attention_mask"],
                                (t.cls_token_id, t.sep_token_id), self.data.token_dropout,
                                t.pad_token_id, self.generator(step, micro))
        return {**batch, "input_ids": ids, "attention_mask": mask}

    def draw(self, rows: list, stream: str, step: int, micro: int) -> list:
        """This rank's share of ``data.batch_size`` rows drawn from ``rows`` by (``stream``,
        seed, step, micro)."""
        rng = random.Random(f"{self.name}/{stream}{self.train.seed}/{step}/{micro}")
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        picks = [rng.randrange(len(rows)) for _ in range(B)]
        return [rows[i] for i in picks[r * B // W:(r + 1) * B // W]]

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """Through the (possibly DDP-wrapped) encoder, then its pooling and what the model
        classifies with (its head, or ``read = "aux"``'s reading): (B, labels)."""
        return unwrap(model).classify(self.pooled(model, batch))

    def pooled(self, model: nn.Module, batch: Batch) -> Tensor:
        """The encoder's pooled vectors of a batch's texts, (texts, C): the rows run in groups
        of similar length (:func:`by_length`), or in one call under DDP, which expects one
        forward per backward."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        m = unwrap(model)
        hidden = model(ids, mask) if m is not model else by_length(m, ids, mask)
        return m.pool(hidden, mask, ids, batch.get("owner"))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The head's loss (what ``read = "aux"`` reads through is trained by its own task)."""
        return self.criterion(unwrap(model).head(self.pooled(model, batch)), batch["labels"])

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Loss and accuracy on every held-out text (each rank computes all of them), read
        whole when the model pools its tokens (as ``plait classify`` reads them)."""
        total, correct = 0.0, 0
        whole = unwrap(model).config.pools_tokens
        for i in range(0, len(self.heldout), 64):
            batch = self.batch(self.heldout[i:i + 64], whole=whole)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = self.logits(model, batch)
            total += float(CrossEntropy()(logits, batch["labels"])) * len(logits)
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
        n = len(self.heldout)
        return {"loss": total / n, "accuracy": correct / n}

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json"]


class SpeakersTask(ClassifyTask):
    """Ten-way speaker classification of held-out speeches, beside the TF-IDF baseline."""

    name = "classify-speakers"
    data_config = SpeakersData
    units = {"loss": "nats/speech", "accuracy": "fraction", "baseline_accuracy": "fraction"}

    def __init__(self, data: SpeakersData, train: TrainConfig, d: Dist):
        super().__init__(data, train, d)
        # the rest of the text (every speech but the held-out ones), beside each batch for the
        # window head and the teachers: (text, its window, its row in self.soft)
        rest = S.rest(data.text, data.validation) if data.window or data.teachers else []
        self.located = [(s.text, s.index // max(data.window, 1), k) for k, s in enumerate(rest)]
        self.soft: Tensor | None = None  # the teachers' mean probabilities, (rest, speakers)

    def prepare(self) -> None:
        """With ``data.teachers``: their mean probabilities for the rest of the text, read once."""
        super().prepare()
        if self.data.teachers and self.soft is None:
            self.soft = teacher_probs(self.data.teachers, [t for t, _, _ in self.located],
                                      self.labels)

    def model_config(self, config: Config) -> Config:
        config = super().model_config(config)
        return config.replace(aux_labels=self.windows())

    def windows(self) -> int:
        """How many runs of ``data.window`` speeches the file has (0 without windows)."""
        w = self.data.window
        return -(-S.count(self.data.text) // w) if w else 0

    def aux_table(self) -> Tensor:
        """Each window's share of each speaker among the training speeches, (windows,
        speakers): counts + 1 (a window none of them speaks in reads as uniform), per row."""
        w = self.data.window
        table = torch.ones(self.windows(), len(self.labels))
        for s in S.speeches(self.data.text, "train", self.data.validation):
            table[s.index // w, self.labels.index(s.speaker)] += 1
        return table / table.sum(1, keepdim=True)

    def train_batch(self, step: int, micro: int) -> Batch:
        """The speakers' rows, then (with ``data.window`` or ``data.teachers``) as many
        speeches of the rest of the text: one forward for both (``aux_labels`` their windows,
        ``soft`` the teachers' probabilities for them)."""
        rows = self.draw(self.train_set, "", step, micro)
        located = self.draw(self.located, "window/", step, micro) if self.located else []
        batch = self.dropped(self.batch(rows, [text for text, _, _ in located]), step, micro)
        if self.data.window and located:
            batch["aux_labels"] = torch.tensor([w for _, w, _ in located])
        if self.data.teachers and located:
            if self.soft is None:
                raise RuntimeError("data.teachers: call prepare() before drawing batches")
            batch["soft"] = self.soft[torch.tensor([k for _, _, k in located])]
        return batch

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The speaker loss, plus the window head's and the distillation loss on the rest of
        the text's rows (``plait.training.distill``)."""
        if "aux_labels" not in batch and "soft" not in batch:
            return super().loss(model, batch)
        m, n = unwrap(model), len(batch["labels"])
        pooled = self.pooled(model, batch)
        loss = self.criterion(m.head(pooled[:n]), batch["labels"])
        if "aux_labels" in batch:
            loss = loss + self.data.window_weight * self.criterion(m.aux_head(pooled[n:]),
                                                                   batch["aux_labels"])
        if "soft" in batch:
            loss = loss + self.data.distill * soft_cross_entropy(m.head(pooled[n:]),
                                                                 batch["soft"])
        return loss

    def count(self, batch: Batch) -> int:
        return len(batch["labels"])

    def examples(self) -> tuple[tuple[str, ...], list[Row], list[Row]]:
        text, v = self.data.text, self.data.validation
        return (S.speakers(text), [(s.text, s.speaker) for s in S.speeches(text, "train", v)],
                [(s.text, s.speaker) for s in S.speeches(text, "heldout", v)])

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Loss and accuracy on the 153 held-out speeches, and the TF-IDF baseline's accuracy
        on the same split."""
        return {**super().evaluate(model, device, max_batches),
                "baseline_accuracy": speakers_baseline(self.data.text, self.data.validation)}
