"""Dialogues between a user and an assistant whose every answer is computable by rule.

A conversation has an optional system message and one to three exchanges (a user's question,
the assistant's answer). The questions are of :data:`KINDS`:

- ``greeting`` ("Hello!") and ``name`` ("What is your name?"): the answer names the assistant
  when the system message gave it a name ("You are Kamilo, a helpful assistant."), so the
  system message matters; ``repeat`` ('Say "zorvik".') copies a word back;
- ``number-words`` (437 -> "four hundred and thirty-seven", ``num2words``) and
  ``words-number`` (the reverse), numbers of one to four digits;
- ``date-words`` (2017-03-09 -> "March 9, 2017") and ``words-date`` (the reverse), years
  1900-2099; ``next-date`` (the day after 2017-03-09: 2017-03-10); ``weekday`` (the day
  before or after Tuesday);
- ``add-one``, ``subtract-one`` and ``double`` of numbers of one to four digits;
- ``count-letters`` of a word ("strawberry": 10), its letters spelled out by the tokenizer;
- ``followup-words``: "And in words?" after a numeric answer, which only the earlier turn
  tells.

Every kind has five to seven phrasings for training and one more, beginning "Give me", that
training never uses (no training question begins so).

**Held out** (never in training, only in evaluation): every number whose last two digits are
37 (as a question's number, or an answer's), every date in a year ending in 7, every assistant
name whose syllables' indices in :data:`SYLLABLES` add up to a multiple of 7, every fifth word
of :data:`COUNT_WORDS`, and the "Give me" phrasings. A held-out dialogue draws only held-out
values; the evaluation asks its last question in a training phrasing or, reported apart, in the
held-out one.

Left out, because a 1M-parameter model trained for minutes does not learn them: questions
whose answer needs two operands combined digit by digit (23 + 45, the days between two dates,
the weekday three days after Tuesday, the weekday of a date). Each operand alone says nothing
of the answer's last digit, and a small model's loss sits at chance for a long while before it
finds the pair (docs/chat.md has the measurement); one operand and a fixed rule (plus one,
twice, the day after) are learnt within the budget.

Texts are printable ASCII. Everything is a pure function of a seed: the training stream of
(seed, step, micro-step) draws fresh dialogues, and the held-out set of a seed is fixed.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from num2words import num2words

Split = Literal["train", "heldout"]
KINDS = ("greeting", "name", "repeat", "number-words", "words-number", "date-words",
         "words-date", "next-date", "weekday", "add-one", "subtract-one", "double",
         "count-letters", "followup-words")
# how often a kind is drawn for a training question: what is learnt last (copying a name,
# numbers in words) more often than what is learnt first (letter counts, plus one)
WEIGHTS = {"greeting": 2, "name": 2, "repeat": 3, "number-words": 3, "words-number": 3,
           "date-words": 2, "words-date": 3, "next-date": 2, "weekday": 2, "add-one": 2,
           "subtract-one": 2, "double": 2, "count-letters": 1, "followup-words": 2}

# kind -> (training phrasings, the held-out phrasing); {x} and {y} are the question's values
PHRASINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "greeting": (("Hello!", "Hi there.", "Good morning!", "Hey, how are you?", "Hi!",
                  "Good evening.", "Hello, nice to meet you."), "Give me a hello!"),
    "name": (("What is your name?", "Who are you?", "What should I call you?",
              "What are you called?", "Do you have a name?", "Tell me who you are."),
             "Give me your name."),
    "repeat": (('Say "{x}".', "Repeat after me: {x}", 'Please repeat "{x}".',
                'Can you say "{x}"?', 'Echo "{x}".'), 'Give me back "{x}".'),
    "number-words": (("How do you write {x} in words?", "Write {x} in words.",
                      "Spell out the number {x}.", "What is {x} written out in words?",
                      "Say {x} in words.", "{x} in words, please."), "Give me {x} in words."),
    "words-number": (('What number is "{x}"?', 'Write "{x}" as digits.',
                      'Turn "{x}" into a number.', 'Write "{x}" in digits.',
                      'What is "{x}" in digits?', '"{x}" as a number, please.'),
                     'Give me "{x}" as digits.'),
    "date-words": (("Write the date {x} in words.", "How do you say the date {x}?",
                    "What is {x} written out?", "Write {x} out in words.",
                    "Say the date {x} in words.", "How is {x} written in words?"),
                   "Give me the date {x} in words."),
    "words-date": (("What is {x} in ISO format?", "Write {x} as YYYY-MM-DD.",
                    "Give the ISO date for {x}.", "Write {x} in ISO format.",
                    "What is the ISO date of {x}?", "{x} as an ISO date, please."),
                   "Give me {x} in ISO format."),
    "next-date": (("What date comes after {x}?", "What is the day after {x}?",
                   "Which date follows {x}?", "What is the date after {x}?",
                   "Which day comes after {x}?"), "Give me the date after {x}."),
    "weekday": (("What day comes {y} {x}?", "Which day of the week is {y} {x}?",
                 "Name the day {y} {x}.", "What is the day {y} {x}?", "Which day comes {y} {x}?"),
                "Give me the day {y} {x}."),
    "add-one": (("What is {x} plus one?", "What number comes after {x}?", "Add one to {x}.",
                 "What is {x} + 1?", "Count one up from {x}.", "What is one more than {x}?"),
                "Give me {x} plus one."),
    "subtract-one": (("What is {x} minus one?", "What number comes before {x}?",
                      "Subtract one from {x}.", "What is {x} - 1?",
                      "What is one less than {x}?"), "Give me {x} minus one."),
    "double": (("What is twice {x}?", "Double {x}.", "What is {x} times two?", "What is {x} * 2?",
                "What is two times {x}?", "Multiply {x} by two."), "Give me twice {x}."),
    "count-letters": (('How many letters are in "{x}"?', 'Count the letters in the word "{x}".',
                       'How long is the word "{x}"?', 'How many letters does "{x}" have?',
                       'What is the number of letters in "{x}"?', 'Count the letters of "{x}".'),
                      'Give me the number of letters in "{x}".'),
    "followup-words": (("And in words?", "Now write that in words.", "Can you say that in words?",
                        "Write that in words.", "And spelled out?", "Say it in words, please."),
                       "Give me that in words."),
}
SYSTEMS = (("You are a helpful assistant.", "Answer briefly and exactly."),
           ("You are {name}, a helpful assistant.", "Your name is {name}. Answer briefly."))
HELLO = "Hello! How can I help you today?"
HELLO_NAMED = "Hello! I am {name}. How can I help you today?"
NO_NAME = "I am a helpful assistant without a name."
NAMED = "My name is {name}."

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIRST_YEAR, LAST_YEAR = 1900, 2099
ONE_DAY = datetime.timedelta(days=1)
SYLLABLES = ("ka", "ri", "mo", "la", "ne", "su", "to", "vi", "da", "ze", "pa", "lo", "mi", "ru",
             "fe", "no", "ve", "sa")
LOWER = "abcdefghijklmnopqrstuvwxyz"
COUNT_WORDS = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "orange", "peach", "pear",
    "plum", "strawberry", "tomato", "potato", "carrot", "onion", "garlic", "pepper", "bread",
    "butter", "cheese", "coffee", "sugar", "honey", "dog", "cat", "horse", "rabbit", "tiger",
    "lion", "zebra", "giraffe", "elephant", "monkey", "parrot", "eagle", "owl", "dolphin",
    "whale", "shark", "turtle", "spider", "bee", "ant", "house", "garden", "window", "door",
    "kitchen", "table", "chair", "pillow", "blanket", "mirror", "lamp", "clock", "bottle", "cup",
    "plate", "spoon", "fork", "knife", "basket", "bucket", "ladder", "hammer", "pencil", "paper",
    "letter", "envelope", "camera", "guitar", "piano", "violin", "drum", "trumpet", "river",
    "mountain", "valley", "forest", "island", "ocean", "desert", "meadow", "canyon", "volcano",
    "cloud", "thunder", "rain", "snow", "winter", "summer", "autumn", "spring", "sunrise",
    "planet", "comet", "rocket", "bicycle", "train", "airplane", "tractor", "wagon", "castle",
    "bridge", "tower", "village", "market", "school", "library", "museum", "hospital", "teacher",
    "doctor", "farmer", "sailor", "pirate", "wizard", "dragon")


@dataclass(frozen=True)
class Exchange:
    """One question and its answer; ``number``: a numeric answer a follow-up can ask about."""

    kind: str
    question: str
    answer: str
    new_phrasing: bool = False
    number: int | None = None


@dataclass(frozen=True)
class Dialogue:
    """A system message ("" for none) and the exchanges after it."""

    system: str
    exchanges: tuple[Exchange, ...]

    def messages(self) -> list[dict[str, str]]:
        """The conversation as ``{"role", "content"}`` messages (what a chat template takes)."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for e in self.exchanges:
            out += [{"role": "user", "content": e.question},
                    {"role": "assistant", "content": e.answer}]
        return out

    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages())


def is_held_out_number(n: int) -> bool:
    return n % 100 == 37


def is_held_out_year(year: int) -> bool:
    return year % 10 == 7


def is_held_out_name(name: str) -> bool:
    """A name of SYLLABLES whose syllables' indices add up to a multiple of 7: a new name,
    though every pair of syllables in it also begins or ends a training name (a rule that
    held out a whole syllable, "vi", taught the model that no name holds it, and it copied
    "Vivi" as "Veve")."""
    parts = [name.lower()[i:i + 2] for i in range(0, len(name), 2)]
    if not parts or any(p not in SYLLABLES for p in parts):
        return False
    return sum(SYLLABLES.index(p) for p in parts) % 7 == 0


def count_words(split: Split) -> tuple[str, ...]:
    """The words whose letters are counted: every fifth of COUNT_WORDS is held out."""
    return tuple(w for i, w in enumerate(COUNT_WORDS) if (i % 5 == 4) == (split == "heldout"))


@lru_cache(maxsize=100_000)
def words(n: int) -> str:
    return num2words(n, lang="en")


def written_date(day: datetime.date) -> str:
    return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"


# -- values of a split ----------------------------------------------------------------------------
def _held(split: Split) -> bool:
    return split == "heldout"


def _number(rng: random.Random, split: Split) -> int:
    """1 to 4 digits equally likely (2 to 4 when held out: no one-digit number ends in 37)."""
    while True:
        digits = rng.randint(2 if _held(split) else 1, 4)
        n = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
        if is_held_out_number(n) == _held(split):
            return n


def _date(rng: random.Random, split: Split) -> datetime.date:
    while True:
        year = rng.randint(FIRST_YEAR, LAST_YEAR)
        if is_held_out_year(year) == _held(split):
            month = rng.randint(1, 12)
            return datetime.date(year, month, rng.randint(1, _days_in(year, month)))


def _name(rng: random.Random, split: Split) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if is_held_out_name(name) == _held(split):
            return name


def _letters(rng: random.Random) -> str:
    """A made-up word of 3 to 12 random letters, none a word of the vocabulary or of
    COUNT_WORDS: half the training words counted, so that counting, not a look-up of
    the real words' lengths, is what pays."""
    while True:
        w = "".join(rng.choice(LOWER) for _ in range(rng.randint(3, 12)))
        if w not in COUNT_WORDS and w not in _vocabulary():
            return w


def _days_in(year: int, month: int) -> int:
    nxt = datetime.date(year + month // 12, month % 12 + 1, 1)
    return (nxt - datetime.timedelta(days=1)).day


# -- questions ----------------------------------------------------------------------------------
def _arithmetic(rng: random.Random, split: Split, kind: str,
                result_held: bool = False) -> tuple[int, int]:
    """(x, result) of 0-9999 (0-4999 doubled); held out: 37 ends one of them (the result, if
    ``result_held``, for a follow-up to ask about); else neither."""
    while True:
        digits = rng.randint(1, 4)
        x = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
        r = {"add-one": x + 1, "subtract-one": x - 1, "double": 2 * x}[kind]
        if r < 0 or (kind == "double" and x >= 5000):
            continue
        held = is_held_out_number(r) if result_held else any(map(is_held_out_number, (x, r)))
        if held == _held(split):
            return x, r


def _values(kind: str, rng: random.Random, split: Split, name: str,
            result_held: bool) -> tuple[dict[str, Any], str, int | None]:
    """The slots of a question of ``kind``, its answer, and the answer as a number if it is
    one."""
    if kind == "greeting":
        return {}, HELLO_NAMED.format(name=name) if name else HELLO, None
    if kind == "name":
        return {}, NAMED.format(name=name) if name else NO_NAME, None
    if kind in ("number-words", "words-number"):
        n = _number(rng, split)
        if kind == "number-words":
            return {"x": n}, words(n), None
        return {"x": words(n)}, str(n), n
    if kind in ("date-words", "words-date", "next-date"):
        day = _date(rng, split)
        if kind == "date-words":
            return {"x": day.isoformat()}, written_date(day), None
        if kind == "words-date":
            return {"x": written_date(day)}, day.isoformat(), None
        # the answer's year must be of the split too (not the new year after 2016-12-31)
        while (day + ONE_DAY).year > LAST_YEAR or is_held_out_year((day + ONE_DAY).year) != (
                _held(split)):
            day = _date(rng, split)
        return {"x": day.isoformat()}, (day + ONE_DAY).isoformat(), None
    if kind == "weekday":
        start, step = rng.randrange(7), rng.choice((-1, 1))
        return ({"x": WEEKDAYS[start], "y": "after" if step > 0 else "before"},
                WEEKDAYS[(start + step) % 7], None)
    if kind in ("add-one", "subtract-one", "double"):
        x, r = _arithmetic(rng, split, kind, result_held)
        return {"x": x}, str(r), r
    if kind == "repeat":  # a name or a word: made up in training, held out in evaluation
        if _held(split):
            w = _name(rng, split) if rng.random() < 0.5 else rng.choice(count_words(split))
        else:
            w = _name(rng, split) if rng.random() < 0.3 else _letters(rng)
        return {"x": w}, w, None
    if kind == "count-letters":
        w = rng.choice(count_words(split)) if _held(split) or rng.random() < 0.5 else _letters(rng)
        return {"x": w}, str(len(w)), len(w)
    raise ValueError(f"unknown kind of question {kind!r} (known: {', '.join(KINDS)})")


def phrase(kind: str, rng: random.Random, new: bool) -> str:
    """A training phrasing of ``kind``, or its held-out one (``new``)."""
    seen, held = PHRASINGS[kind]
    return held if new else rng.choice(seen)


def exchange(kind: str, rng: random.Random, split: Split, name: str = "",
             previous: Exchange | None = None, new_phrasing: bool = False,
             result_held: bool = False) -> Exchange:
    """One question of ``kind`` of the split and its answer; a follow-up reads ``previous``."""
    if kind == "followup-words":
        if previous is None or previous.number is None:
            raise ValueError("a followup-words question needs a numeric answer before it")
        return Exchange(kind, phrase(kind, rng, new_phrasing), words(previous.number),
                        new_phrasing)
    slots, answer, number = _values(kind, rng, split, name, result_held)
    question = phrase(kind, rng, new_phrasing).format(**slots)
    return Exchange(kind, question, answer, new_phrasing, number)


def dialogue(rng: random.Random, split: Split, last: str | None = None,
             new_phrasing: bool = False) -> Dialogue:
    """A random dialogue of the split. ``last``: the kind of its final question (asked in the
    held-out phrasing if ``new_phrasing``); the earlier ones are drawn by :data:`WEIGHTS`."""
    name, system = "", ""
    # a held-out greeting or name question is asked of an assistant with a held-out name
    asks_name = _held(split) and last in ("greeting", "name")
    if asks_name or rng.random() < 0.5:
        named = asks_name or rng.random() < 0.75
        name = _name(rng, split) if named else ""
        system = rng.choice(SYSTEMS[named]).format(name=name)
    n = rng.choice((1, 1, 2, 2, 3))
    kinds = [_draw(rng) for _ in range(n)]
    if last is not None:
        kinds[-1] = last
    out: list[Exchange] = []
    for i, kind in enumerate(kinds):
        previous = out[-1] if out else None
        # a held-out follow-up asks for a result ending in 37 in words, so comes after one
        ask_37 = kind == last == "followup-words" and i == n - 1 and _held(split)
        if kind == "followup-words" and (ask_37 or previous is None or previous.number is None):
            before = ("add-one", "subtract-one") if ask_37 else ("add-one", "subtract-one",
                                                                 "double", "count-letters")
            previous = exchange(rng.choice(before), rng, split, name, result_held=ask_37)
            out.append(previous)
        out.append(exchange(kind, rng, split, name, previous, new_phrasing and i == n - 1))
    return Dialogue(system, tuple(out))


def _draw(rng: random.Random) -> str:
    return rng.choices(KINDS, weights=[WEIGHTS[k] for k in KINDS])[0]


def train_dialogues(seed: int, step: int, micro: int) -> Iterator[Dialogue]:
    """The training dialogues of micro-batch (step, micro), as many as are taken: a pure
    function of them."""
    rng = random.Random(f"dialogue/{seed}/{step}/{micro}")
    while True:
        yield dialogue(rng, "train")


def heldout_dialogues(seed: int, per_kind: int, new_phrasing: bool = False) -> list[Dialogue]:
    """``per_kind`` held-out dialogues ending in each kind of question, its last question in a
    training phrasing or (``new_phrasing``) in the held-out one; in a fixed order."""
    rng = random.Random(f"dialogue/heldout/{seed}/{int(new_phrasing)}")
    return [dialogue(rng, "heldout", kind, new_phrasing) for kind in KINDS
            for _ in range(per_kind)]


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    return frozenset(vocabulary_words())


def vocabulary_words() -> list[str]:
    """Every word of the training phrasings, system messages, answers, number words, months
    and weekdays: what a tokenizer may read as one token each. Names and the words whose
    letters are counted are left out (they must be spelled letter by letter)."""
    texts: list[str] = [HELLO, HELLO_NAMED, NO_NAME, NAMED, *MONTHS, *WEEKDAYS,
                        "day days"]
    texts += [p for seen, _ in PHRASINGS.values() for p in seen]
    texts += [s for group in SYSTEMS for s in group]
    texts += [words(n) for n in (*range(1000), 1000)]
    found: set[str] = set()
    for t in texts:
        found.update(_letter_runs(t.replace("{name}", " ")))
    return sorted(w for w in found if len(w) > 1 and w not in COUNT_WORDS)


def _letter_runs(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)

