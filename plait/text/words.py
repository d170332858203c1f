"""Words for a copying encoder–decoder (the pointer-generator of See et al. 2017,
arXiv:1704.04368): a small vocabulary of common lower-case words, everything else copied.

A text is split at whitespace, and the punctuation at either end of a chunk is split off
("Gray, Clark." -> "Gray", ",", "Clark", "."), but not what stands inside it: "4,250",
"2021-03-09", "Hahn-Ruppert" and "e.V." are one word each, so a number or a date is copied
in one step. A word remembers whether a space came before it, so copied words are written
back with the article's spacing.

The vocabulary holds only lower-case words and punctuation seen often enough in training:
names, numbers and dates are never in it, so a decoder cannot *write* one; it can only copy
one from its source. Besides its vocabulary id (or ``<unk>``), every word gets two features
the encoder reads, so that an out-of-vocabulary word is not a blank:

- its **shape**, "Xxxx", "d,ddd", "Xx.X." (runs of a character class cut at 2);
- its **slot**: the out-of-vocabulary words of one source are numbered (1, 2, ...; 0 for
  vocabulary words), the same word the same number wherever it stands in that source or its
  summary, so two mentions of "Weber" look alike. The numbers say nothing across sources:
  training draws them in a random order (Hermann et al. 2015's anonymised entities), so a
  name cannot teach its number a meaning; inference numbers words in order of appearance.

Extended ids (See et al.'s "extended vocabulary"): a word of the vocabulary is its id; any
other word of a source is ``vocab_size + s``, s its first position in that source. A target
word is encoded the same way against its source (``<unk>`` when it is in neither).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plait.io import atomic_write_text, read_json

COPY_VOCAB_FILE = "copy_vocab.json"
COPY_TYPE = "plait-copy-words"
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
N_SHAPES = 128  # hash buckets of word shapes
N_SLOTS = 256  # slot numbers of a source's out-of-vocabulary words (0: in the vocabulary)
NO_SPACE_BEFORE = set(",.;:!?%)'/-")
_WORD = re.compile(r"[a-z]+|[^\w\s]")  # what may enter the vocabulary
_LEAD = "\"([{"  # split off the start of a chunk
_TRAIL = ",;:!?)]}\""  # split off its end; "." too, unless it ends an abbreviation


@dataclass(frozen=True)
class Word:
    text: str
    space: bool  # a space came before it in its text


def split_words(text: str) -> list[Word]:
    """The words and punctuation of ``text``, each with whether a space preceded it."""
    out: list[Word] = []
    for m in re.finditer(r"\S+", text):
        chunk, space = m.group(), m.start() > 0
        while len(chunk) > 1 and chunk[0] in _LEAD:
            out.append(Word(chunk[0], space))
            chunk, space = chunk[1:], False
        tail: list[Word] = []
        while len(chunk) > 1 and (chunk[-1] in _TRAIL or (chunk[-1] == "." and
                                                          _sentence_period(chunk[:-1]))):
            tail.insert(0, Word(chunk[-1], False))
            chunk = chunk[:-1]
        out += [Word(chunk, space), *tail]
    return out


def _sentence_period(word: str) -> bool:
    """Whether a period after ``word`` ends a sentence rather than an abbreviation ("e.V.",
    "S.L.", a single initial "D.")."""
    if len(word) == 1 and word.isalpha():
        return False
    return "." not in word or word[-1].isdigit()


def is_fact(word: str) -> bool:
    """A name, number or date piece: a capital letter or a digit in it."""
    return any(c.isupper() or c.isdigit() for c in word)


def copy_positions(words: list[Word], source: list[Word]) -> list[int]:
    """Where in ``source`` each of ``words`` is copied from (-1: nowhere): the place after the
    previous word's when the source goes on with it there; else, of the word's occurrences,
    the one that starts the longest run matching the words from it on (the first such), so
    "Anna Weber" points at the "Anna" followed by "Weber"."""
    texts = [w.text for w in source]
    where: dict[str, list[int]] = {}
    for s, t in enumerate(texts):
        where.setdefault(t, []).append(s)
    out = []
    for i, w in enumerate(words):
        prev = out[-1] if out else -1
        if 0 <= prev < len(texts) - 1 and texts[prev + 1] == w.text:
            out.append(prev + 1)
            continue
        best, run = -1, 0
        for s in where.get(w.text, ()):
            k = 0
            while (i + k < len(words) and s + k < len(texts)
                   and texts[s + k] == words[i + k].text):
                k += 1
            if k > run:
                best, run = s, k
        out.append(best)
    return out


def join_words(words: Iterable[Word]) -> str:
    """Words back into text: a space wherever one was."""
    out = ""
    for i, w in enumerate(words):
        out += (" " if w.space and i else "") + w.text
    return out


def shape(word: str) -> str:
    """"Weber" -> "Xx", "4,250" -> "d,d", "e.V." -> "x.X.": character classes, runs kept at
    one (a length says little about a name)."""
    classes = ("X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c
               for c in word)
    out: list[str] = []
    for c in classes:
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def bucket(text: str, n: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % n


class CopyVocab:
    """The vocabulary and the encodings of a copying encoder–decoder."""

    def __init__(self, words: list[str]):
        self.itos = [*SPECIALS, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("copy vocabulary words must be distinct")

    @classmethod
    def train(cls, texts: Iterable[str], min_count: int = 3) -> CopyVocab:
        """Lower-case words and punctuation seen at least ``min_count`` times, most common
        first (ties alphabetical)."""
        counts = Counter(w.text for t in texts for w in split_words(t)
                         if _WORD.fullmatch(w.text))
        keep = sorted((w for w, k in counts.items() if k >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(keep)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    pad_token_id, bos_token_id, eos_token_id, unk_token_id = PAD, BOS, EOS, UNK

    def slots(self, source: list[Word], rng: random.Random | None = None) -> dict[str, int]:
        """Slot numbers of the out-of-vocabulary words of ``source``: in order of appearance,
        or in a random order drawn from ``rng`` (training)."""
        oov = list(dict.fromkeys(w.text for w in source if w.text not in self.stoi))
        numbers = list(range(1, N_SLOTS))
        if rng is not None:
            rng.shuffle(numbers)
        return {t: numbers[i % len(numbers)] for i, t in enumerate(oov)}

    def features(self, words: list[Word], slots: dict[str, int]
                 ) -> tuple[list[int], list[int], list[int]]:
        """(vocabulary ids with ``<unk>``, shape buckets, slot numbers) of some words; a word
        in neither the vocabulary nor ``slots`` has slot 0."""
        ids = [self.stoi.get(w.text, UNK) for w in words]
        return ids, [bucket(shape(w.text), N_SHAPES) for w in words], [
            slots.get(w.text, 0) for w in words]

    def extended(self, words: list[Word], source: list[Word]) -> list[int]:
        """Extended ids of ``words`` against ``source`` (module docstring)."""
        first: dict[str, int] = {}
        for s, w in enumerate(source):
            first.setdefault(w.text, s)
        V = self.vocab_size
        return [self.stoi[w.text] if w.text in self.stoi else
                V + first[w.text] if w.text in first else UNK for w in words]

    def word(self, ext_id: int, source: list[Word]) -> Word:
        """The word an extended id stands for (copied words keep their source spacing)."""
        if ext_id >= self.vocab_size:
            return source[ext_id - self.vocab_size]
        text = self.itos[ext_id]
        return Word(text, text not in NO_SPACE_BEFORE)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / COPY_VOCAB_FILE
        data = {"type": COPY_TYPE, "version": 1, "words": self.itos[len(SPECIALS):],
                "n_shapes": N_SHAPES, "n_slots": N_SLOTS}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> CopyVocab:
        path = Path(folder) / COPY_VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {COPY_VOCAB_FILE} in {folder}: not a folder written"
                                    " by plait train configs/summarise.toml")
        data = read_json(path)
        if data.get("type") != COPY_TYPE or (data.get("n_shapes"), data.get("n_slots")) != (
                N_SHAPES, N_SLOTS):
            raise ValueError(f"{path} is not a {COPY_TYPE} vocabulary of this plait version")
        return cls(list(data["words"]))

    def __repr__(self) -> str:
        return f"CopyVocab(vocab_size={self.vocab_size})"
