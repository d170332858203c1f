"""Relation extraction: which of two entities in a sentence stands in which relation.

Sentences come from :data:`FRAMES`, English news-style frames with numbered slots
(``{PER0}``, ``{PER1}``, ``{ORG0}``, ``{LOC0}``, ``{DATE0}``, ...) and the relations that the
frame states between its slots: ``works for`` (PER, ORG), ``born in`` (PER, LOC),
``located in`` (ORG, LOC) and ``founded on`` (ORG, DATE). Slots are filled with entity strings
from :func:`plait.data.ner.draw` (faker names, places, companies and dates); a slot used twice
in a frame is the same entity, mentioned twice. Every ordered pair of entities whose types fit
a relation (:data:`CANDIDATE_TYPES`) is an example, labelled with its relation or ``"none"``;
most frames also hold type-compatible entities that are *not* related (a person who visits,
sues or praises a company, flies to or lives in a city; a company that sponsors a club in,
opens a shop in or is fined in a place, or reports profits on a date), so that a model must
read the words, not the types. Relations are stated in both directions of the text ("Acme's
new engineer, Anna Weber" -> Anna Weber works for Acme; "Founded on <date>, Acme ...").

**Held out**: every fourth frame (index % 4 == 3), and every entity string that
:func:`plait.data.ner.is_held_out_entity` marks, appear only in evaluation sentences; training
sentences use the other frames and the other strings. Held-out frames recombine phrasings
that training frames use (each relation's phrasing appears in at least two training frames)
in new sentence structures: other clause orders, appositions, relative clauses.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from plait.data.ner import common_words, draw
from plait.text.relations import (
    CANDIDATE_TYPES,
    LABELS,
    MARKERS,
    RELATIONS,
    TYPES_OF,
    Entity,
    Pair,
    mark,
)

__all__ = ["CANDIDATE_TYPES", "LABELS", "MARKERS", "RELATIONS", "TYPES_OF", "Entity", "Pair",
           "mark"]  # the text side, re-exported: the data's names for them

Split = Literal["train", "heldout"]

Composer = Callable[[random.Random], "Frame"]  # writes a new training frame
SLOT = re.compile(r"\{(PER|LOC|ORG|DATE)(\d+)\}")


@dataclass(frozen=True)
class Frame:
    template: str  # slots like {PER0} {PER1} {ORG0} {LOC0} {DATE0}
    relations: tuple[tuple[str, str, str], ...]  # (head slot, relation, tail slot)


@dataclass(frozen=True)
class Sentence:
    text: str
    entities: tuple[Entity, ...]  # in order of appearance
    relations: tuple[tuple[int, str, int], ...]  # (head entity index, relation, tail index)


def _frame(template: str, *facts: str) -> Frame:
    """A frame from its template and facts written "HEAD relation words TAIL"."""
    relations = []
    for fact in facts:
        head, *words, tail = fact.split()
        relations.append((head, " ".join(words), tail))
    return Frame(template, tuple(relations))


FRAMES: tuple[Frame, ...] = (
    _frame("{PER0} works for {ORG0} and lives in {LOC0}.", "PER0 works for ORG0"),
    _frame("{ORG0} was founded on {DATE0} and is based in {LOC0}.",
           "ORG0 founded on DATE0", "ORG0 located in LOC0"),
    _frame("{PER0}, a native of {LOC0}, visited {ORG0} on {DATE0}.", "PER0 born in LOC0"),
    _frame("{ORG0}, which is based in {LOC0}, was founded on {DATE0}.",  # held out
           "ORG0 located in LOC0", "ORG0 founded on DATE0"),
    _frame("{PER0} was born in {LOC0} and flew to {LOC1} on {DATE0}.", "PER0 born in LOC0"),
    _frame("{PER0} is employed by {ORG0}, which sponsors a football club in {LOC0}.",
           "PER0 works for ORG0"),
    _frame("{ORG0} is headquartered in {LOC0} and opened a shop in {LOC1} on {DATE0}.",
           "ORG0 located in LOC0"),
    _frame("{PER0}, who works for {ORG0}, was born in {LOC0}.",  # held out
           "PER0 works for ORG0", "PER0 born in LOC0"),
    _frame("Founded on {DATE0}, {ORG0} is located in {LOC0}.",
           "ORG0 founded on DATE0", "ORG0 located in LOC0"),
    _frame("{PER0} is an engineer at {ORG0} and often meets {PER1} in {LOC0}.",
           "PER0 works for ORG0"),
    _frame("{ORG0}'s new engineer, {PER0}, sued {ORG1} on {DATE0}.", "PER0 works for ORG0"),
    _frame("{PER0}, a native of {LOC0}, is the chief executive of {ORG0}.",  # held out
           "PER0 born in LOC0", "PER0 works for ORG0"),
    _frame("{PER0} is the chief executive of {ORG0}, which reported record profits on {DATE0}.",
           "PER0 works for ORG0"),
    _frame("{ORG0} was established on {DATE0} and was fined in {LOC0} last year.",
           "ORG0 founded on DATE0"),
    _frame("{PER0} flew to {LOC0} to meet {PER1}, who is employed by {ORG0}.",
           "PER1 works for ORG0"),
    _frame("{PER0} praised {ORG0}, which was founded on {DATE0} and is based in {LOC0}.",
           "ORG0 founded on DATE0", "ORG0 located in LOC0"),  # held out
    _frame("{LOC0}, the birthplace of {PER0}, welcomed {PER1} on {DATE0}.", "PER0 born in LOC0"),
    _frame("{ORG0} is based in {LOC0} and signed a deal with the city of {LOC1}.",
           "ORG0 located in LOC0"),
    _frame("{PER0}, whose birthplace is {LOC0}, works for {ORG0}.",
           "PER0 born in LOC0", "PER0 works for ORG0"),
    _frame("{ORG0}'s new engineer, {PER0}, is a native of {LOC0}.",  # held out
           "PER0 works for ORG0", "PER0 born in LOC0"),
    _frame("{PER0} visited {ORG0} on {DATE0} before flying to {LOC0}."),
    _frame("{ORG0} was created on {DATE0} and is located in {LOC0}.",
           "ORG0 founded on DATE0", "ORG0 located in LOC0"),
    _frame("{PER0} lives in {LOC0} but was born in {LOC1}.", "PER0 born in LOC1"),
    _frame("{PER0} sued {ORG0}, which is located in {LOC0}, on {DATE0}.",  # held out
           "ORG0 located in LOC0"),
    _frame("{PER0} joined the staff of {ORG0} on {DATE0} after moving to {LOC0}.",
           "PER0 works for ORG0"),
    _frame("{ORG0} reported profits on {DATE0}, and {ORG1} was fined on {DATE1}."),
    _frame("{ORG0}'s chief executive, {PER0}, met {PER1} in {LOC0}.", "PER0 works for ORG0"),
    _frame("On {DATE0}, {PER0} joined the staff of {ORG0}, which is headquartered in {LOC0}.",
           "PER0 works for ORG0", "ORG0 located in LOC0"),  # held out
    _frame("{ORG0} was established on {DATE0} and is headquartered in {LOC0}.",
           "ORG0 founded on DATE0", "ORG0 located in LOC0"),
    _frame("{PER0} praised {ORG0} after flying to {LOC0} on {DATE0}."),
    _frame("{PER0}, an engineer at {ORG0}, was born in {LOC0}.",
           "PER0 works for ORG0", "PER0 born in LOC0"),
    _frame("{PER0} is employed by {ORG0} and is a native of {LOC0}.",  # held out
           "PER0 works for ORG0", "PER0 born in LOC0"),
    _frame("{ORG0} opened an office in {LOC0} on {DATE0}."),
    _frame("{PER0} is a native of {LOC0} and works for {ORG0}.",
           "PER0 born in LOC0", "PER0 works for ORG0"),
    _frame("Founded on {DATE0}, {ORG0} sponsors a football club in {LOC0}.",
           "ORG0 founded on DATE0"),
    _frame("{LOC0}, the birthplace of {PER0}, is where {ORG0} is based.",  # held out
           "PER0 born in LOC0", "ORG0 located in LOC0"),
    _frame("{ORG0} is located in {LOC0} and was fined on {DATE0}.", "ORG0 located in LOC0"),
    _frame("{ORG0}'s chief executive, {PER0}, visited {LOC0} on {DATE0}.",
           "PER0 works for ORG0"),
    _frame("{PER0} sued {ORG0} and {ORG1} on {DATE0}."),
    _frame("{PER0} met {PER1}, an engineer at {ORG0}, in {LOC0}.",  # held out
           "PER1 works for ORG0"),
    _frame("{ORG0} was created on {DATE0}; its rival {ORG1} reported profits on {DATE1}.",
           "ORG0 founded on DATE0"),
    _frame("Born in {LOC0}, {PER0} now lives in {LOC1} and works for {ORG0}.",
           "PER0 born in LOC0", "PER0 works for ORG0"),
    _frame("{PER0} was born in {LOC0} and still lives in {LOC0}.", "PER0 born in LOC0"),
    _frame("Headquartered in {LOC0}, {ORG0} was established on {DATE0}.",  # held out
           "ORG0 located in LOC0", "ORG0 founded on DATE0"),
    _frame("{ORG0}'s new engineer, {PER0}, flew to {LOC0} on {DATE0}.", "PER0 works for ORG0"),
    _frame("{ORG0} opened an office in {LOC0} and signed a deal with the city of {LOC1}."),
    _frame("{PER0}, whose birthplace is {LOC0}, praised {ORG0} on {DATE0}.",
           "PER0 born in LOC0"),
    _frame("{PER0} flew to {LOC0}, the birthplace of {PER1}, on {DATE0}.",  # held out
           "PER1 born in LOC0"),
    _frame("{PER0} is the chief executive of {ORG0} and was born in {LOC0}.",
           "PER0 works for ORG0", "PER0 born in LOC0"),
    _frame("{ORG0} was fined in {LOC0} on {DATE0}, although it is based in {LOC1}.",
           "ORG0 located in LOC1"),
    _frame("{PER0} joined the staff of {ORG0}, which was established on {DATE0}.",
           "PER0 works for ORG0", "ORG0 founded on DATE0"),
    _frame("{PER0} praised {ORG0}'s chief executive, {PER1}, on {DATE0}.",  # held out
           "PER1 works for ORG0"),
    _frame("{PER0} lives in {LOC0} and is employed by {ORG0}, which was created on {DATE0}.",
           "PER0 works for ORG0", "ORG0 founded on DATE0"),
    _frame("{ORG0} is headquartered in {LOC0}, and {PER0} flew there from {LOC1} on {DATE0}.",
           "ORG0 located in LOC0"),
    _frame("{PER0} met {PER1}, whose birthplace is {LOC0}, in {LOC1}.", "PER1 born in LOC0"),
    _frame("{ORG0}, which opened an office in {LOC0} on {DATE0}, is based in {LOC1}.",
           "ORG0 located in LOC1"),  # held out
    _frame("{PER0} sued {ORG0}, which was founded on {DATE0}.", "ORG0 founded on DATE0"),
    _frame("Born in {LOC0}, {PER0} is employed by {ORG0} and lives in {LOC1}.",
           "PER0 born in LOC0", "PER0 works for ORG0"),
    _frame("{ORG0} opened a shop in {LOC0}, the birthplace of {PER0}.", "PER0 born in LOC0"),
    _frame("{PER0}, who lives in {LOC0}, sued {ORG0}, which is based in {LOC1}.",  # held out
           "ORG0 located in LOC1"),
)


def frames(split: Split) -> list[Frame]:
    """The frames of a split: every fourth (index % 4 == 3) is held out."""
    return [f for i, f in enumerate(FRAMES) if (i % 4 == 3) == (split == "heldout")]


def slots(template: str) -> list[tuple[str, str]]:
    """(slot name, entity type) of each slot in the template, in order, e.g. ("PER0", "PER")."""
    return [(m.group(1) + m.group(2), m.group(1)) for m in SLOT.finditer(template)]


def sentence(frame: Frame, split: Split, rng: random.Random) -> Sentence:
    """The frame with its slots filled by fresh entity strings of the split (distinct slots get
    distinct strings; a slot used twice is the same entity, mentioned twice: its relations hold
    for every mention)."""
    values: dict[str, str] = {}
    text, entities, mentions, pos = "", [], {}, 0
    for m in SLOT.finditer(frame.template):
        name, kind = m.group(1) + m.group(2), m.group(1)
        while name not in values:
            value = draw(kind, split, rng)
            if value not in values.values():
                values[name] = value
        text += frame.template[pos:m.start()]
        mentions.setdefault(name, []).append(len(entities))
        entities.append(Entity(kind, values[name], len(text), len(text) + len(values[name])))
        text += values[name]
        pos = m.end()
    text += frame.template[pos:]
    relations = sorted((i, rel, j) for head, rel, tail in frame.relations
                       for i in mentions[head] for j in mentions[tail])
    return Sentence(text, tuple(entities), tuple(relations))


def pairs(s: Sentence) -> list[Pair]:
    """Every ordered pair of distinct entities whose types fit a relation, labelled with the
    annotated relation or ``"none"``."""
    annotated = {(i, j): rel for i, rel, j in s.relations}
    return [Pair(s.text, a, b, annotated.get((i, j), "none"))
            for i, a in enumerate(s.entities) for j, b in enumerate(s.entities)
            if i != j and (a.type, b.type) in CANDIDATE_TYPES]


# the words that state a relation (and the small words around them): never varied
KEEP = frozenset({
    "works", "work", "for", "employed", "by", "engineer", "at", "chief", "executive", "staff",
    "joined", "native", "of", "born", "birthplace", "whose", "based", "headquartered",
    "located", "founded", "established", "created", "on", "in", "is", "was", "which", "who",
    "where", "the", "a", "an", "and", "its", "new"})


def vary(frame: Frame, rng: random.Random, p: float) -> Frame:
    """The frame with each of its own words that states no relation (not in :data:`KEEP`)
    replaced, with probability ``p``, by a random English word (:func:`plait.data.ner.common_words`
    less KEEP): "{PER0} praised {ORG0}" becomes "{PER0} quoth {ORG0}", still no relation, so a
    model learns which words carry one rather than the training frames' other words."""
    if p <= 0:
        return frame
    words = [w for w in common_words() if w not in KEEP]

    def swap(m: re.Match) -> str:
        if m.group(0).lower() in KEEP or rng.random() >= p:
            return m.group(0)
        word = rng.choice(words)
        return word.capitalize() if m.group(0)[0].isupper() else word

    return Frame(re.sub(r"(?<![{\w])[A-Za-z][a-z]+(?![\w}])", swap, frame.template),
                 frame.relations)


def join(a: Frame, b: Frame) -> Frame:
    """Two frames in a row, ``b``'s slots renumbered past ``a``'s: one text whose pairs across
    the two sentences are all "none"."""
    shift = 1 + max(int(m.group(2)) for m in SLOT.finditer(a.template))

    def renumber(slot: str) -> str:
        m = SLOT.fullmatch("{" + slot + "}")
        return f"{m.group(1)}{int(m.group(2)) + shift}"

    template = SLOT.sub(lambda m: "{" + renumber(m.group(1) + m.group(2)) + "}", b.template)
    moved = tuple((renumber(h), r, renumber(t)) for h, r, t in b.relations)
    return Frame(f"{a.template} {template}", a.relations + moved)


def batch_pairs(seed: int, step: int, micro: int, n: int, vary_words: float = 0.0,
                joined: float = 0.0, composed: float = 0.0,
                compose: Composer | None = None) -> list[Pair]:
    """``n`` training pairs of micro-batch (step, micro), a pure function of the arguments:
    pairs of sentences of random training frames, each ``"none"`` pair kept with probability
    0.5 so that relations stay frequent. ``vary_words``: see :func:`vary`; ``joined``: the share
    of texts made of two frames in a row (:func:`join`); ``composed``: the share of frames
    written by ``compose`` (:func:`plait.data.relation_grammar.compose`) instead of drawn
    from the training frames."""
    _check_composer(composed, compose)
    rng = random.Random(f"relations/{seed}/{step}/{micro}")
    fs = frames("train")

    def frame() -> Frame:
        use = compose is not None and composed > 0 and rng.random() < composed
        return vary(compose(rng) if use else rng.choice(fs), rng, vary_words)

    out: list[Pair] = []
    while len(out) < n:
        f = join(frame(), frame()) if rng.random() < joined else frame()
        for p in pairs(sentence(f, "train", rng)):
            if p.label != "none" or rng.random() < 0.5:
                out.append(p)
    return out[:n]


def _check_composer(composed: float, compose: Composer | None) -> None:
    if composed > 0 and compose is None:
        raise ValueError("a composed share needs a compose function"
                         " (plait.data.relation_grammar.compose)")


def sample_pairs(split: Split, n_sentences: int, seed: int, composed: float = 0.0,
                 compose: Composer | None = None) -> list[Pair]:
    """All pairs of ``n_sentences`` sentences of the split (its frames cycled in order; in
    training, that share ``composed`` of them written by ``compose`` instead), a pure
    function of the arguments."""
    _check_composer(composed, compose)
    if composed and split != "train":
        raise ValueError("composed frames are for training only")
    rng = random.Random(f"relations/{split}/{seed}")
    fs = frames(split)
    drawn = [compose(rng) if compose and composed and rng.random() < composed
             else fs[k % len(fs)] for k in range(n_sentences)]
    return [p for frame in drawn for p in pairs(sentence(frame, split, rng))]


def between(pair: Pair) -> str:
    """The text strictly between the two spans (whichever comes first), stripped."""
    first, second = sorted([pair.head, pair.tail], key=lambda e: e.start)
    return pair.text[first.end:second.start].strip()


def micro_scores(truth: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Micro precision, recall and F1 over :data:`RELATIONS` (``"none"`` is the negative class:
    a predicted relation that is not the true one is a false positive, a true relation not
    predicted a false negative), and ``"f1/<relation>"`` per relation (spaces as ``_``); 0.0
    where undefined. The same as scikit-learn's ``precision_recall_fscore_support(...,
    labels=list(RELATIONS), average="micro", zero_division=0)``."""
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predictions")

    def prf(labels: Sequence[str]) -> tuple[float, float, float]:
        tp = sum(t == p and t in labels for t, p in zip(truth, pred, strict=True))
        n_pred, n_true = sum(p in labels for p in pred), sum(t in labels for t in truth)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
        return precision, recall, f1

    precision, recall, f1 = prf(RELATIONS)
    scores = {"precision": precision, "recall": recall, "f1": f1}
    for rel in RELATIONS:
        scores[f"f1/{rel.replace(' ', '_')}"] = prf((rel,))[2]
    return scores


def baseline(train: Sequence[Pair], heldout: Sequence[Pair]) -> dict[str, float]:
    """A bag-of-words baseline: word unigrams and bigrams (lower-cased) of :func:`between`,
    with a token for the pair's types and order (:func:`baseline_text`), counted by
    scikit-learn's ``CountVectorizer``, a ``LogisticRegression(max_iter=2000)``
    whose C is chosen from (0.1, 1, 10) by 5-fold cross-validation on ``train`` (scored by the
    micro F1 over :data:`RELATIONS`, as :func:`micro_scores`, not sklearn's "f1_micro", which
    would also count "none"), refitted on all of ``train``; its :func:`micro_scores` on
    ``heldout``. It sees the words between, the types and the order, not the entities."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(CountVectorizer(ngram_range=(1, 2), lowercase=True),
                          LogisticRegression(max_iter=2000))
    scorer = make_scorer(f1_score, labels=list(RELATIONS), average="micro", zero_division=0)
    search = GridSearchCV(model, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=5,
                          scoring=scorer)
    search.fit([baseline_text(p) for p in train], [p.label for p in train])
    predicted = search.predict([baseline_text(p) for p in heldout])
    return micro_scores([p.label for p in heldout], list(predicted))


def baseline_text(pair: Pair) -> str:
    """What the baseline reads: the words between the two entities, after a token naming the
    pair's types and which comes first in the text (``"PER_ORG_headfirst"``), without which
    the same words between a company and a city and between a person and a city would look
    alike."""
    order = "headfirst" if pair.head.start < pair.tail.start else "tailfirst"
    return f"{pair.head.type}_{pair.tail.type}_{order} {between(pair)}"
