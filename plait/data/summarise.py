"""Summarisation: short synthetic news articles, each with a one-sentence reference summary.

An article reports one event of a :class:`Kind` (an acquisition, an appointment, a storm, a
sports win, an election, a court fine). The kind names its facts (slots such as ``{buyer}``,
``{amount}``, ``{date}``) and has ONE canonical summary template that states them all, plus
many *lead* frames that state the same facts in other words and orders, and *detail* frames
that repeat one fact next to distractors. Generic :data:`FILLERS` add background. Distractor
slots (``{PER}``, ``{ORG}``, ``{LOC}``, ``{DATE}``, ``{NUM}``) are filled with fresh entities
and numbers of the same types as the facts, so a summariser must pick the right name, date and
number, not just any. Names, places, organisations and dates come from
:func:`plait.data.ner.draw`; numbers are drawn per article and written with digits as news
does ("1,250", "37", "4.5"); a fact is written the same way in the article and the summary.

An article is 4-7 sentences (about 70-140 words): the lead sentence, in about 30% of articles
after a context sentence (so the first sentence is a real but beatable baseline); when the
lead leaves out the number, the second sentence states it; then details and fillers. Every
summary fact occurs verbatim in its article, and summary templates begin with a fact and
hold no other capitalised word, so a summary's capitalised words are all facts.

Sentence-final slots are never a person, place or organisation: their strings may end in a
period ("Kaul e.V."), which would make the sentence end ambiguous. :func:`lead` splits raw
text at ``.!?`` + space unless the word ending there is an abbreviation (one with an inner
period, a single letter, or a title/legal form from :data:`ABBREVIATIONS`); the evaluation
(``plait.evaluation.summarise``) imports :func:`lead` from here for the lead baseline.

**Held out**: for every kind, every fourth lead frame and every fourth detail frame (index
% 4 == 3), every fourth filler, and the entity strings that
:func:`plait.data.ner.is_held_out_entity` marks appear only in "heldout" articles. Held-out
articles take their lead from the held-out lead frames only, their details and fillers from
all frames, and only held-out entity strings. "validation" uses the training frames and
entities at other indices (a different seed string).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from plait.data.ner import draw

Split = Literal["train", "validation", "heldout"]
SPLITS = ("train", "validation", "heldout")
SLOT = re.compile(r"\{(\w+)\}")
ENTITY_TYPES = ("PER", "ORG", "LOC", "DATE")


@dataclass(frozen=True)
class Article:
    text: str
    summary: str
    kind: str
    facts: tuple[tuple[str, str], ...]  # (slot, value as written in the article and summary)


@dataclass(frozen=True)
class Kind:
    name: str
    slots: tuple[tuple[str, str], ...]  # (slot, type): PER ORG LOC DATE, NUM, or a word list
    number: str  # the numeric fact's slot, which some leads leave to the second sentence
    summary: str
    leads: tuple[str, ...]
    details: tuple[str, ...]


ROLES = ("chief executive", "finance director", "head of research", "chief operating officer",
         "chair of the board", "legal director", "marketing director", "head of sales")
EVENTS = ("city marathon", "chess open", "tennis tournament", "cycling race", "golf open",
          "swimming championship", "ski race", "rowing regatta")

KINDS: tuple[Kind, ...] = (
    Kind("acquisition", (("buyer", "ORG"), ("target", "ORG"), ("amount", "NUM"),
                         ("date", "DATE")), "amount",
         "{buyer} agreed to buy {target} for {amount} million dollars on {date}.",
         ("{buyer} agreed on {date} to acquire rival {target} for {amount} million dollars.",
          "On {date}, {buyer} said it would buy {target} in a deal worth {amount} million dollars.",
          "{target} will be taken over by {buyer}, the two firms announced on {date}.",
          "In a deal announced on {date}, {target} is to be sold to {buyer} for {amount} million "
          "dollars.",
          "{buyer} has struck a deal to purchase {target}, the company confirmed on {date}.",
          "Shareholders learned on {date} that {buyer} will pay {amount} million dollars for "
          "{target} in cash.",
          "A takeover of {target} by {buyer} for {amount} million dollars was agreed on {date}.",
          "After months of talks, {buyer} agreed to buy {target} on {date}."),
         ("The price of {amount} million dollars was higher than analysts at {ORG} expected.",
          "{target} was founded in {LOC} on {DATE} and employs {NUM} people.",
          "Analyst {PER} said the deal made {buyer} the largest firm of its kind.",
          "The deal values {target} at {amount} million dollars, including debt.",
          "{buyer} will pay {amount} million dollars in cash, its chair {PER} told reporters.",
          "Last year {buyer} paid {NUM} million dollars for {ORG}, a smaller rival.",
          "Regulators in {LOC} must still approve the purchase of {target} this year.",
          "{PER}, who founded {target}, will stay on as an adviser.")),
    Kind("appointment", (("org", "ORG"), ("person", "PER"), ("role", "ROLE"), ("date", "DATE"),
                         ("pay", "NUM")), "pay",
         "{person} was named {role} of {org} on {date} with a salary of {pay} thousand dollars.",
         ("{org} named {person} as its new {role} on {date}, on a salary of {pay} thousand "
          "dollars.",
          "On {date}, {person} was appointed {role} of {org} by its board.",
          "{person} will become the next {role} of {org}, the board said on {date}.",
          "The board of {org} chose {person} as {role} on {date}, with pay of {pay} thousand "
          "dollars.",
          "{person} takes over as {role} at {org}, the firm announced on {date}.",
          "In a statement on {date}, {org} said {person} would serve as its {role}.",
          "{org} has picked {person} to be its {role}, starting on {date}.",
          "Starting on {date}, {person} is the new {role} of {org} on {pay} thousand dollars a "
          "year."),
         ("{person} will earn {pay} thousand dollars a year, the company said.",
          "{person} replaces {PER}, who held the post since {DATE}.",
          "Before joining {org}, {person} worked for {ORG} in {LOC} for years.",
          "The salary of {pay} thousand dollars was disclosed in a filing in {LOC} last week.",
          "{person} will be paid {pay} thousand dollars, board member {PER} said.",
          "{org} employs {NUM} people and is based in {LOC}, where it was founded.",
          "Rival {ORG} named {PER} to a similar post on {DATE}.",
          "{person} studied in {LOC} and joined {ORG} on {DATE}.")),
    Kind("storm", (("place", "LOC"), ("date", "DATE"), ("homes", "NUM")), "homes",
         "{place} was hit by a storm on {date} that damaged {homes} homes.",
         ("A storm hit {place} on {date}, damaging {homes} homes.",
          "On {date}, a violent storm swept through {place}, officials said.",
          "{homes} homes were damaged when a storm struck {place} on {date}.",
          "Residents of {place} were cleaning up after a storm on {date} left {homes} homes "
          "damaged.",
          "Strong winds and rain battered {place} on {date}, according to the weather service.",
          "The storm that reached {place} on {date} damaged {homes} homes.",
          "{place} was struck on {date} by the worst storm in years.",
          "Emergency crews in {place} counted {homes} damaged homes after the storm on {date}."),
         ("In all, {homes} homes were damaged, the fire service said.",
          "A similar storm hit {LOC} on {DATE} and damaged {NUM} homes.",
          "Mayor {PER} said the city would help families rebuild.",
          "Officials said {homes} homes were damaged and {NUM} trees fell.",
          "The storm damaged {homes} homes, {PER} of the weather service said.",
          "Insurer {ORG} expects claims from {NUM} households in {LOC} this month.",
          "Schools in {place} stayed closed until {DATE}.",
          "Power company {ORG} said {NUM} customers lost electricity.")),
    Kind("sports", (("winner", "PER"), ("event", "EVENT"), ("place", "LOC"), ("date", "DATE"),
                    ("prize", "NUM")), "prize",
         "{winner} won the {event} in {place} on {date} and a prize of {prize} dollars.",
         ("{winner} won the {event} in {place} on {date}, taking home {prize} dollars.",
          "On {date}, {winner} claimed victory at the {event} in {place} before big crowds.",
          "The {event} in {place} went to {winner} on {date}, with a prize of {prize} dollars.",
          "In {place} on {date}, {winner} took the title at the {event}.",
          "{winner} beat a strong field to win the {event} in {place} on {date}.",
          "Victory at the {event} in {place} on {date} earned {winner} {prize} dollars.",
          "{winner} was the winner of the {event} held in {place} on {date}.",
          "Crowds in {place} watched {winner} win the {event} on {date}."),
         ("The win was worth {prize} dollars to {winner} in total.",
          "{PER} finished second, and {PER} was third.",
          "Last year the {event} was won by {PER}, who took {NUM} dollars.",
          "{winner} collected {prize} dollars in prize money, organisers said.",
          "The prize of {prize} dollars was paid by sponsor {ORG}, organisers said.",
          "{NUM} athletes from {LOC} took part in the race.",
          "{winner} trains in {LOC} with coach {PER} most of the year.",
          "The next {event} will be held on {DATE}.")),
    Kind("election", (("winner", "PER"), ("place", "LOC"), ("votes", "NUM"), ("date", "DATE")),
         "votes",
         "{winner} was elected mayor of {place} with {votes} votes on {date}.",
         ("{winner} was elected mayor of {place} on {date}, winning {votes} votes.",
          "Voters in {place} chose {winner} as their new mayor on {date}.",
          "With {votes} votes, {winner} won the race for mayor of {place} on {date}.",
          "On {date}, {winner} became mayor of {place} after a close contest.",
          "{place} has a new mayor: {winner} won the vote on {date}.",
          "The mayoral election in {place} on {date} was won by {winner} with {votes} votes.",
          "{winner} will lead {place} as mayor after the election on {date}.",
          "In the vote on {date}, {winner} took {votes} votes to become mayor of {place} for "
          "five years."),
         ("{winner} won {votes} votes, the election office said.",
          "The runner-up, {PER}, won {NUM} votes.",
          "Turnout was lower than in the vote on {DATE}, when {PER} won.",
          "Official results gave {winner} {votes} votes and {PER} {NUM} votes.",
          "In total {winner} received {votes} votes, according to {ORG} and local media.",
          "{winner} promised to build {NUM} new homes in {place} within four years.",
          "The campaign was backed by {ORG} and by the mayor of {LOC} as well.",
          "Outgoing mayor {PER} had served since {DATE}.")),
    Kind("court", (("person", "PER"), ("fine", "NUM"), ("place", "LOC"), ("date", "DATE")),
         "fine",
         "{person} was fined {fine} dollars by a court in {place} on {date}.",
         ("A court in {place} fined {person} {fine} dollars on {date}.",
          "On {date}, judges in {place} ordered {person} to pay a fine.",
          "{person} must pay {fine} dollars after a court in {place} ruled on {date}.",
          "{person} was ordered by a court in {place} on {date} to pay a fine of {fine} dollars.",
          "A judge in {place} handed {person} a fine on {date}.",
          "The court in {place} on {date} imposed a fine of {fine} dollars on {person} after a "
          "short trial.",
          "{person} lost the case in {place} and was fined on {date}.",
          "In a ruling on {date}, a court in {place} fined {person} {fine} dollars."),
         ("The fine of {fine} dollars is due within a month, the court said.",
          "Prosecutor {PER} had asked for {NUM} dollars.",
          "A lawyer for {person} said they would appeal before {DATE}.",
          "The court set the fine at {fine} dollars, lawyer {PER} said.",
          "{person} was fined {fine} dollars, according to court papers.",
          "In a similar case in {LOC}, {PER} paid {NUM} dollars.",
          "The case was brought by {ORG} on {DATE}.",
          "{person} had worked for {ORG} in {LOC} until last year.")),
)
KIND_BY_NAME = {k.name: k for k in KINDS}

FILLERS = (
    "The company {ORG} was founded in {LOC} on {DATE}.",
    "Analyst {PER} of {ORG} said the region had changed a lot in recent years.",
    "Officials in {LOC} did not comment on the report on {DATE}.",
    "Local paper {ORG} first reported the news, citing {NUM} sources.",
    "Earlier, {PER} had visited {LOC} to meet local leaders.",
    "The region is home to about {NUM} people, many of them working for {ORG} or in farming.",
    "A spokesperson for {ORG} declined to comment.",
    "It was the second such event since {DATE}, when {PER} was in charge.",
    "Critics, among them {PER}, had warned about this for years.",
    "Experts at {ORG} in {LOC} said more news could follow.",
    "The story was shared {NUM} times online within a day.",
    "Historian {PER} compared it with events in {LOC} on {DATE}.",
)


def _held(i: int) -> bool:
    return i % 4 == 3


def lead_frames(kind: Kind, split: Split) -> list[str]:
    """The kind's lead frames a split may use: held-out ones only in "heldout"."""
    return [f for i, f in enumerate(kind.leads) if _held(i) == (split == "heldout")]


def detail_frames(kind: Kind, split: Split) -> list[str]:
    """The kind's detail frames a split may use (all of them in "heldout")."""
    return [f for i, f in enumerate(kind.details) if split == "heldout" or not _held(i)]


def filler_frames(split: Split) -> list[str]:
    return [f for i, f in enumerate(FILLERS) if split == "heldout" or not _held(i)]


def _number(rng: random.Random, slot: str) -> str:
    """A number as news writes it: digits, thousands commas, sometimes one decimal."""
    if slot == "amount" and rng.random() < 0.3:
        return f"{rng.randint(11, 99) / 10:.1f}"
    hi = {"amount": 9_500, "pay": 900, "homes": 30_000, "prize": 250_000, "votes": 300_000,
          "fine": 900_000}.get(slot, 50_000)
    value = rng.randint(12, hi)
    if value > 1000 and rng.random() < 0.5:  # round numbers are common in the news
        value = value // 10 * 10
    return f"{value:,}"


def _value(typ: str, rng: random.Random, split: Split, used: set[str], slot: str) -> str:
    """A fresh value of a slot type, distinct from every string already in the article."""
    entity_split = "heldout" if split == "heldout" else "train"
    while True:
        if typ in ENTITY_TYPES:
            value = draw(typ, entity_split, rng)
        elif typ == "ROLE":
            value = rng.choice(ROLES)
        elif typ == "EVENT":
            value = rng.choice(EVENTS)
        else:
            value = _number(rng, slot)
        if value not in used:
            used.add(value)
            return value


def _fill(frame: str, facts: dict[str, str], rng: random.Random, split: Split,
          used: set[str]) -> str:
    """The frame with fact slots set to the article's facts and distractor slots to fresh
    values."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        return facts[name] if name in facts else _value(name, rng, split, used, name)

    return SLOT.sub(sub, frame)


def _sentences(rng: random.Random, split: Split) -> tuple[Kind, dict[str, str], list[str]]:
    """One article's kind, facts and sentences, drawn from ``rng``."""
    kind = rng.choice(KINDS)
    used: set[str] = set()
    facts = {slot: _value(typ, rng, split, used, slot) for slot, typ in kind.slots}
    lead_frame = rng.choice(lead_frames(kind, split))
    frames = [lead_frame]
    details = detail_frames(kind, split)
    number = f"{{{kind.number}}}"
    if number not in lead_frame:  # the number comes in the second sentence
        frames.append(rng.choice([d for d in details if number in d]))
    others = [d for d in details if d not in frames] + filler_frames(split)
    rng.shuffle(others)
    target = rng.randint(4, 7)
    if rng.random() < 0.3:  # a context sentence before the lead
        frames.insert(0, next(f for f in others if f in FILLERS))
        others.remove(frames[0])
    sentences = [_fill(f, facts, rng, split, used) for f in frames]
    words = sum(len(s.split()) for s in sentences)
    for frame in others:
        if len(sentences) >= target and words >= 70:
            break
        sentence = _fill(frame, facts, rng, split, used)
        if words + len(sentence.split()) <= 140:
            sentences.append(sentence)
            words += len(sentence.split())
    return kind, facts, sentences


def _article(rng: random.Random, split: Split) -> Article:
    kind, facts, sentences = _sentences(rng, split)
    return Article(" ".join(sentences), kind.summary.format(**facts), kind.name,
                   tuple(facts.items()))


def sentences_at(index: int, split: Split = "train", seed: int = 0) -> list[str]:
    """The sentences of :func:`article_at`'s article, as generated (to test :func:`lead`)."""
    _check_split(split)
    return _sentences(random.Random(f"summarise/{seed}/{split}/{index}"), split)[2]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")


def article_at(index: int, split: Split = "train", seed: int = 0) -> Article:
    """The article at ``index`` of a split (a pure function of its arguments)."""
    _check_split(split)
    return _article(random.Random(f"summarise/{seed}/{split}/{index}"), split)


def articles(split: Split, n: int, seed: int = 0) -> list[Article]:
    """The first ``n`` articles of a split."""
    return [article_at(i, split, seed) for i in range(n)]


def train_articles(seed: int, step: int, micro: int, n: int) -> list[Article]:
    """The ``n`` training articles of micro-batch (step, micro), a pure function of its
    arguments."""
    rng = random.Random(f"summarise/{seed}/train-batch/{step}/{micro}")
    return [_article(rng, "train") for _ in range(n)]


# Titles and legal forms that faker puts in names ("Dr. Anna Weber", "Ehlert AG & Co. KG").
ABBREVIATIONS = frozenset({
    "Co", "Dr", "Mr", "Mrs", "Ms", "Prof", "Dott", "Sig", "Ing", "St", "Jr", "Sr", "MBA",
    "Inc", "Ltd", "Corp", "Rép", "Dém", "Pass", "Mme", "Mlle", "Mag", "Hr", "Fr", "Dipl",
    "Sra", "Srta", "Dres", "Univ", "No", "vs", "etc"})
_END = re.compile(r"[.!?](?=\s+\S)")


def _abbreviation(word: str) -> bool:
    """A word ending in "." that does not end a sentence: "e.V.", "Dr.", "Klaus-D."."""
    stem = word.rstrip(".").lstrip("(\"'")
    letters = re.split(r"[^\w]", stem)[-1] if stem else ""
    return "." in stem or len(letters) == 1 or stem in ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: a break after ".", "!" or "?" and whitespace, unless the word
    ending there is an abbreviation (see :func:`_abbreviation`); a period inside a word
    ("4.5", "e.V.") never breaks."""
    out, start = [], 0
    for m in _END.finditer(text):
        word = text[text.rfind(" ", 0, m.start()) + 1:m.end()]
        if m.group() == "." and _abbreviation(word):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    rest = text[start:].strip()
    return [*out, rest] if rest else out


def lead(text: str) -> str:
    """The first sentence of an article: the lead baseline's summary."""
    sentences = split_sentences(text)
    return sentences[0] if sentences else ""
