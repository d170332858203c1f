"""Relation extraction's text side: the labels, the entity pairs, the marked sentence and its
encoding, shared by the data (:mod:`plait.data.relations`), the task
(:mod:`plait.training.tasks.relations`) and the command (:mod:`plait.inference.relations`).

A pair is read as its sentence with ``[E1] ... [/E1]`` around the head entity and ``[E2] ...
[/E2]`` around the tail (:func:`mark`; Baldini Soares et al. 2019's entity markers), encoded
with the four markers as added tokens (:func:`with_markers`, :func:`encode_pairs`); a relation
is only ever one of "none" and the relation the two types allow (:func:`allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from plait.text.base import pad_batch

RELATIONS = ("works for", "born in", "located in", "founded on")
LABELS = ("none", *RELATIONS)
TYPES_OF = {"works for": ("PER", "ORG"), "born in": ("PER", "LOC"),
            "located in": ("ORG", "LOC"), "founded on": ("ORG", "DATE")}
CANDIDATE_TYPES = frozenset(TYPES_OF.values())  # ordered (head type, tail type) pairs
MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")

@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # character span in the sentence
    end: int


@dataclass(frozen=True)
class Pair:
    text: str
    head: Entity
    tail: Entity
    label: str  # one of LABELS


def mark(pair: Pair) -> str:
    """The text with ``[E1] head [/E1]`` and ``[E2] tail [/E2]`` around the two spans (in
    whichever order they appear); the characters outside the spans are unchanged."""
    e1, e1_end, e2, e2_end = MARKERS
    spans = sorted([(pair.head, e1, e1_end), (pair.tail, e2, e2_end)], key=lambda s: s[0].start)
    out, pos = "", 0
    for entity, open_, close in spans:
        out += f"{pair.text[pos:entity.start]}{open_} {pair.text[entity.start:entity.end]} {close}"
        pos = entity.end
    return out + pair.text[pos:]


def with_markers(tokenizer: Any) -> Any:
    """The tokenizer with the four entity markers as added special tokens (kept if there)."""
    tokenizer.backend.add_special_tokens(list(MARKERS))
    return tokenizer


def encode_pairs(tokenizer: Any, pairs: list[Pair], max_length: int,
                 skip_long: bool = False) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """(input_ids, attention_mask, starts, kept): the marked sentences right-padded, each row's
    [E1] and [E2] positions (B, 2), and which pairs the rows are. A sentence longer than
    ``max_length`` pieces keeps a window around its two entities; entities too far apart for
    any window are a ValueError, or left out with ``skip_long`` (training draws them at random)."""
    marks = [tokenizer.backend.token_to_id(m) for m in MARKERS]
    rows, starts, kept = [], [], []
    for k, p in enumerate(pairs):
        ids = tokenizer.encode(mark(p))  # [CLS] ... [SEP]
        if len(ids) > max_length:
            try:
                ids = window(ids, marks, max_length, p.text)
            except ValueError:
                if skip_long:
                    continue
                raise
        rows.append(ids)
        starts.append((ids.index(marks[0]), ids.index(marks[2])))
        kept.append(k)
    ids, mask = pad_batch(rows, tokenizer.pad_token_id)
    return ids, mask, torch.tensor(starts, dtype=torch.long).view(-1, 2), kept


def window(ids: list[int], marks: list[int], max_length: int, text: str) -> list[int]:
    """[CLS] + the ``max_length - 2`` inner pieces around the four markers + [SEP]."""
    inner = ids[1:-1]
    where = [inner.index(m) for m in marks]
    first, last = min(where), max(where)
    room = max_length - 2
    if last - first + 1 > room:
        raise ValueError(f"the two entities are more than {max_length} pieces apart: their"
                         f" entity markers were cut off ({text[:60]!r}...)")
    begin = max(0, min(first - (room - (last - first + 1)) // 2, len(inner) - room))
    return [ids[0], *inner[begin:begin + room], ids[-1]]


def allowed(pairs: list[Pair]) -> Tensor:
    """(B, labels) True where a label can hold between the pair's types: "none", and the one
    relation whose types they are (a person and a place can be "born in", never "located
    in"), so the classifier only decides whether that relation holds."""
    return torch.tensor([[label == "none" or TYPES_OF[label] == (p.head.type, p.tail.type)
                          for label in LABELS] for p in pairs])


def typed_logits(logits: Tensor, allowed: Tensor) -> Tensor:
    """Logits with the labels the types rule out pushed far down (finite: label smoothing
    still gets a finite loss, with no gradient through them)."""
    return logits.masked_fill(~allowed, -1e4)
