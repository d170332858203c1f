"""What happens in a clip (:mod:`plait.data.clips`), as one sentence, and the facts a sentence
states: the ground for video captioning.

Each shape of a clip is one event, named by its colour and kind and told by its motion:

    still   "a red circle stays still"
    cross   "a red circle moves left"
    leave   "a red circle leaves the picture moving left"
    enter   "a red circle enters the picture moving left"

and a caption lists the events in the order of :data:`plait.data.scenes.COLOURS` (a clip's
colours are distinct), joined as English lists are: "a red circle moves left, a green star stays
still and a blue square leaves the picture moving up". :func:`facts` reads the events back from
any sentence in this grammar (a, an, plural slips and extra words between events are
tolerated), so a caption's content can be checked against the clip's: the (colour, kind,
motion, direction) of every shape, nothing missing and nothing added.

Held out as for the clips: every held-out clip shows a colour + kind pair no training clip
does, so its caption names a shape no training caption names.
"""

from __future__ import annotations

import re

from plait.data.clips import DIRECTIONS, Clip
from plait.data.scenes import COLOURS, KINDS
from plait.text.events import Fact, event, sentence


def truth(clip: Clip) -> tuple[Fact, ...]:
    """The clip's facts, sorted."""
    return tuple(sorted((t.shape.colour, t.shape.kind, t.motion, t.direction)
                        for t in clip.tracks))


def caption(clip: Clip) -> str:
    """The clip's one sentence."""
    return sentence(truth(clip), tuple(COLOURS))


_DIR = "|".join(DIRECTIONS)
_EVENT = re.compile(
    rf"\b({'|'.join(COLOURS)}) ({'|'.join(KINDS)})s? "
    rf"(stays still|moves ({_DIR})|(leaves|enters) the picture moving ({_DIR}))")


def facts(text: str) -> tuple[Fact, ...]:
    """The events a sentence states, sorted (those it does not state in the grammar are not
    read)."""
    out = []
    for m in _EVENT.finditer(text.lower()):
        colour, kind, said, cross, verb, moving = m.groups()
        if said == "stays still":
            out.append((colour, kind, "still", "still"))
        elif cross:
            out.append((colour, kind, "cross", cross))
        else:
            out.append((colour, kind, "leave" if verb == "leaves" else "enter", moving))
    return tuple(sorted(out))


def content_scores(captions: list[str], clips: list[Clip]) -> dict[str, float]:
    """``content``: the share of captions stating exactly the clip's facts; ``fact_precision``
    and ``fact_recall``: over all facts stated and all facts true."""
    exact = stated = true = hit = 0
    for text, clip in zip(captions, clips, strict=True):
        said, real = facts(text), truth(clip)
        exact += said == real
        stated, true = stated + len(said), true + len(real)
        remaining = list(real)
        for f in said:
            if f in remaining:
                remaining.remove(f)
                hit += 1
    n = max(len(clips), 1)
    return {"content": exact / n, "fact_precision": hit / max(stated, 1),
            "fact_recall": hit / max(true, 1)}


__all__ = ["Fact", "caption", "content_scores", "event", "facts", "sentence", "truth"]
