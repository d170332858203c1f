"""Who speaks? The speeches of tiny Shakespeare, labelled by speaker, with a held-out rule.

A speech is a ``NAME:`` line and the text after it up to the next blank line; the name line is
removed, so only the words remain. The task keeps the :data:`N_SPEAKERS` speakers with the most
speeches. **Held out**: those speakers' speeches are numbered in file order from 0 and every
speech whose number ends in 9 is held out, from pretraining as well as from fine-tuning (the
file is in play order, so a split by position would leave most speakers out of the test).

:func:`pretraining_text` is the whole file without the held-out speeches (name lines
included), for masked-LM pretraining; :func:`speeches` gives the labelled training or
held-out speeches. With ``validation=True`` both also set aside every ninth training speech,
and ``"heldout"`` means those instead: a split to compare recipes on while the held-out
speeches stay unseen.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

N_SPEAKERS = 10
NAME_LINE = re.compile(r"^([A-Z][A-Za-z' ]*[A-Za-z]):\s*$")


@dataclass(frozen=True)
class Speech:
    index: int  # position among all speeches of the file
    speaker: str
    text: str  # the speech without its name line


def parse(text: str) -> list[Speech]:
    """Every speech of the file, in order (blocks separated by blank lines that open with a
    ``NAME:`` line)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        m = NAME_LINE.match(lines[0]) if lines else None
        if m and len(lines) > 1:
            out.append(Speech(len(out), m.group(1), "\n".join(lines[1:]).strip()))
    return out


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[tuple[Speech, ...], tuple[str, ...], frozenset[int]]:
    """(all speeches, the top speakers in order of frequency, indices of held-out speeches)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"text file not found: {source} (tiny Shakespeare ships as"
                                " data/tinyshakespeare.txt)")
    all_speeches = parse(source.read_text(encoding="utf-8"))
    counts = Counter(s.speaker for s in all_speeches)
    top = tuple(name for name, _ in counts.most_common(N_SPEAKERS))
    theirs = [s for s in all_speeches if s.speaker in top]
    held = frozenset(s.index for k, s in enumerate(theirs) if k % 10 == 9)
    return tuple(all_speeches), top, held


def speakers(path: str | Path) -> tuple[str, ...]:
    """The labels: the top speakers, most frequent first."""
    return _load(str(path))[1]


def _validation(path: str) -> frozenset[int]:
    """Indices of the validation speeches: every ninth of the top speakers' training speeches."""
    all_speeches, top, held = _load(path)
    train = [s for s in all_speeches if s.speaker in top and s.index not in held]
    return frozenset(s.index for k, s in enumerate(train) if k % 9 == 8)


def speeches(path: str | Path, split: Literal["train", "heldout"],
             validation: bool = False) -> list[Speech]:
    """The top speakers' speeches of one split, in file order; with ``validation``, the
    training speeches without the validation ones, or (``"heldout"``) those."""
    all_speeches, top, held = _load(str(path))
    if validation:
        all_speeches, held = (tuple(s for s in all_speeches if s.index not in held),
                              _validation(str(path)))
    return [s for s in all_speeches
            if s.speaker in top and (s.index in held) == (split == "heldout")]


def rest(path: str | Path, validation: bool = False) -> list[Speech]:
    """The rest of the text: every speech of the file (any speaker) that is not held out (nor,
    with ``validation``, a validation speech), in file order."""
    all_speeches, _, held = _load(str(path))
    if validation:
        held = held | _validation(str(path))
    return [s for s in all_speeches if s.index not in held]


def count(path: str | Path) -> int:
    """How many speeches the file has (any speaker, held out or not)."""
    return len(_load(str(path))[0])


def pretraining_text(path: str | Path, validation: bool = False) -> list[str]:
    """The rest of the text, for masked-LM pretraining: each speech of :func:`rest` with its
    ``NAME:`` line, as the file has it. A held-out speech is gone with its name line; a
    training speech's name is no more than fine-tuning sees."""
    return [f"{s.speaker}:\n{s.text}" for s in rest(path, validation)]
