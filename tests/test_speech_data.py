"""The synthesised speech dataset: the grammar's transcripts, the held-out speaker rule,
determinism, and espeak-ng synthesis into a built folder.

The synthesis tests need espeak-ng, which `make test` installs as root. They fail when it is
missing but installable (a broken set-up must not pass as skipped), and skip only for a user
who cannot install it.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from plait.data import speech as S
from plait.data.scenes import COLOURS, KINDS, PHRASINGS

NUMBER_WORDS = {*S.ONES, *S.TENS, "hundred", "thousand"} - {""}


@pytest.fixture(scope="module")
def espeak() -> None:
    if shutil.which("espeak-ng") is None:
        if getattr(os, "geteuid", lambda: 1)() == 0 and shutil.which("apt-get"):
            pytest.fail("espeak-ng is missing but installable here: run `make system-deps`"
                        " (make test does)")
        pytest.skip("espeak-ng is not installed and cannot be installed here (not root, or no"
                    " apt-get): sudo apt-get install espeak-ng")


@pytest.fixture(scope="module")
def train() -> list[S.Utterance]:
    return S.utterances(3000, "train", seed=0)


# -- the grammar -------------------------------------------------------------------------------
def test_number_words_reads_every_number_once():
    assert S.number_words(0) == "zero"
    assert S.number_words(4821) == "four thousand eight hundred twenty one"
    assert S.number_words(1984) == "one thousand nine hundred eighty four"  # never a year
    assert S.number_words(1010) == "one thousand ten"
    assert S.number_words(300) == "three hundred"
    said = [S.number_words(n) for n in range(10_000)]
    assert len(set(said)) == 10_000
    assert {w for s in said for w in s.split()} == NUMBER_WORDS
    with pytest.raises(ValueError, match="0-9999"):
        S.number_words(10_000)


def test_transcripts_are_lower_case_words_and_digits(train):
    for u in train:
        t = u.transcript
        assert re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", t), t
        assert set(t) <= set(S.ALPHABET)
        # numbers as digits; the one number word of the grammar is a pronoun ("which one")
        assert not NUMBER_WORDS & set(t.replace("which one", "").split()), t
        if u.kind == "number":
            assert t == str(int(t)) and u.text == S.number_words(int(t))
        elif u.kind == "timer":
            m = re.fullmatch(r"set a timer for (\d+) (minutes?)", t)
            assert m and 1 <= int(m[1]) <= 99 and (m[2] == "minute") == (m[1] == "1"), t
            assert u.text == f"set a timer for {S.number_words(int(m[1]))} {m[2]}"
        else:
            assert u.transcript == S.transcript_of(u.text) and u.text[-1] in "?."


def test_the_grammar_covers_every_family_and_phrasing(train):
    kinds = {u.kind for u in train}
    assert kinds == set(S.PHRASE_KINDS)
    numbers = [u.transcript for u in train if u.kind == "number"]
    assert {len(n) for n in numbers} == {1, 2, 3, 4}
    minutes = {u.transcript.split()[4] for u in train if u.kind == "timer"}
    assert {"1", "99"} <= minutes
    texts = [u.text for u in train]
    for kind, phrasings in PHRASINGS.items():
        for p in phrasings:
            pattern = re.escape(p).replace(re.escape("{x}"), "(.+)")
            assert any(re.fullmatch(pattern, t) for t in texts), f"{kind}: {p!r} never drawn"
    words = {w for u in train for w in u.transcript.split()}
    assert set(COLOURS) | set(KINDS) <= words


# -- speakers ----------------------------------------------------------------------------------
def test_held_out_voices_and_variants_never_reach_training():
    train, held = S.speakers("train"), S.speakers("heldout")
    assert len(train) == len(S.TRAIN_VOICES) * len(S.TRAIN_VARIANTS) == 140
    for who in train:
        voice, variant = who.split("+")
        assert voice not in S.HELDOUT_VOICES and variant not in S.HELDOUT_VARIANTS
    for who in held:  # every held-out speaker has a held-out voice or variant
        voice, variant = who.split("+")
        assert voice in S.HELDOUT_VOICES or variant in S.HELDOUT_VARIANTS
    assert not set(train) & set(held)
    assert {w.split("+")[1] for w in held} >= S.HELDOUT_VARIANTS
    assert S.is_held_out("en-gb-scotland+m3") and S.is_held_out("en-us+f4")
    assert not S.is_held_out("en-us+f5")
    assert not any(S.is_held_out(u.speaker) for u in S.utterances(500, "train"))
    assert all(S.is_held_out(u.speaker) for u in S.utterances(500, "heldout"))
    with pytest.raises(ValueError, match="'train' or 'heldout'"):
        S.speakers("test")


def test_the_same_seed_draws_the_same_utterances(train):
    assert S.utterances(3000, "train", seed=0) == train
    assert S.utterances(100, "train", seed=0) == train[:100]  # a longer list extends a shorter
    assert S.utterances(100, "train", seed=1) != train[:100]
    assert S.utterances(100, "heldout", seed=0) != train[:100]
    for u in train:
        assert S.SPEEDS[0] <= u.speed <= S.SPEEDS[1] and S.PITCHES[0] <= u.pitch <= S.PITCHES[1]


# -- synthesis ---------------------------------------------------------------------------------
def utterance(speaker: str = "en-us+m3", speed: int = 175, pitch: int = 50,
              text: str = "set a timer for twenty five minutes") -> S.Utterance:
    voice, variant = speaker.split("+")
    return S.Utterance(text, S.transcript_of(text), "timer", voice, variant, speed, pitch)


def test_every_voice_and_variant_exists_and_sounds_different(espeak):
    S.check_speakers()  # each name is in this espeak-ng's voice list or variant folder
    # an unknown variant falls back silently; distinct audio shows each one is its own
    variants = [*S.TRAIN_VARIANTS, *sorted(S.HELDOUT_VARIANTS)]
    heard = {S.synthesize(utterance(f"en-us+{v}", text="nine")).tobytes() for v in variants}
    assert len(heard) == len(variants)
    voices = [*S.TRAIN_VOICES, *sorted(S.HELDOUT_VOICES)]
    heard = {S.synthesize(utterance(f"{v}+m3", text="where is the red circle?")).tobytes()
             for v in voices}
    assert len(heard) == len(voices)


def test_synthesis_is_16_khz_float32_deterministic_and_follows_speed(espeak):
    x = S.synthesize(utterance())
    assert x.dtype == np.float32 and x.ndim == 1
    assert 1.0 < len(x) / 16_000 < 3.5 and 0.05 < np.abs(x).max() <= 1.0
    assert x[-1] != 0  # the trailing digital silence is cut
    np.testing.assert_array_equal(S.synthesize(utterance()), x)
    slow, fast = (len(S.synthesize(utterance(speed=s))) for s in S.SPEEDS)
    assert 1.3 < slow / fast < 1.8  # 200 / 130 = 1.54 words per minute
    assert not np.array_equal(S.synthesize(utterance(pitch=30))[:len(x)], x)


def test_build_writes_a_folder_and_reuses_it(espeak, tmp_path):
    log: list[str] = []
    meta = S.build_speech(tmp_path, n_train=12, n_heldout=4, seed=5, log=log.append)
    assert meta["spec"] == {"format": S.FORMAT, "n_train": 12, "n_heldout": 4, "seed": 5}
    assert meta["espeak_ng"] == S.espeak_version()[0] and meta["train"]["utterances"] == 12
    for split, n in (("train", 12), ("heldout", 4)):
        data = S.SpeechSplit(tmp_path, split)
        assert len(data) == n
        assert [data.utterance(i) for i in range(n)] == S.utterances(n, split, seed=5)
        audio = data.audio(n - 1)
        assert audio.dtype == np.float32 and 0.2 < len(audio) / 16_000 < 4
        expected = S.to_pcm16(S.synthesize(data.utterance(n - 1))) / np.float32(32768)
        np.testing.assert_array_equal(audio, expected)
    stamp = (tmp_path / "train.bin").stat().st_mtime_ns
    assert S.build_speech(tmp_path, 12, 4, seed=5, log=log.append) == meta
    assert "already holds" in log[-1] and (tmp_path / "train.bin").stat().st_mtime_ns == stamp
    heard: list[str] = []
    assert S.build_speech(tmp_path, 12, 4, seed=5, log=heard.append, quiet_when_cached=True) \
        == meta and heard == []
    S.build_speech(tmp_path, 13, 4, seed=5, log=log.append)  # another spec: built again
    assert len(S.SpeechSplit(tmp_path, "train")) == 13
