"""Relation sentences composed from clauses, beside the hand-written frames.

Forty-five training frames teach forty-five sentence shapes; a held-out frame recombines their
phrasings in a shape none of them has, and a model that learned the shapes by heart misses
every sentence of that frame at once. :func:`compose` writes new training frames from parts
instead: a subject (a person, a company, now and then a place), optionally a phrase fronted
before it ("Born in {LOC0}, ..."), an apposition or relative clause after it ("..., who works
for {ORG0}, ..."), one or two predicates ("... is based in {LOC0} and opened a shop in
{LOC1}"), each of whose objects may take its own apposition or relative clause. Every part
that states a relation says which; the rest (visits, flights, lawsuits, profits) state none.
The phrasings are the training frames' own.

**Held out** (:func:`skeleton`): a composed frame whose skeleton (its entity types,
punctuation and relation words by relation, all other words dropped) equals a held-out frame's
is drawn again, so no composed frame is a held-out frame or a held-out frame with its words
swapped for synonyms ("Based in {LOC0}, {ORG0} was created on {DATE0}." for "Headquartered in
{LOC0}, {ORG0} was established on {DATE0}."). That rule is stricter than the one between the
hand-written frames themselves, some of which share a skeleton across the split.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

from plait.data.relations import SLOT, Frame, frames


class Part(NamedTuple):
    text: str  # "{s}": the entity the part is about; "{t}": a new entity of type ``other``
    other: str  # the new entity's type
    relation: str | None  # from {s} to {t} (``reverse``: from {t} to {s}), or None
    reverse: bool = False


def _parts(table: str) -> tuple[Part, ...]:
    """Parts from lines "TYPE | text | relation", "~relation" for a reversed one."""
    out = []
    for line in table.strip().splitlines():
        other, text, relation = (x.strip() for x in line.split("|"))
        out.append(Part(text, other, relation.lstrip("~") or None, relation.startswith("~")))
    return tuple(out)


# what a subject of each type does: "{s} works for {t}"
PREDICATES = {
    "PER": _parts("""
        ORG | {s} works for {t} | works for
        ORG | {s} is employed by {t} | works for
        ORG | {s} is an engineer at {t} | works for
        ORG | {s} is the chief executive of {t} | works for
        ORG | {s} joined the staff of {t} | works for
        LOC | {s} was born in {t} | born in
        LOC | {s} is a native of {t} | born in
        LOC | {s} lives in {t} |
        LOC | {s} still lives in {t} |
        LOC | {s} flew to {t} |
        LOC | {s} visited {t} |
        ORG | {s} visited {t} |
        ORG | {s} sued {t} |
        ORG | {s} praised {t} |
        PER | {s} met {t} |
        PER | {s} often meets {t} |
        PER | {s} praised {t} |
        PER | {s} sued {t} |
    """),
    "ORG": _parts("""
        DATE | {s} was founded on {t} | founded on
        DATE | {s} was established on {t} | founded on
        DATE | {s} was created on {t} | founded on
        LOC | {s} is based in {t} | located in
        LOC | {s} is headquartered in {t} | located in
        LOC | {s} is located in {t} | located in
        LOC | {s} opened a shop in {t} |
        LOC | {s} opened an office in {t} |
        LOC | {s} was fined in {t} |
        LOC | {s} sponsors a football club in {t} |
        LOC | {s} signed a deal with the city of {t} |
        DATE | {s} reported record profits on {t} |
        DATE | {s} was fined on {t} |
        ORG | {s} sued {t} |
        PER | {s} praised {t} |
    """),
    "LOC": _parts("""
        PER | {s} welcomed {t} |
        ORG | {s} fined {t} |
    """),
}

# said of an entity right after it, between commas: "{s}, who works for {t}, ..."
MODIFIERS = {
    "PER": _parts("""
        ORG | who works for {t} | works for
        ORG | who is employed by {t} | works for
        ORG | an engineer at {t} | works for
        LOC | a native of {t} | born in
        LOC | whose birthplace is {t} | born in
        LOC | who was born in {t} | born in
        LOC | who lives in {t} |
        LOC | who flew to {t} |
        ORG | who sued {t} |
        ORG | who praised {t} |
    """),
    "ORG": _parts("""
        LOC | which is based in {t} | located in
        LOC | which is headquartered in {t} | located in
        LOC | which is located in {t} | located in
        DATE | which was founded on {t} | founded on
        DATE | which was established on {t} | founded on
        LOC | which opened an office in {t} |
        LOC | which sponsors a football club in {t} |
        DATE | which reported record profits on {t} |
        LOC | which was fined in {t} |
    """),
    "LOC": _parts("""
        PER | the birthplace of {t} | ~born in
    """),
}

# before the subject: "Born in {t}, {s} ..."; a person's employer as a possessive
FRONTS = {
    "PER": _parts("""
        LOC | Born in {t}, {s} | born in
        ORG | {t}'s new engineer, {s}, | works for
        ORG | {t}'s chief executive, {s}, | works for
        DATE | On {t}, {s} |
        LOC | After flying to {t}, {s} |
    """),
    "ORG": _parts("""
        DATE | Founded on {t}, {s} | founded on
        DATE | Established on {t}, {s} | founded on
        LOC | Headquartered in {t}, {s} | located in
        LOC | Based in {t}, {s} | located in
        DATE | On {t}, {s} |
    """),
    "LOC": (),
}

# a person object named by their employer: "met {t}'s chief executive, {s}"
OWNERS = _parts("""
    ORG | {t}'s new engineer, {s} | works for
    ORG | {t}'s chief executive, {s} | works for
""")

# a predicate without a relation may end with a time or a place: "... sued {ORG0} on {DATE0}"
TAILS = _parts("""
    DATE | on {t} |
    LOC | in {t} |
""")
CONJUNCTIONS = (" and ", " but ", ", and ")


class _Frame:
    """A template being written: numbered slots as entities are introduced, and the facts."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.facts: list[tuple[str, str, str]] = []

    def new(self, kind: str) -> str:
        self.count[kind] += 1
        return f"{kind}{self.count[kind] - 1}"

    def say(self, part: Part, s: str) -> tuple[str, str]:
        """The part's text about slot ``s`` with a new entity; (text, the new slot)."""
        t = self.new(part.other)
        if part.relation:
            self.facts.append((t, part.relation, s) if part.reverse else (s, part.relation, t))
        return part.text.replace("{s}", "{" + s + "}").replace("{t}", "{" + t + "}"), t


def _predicate(f: _Frame, s: str, part: Part, rng: random.Random, last: bool) -> str:
    """Predicate ``part`` of subject ``s``, with its object's modifier or a time or place now
    and then ("{s} sued {ORG0}, which is located in {LOC0}, on {DATE0}")."""
    text, t = f.say(part, s)
    text = text.replace("{" + s + "} ", "", 1)
    modifier = rng.random() < 0.35 and bool(MODIFIERS.get(part.other))
    owned = not modifier and part.other == "PER" and rng.random() < 0.3
    tail = part.relation is None and rng.random() < 0.3
    if modifier:
        text += ", " + f.say(rng.choice(MODIFIERS[part.other]), t)[0]
    elif owned:  # a person named by their employer: "met {ORG0}'s chief executive, {PER1}"
        text = text.replace("{" + t + "}", f.say(rng.choice(OWNERS), t)[0])
    if modifier or owned:
        text += "," if tail or not last else ""
    if tail:
        text += " " + f.say(rng.choice([p for p in TAILS if p.other != part.other]), t)[0]
    return text


def compose(rng: random.Random) -> Frame:
    """A new training frame: subject, optional fronted phrase and modifier, one or two
    predicates (each object perhaps with a modifier of its own); never a held-out skeleton."""
    while True:
        frame = _compose(rng)
        once = [(head, rel) for head, rel, _ in frame.relations if rel != "works for"]
        if not is_held_out_shape(frame.template) and len(once) == len(set(once)):
            return frame  # one birthplace, founding date and seat each


def _compose(rng: random.Random) -> Frame:
    f = _Frame()
    kind = rng.choices(("PER", "ORG", "LOC"), weights=(0.45, 0.45, 0.1))[0]
    s = f.new(kind)
    if kind == "LOC":  # a place is a subject through "the birthplace of" only
        head = "{" + s + "}, " + f.say(MODIFIERS["LOC"][0], s)[0] + ","
    elif rng.random() < 0.3:
        head = f.say(rng.choice(FRONTS[kind]), s)[0]
    else:
        head = "{" + s + "}"
        if rng.random() < 0.35:
            head += ", " + f.say(rng.choice(MODIFIERS[kind]), s)[0] + ","
    n = 1 if rng.random() < 0.5 else 2
    chosen = rng.sample(PREDICATES[kind], n)  # two different things done
    preds = [_predicate(f, s, part, rng, last=i == n - 1) for i, part in enumerate(chosen)]
    body = preds[0] if n == 1 else preds[0] + rng.choice(CONJUNCTIONS) + preds[1]
    return Frame(f"{head} {body}.".replace(",,", ","), tuple(f.facts))


# the words that state each relation, matched at a word's start: what a skeleton keeps
_RELATION_WORDS = {
    "WORK": r"works?|employed|engineer|executive|staff",
    "BORN": r"born|native|birthplace",
    "BASED": r"based|headquartered|located",
    "FOUNDED": r"founded|established|created",
}
_TOKEN = re.compile(r"\{(PER|LOC|ORG|DATE)\d+\}|'s\b|[,;.]|[A-Za-z]+")


def skeleton(template: str) -> tuple[str, ...]:
    """The template's entity types, punctuation (and possessive 's) and relation words by
    relation, in order, consecutive repeats merged; every other word dropped."""
    out: list[str] = []
    for m in _TOKEN.finditer(template):
        token = m.group(1) or m.group(0)
        if token.isalpha() and not m.group(1):
            token = next((name for name, words in _RELATION_WORDS.items()
                          if re.fullmatch(words, token.lower())), "")
        if token and (not out or out[-1] != token or token in ("PER", "LOC", "ORG", "DATE")):
            out.append(token)
    return tuple(out)


@lru_cache(maxsize=1)
def heldout_skeletons() -> frozenset[tuple[str, ...]]:
    return frozenset(skeleton(f.template) for f in frames("heldout"))


@lru_cache(maxsize=1)
def _heldout_patterns() -> tuple[re.Pattern, ...]:
    """Each held-out frame's own words literally, any text where its slots are."""
    return tuple(re.compile("(.+)".join(re.escape(text) for text in SLOT.split(f.template)[::3]),
                            re.DOTALL) for f in frames("heldout"))


def is_held_out_shape(template: str) -> bool:
    """The template has a held-out frame's skeleton, or reads as a held-out frame whose slots
    hold any text ("Headquartered in {LOC0}, {ORG0} sued {ORG1} but was established on
    {DATE0}." as "Headquartered in {LOC0}, {ORG0} was established on {DATE0}.")."""
    return (skeleton(template) in heldout_skeletons()
            or any(p.fullmatch(template) for p in _heldout_patterns()))
