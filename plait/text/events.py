"""Events told as English: the sentence a video caption is made of.

Each event is a shape (colour and kind) and its motion:

    still   "a red circle stays still"
    cross   "a red circle moves left"
    leave   "a red circle leaves the picture moving left"
    enter   "a red circle enters the picture moving left"

and a sentence lists them in colour order, joined as English lists are ("a red circle moves
left, a green star stays still and a blue square leaves the picture moving up").
:mod:`plait.data.clip_captions` reads facts back from such sentences and says which facts a
clip holds.
"""

from __future__ import annotations

from collections.abc import Sequence

Fact = tuple[str, str, str, str]  # (colour, kind, motion, direction); "still" twice if still
COLOUR_ORDER = ("red", "orange", "yellow", "green", "blue", "purple")


def event(fact: Fact) -> str:
    colour, kind, motion, direction = fact
    name = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {kind}"
    if motion == "still":
        return f"{name} stays still"
    if motion == "cross":
        return f"{name} moves {direction}"
    verb = "leaves" if motion == "leave" else "enters"
    return f"{name} {verb} the picture moving {direction}"


def sentence(facts: Sequence[Fact], colours: Sequence[str] = COLOUR_ORDER) -> str:
    """The sentence stating ``facts`` (events in the order of ``colours``); "nothing moves"
    for none."""
    order = list(colours)
    events = [event(f) for f in sorted(facts, key=lambda f: (order.index(f[0]), f))]
    if not events:
        return "nothing moves"
    return english_list(events)


def english_list(phrases: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c": phrases joined as an English list (scene captions too)."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


__all__ = ["COLOUR_ORDER", "Fact", "english_list", "event", "sentence"]
