"""A picture, a spoken word and a written question whose yes/no answer needs all three.

An example (:func:`example_at`) is a scene of 1-4 shapes (:mod:`plait.data.scenes`), one spoken
word (a number "zero"-"four" or a colour, said by an espeak-ng speaker of
:mod:`plait.data.speech`) and a question of one of three families:

- ``count-colour``: "is the number said equal to the number of red shapes?"
- ``count-kind``: "is the number said equal to the number of circles?"
- ``colour-kind``: "does the spoken colour appear in the picture as a star?"

**Balanced, so that no one or two of the three can answer.** Half the answers are "yes". For a
count, the asked count ``v`` is drawn uniformly from the counts the picture has (``A``: the
number of shapes of each colour, or of each kind), the question names a colour (kind) with that
count, and the number said is ``v`` for "yes" or another member of ``A`` for "no"; so the
number said is uniform over ``A`` whatever the answer (the picture and the word alone cannot
tell), the question names a colour whose count is uniform over ``A`` (picture and question
alone cannot), and question and word alone know no counts. For ``colour-kind`` the kind is
that of a shape ``X`` in the picture; the colour said is ``X``'s for "yes", for "no" the colour
of another shape that no shape of that kind has: either way the colour said is in the picture.
A picture where no "no" is possible is not asked.

**Held out** (the evaluation's split): scenes of the held-out split, each with a colour+kind
pair no training scene has (:data:`plait.data.scenes.HELDOUT_PAIRS`), and words said by the
held-out speakers (:func:`plait.data.speech.speakers`). Training never asks ``colour-kind``
about a held-out pair, whose answer there would always be "no".

Example ``i`` of a split is a pure function of ``(seed, split, i)``; its word is a recording
among ``n_words`` of the split (:func:`word_utterances`, built once by
:func:`plait.data.speech.build_speech`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from plait.data.scenes import COLOURS, HELDOUT_PAIRS, KINDS, Shape, sample_shapes
from plait.data.speech import PITCHES, SPEEDS, Split, Utterance, speakers

NUMBER_WORDS = ("zero", "one", "two", "three", "four")
WORDS = (*NUMBER_WORDS, *COLOURS)  # every word said; utterance i says WORDS[i % len(WORDS)]
MAX_SHAPES = 4
FAMILIES = ("count-colour", "count-kind", "colour-kind")
ANSWERS = ("no", "yes")
# every family's phrasings: evaluation asks the first, training draws any ({x}: the slot)
PHRASINGS: dict[str, tuple[str, ...]] = {
    "count-colour": ("is the number said equal to the number of {x} shapes?",
                     "does the number you hear match how many {x} shapes there are?",
                     "are there as many {x} shapes as the number spoken?"),
    "count-kind": ("is the number said equal to the number of {x}s?",
                   "does the number you hear match how many {x}s there are?",
                   "are there as many {x}s as the number spoken?"),
    "colour-kind": ("does the spoken colour appear in the picture as a {x}?",
                    "is the colour you hear the colour of a {x}?",
                    "is there a {x} of the colour spoken?"),
}


@dataclass(frozen=True)
class Example:
    shapes: tuple[Shape, ...]
    word: str  # what the recording says
    utterance: int  # which recording of the split's words says it
    family: str  # one of FAMILIES
    slot: str  # the colour or kind the question names
    answer: str  # "yes" or "no"

    def question(self, phrasing: int = 0) -> str:
        return PHRASINGS[self.family][phrasing].format(x=self.slot)

    @property
    def asked_count(self) -> int | None:
        """How many shapes have the colour (kind) a count question names; None for
        colour-kind."""
        if self.family == "colour-kind":
            return None
        return _counts(self.shapes, self.family)[self.slot]

    @property
    def about_heldout_pair(self) -> bool:
        """A colour-kind question whose colour and kind make a held-out pair."""
        return self.family == "colour-kind" and (self.word, self.slot) in HELDOUT_PAIRS


def word_utterances(n: int, split: Split = "train", seed: int = 0) -> list[Utterance]:
    """The first ``n`` recordings of ``split``'s words: every word in turn, each said by a
    speaker of the split at a speed and pitch of its own (as :mod:`plait.data.speech`)."""
    who = speakers(split)
    out = []
    for i in range(n):
        rng = random.Random(f"fusion-words/{seed}/{split}/{i}")
        word = WORDS[i % len(WORDS)]
        voice, _, variant = rng.choice(who).partition("+")
        out.append(Utterance(word, word, "word", voice, variant, rng.randint(*SPEEDS),
                             rng.randint(*PITCHES)))
    return out


def example_at(index: int, split: Split = "train", seed: int = 0,
               n_words: int = 1100) -> Example:
    """Example ``index`` of ``split``, its word one of the split's first ``n_words``
    recordings."""
    if split not in ("train", "heldout"):
        raise ValueError(f"fusion split must be 'train' or 'heldout', got {split!r}")
    return example(random.Random(f"fusion/{seed}/{split}/{index}"), split == "heldout",
                   n_words)


def example(rng: random.Random, heldout: bool = False, n_words: int = 1100) -> Example:
    """One example drawn by ``rng`` (a held-out scene when ``heldout``)."""
    if n_words < len(WORDS):
        raise ValueError(f"n_words must hold every word at least once: >= {len(WORDS)}, got"
                         f" {n_words}")
    family = rng.choice(FAMILIES)  # first, so each family is a third of the examples
    while True:
        shapes = sample_shapes(rng, rng.randint(1, MAX_SHAPES), heldout)
        made = (_colour_kind(rng, shapes, heldout) if family == "colour-kind"
                else _count(rng, shapes, family))
        if made is not None:
            break
    slot, word, yes = made
    said = WORDS.index(word) + len(WORDS) * rng.randrange(n_words // len(WORDS))
    return Example(tuple(shapes), word, said, family, slot, ANSWERS[yes])


def _count(rng: random.Random, shapes: list[Shape],
           family: str) -> tuple[str, str, bool] | None:
    """(slot, number word, yes) of a count question, or None where the picture has one count
    only (every colour or kind named would have it: no "no" to ask)."""
    counts = _counts(shapes, family)
    names = list(counts)
    have = sorted(set(counts.values()))
    if len(have) < 2:
        return None
    asked = rng.choice(have)
    slot = rng.choice([n for n in names if counts[n] == asked])
    yes = rng.random() < 0.5
    said = asked if yes else rng.choice([v for v in have if v != asked])
    return slot, NUMBER_WORDS[said], yes


def _counts(shapes: tuple[Shape, ...] | list[Shape], family: str) -> dict[str, int]:
    """Shapes per colour (count-colour) or per kind (count-kind), every name included."""
    if family == "count-colour":
        return {c: sum(s.colour == c for s in shapes) for c in COLOURS}
    return {k: sum(s.kind == k for s in shapes) for k in KINDS}


def _colour_kind(rng: random.Random, shapes: list[Shape],
                 heldout: bool) -> tuple[str, str, bool] | None:
    """(kind, colour word, yes) of a colour-kind question, or None where no "no" is possible
    (no other shape has a colour the kind lacks)."""
    x = rng.choice(shapes)
    on_kind = {s.colour for s in shapes if s.kind == x.kind}
    others = sorted({s.colour for s in shapes if s.colour not in on_kind
                     and (heldout or (s.colour, x.kind) not in HELDOUT_PAIRS)})
    if not others:
        return None
    yes = rng.random() < 0.5
    return x.kind, x.colour if yes else rng.choice(others), yes
