"""Spoken numbers, timer commands and scene questions, synthesised offline with espeak-ng.

The grammar (:func:`phrase`) has three families, each a (text, transcript) pair:

- **number** 0-9999, 1 to 4 digits equally likely: espeak-ng is given words ("four thousand
  eight hundred twenty one"), the transcript is the digits ("4821").
- **timer**: "set a timer for 25 minutes", 1-99 minutes ("1 minute", singular).
- **question**: the scene questions of the VQA task, every phrasing of
  :data:`plait.data.scenes.PHRASINGS` with its colours and shapes ("what colour is the
  circle", "is there a green star"); espeak-ng reads the question mark as a question.

Transcripts are lower case, without punctuation, numbers as digits (:data:`ALPHABET`);
:func:`written_question` gives a question's transcript its mark back, as the VQA data writes it.

A speaker is an espeak-ng voice (an accent) with a variant (a voice quality: male, female,
Klatt synthesiser, ...), "en-us+m3"; each utterance has its own speed (130-200 words per
minute) and pitch (30-70). **Held out**, never in training: the variants in
:data:`HELDOUT_VARIANTS` with any voice, and the voices in :data:`HELDOUT_VOICES` with any
variant; the held-out split uses only such speakers, so it measures new voices, not new words.

Utterance ``i`` of a split is a pure function of ``(seed, split, i)``, and espeak-ng gives the
same samples for the same arguments, so a built folder is reproducible (:func:`build_speech`).
``docs/audio.md`` has the voices, durations and build times.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from plait.audio import SAMPLING_RATE, load_bytes
from plait.data.scenes import COLOURS, KINDS, PHRASINGS, QUESTION_KINDS, article
from plait.io import atomic_write, atomic_write_text, read_json

Split = Literal["train", "heldout"]
ALPHABET = " 0123456789abcdefghijklmnopqrstuvwxyz"  # every character a transcript may hold
# relative weights of the families: numbers have the most to learn (40 words, 4 positions)
FAMILY_WEIGHTS = {"number": 2, "timer": 1, "question": 2}
PHRASE_KINDS = ("number", "timer", *QUESTION_KINDS)  # the manifest's "kind"

# espeak-ng 1.51's English voices, without the MBROLA ones (they need the mbrola program)
TRAIN_VOICES = ("en-gb", "en-us", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                "en-us-nyc")
HELDOUT_VOICES = frozenset({"en-gb-scotland"})
# ordinary voice qualities; left out: klatt6 (1.51 speaks it exactly as klatt), and the
# robots, whispers and caricatures (Demonic, croak, whisper, robosoft...)
TRAIN_VARIANTS = ("m1", "m2", "m3", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f5", "klatt",
                  "klatt2", "klatt3", "klatt5", "iven", "iven2", "iven4", "steph", "steph2")
# one of each family held out, so every held-out quality has training relatives
HELDOUT_VARIANTS = frozenset({"f4", "m4", "klatt4", "iven3", "steph3"})
SPEEDS = (130, 200)  # words per minute, espeak-ng -s (its default is 175)
PITCHES = (30, 70)  # espeak-ng -p, 0-99 (default 50)

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


@dataclass(frozen=True)
class Utterance:
    text: str  # what espeak-ng reads
    transcript: str  # what a recogniser should write
    kind: str  # one of PHRASE_KINDS
    voice: str
    variant: str
    speed: int
    pitch: int

    @property
    def speaker(self) -> str:
        return f"{self.voice}+{self.variant}"


# -- the grammar -------------------------------------------------------------------------------
def number_words(n: int) -> str:
    """0-9999 in words, American style without "and": 4821 -> "four thousand eight hundred
    twenty one". Given digits, espeak-ng would read 1100-1999 as years ("nineteen hundred
    eighty four") and add "and" in British voices; words make every voice say the same."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number_words covers 0-9999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f" {ONES[n % 10]}" if n % 10 else "")
    head, rest, unit = (n // 1000, n % 1000, "thousand") if n >= 1000 else (n // 100, n % 100,
                                                                            "hundred")
    return f"{ONES[head]} {unit}" + (f" {number_words(rest)}" if rest else "")


def transcript_of(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: "Count the shapes." -> "count the
    shapes"."""
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def number_phrase(rng: random.Random, n: int | None = None) -> tuple[str, str]:
    """A number said (``n``, or drawn: as many 1-digit numbers as 4-digit ones)."""
    if n is None:
        digits = rng.randint(1, 4)  # equally many 1- and 4-digit numbers, as in translate.py
        n = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
    return number_words(n), str(n)


def timer_phrase(rng: random.Random, minutes: int | None = None) -> tuple[str, str]:
    """A timer request for ``minutes`` (or 1-99 drawn)."""
    minutes = rng.randint(1, 99) if minutes is None else minutes
    unit = "minute" if minutes == 1 else "minutes"  # said as it would be: "1 minute"
    return (f"set a timer for {number_words(minutes)} {unit}",
            f"set a timer for {minutes} {unit}")


def written_question(transcript: str) -> str:
    """A scene question's transcript as the VQA data writes it, its closing mark put back:
    "count the shapes" -> "count the shapes.", "is there a red star" -> "is there a red
    star?"; a transcript that matches no phrasing ends with "?"."""
    text = " ".join(transcript.lower().split())
    for pattern, mark in _phrasing_patterns():
        if pattern.fullmatch(text):
            return text + mark
    return text + "?"


@lru_cache(maxsize=1)
def _phrasing_patterns() -> list[tuple[re.Pattern[str], str]]:
    """(a pattern matching the transcripts of a phrasing, that phrasing's closing mark)."""
    out = []
    for form in (f for forms in PHRASINGS.values() for f in forms):
        head, slot, tail = form[:-1].partition("{x}")
        pattern = re.escape(transcript_of(head)) + (r"\s*(.+?)\s*" if slot else "")
        out.append((re.compile(pattern + re.escape(transcript_of(tail))), form[-1]))
    return out


def question_phrase(rng: random.Random, kind: str) -> tuple[str, str]:
    """A scene question of ``kind`` in one of its phrasings, its slot filled at random."""
    colour, shape = rng.choice(list(COLOURS)), rng.choice(KINDS)
    slot = {"count": "", "colour": shape, "shape": colour, "relation": f"{colour} {shape}",
            "presence": article(f"{colour} {shape}")}[kind]
    text = rng.choice(PHRASINGS[kind]).format(x=slot)
    return text, transcript_of(text)


def phrase(rng: random.Random) -> tuple[str, str, str]:
    """One (text, transcript, kind) of the grammar."""
    family = rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]
    if family == "number":
        return (*number_phrase(rng), "number")
    if family == "timer":
        return (*timer_phrase(rng), "timer")
    kind = rng.choice(QUESTION_KINDS)
    return (*question_phrase(rng, kind), kind)


# -- speakers --------------------------------------------------------------------------------
def is_held_out(speaker: str) -> bool:
    """Whether a "voice+variant" speaker belongs to the held-out split."""
    voice, _, variant = speaker.partition("+")
    return voice in HELDOUT_VOICES or variant in HELDOUT_VARIANTS


def speakers(split: Split) -> list[str]:
    """Every speaker of ``split``: training voices x training variants (140), or a held-out
    variant on a training voice plus the held-out voice with any variant (60)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"speech split must be 'train' or 'heldout', got {split!r}")
    voices = [*TRAIN_VOICES, *sorted(HELDOUT_VOICES)]
    variants = [*TRAIN_VARIANTS, *sorted(HELDOUT_VARIANTS)]
    return [f"{v}+{q}" for v in voices for q in variants
            if is_held_out(f"{v}+{q}") == (split == "heldout")]


def utterance_at(index: int, split: Split = "train", seed: int = 0) -> Utterance:
    """Utterance ``index`` of ``split``, a pure function of its arguments."""
    who = speakers(split)
    rng = random.Random(f"speech/{seed}/{split}/{index}")
    text, transcript, kind = phrase(rng)
    voice, _, variant = rng.choice(who).partition("+")
    return Utterance(text, transcript, kind, voice, variant, rng.randint(*SPEEDS),
                     rng.randint(*PITCHES))


def utterances(n: int, split: Split = "train", seed: int = 0) -> list[Utterance]:
    """The first ``n`` utterances of ``split`` (a longer list starts with a shorter one)."""
    return [utterance_at(i, split, seed) for i in range(n)]


# -- espeak-ng ---------------------------------------------------------------------------------
MISSING = ("espeak-ng is not installed: `make test` installs it as root, or run "
           "`sudo apt-get install espeak-ng`")


def _espeak(*args: str) -> bytes:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(MISSING)
    out = subprocess.run(["espeak-ng", *args], capture_output=True, timeout=60)
    if out.returncode or not out.stdout:
        err = " ".join(out.stderr.decode(errors="replace").split()) or "no output"
        raise RuntimeError(f"espeak-ng {' '.join(args)!r} failed (exit {out.returncode}): {err}")
    return out.stdout


@lru_cache(maxsize=1)
def espeak_version() -> tuple[str, Path]:
    """(version, data folder), from ``espeak-ng --version``: "eSpeak NG text-to-speech: 1.51
    Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"."""
    line = _espeak("--version").decode()
    m = re.search(r"text-to-speech:\s*(\S+)\s+Data at:\s*(\S+)", line)
    if not m:
        raise RuntimeError(f"cannot read espeak-ng's version from {line.strip()!r}")
    return m.group(1), Path(m.group(2))


def check_speakers() -> None:
    """Raise unless every voice and variant used is in this espeak-ng (it would otherwise
    fall back to its default voice without a word, making two speakers one)."""
    _, data = espeak_version()
    listed = _espeak("--voices=en").decode().splitlines()[1:]
    voices = {line.split()[1].lower() for line in listed if len(line.split()) > 1}
    missing = [v for v in (*TRAIN_VOICES, *HELDOUT_VOICES) if v not in voices]
    missing += [f"+{q}" for q in (*TRAIN_VARIANTS, *HELDOUT_VARIANTS)
                if not (data / "voices" / "!v" / q).is_file()]
    if missing:
        raise RuntimeError(f"this espeak-ng ({espeak_version()[0]}, data at {data}) lacks "
                           f"{', '.join(missing)}: the speech voices are those of 1.51")


def synthesize(u: Utterance) -> np.ndarray:
    """Speak ``u``: float32 mono at 16 kHz (espeak-ng's 22,050 Hz resampled), its trailing
    digital silence cut: espeak-ng ends with up to 0.3 s of exact zeros, which padding to a
    window puts back, so features in a window do not change."""
    wav = _espeak("-v", u.speaker, "-s", str(u.speed), "-p", str(u.pitch), "--stdout", u.text)
    return np.trim_zeros(load_bytes(wav, name=f"espeak-ng {u.speaker}"), "b")


# -- the dataset folder ------------------------------------------------------------------------
FORMAT = 1  # bump when the grammar, the voices or the storage change: old folders rebuild
META_FILE = "meta.json"
SPLITS: tuple[Split, ...] = ("train", "heldout")


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> little-endian int16 (x 32768, as soundfile reads it back), with
    trailing zeros cut."""
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    return np.trim_zeros(pcm, "b")


def build_speech(out_dir: str | Path, n_train: int, n_heldout: int, seed: int = 0,
                 workers: int = 2, log: Callable[[str], None] = print,
                 grammar: str = "phrases",
                 make: Callable[[int, Split, int], list[Utterance]] | None = None,
                 quiet_when_cached: bool = False) -> dict:
    """Synthesise the first ``n_train`` training and ``n_heldout`` held-out utterances of
    ``seed`` into ``out_dir``, unless it holds exactly them already; returns ``meta.json``.

    The folder: ``{split}.bin``, every utterance's samples one after another as raw
    little-endian int16 at 16 kHz (``np.memmap`` reads it; 32 kB per second of speech);
    ``{split}.jsonl``, one row per utterance (the :class:`Utterance` fields plus ``start``
    and ``length`` in samples); ``meta.json``, written last: the spec, the espeak-ng version
    and the duration statistics. ``workers`` espeak-ng processes run at once. ``make(n,
    split, seed)`` lists the utterances (default :func:`utterances`, this module's phrases);
    another list needs another ``grammar`` name, which the cache is keyed by.
    ``quiet_when_cached``: a folder already built goes without a word (``log`` hears only
    builds).
    """
    if n_train < 0 or n_heldout < 0 or workers < 1:
        raise ValueError(f"need n_train, n_heldout >= 0 and workers >= 1, got {n_train}, "
                         f"{n_heldout} and {workers}")
    out = Path(out_dir)
    spec = {"format": FORMAT, "n_train": n_train, "n_heldout": n_heldout, "seed": seed}
    if grammar != "phrases":  # the phrases' folders keep the spec they were built with
        spec["grammar"] = grammar
    cached = _cached_meta(out, spec)
    if cached is not None:
        if not quiet_when_cached:
            log(f"speech: {out} already holds {n_train} + {n_heldout} utterances of seed"
                f" {seed}")
        return cached
    check_speakers()
    (out / META_FILE).unlink(missing_ok=True)  # a half-rebuilt folder must not look cached
    t0 = time.time()
    meta: dict = {"spec": spec, "espeak_ng": espeak_version()[0],
                  "sampling_rate": SAMPLING_RATE, "dtype": "int16"}
    for split, n in zip(SPLITS, (n_train, n_heldout), strict=True):
        meta[split] = _build_split(out, split, (make or utterances)(n, split, seed), workers)
        log(f"speech: {n} {split} utterances ({meta[split]['seconds']['total'] / 60:.1f} min "
            f"of audio) after {time.time() - t0:.1f}s")
    meta["build_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def _build_split(out: Path, split: Split, utts: list[Utterance], workers: int) -> dict:
    rows: list[dict] = []

    def write(tmp: str) -> None:
        start = 0
        # threads suffice: each waits on its espeak-ng process; the resampling is small
        with open(tmp, "wb") as f, ThreadPoolExecutor(workers) as pool:
            for u, x in zip(utts, pool.map(synthesize, utts), strict=True):
                pcm = to_pcm16(x)
                f.write(pcm.tobytes())
                rows.append({**asdict(u), "start": start, "length": len(pcm)})
                start += len(pcm)

    atomic_write(out / f"{split}.bin", write)
    atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"utterances": len(rows), "samples": sum(r["length"] for r in rows),
            "seconds": duration_stats([r["length"] / SAMPLING_RATE for r in rows])}


def duration_stats(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"total": 0.0}
    s = np.asarray(seconds)
    stats = {"total": s.sum(), "mean": s.mean(), "min": s.min(), "max": s.max(),
             **{f"p{q}": np.percentile(s, q) for q in (10, 50, 90, 99)},
             "over_4s": (s > 4.0).mean()}
    return {k: round(float(v), 3) for k, v in stats.items()}


def _cached_meta(out: Path, spec: dict) -> dict | None:
    """The folder's meta when it was built from ``spec`` and its files are whole."""
    try:
        meta = read_json(out / META_FILE)
    except (FileNotFoundError, ValueError):
        return None
    if meta.get("spec") != spec:
        return None
    for split in SPLITS:
        bin_path, rows = out / f"{split}.bin", out / f"{split}.jsonl"
        if not (bin_path.is_file() and rows.is_file()
                and bin_path.stat().st_size == 2 * meta[split]["samples"]):
            return None
    return meta


class SpeechSplit:
    """One split of a built folder: ``rows`` (its manifest) and ``audio(i)``, memory-mapped."""

    def __init__(self, folder: str | Path, split: Split = "train"):
        if split not in SPLITS:
            raise ValueError(f"speech split must be one of {SPLITS}, got {split!r}")
        self.folder = Path(folder)
        if not (self.folder / META_FILE).is_file():
            raise FileNotFoundError(f"no speech data in {self.folder} (missing {META_FILE}): "
                                    "build it with plait.data.speech.build_speech")
        self.meta = read_json(self.folder / META_FILE)
        lines = (self.folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        self.rows = [json.loads(line) for line in lines]
        path, samples = self.folder / f"{split}.bin", int(self.meta[split]["samples"])
        if path.stat().st_size != 2 * samples or len(self.rows) != self.meta[split]["utterances"]:
            raise ValueError(f"{path} or its manifest does not match {META_FILE}: the folder "
                             "is stale or truncated; delete it and build again")
        self.pcm = np.memmap(path, dtype="<i2", mode="r") if samples else np.zeros(0, "<i2")

    def __len__(self) -> int:
        return len(self.rows)

    def audio(self, i: int) -> np.ndarray:
        """Utterance ``i``'s samples, float32 in [-1, 1) at 16 kHz."""
        r = self.rows[i]
        return self.pcm[r["start"]:r["start"] + r["length"]].astype(np.float32) / 32768.0

    def utterance(self, i: int) -> Utterance:
        fields = {k: v for k, v in self.rows[i].items() if k not in ("start", "length")}
        return Utterance(**fields)
