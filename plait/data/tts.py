"""Speech synthesis data: the speech grammar's phrases (:mod:`plait.data.speech`) in one
espeak-ng voice, for a text-to-speech model to imitate.

One speaker, :data:`VOICE` at a fixed speed and pitch: a TTS model learns a voice, not a crowd
(the recogniser that judges it, trained on 140 voices, is what has to generalise). The text a
model reads is what espeak-ng reads, written out: "set a timer for twenty five minutes",
"what colour is the star?".

**Held out**, never in training: every phrase that says "thirty seven" (numbers such as 37,
437 or 2,137, and 37-minute timers) and every scene question about a colour and shape of
:data:`plait.data.scenes.HELDOUT_PAIRS` ("is there a red triangle?"). Those words are all
in training, only never in these combinations. Training draws the grammar's phrases and skips
held-out ones; the held-out split draws until it has enough of them.

Utterance ``i`` of a split is a pure function of ``(seed, split, i)``; folders are built and
cached by :func:`plait.data.speech.build_speech` (``grammar = "tts"``).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from plait.data.scenes import HELDOUT_PAIRS
from plait.data.speech import (
    Split,
    Utterance,
    build_speech,
    number_phrase,
    phrase,
    question_phrase,
    timer_phrase,
)

VOICE, VARIANT = "en-us", "m3"  # a training speaker of the recogniser (plait.data.speech)
SPEED, PITCH = 160, 50  # words per minute, espeak-ng pitch
HELDOUT_WORDS = "thirty seven"
_PAIRS = [re.compile(rf"\b{c} {k}\b") for c, k in sorted(HELDOUT_PAIRS)]


def is_held_out(text: str) -> bool:
    """Whether espeak-ng's text of a phrase belongs to the held-out split."""
    t = text.lower()
    return HELDOUT_WORDS in t or any(p.search(t) for p in _PAIRS)


def _heldout_phrase(rng: random.Random) -> tuple[str, str, str]:
    """A phrase of the held-out split: a number or timer with "thirty seven" in it, or a
    question about a held-out pair."""
    family = rng.choice(("number", "timer", "question"))
    if family == "number":
        n = rng.choice((37, rng.randint(1, 9) * 100 + 37, rng.randint(1, 9) * 1000 + 37,
                        rng.randint(1, 9) * 1000 + rng.randint(0, 9) * 100 + 37))
        return (*number_phrase(rng, n), "number")
    if family == "timer":
        return (*timer_phrase(rng, 37), "timer")
    while True:
        text, transcript = question_phrase(rng, rng.choice(("presence", "relation")))
        if is_held_out(text):
            return text, transcript, "question"


def utterance_at(index: int, split: Split = "train", seed: int = 0) -> Utterance:
    """Utterance ``index`` of ``split``, a pure function of its arguments."""
    rng = random.Random(f"tts/{seed}/{split}/{index}")
    if split == "heldout":
        text, transcript, kind = _heldout_phrase(rng)
    else:
        while True:
            text, transcript, kind = phrase(rng)
            if not is_held_out(text):
                break
    return Utterance(text, transcript, kind, VOICE, VARIANT, SPEED, PITCH)


def utterances(n: int, split: Split = "train", seed: int = 0) -> list[Utterance]:
    return [utterance_at(i, split, seed) for i in range(n)]


def build_tts(out_dir: str | Path, n_train: int, n_heldout: int, seed: int = 0,
              log=print) -> dict:
    """Synthesise (or find cached) the first ``n_train`` + ``n_heldout`` utterances."""
    return build_speech(out_dir, n_train, n_heldout, seed, log=log, grammar="tts",
                        make=utterances)
