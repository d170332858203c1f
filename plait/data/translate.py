"""Written dates and numbers, in many languages, paired with their canonical form.

- **Dates**: a day between 1000-01-01 and 2999-12-31, written by ``babel`` (CLDR) in the
  ``full``, ``long`` or ``medium`` style of one of :data:`DATE_LOCALES` ("jeudi 9 mars 2017",
  "2017年3月9日木曜日", "9 марта 2017 г."), into ISO ``2017-03-09``.
- **Numbers**: 0 to 999,999, written out by ``num2words`` in one of :data:`NUMBER_LANGS`
  ("siebenhundertsiebenunddreißigtausend"), into digits ``737000``.

**Held out** (never in training, only in evaluation): every date in a year ending in 7 and
every number whose last two digits are 37. A model must then write a year it never wrote and
read "...thirty-seven" at the end of a number, which it only ever saw before "thousand".

Everything is a pure function of a seed: the training stream of (seed, step, micro-step) draws
fresh examples every step, and the held-out set of a seed is fixed.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from babel.dates import format_date
from num2words import num2words

# the default languages; others babel or num2words write can be chosen per recipe
DATE_LOCALES = ("en", "de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ar")
NUMBER_LANGS = ("en", "es", "fr", "pt", "ru")
KNOWN_DATE_LOCALES = (*DATE_LOCALES, "pl", "tr", "ko", "nl")
KNOWN_NUMBER_LANGS = (*NUMBER_LANGS, "de", "it", "pl", "nl")
STYLES = ("full", "long", "medium")
FIRST_YEAR, LAST_YEAR = 1000, 2999  # every four-digit year a date is likely to have
MAX_NUMBER = 999_999

Split = Literal["train", "heldout"]
YEARS = {"train": [y for y in range(FIRST_YEAR, LAST_YEAR + 1) if y % 10 != 7],
         "heldout": [y for y in range(FIRST_YEAR, LAST_YEAR + 1) if y % 10 == 7]}


@dataclass(frozen=True)
class Example:
    source: str  # the written form
    target: str  # the canonical form
    kind: Literal["date", "number"]
    lang: str

    @property
    def group(self) -> str:
        """``date-ru``, ``number-de``: what metrics are reported per."""
        return f"{self.kind}-{self.lang}"


def is_held_out_date(day: datetime.date) -> bool:
    return day.year % 10 == 7


def is_held_out_number(n: int) -> bool:
    return n % 100 == 37


def date_example(rng: random.Random, split: Split,
                 locales: tuple[str, ...] = DATE_LOCALES) -> Example:
    """A random date of the split, written in a random locale and style."""
    year, month = rng.choice(YEARS[split]), rng.randint(1, 12)
    day = datetime.date(year, month, rng.randint(1, _days_in(year, month)))
    lang, style = rng.choice(locales), rng.choice(STYLES)
    return Example(_clean(format_date(day, style, locale=lang)), day.isoformat(), "date", lang)


def number_example(rng: random.Random, split: Split,
                   langs: tuple[str, ...] = NUMBER_LANGS) -> Example:
    """A random number of the split (1 to 6 digits equally likely), written out."""
    while True:
        digits = rng.randint(1, 6)
        n = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
        if is_held_out_number(n) == (split == "heldout"):
            break
    lang = rng.choice(langs)
    return Example(_words(n, lang), str(n), "number", lang)


def example(rng: random.Random, split: Split, date_locales: tuple[str, ...] = DATE_LOCALES,
            number_langs: tuple[str, ...] = NUMBER_LANGS) -> Example:
    """A date or a number, one half each."""
    if rng.random() < 0.5:
        return date_example(rng, split, date_locales)
    return number_example(rng, split, number_langs)


def train_examples(seed: int, step: int, micro: int, n: int, **langs) -> list[Example]:
    """The ``n`` training examples of micro-batch (step, micro): a pure function of them."""
    rng = random.Random(f"translate/{seed}/{step}/{micro}")
    return [example(rng, "train", **langs) for _ in range(n)]


def heldout_examples(seed: int, per_group: int, date_locales: tuple[str, ...] = DATE_LOCALES,
                     number_langs: tuple[str, ...] = NUMBER_LANGS) -> list[Example]:
    """``per_group`` held-out examples for every (kind, language), in a fixed order."""
    rng = random.Random(f"translate/heldout/{seed}")
    out = []
    for lang in date_locales:
        out += [date_example(rng, "heldout", (lang,)) for _ in range(per_group)]
    for lang in number_langs:
        out += [number_example(rng, "heldout", (lang,)) for _ in range(per_group)]
    return out


def vocabulary_text(date_locales: tuple[str, ...] = DATE_LOCALES,
                    number_langs: tuple[str, ...] = NUMBER_LANGS) -> str:
    """Text holding every character and every word a source can hold, one item per line: each
    month and weekday in each style of each locale, every number below 1,000 and every whole
    thousand written out, plus digits and the ISO dash."""
    lines = ["0123456789-"]
    for lang in date_locales:
        for month in range(1, 13):
            for day in range(1, 8):  # 2024-01-01 is a Monday: seven days, every weekday
                d = datetime.date(2024, month, day)
                lines += [_clean(format_date(d, style, locale=lang)) for style in STYLES]
    for lang in number_langs:
        lines += [_words(n, lang) for n in (*range(0, 1000), *range(1000, MAX_NUMBER, 1000))]
    return "\n".join(lines)


def alphabet(date_locales: tuple[str, ...] = DATE_LOCALES,
             number_langs: tuple[str, ...] = NUMBER_LANGS) -> str:
    """Every character a source or target can hold (of :func:`vocabulary_text`)."""
    return "".join(sorted(set(vocabulary_text(date_locales, number_langs)) - {"\n"}))


def _days_in(year: int, month: int) -> int:
    nxt = datetime.date(year + month // 12, month % 12 + 1, 1)
    return (nxt - datetime.timedelta(days=1)).day


def _clean(text: str) -> str:
    """CLDR's narrow no-break and directional marks become plain spaces / nothing, so text
    typed by a person matches what the model was trained on."""
    return text.replace("\u202f", " ").replace("\u00a0", " ").replace("\u200f", "")


@lru_cache(maxsize=200_000)
def _words(n: int, lang: str) -> str:
    return _clean(num2words(n, lang=lang))
