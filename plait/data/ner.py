"""Sentences with people, places, organisations and dates, tagged word by word (BIO).

Entities are drawn fresh for every sentence from ``faker`` in :data:`LOCALES` (names, cities,
countries, companies) and dates in several English styles; they fill :data:`FRAMES`, English
sentence frames with slots
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
from pathlib import Path
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


@lru_cache(maxsize=1)
def _fakers() -> dict[str, Faker]:
    fakers = {loc: Faker(loc) for loc in LOCALES}
    for fake in fakers.values():
        # it_IT builds its city list from a set: its order (and so which city a seed draws)
        # would change with each process's string hashing; sorted, it is the same everywhere
        for provider in fake.get_providers():
            if isinstance(getattr(provider, "cities", None), list):
                provider.cities = sorted(provider.cities)
    return fakers


def draw(kind: str, split: Split, rng: random.Random) -> str:
    """A fresh entity string of ``kind`` for ``split`` (faker, seeded from ``rng``): names,
    cities or countries, companies from a random locale; dates in a random English style.
    Strings of the other split are drawn again."""
    while True:
        fake = _fakers()[rng.choice(LOCALES)]
        fake.seed_instance(rng.getrandbits(32))
        if kind == "PER":
            value = fake.name()
        elif kind == "LOC":
            value = fake.city() if rng.random() < 0.7 else fake.country()
        elif kind == "ORG":  # a name with its legal form or partners ("Kaul e.V.", "Gray,
            value = fake.company()  # Clark and Freeman"); a bare surname could be anyone
            if len(value.split()) < 2:
                continue
        else:
            day = fake.date_between(start_date="-60y", end_date="+5y")
            value = day.strftime(rng.choice(DATE_STYLES))
        if is_held_out_entity(value) == (split == "heldout"):
            return value


_PRE = pre_tokenizers.BertPreTokenizer()


def fill(frame: str, rng: random.Random, split: Split) -> Sentence:
    """The frame with its slots filled by fresh entities of the split, split into tagged
    words."""
    text, entities, pos = "", [], 0
    for m in re.finditer(r"\{(PER|LOC|ORG|DATE)\}", frame):
        text += frame[pos:m.start()]
        value = draw(m.group(1), split, rng)
        entities.append((m.group(1), len(text), len(text) + len(value)))
        text += value
        pos = m.end()
    text += frame[pos:]
    return tagged(text, entities)


def tagged(text: str, entities: list[tuple[str, int, int]]) -> Sentence:
    """A text and its entities' (type, start, end) character spans, split into BIO-tagged
    words."""
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


@lru_cache(maxsize=1)
def common_words(path: str = "data/tinyshakespeare.txt") -> tuple[str, ...]:
    """Lower-case English words (tiny Shakespeare's), to vary the frames' own words."""
    source = Path(path)
    if not source.is_file():  # no silent fallback: the training data would quietly change
        raise FileNotFoundError(f"text file not found: {source} (the words that vary NER frames"
                                " come from data/tinyshakespeare.txt; run from the repository)")
    return tuple(sorted(set(re.findall(r"\b[a-z]{2,}\b", source.read_text(encoding="utf-8")))))


def vary(frame: str, rng: random.Random, p: float) -> str:
    """The frame with each of its own words replaced, with probability ``p``, by a random
    English word (capitalised where the frame's word was: a sentence's first word): the words
    around an entity then vary as much as the entity does, and a model cannot learn that an
    unfamiliar word, or a capital at the start, must be a name."""
    if p <= 0:
        return frame
    words = common_words()

    def swap(m: re.Match) -> str:
        if rng.random() >= p:
            return m.group(0)
        word = rng.choice(words)
        return word.capitalize() if m.group(0)[0].isupper() else word

    return re.sub(r"(?<![{\w])[A-Za-z][a-z]+(?![\w}])", swap, frame)


def sentences(split: Split, n: int, seed: int = 0) -> list[Sentence]:
    """``n`` sentences of a split (a pure function of split, n and seed)."""
    rng = random.Random(f"ner/{split}/{seed}")
    fs = frames(split)
    return [fill(rng.choice(fs), rng, split) for _ in range(n)]


def batch_sentences(seed: int, step: int, micro: int, n: int, vary_words: float = 0.0,
                    join: float = 0.0) -> list[Sentence]:
    """The training sentences of micro-batch (step, micro). ``vary_words``: see :func:`vary`;
    ``join``: the share of examples made of two frames in a row, so that capitals and
    entities also meet sentence boundaries in the middle of a text."""
    rng = random.Random(f"ner/train/{seed}/{step}/{micro}")
    fs = frames("train")

    def frame() -> str:
        return vary(rng.choice(fs), rng, vary_words)

    return [fill(f"{frame()} {frame()}" if rng.random() < join else frame(), rng, "train")
            for _ in range(n)]


def first_piece_labels(word_ids: list[int], tags: list[int]) -> list[int]:
    """The word's tag on its first piece, -100 elsewhere (later pieces, specials)."""
    out, prev = [], None
    for w in word_ids:
        out.append(tags[w] if w >= 0 and w != prev else -100)
        prev = w if w >= 0 else prev
    return out
