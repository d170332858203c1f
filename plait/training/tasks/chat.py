"""Supervised fine-tuning of a chat model on rule-made dialogues (:mod:`plait.data.dialogue`).

A conversation is rendered with :data:`ROLE_LINES` (``User: ...`` lines) and tokenised whole, as
a prompt is; each token knows from :meth:`ChatTemplate.spans` whether the model writes it when
it answers (:func:`tokenize`). The loss is next-token cross-entropy on those tokens only: the
assistant's words, the newline that ends them (the stop string) and the space after
``Assistant:`` (the generation prompt stops before it); the system message, the user's turns
and ``Assistant:`` carry target -100. With A the positions of the assistant's tokens t_i in a
batch,

    loss = -1/|A| * sum_{i in A} log p(t_i | t_<i)

The tokenizer reads characters (every printable ASCII one, so a user may type anything) and
the words of the dialogues' language as one token each, with the space before them ("Ġword");
made-up names and the words whose letters are counted are spelled out. The template and the
tokenizer are saved beside the weights, so the run folder chats by itself (``plait chat``).

The evaluation answers held-out dialogues (values never trained on), greedily, given the true
earlier turns, and reports exact match of the last answer, overall and per kind of question;
then the same dialogues' last questions asked in the held-out phrasings ("Give me ..."),
overall; beside them the teacher-forced loss on every assistant turn.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from plait.config import Config, ConfigError
from plait.data import dialogue as data
from plait.text.base import pad_batch
from plait.text.char import CharTokenizer
from plait.text.chat import ChatTemplate
from plait.training.config import TrainConfig
from plait.training.distributed import Dist, unwrap
from plait.training.losses import IGNORE_INDEX, CrossEntropy
from plait.training.tasks import Batch, Task, to_device

# one line per turn, the role's name first; the answer ends at its newline. Markers such as
# "<|user|>" ... "<|end|>" cost 11 tokens a turn with this tokenizer, these 3 or 4: with about
# two exchanges a dialogue, half of every batch was markers. The generation prompt leaves out
# the space after "Assistant:", so the model writes " five" as the one token it is in a history.
ROLE_LINES = ChatTemplate({"system": "System: {content}\n", "user": "User: {content}\n",
                           "assistant": "Assistant: {content}\n"}, "Assistant:", ("\n",))
SPECIALS = ("<pad>",)


@dataclass(frozen=True)
class ChatData(Config):
    """``[data]`` of the chat task."""

    batch_size: int = 32  # rows per global batch: a dialogue each, or (pack) several
    pack: bool = True  # fill rows of model.block_size tokens with whole dialogues
    heldout_per_kind: int = 100  # held-out dialogues per kind of question, final evaluation
    eval_per_kind: int = 10  # ... periodic evaluations
    seed: int = 0
    dir: str = ""  # tokenizer.json + chat_template.json; "" = <train.out_dir>/data

    def __post_init__(self) -> None:
        if min(self.batch_size, self.heldout_per_kind, self.eval_per_kind) <= 0:
            raise ValueError("data.batch_size, heldout_per_kind and eval_per_kind must be > 0")


def chat_tokenizer() -> CharTokenizer:
    """Printable ASCII characters and the dialogues' words (plus the markers') as tokens."""
    chars = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    words = sorted({*data.vocabulary_words(), "System", "User", "Assistant"})
    return CharTokenizer(chars, SPECIALS, words, spaced=True)


def tokenize(tokenizer: CharTokenizer, template: ChatTemplate,
             messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(ids, targets) of a conversation: ``targets[i]`` is ``ids[i + 1]`` where that token is
    what the model writes when it answers, else -100.

    The model writes everything after the generation prompt up to and including the stop
    string: the assistant's words, the stop, and the end of the turn's opening that the prompt
    leaves out (ROLE_LINES' space after ``Assistant:``). The text is tokenised whole, as a
    prompt is, and a token is the model's when its last character is: `` five`` (one token
    with its space) is trained, ``:`` is not."""
    spans = template.spans(messages)
    head = template.turns["assistant"].split("{content}", 1)[0]
    prompt = template.generation_prompt
    left = len(head) - len(prompt) if head.startswith(prompt) else 0  # written by the model
    text, written = "", []
    for piece, is_answer in spans:
        if is_answer and left:
            written[-left:] = [True] * left
        text += piece
        written += [is_answer] * len(piece)
    ids = tokenizer.encode(text)
    labels, end = [], 0
    for i in ids:
        end += len(tokenizer.itos[i])
        labels.append(i if written[end - 1] else IGNORE_INDEX)
    return ids, labels[1:] + [IGNORE_INDEX]


class ChatTask(Task):
    """A GPT taught to answer in dialogues; loss on the assistant's tokens only."""

    data_config = ChatData
    units = {"loss": "nats/answer token", "exact": "fraction",
             **{f"exact_{k}": "fraction" for k in data.KINDS}, "exact_new_phrasing": "fraction"}

    def __init__(self, data_cfg: ChatData, train: TrainConfig, d: Dist):
        super().__init__(data_cfg, train, d)
        self.tokenizer = chat_tokenizer()
        self.template = ROLE_LINES
        self.criterion = CrossEntropy(train.label_smoothing)
        self.block_size = 0  # set by model_config: longer rows are cut to it
        if d.is_main:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self.data_dir)
            self.template.save(self.data_dir)

    def model_config(self, config: Config) -> Config:
        if not hasattr(config, "block_size") or hasattr(config, "decoder_start_token_id"):
            raise ConfigError("task 'chat' needs a decoder-only language model: model.arch ="
                              " 'gpt'")
        self.block_size = config.block_size
        return config.replace(vocab_size=self.tokenizer.vocab_size)

    def batch(self, rows: list[tuple[list[int], list[int]]]) -> Batch:
        """(ids, targets) rows -> right-padded ``input_ids`` and ``targets`` (B, T), padding
        carrying target -100. Right padding needs no attention mask: a causal model never
        looks forward at it."""
        ids, _ = pad_batch([r for r, _ in rows], self.tokenizer.pad_token_id)
        targets, _ = pad_batch([t for _, t in rows], IGNORE_INDEX)
        return {"input_ids": ids, "targets": targets}

    def rows(self, dialogues: list[data.Dialogue]) -> list[tuple[list[int], list[int]]]:
        """One row per dialogue, cut to the model's ``block_size``."""
        T = self.block_size or None
        rows = [tokenize(self.tokenizer, self.template, d.messages()) for d in dialogues]
        return [(r[:T], t[:T]) for r, t in rows]

    def packed(self, dialogues: Iterator[data.Dialogue], n: int) -> list[tuple[list[int],
                                                                                list[int]]]:
        """``n`` rows of up to ``block_size`` tokens, each filled with whole dialogues in turn
        (a dialogue that does not fit begins the next row): a third of a padded batch would
        be padding. A dialogue may attend to the ones before it in its row; it learns to
        ignore them, and at inference a conversation starts a row, as the first one does."""
        T = self.block_size
        out: list[tuple[list[int], list[int]]] = []
        ids: list[int] = []
        targets: list[int] = []
        while len(out) < n:
            r, t = self.rows([next(dialogues)])[0]
            if ids and len(ids) + len(r) > T:
                out.append((ids, targets))
                ids, targets = [], []
            ids, targets = ids + r, targets + t
        return out

    def train_batch(self, step: int, micro: int) -> Batch:
        B, W, r = self.data.batch_size, self.dist.world, self.dist.rank
        stream = data.train_dialogues(self.data.seed + self.train.seed, step, micro)
        rows = (self.packed(stream, B) if self.data.pack
                else self.rows([next(stream) for _ in range(B)]))
        return self.batch(rows[r * B // W:(r + 1) * B // W])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(model(batch["input_ids"]), batch["targets"])  # (B, T, V), (B, T)

    def count(self, batch: Batch) -> int:
        return int((batch["targets"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module, device: torch.device,
                 max_batches: int | None) -> dict[str, float]:
        """Exact match of the final answers of held-out dialogues (all of them at the end, a
        few per kind periodically), asked in training phrasings and, apart, in the held-out
        ones; and the loss on all assistant turns of the first."""
        inner = unwrap(model)
        per_kind = self.data.heldout_per_kind if max_batches is None else self.data.eval_per_kind
        held = data.heldout_dialogues(self.data.seed, per_kind)
        total, n = 0.0, 0
        for i in range(0, len(held), 64):
            batch = to_device(self.batch(self.rows(held[i:i + 64])), device)
            k = self.count(batch)
            total += float(CrossEntropy()(inner(batch["input_ids"]), batch["targets"])) * k
            n += k
        right = self.exact(inner, held)
        new = self.exact(inner, data.heldout_dialogues(self.data.seed, per_kind, True))
        kinds = {f"exact_{k}": _mean(right[i * per_kind:(i + 1) * per_kind])
                 for i, k in enumerate(data.KINDS)}  # heldout_dialogues' order: kind by kind
        return {"loss": total / max(n, 1), "exact": _mean(right), **kinds,
                "exact_new_phrasing": _mean(new)}

    def exact(self, model: nn.Module, held: list[data.Dialogue]) -> list[bool]:
        """Whether the greedy answer to each dialogue's last question, given the turns before
        it, is exactly its answer."""
        from plait.inference.chat import Chat
        from plait.inference.text import TextGenerator

        chat = Chat(TextGenerator(model, self.tokenizer), self.template)
        longest = max(len(self.tokenizer.encode(d.exchanges[-1].answer)) for d in held)
        got = chat.answers([d.messages()[:-1] for d in held], longest + 4)  # space, stop, 2 more
        return [g == d.exchanges[-1].answer for g, d in zip(got, held, strict=True)]

    def files(self) -> list[Path]:
        return [self.data_dir / "tokenizer.json", self.data_dir / "chat_template.json"]


def _mean(values: list[bool]) -> float:
    return sum(values) / max(len(values), 1)
