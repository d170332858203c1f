"""Character-level tokenizer: one id per distinct character of the training text.

The vocabulary is the sorted set of characters, as in nanoGPT's shakespeare_char (Karpathy's
char-rnn). It is saved as ``tokenizer.json`` in a small plait format::

    {"type": "plait-char", "version": 1, "chars": ["\\n", " ", "!", ...]}

where the id of a character is its index in ``chars``. There is no unknown token: a character
outside the vocabulary is an error, because the model never saw it.

A model that needs markers (an encoder-decoder: padding, the decoder's start, the end of a
target) adds ``specials=("<pad>", "<s>", "</s>")``: they take ids 0, 1, 2 before the
characters, ``encode`` never produces them, and ``decode`` leaves them out.

``words=[...]`` adds whole words after the characters: a run of letters that is one of them is
one token ("тридцать", "mars"), any other run is spelled out character by character; digits,
spaces and punctuation are always single characters. A model then sees "тридцать" and
"триста" as two symbols rather than two spellings that share "три", while ``decode`` still
returns exactly the text that was encoded. With ``spaced=True`` each word also has a second
token that carries the one space before it (GPT-2's "Ġword"): "the red circle" is three tokens,
not five, so a sentence of words costs half the positions.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from plait.io import atomic_write_text
from plait.text.base import TOKENIZER_FILE

CHAR_TYPE = "plait-char"


SPECIAL_NAMES = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}
LETTERS = re.compile(r"[^\W\d_]+")  # a run of letters (any script): what a word token is


class CharTokenizer:
    """Characters <-> ids; ``CharTokenizer.train(text)`` builds the vocabulary."""

    def __init__(self, chars: list[str], specials: tuple[str, ...] | list[str] = (),
                 words: tuple[str, ...] | list[str] = (), spaced: bool = False):
        if not chars or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer needs a non-empty list of distinct single characters")
        if len(set(specials)) != len(specials) or any(len(t) < 2 for t in specials):
            raise ValueError(f"special tokens must be distinct and longer than one character,"
                             f" got {list(specials)}")
        bad = [w for w in words if len(w) < 2 or not LETTERS.fullmatch(w)
               or not set(w) <= set(chars)]
        if bad or len(set(words)) != len(words):
            raise ValueError(f"words must be distinct runs of two or more letters of the "
                             f"vocabulary's characters, got {bad[:5] or 'duplicates'}")
        self.specials = list(specials)
        self.chars = list(chars)
        self.words = list(words)
        self.spaced = bool(spaced and words)
        if self.spaced and " " not in self.chars:
            raise ValueError("spaced word tokens need the space character in the vocabulary")
        n = len(self.specials)
        self.stoi = {c: n + i for i, c in enumerate(self.chars)}
        forms = [*self.words, *(" " + w for w in self.words)] if self.spaced else self.words
        self.word_ids = {w: n + len(self.chars) + i for i, w in enumerate(forms)}
        self.itos = [*self.specials, *self.chars, *forms]

    @classmethod
    def train(cls, text: str, specials: tuple[str, ...] = (), min_word_count: int = 0
              ) -> CharTokenizer:
        """Every character of ``text``; with ``min_word_count``, also every run of letters
        found at least that many times (word tokens, most frequent first)."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        words: tuple[str, ...] = ()
        if min_word_count > 0:
            counts = Counter(w for w in LETTERS.findall(text) if len(w) > 1)
            words = tuple(sorted((w for w, k in counts.items() if k >= min_word_count),
                                 key=lambda w: (-counts[w], w)))
        return cls(sorted(set(text)), specials, words)

    def _special(self, kind: str) -> int | None:
        name = SPECIAL_NAMES[kind]
        return self.specials.index(name) if name in self.specials else None

    @property
    def eos_token_id(self) -> int | None:
        """``</s>`` when the vocabulary has it; else None (the text is one long stream)."""
        return self._special("eos")

    @property
    def bos_token_id(self) -> int | None:
        return self._special("bos")

    @property
    def pad_token_id(self) -> int:
        """``<pad>``, or id 0: padded positions are masked, so any id is safe."""
        pad = self._special("pad")
        return 0 if pad is None else pad

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            if not self.words:
                return [stoi[c] for c in text]
            out, end = [], 0
            for m in LETTERS.finditer(text):
                start, word = m.start(), self.word_ids.get(m.group())
                if (word is not None and self.spaced and start > end
                        and text[start - 1] == " "):  # the space travels with the word
                    start, word = start - 1, self.word_ids[" " + m.group()]
                out += [stoi[c] for c in text[end:start]]
                out += [word] if word is not None else [stoi[c] for c in m.group()]
                end = m.end()
            return out + [stoi[c] for c in text[end:]]
        except KeyError:
            unknown = [(i, c) for i, c in enumerate(text) if c not in stoi]
            shown = ", ".join(f"{c!r} at position {i}" for i, c in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ValueError(
                f"character(s) not in the vocabulary: {shown}{more}; this model's vocabulary is "
                f"the {self.vocab_size} characters of its training text, so remove or replace them"
            ) from None

    def decode(self, ids: list[int]) -> str:
        """The characters of ``ids``; special tokens are left out."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id(s) {bad[:5]} outside the vocabulary [0, {self.vocab_size})")
        n = len(self.specials)
        return "".join(self.itos[i] for i in ids if i >= n)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TOKENIZER_FILE
        data = {"type": CHAR_TYPE, "version": 1, "chars": self.chars}
        if self.specials:
            data["specials"] = self.specials
        if self.words:
            data["words"] = self.words
        if self.spaced:
            data["spaced"] = True
        atomic_write_text(path, json.dumps(data, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        return cls(list(data["chars"]), tuple(data.get("specials", ())),
                   tuple(data.get("words", ())), bool(data.get("spaced", False)))

    def __repr__(self) -> str:
        words = f", words={len(self.words)}" if self.words else ""
        return f"CharTokenizer(vocab_size={self.vocab_size}{words})"
