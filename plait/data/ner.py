"""Sentences with people, places, organisations and dates, tagged word by word (BIO).

Entities come from ``faker`` in :data:`LOCALES` (names, cities, countries, companies) and dates
in several English styles; they fill :data:`FRAMES`, English sentence frames with slots
``{PER}``, ``{LOC}``, ``{ORG}``, ``{DATE}``. Words are what BERT's pre-tokenizer splits
(whitespace and punctuation), each tagged ``B-X`` / ``I-X`` / ``O``.

**Held out**: every fourth frame, and every entity string whose CRC-32 is divisible by 5,
appear only in evaluation sentences; training sentences use the other frames and the other
entity strings. A model must therefore tag names it has never seen in sentences it has never
seen.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from faker import Faker
from tokenizers import pre_tokenizers

LOCALES = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT")
TYPES = ("PER", "LOC", "ORG", "DATE")
LABELS = ("O", *[f"{p}-{t}" for t in TYPES for p in ("B", "I")])
Split = Literal["train", "heldout"]

FRAMES = (
    "{PER} flew from {LOC} to {LOC} on {DATE}.",
    "On {DATE}, {PER} joined {ORG} as head of research.",
    "{ORG} opened a new office in {LOC} last spring.",
    "According to {PER}, the deal with {ORG} closed on {DATE}.",
    "{PER} was born in {LOC} on {DATE}.",
    "The board of {ORG} met in {LOC} to discuss the merger.",
    "{PER} and {PER} founded {ORG} in {LOC}.",
    "Shares of {ORG} fell sharply on {DATE}.",
    "{PER} moved to {LOC} after leaving {ORG}.",
    "The conference in {LOC} starts on {DATE}.",
    "{ORG} hired {PER} to lead its team in {LOC}.",
    "By {DATE}, {ORG} had sold its stake to {ORG}.",
    "{PER} spoke about the economy of {LOC}.",
    "A spokesperson for {ORG} declined to comment.",
    "{PER} will visit {LOC} between {DATE} and {DATE}.",
    "The report from {ORG} was published on {DATE}.",
    "{PER} met {PER} at the embassy in {LOC}.",
    "Police in {LOC} questioned {PER} on {DATE}.",
    "{ORG} signed a contract with the city of {LOC}.",
    "{PER} has worked for {ORG} since {DATE}.",
    "Flights between {LOC} and {LOC} were cancelled on {DATE}.",
    "The museum in {LOC} honoured {PER} with an award.",
    "{ORG} reported record profits on {DATE}.",
    "{PER} wrote a book about the history of {LOC}.",
    "Investors expect {ORG} to expand into {LOC}.",
    "{PER} resigned from {ORG} on {DATE}.",
    "A new bridge connects {LOC} with {LOC}.",
    "{PER} thanked the staff of {ORG} for their work.",
    "Elections in {LOC} are scheduled for {DATE}.",
    "{ORG} acquired {ORG} for an undisclosed sum.",
    "{PER} grew up near {LOC} and studied in {LOC}.",
    "The lawyer for {PER} filed the appeal on {DATE}.",
    "{ORG} moved its headquarters from {LOC} to {LOC}.",
    "Tickets for the concert by {PER} sold out on {DATE}.",
    "{PER} told reporters in {LOC} that {ORG} would recover.",
    "The festival in {LOC} drew thousands of visitors.",
    "{PER} led the negotiations for {ORG}.",
    "Heavy snow closed the roads around {LOC} on {DATE}.",
    "{ORG} and {ORG} announced a partnership on {DATE}.",
    "{PER} presented the plan to the council of {LOC}.",
    "Engineers from {ORG} inspected the plant in {LOC}.",
    "{PER} celebrated her birthday in {LOC} on {DATE}.",
    "The trial of {PER} began on {DATE}.",
    "{ORG} cut two hundred jobs in {LOC}.",
    "{PER} donated the painting to a gallery in {LOC}.",
    "Researchers at {ORG} published the results on {DATE}.",
    "{PER} arrived in {LOC} late in the evening.",
    "The mayor of {LOC} met {PER} on {DATE}.",
    "{ORG} paid a fine to the regulator in {LOC}.",
    "{PER} won the race in {LOC} on {DATE}.",
    "Customers of {ORG} in {LOC} lost power for hours.",
    "{PER} praised {PER} for the rescue in {LOC}.",
    "The treaty was signed in {LOC} on {DATE}.",
    "{ORG} launched its first product on {DATE}.",
    "{PER} rented a flat in {LOC} near the station.",
    "Analysts at {ORG} raised their forecast for {LOC}.",
    "{PER} married {PER} in {LOC} on {DATE}.",
    "The strike at {ORG} ended on {DATE}.",
    "{PER} taught mathematics in {LOC} for ten years.",
    "Delegates from {LOC} and {LOC} met at {ORG}.",
    "{PER} sold the company to {ORG} on {DATE}.",
    "A storm hit the coast of {LOC} on {DATE}.",
    "{ORG} sponsors the football club of {LOC}.",
    "{PER} was elected chair of {ORG} on {DATE}.",
    "The exhibition about {LOC} opens on {DATE}.",
    "{PER} interviewed {PER} for a documentary about {LOC}.",
    "{ORG} recalled thousands of cars in {LOC}.",
    "{PER} returned to {LOC} on {DATE} after a long trip.",
    "Lawmakers in {LOC} questioned executives from {ORG}.",
    "{PER} designed the new library in {LOC}.",
    "The merger of {ORG} and {ORG} was approved on {DATE}.",
    "{PER} coached the national team of {LOC}.",
    "Volunteers from {ORG} cleaned the beaches of {LOC}.",
    "{PER} testified before the committee on {DATE}.",
    "The first train from {LOC} reached {LOC} on {DATE}.",
    "{ORG} invested heavily in solar farms near {LOC}.",
    "{PER} invited {PER} to dinner in {LOC}.",
    "Students protested outside {ORG} on {DATE}.",
    "{PER} translated the novel for a publisher in {LOC}.",
    "The ceremony at {ORG} took place on {DATE}.",
)


@dataclass(frozen=True)
class Sentence:
    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]  # each word's characters in text
    tags: tuple[str, ...]  # one BIO tag per word
    entities: tuple[tuple[str, int, int], ...]  # (type, start, end) character spans


def frames(split: Split) -> list[str]:
    return [f for i, f in enumerate(FRAMES) if (i % 4 == 3) == (split == "heldout")]


def is_held_out_entity(text: str) -> bool:
    return zlib.crc32(text.encode("utf-8")) % 5 == 0


DATE_STYLES = ("%B %-d, %Y", "%-d %B %Y", "%Y-%m-%d", "%d/%m/%Y", "%A, %B %-d, %Y")


@lru_cache(maxsize=2)
def entity_pool(split: Split, per_locale: int = 400) -> dict[str, tuple[str, ...]]:
    """Entity strings of each type for one split, from faker (seeded, so fixed)."""
    pools: dict[str, set[str]] = {t: set() for t in TYPES}
    for loc in LOCALES:
        fake = Faker(loc)
        fake.seed_instance(zlib.crc32(loc.encode()))
        for _ in range(per_locale):
            pools["PER"].add(fake.name())
            pools["LOC"].add(fake.city() if fake.random.random() < 0.7 else fake.country())
            pools["ORG"].add(fake.company())
            pools["DATE"].add(fake.date_between(start_date="-60y", end_date="+5y").strftime(
                fake.random.choice(DATE_STYLES)))
    keep = (lambda s: is_held_out_entity(s)) if split == "heldout" else (
        lambda s: not is_held_out_entity(s))
    return {t: tuple(sorted(s for s in pools[t] if keep(s))) for t in TYPES}


_PRE = pre_tokenizers.BertPreTokenizer()


def fill(frame: str, rng: random.Random, pool: dict[str, tuple[str, ...]]) -> Sentence:
    """The frame with its slots filled from ``pool``, split into tagged words."""
    text, entities, pos = "", [], 0
    for m in re.finditer(r"\{(PER|LOC|ORG|DATE)\}", frame):
        text += frame[pos:m.start()]
        value = rng.choice(pool[m.group(1)])
        entities.append((m.group(1), len(text), len(text) + len(value)))
        text += value
        pos = m.end()
    text += frame[pos:]
    words, spans, tags = [], [], []
    for word, (start, end) in _PRE.pre_tokenize_str(text):
        tag = "O"
        for kind, s, e in entities:
            if s <= start and end <= e:
                tag = f"{'B' if start == s or _first_word(text, s, start) else 'I'}-{kind}"
        words.append(word)
        spans.append((start, end))
        tags.append(tag)
    return Sentence(text, tuple(words), tuple(spans), tuple(tags), tuple(entities))


def _first_word(text: str, entity_start: int, word_start: int) -> bool:
    """The word is the entity's first (only whitespace or nothing lies before it)."""
    return not text[entity_start:word_start].strip()


def sentences(split: Split, n: int, seed: int = 0) -> list[Sentence]:
    """``n`` sentences of a split (a pure function of split, n and seed)."""
    rng = random.Random(f"ner/{split}/{seed}")
    fs, pool = frames(split), entity_pool(split)
    return [fill(rng.choice(fs), rng, pool) for _ in range(n)]


def batch_sentences(seed: int, step: int, micro: int, n: int) -> list[Sentence]:
    """The training sentences of micro-batch (step, micro)."""
    rng = random.Random(f"ner/train/{seed}/{step}/{micro}")
    fs, pool = frames("train"), entity_pool("train")
    return [fill(rng.choice(fs), rng, pool) for _ in range(n)]


def first_piece_labels(word_ids: list[int], tags: list[int]) -> list[int]:
    """The word's tag on its first piece, -100 elsewhere (later pieces, specials)."""
    out, prev = [], None
    for w in word_ids:
        out.append(tags[w] if w >= 0 and w != prev else -100)
        prev = w if w >= 0 else prev
    return out
