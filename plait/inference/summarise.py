"""One-sentence summaries from a pointer-generator folder (``plait train configs/summarise.toml``).

    from plait.inference.summarise import Summariser
    s = Summariser.from_folder("runs/summarise")
    s.summarise(["Acme GmbH said on Tuesday it would buy ... ."])
    # ['Acme GmbH agreed to buy Kaul e.V. for 450 million dollars on March 9, 2021.']

Decoding is greedy over the extended vocabulary (:mod:`plait.models.pointer`): at each step
the most probable word, written from the vocabulary or copied from the article; ``<unk>`` is
never chosen, and a name, number or date is copied as one contiguous run of the article
(:class:`Runs`). The decoder is run over the whole prefix at each step (a summary is ~20
words; the encoder runs once).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from plait.models.pointer import PointerGenerator, Words
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
    is_fact,
    join_words,
    split_words,
)


def words_batch(vocab: CopyVocab, rows: list[list[Word]], sources: list[list[Word]],
                slots: list[dict[str, int]] | None = None) -> tuple[Words, Tensor]:
    """Padded :class:`Words` of ``rows`` (extended ids and slot numbers from ``sources``, or
    the given ``slots``) and their mask."""
    slots = slots or [vocab.slots(s) for s in sources]
    feats = [vocab.features(r, k) for r, k in zip(rows, slots, strict=True)]
    ids, mask = pad_batch([f[0] for f in feats], PAD)
    shapes, _ = pad_batch([f[1] for f in feats], 0)
    numbers, _ = pad_batch([f[2] for f in feats], 0)
    ext, _ = pad_batch([vocab.extended(r, s) for r, s in zip(rows, sources, strict=True)], PAD)
    return Words(ids, shapes, numbers, ext), mask


def to(words: Words, device: torch.device) -> Words:
    return Words(*(t.to(device) for t in (words.ids, words.shapes, words.slots, words.ext)))


BOS_WORD = Word("<s>", False)


class Summariser:
    """``summarise(texts) -> [summary, ...]``, one sentence per text."""

    def __init__(self, model: PointerGenerator, vocab: CopyVocab):
        if model.config.vocab_size != vocab.vocab_size:
            raise ValueError(f"the model has {model.config.vocab_size} vocabulary ids and its"
                             f" copy_vocab.json {vocab.vocab_size}: the folder is inconsistent")
        if (model.config.n_shapes, model.config.n_slots) != (N_SHAPES, N_SLOTS):
            raise ValueError(f"the model reads {model.config.n_shapes} shapes and"
                             f" {model.config.n_slots} slots; this plait writes {N_SHAPES} and"
                             f" {N_SLOTS}")
        self.model, self.vocab = model.eval(), vocab
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> Summariser:
        from plait.loading import load_as

        model = load_as(folder, PointerGenerator, "a summariser (a pointer-generator)",
                        "configs/summarise.toml", device)
        return cls(model, CopyVocab.load(folder))

    @torch.no_grad()
    def summarise(self, texts: Sequence[str], max_words: int = 60,
                  batch_size: int = 64) -> list[str]:
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        out: list[str] = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                out += self._batch(list(texts[i:i + batch_size]), max_words)
        return out

    def _batch(self, texts: list[str], max_words: int) -> list[str]:
        sources = [split_words(t) for t in texts]
        empty = [i for i, s in enumerate(sources) if not s]
        if empty:
            raise ValueError(f"text {empty[0] + 1} is empty: there is nothing to summarise")
        device = next(self.model.parameters()).device
        slots = [self.vocab.slots(s) for s in sources]
        src, mask = words_batch(self.vocab, sources, sources, slots)
        src, mask = to(src, device), mask.to(device)
        memory = self.model.encode_words(src, mask)
        runs = [Runs(self.vocab, s) for s in sources]
        limit = min(max_words, self.model.config.block_size - 1)
        for _ in range(limit):
            rows = [r.words for r in runs]
            dec, _ = words_batch(self.vocab, rows, sources, slots)
            pos = pad_batch([r.pos for r in runs], -1)[0].to(device)
            logp, attn = self.model.decode_words(to(dec, device), pos, memory, src, mask)
            logp, attn = logp[:, -1].cpu(), attn[:, -1].cpu()
            for b, run in enumerate(runs):
                if not run.done:
                    run.step(logp[b], attn[b])
            if all(r.done for r in runs):
                break
        return [join_words(r.words[1:]) for r in runs]


class Runs:
    """One summary being written, and the rule that keeps its facts true to the article: a
    run of fact words (capitals, digits; :func:`~plait.text.words.is_fact`) and the marks
    joining them is copied as one contiguous run of the article, so no name, number or date
    can be stitched together from two places. After a fact word copied from position p, the
    next fact word may only be the article's word at p + 1 (after marks that match the
    article there); "Anna" of "Anna Weber" cannot be followed by the "Freeman" of "John
    Freeman"."""

    JOINERS = frozenset(",.-/'&")

    def __init__(self, vocab: CopyVocab, source: list[Word]):
        self.vocab, self.source = vocab, source
        self.words: list[Word] = [BOS_WORD]
        self.pos: list[int] = [-1]
        self.done = False
        self.expect: int | None = None  # inside a run: where it may go on (None: it may not)
        self.in_run = False
        self.first: dict[str, int] = {}  # a word's extended id copies its first occurrence
        for at, w in enumerate(source):
            self.first.setdefault(w.text, vocab.vocab_size + at)
        self.fact_ids = torch.tensor(sorted({k for t, k in self.first.items() if is_fact(t)}),
                                     dtype=torch.long)

    def step(self, logp: Tensor, attn: Tensor) -> None:
        """Choose the next word from log P (V + S,) and the copy attention (S,)."""
        logp = logp.clone()
        logp[[PAD, BOS, UNK]] = float("-inf")
        if self.in_run and len(self.fact_ids):
            goes_on = (self.expect is not None and self.expect < len(self.source)
                       and is_fact(self.source[self.expect].text))
            if goes_on:  # the one fact word allowed: the article's next one
                k = self.first[self.source[self.expect].text]
                kept = logp[k].clone()
            logp[self.fact_ids] = float("-inf")
            if goes_on:
                logp[k] = kept
        k = int(logp.argmax())
        if k == EOS:
            self.done = True
            return
        V = self.vocab.vocab_size
        text = self.vocab.itos[k] if k < V else self.source[k - V].text
        self.place(text, attn)

    def place(self, text: str, attn: Tensor) -> None:
        """Append a word: where it was copied from, its spacing, and the run it starts, goes
        on with or ends."""
        follows = self.pos[-1] + 1 if self.pos[-1] >= 0 else -1
        if 0 <= follows < len(self.source) and self.source[follows].text == text:
            at = follows
        else:
            where = [s for s, w in enumerate(self.source) if w.text == text]
            at = max(where, key=lambda s: float(attn[s])) if where else -1
        word = self.source[at] if at >= 0 else self.vocab.word(self.vocab.stoi[text], [])
        if len(self.words) == 1:
            word = Word(word.text, False)
        self.words.append(word)
        self.pos.append(at)
        if is_fact(text):
            self.in_run, self.expect = True, at + 1
        elif text in self.JOINERS and self.in_run:
            ok = self.expect is not None and self.expect == at
            self.expect = at + 1 if ok else None
        else:
            self.in_run, self.expect = False, None

