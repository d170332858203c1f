"""Speech synthesis: the alignment search against brute force, durations, the losses against
their formulas, the held-out rule, normalisation, and the recipe, eval and `plait speak` end to
end on a tiny model (espeak-ng builds the data)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import soundfile
import torch

from plait.cli.main import main
from plait.data import tts as data
from plait.inference.tts import encode_texts, normalise
from plait.models.tts import (
    ALPHABET,
    TTS,
    TTSConfig,
    durations_to_path,
    monotonic_alignment,
)
from plait.training import recipe_from_dict, train


def brute_force(logp: torch.Tensor, n: int, g: int) -> float:
    """The best score over every monotonic path of n characters over g groups: each character
    gets a run of >= 1 consecutive groups, in order."""
    best = -math.inf
    for cuts in itertools.combinations(range(1, g), n - 1):
        bounds = (0, *cuts, g)
        score = sum(float(logp[i, bounds[i]:bounds[i + 1]].sum()) for i in range(n))
        best = max(best, score)
    return best


def test_alignment_search_finds_the_best_monotonic_path():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n, G = 2 + trial % 3, 5 + trial % 4
        logp = torch.randn(1, n + 1, G + 2, generator=g)  # padding beyond n and G
        path = monotonic_alignment(logp, torch.tensor([n]), torch.tensor([G]))[0]
        assert path[:, G:].sum() == 0 and path[n:].sum() == 0
        assert torch.equal(path[:n, :G].sum(0), torch.ones(G, dtype=torch.long))
        assert (path[:n, :G].sum(1) >= 1).all()
        owner = path[:n, :G].argmax(0)
        assert torch.equal(owner, owner.sort().values)  # monotonic
        score = float((logp[0, :n, :G] * path[:n, :G]).sum())
        assert score == pytest.approx(brute_force(logp[0], n, G), abs=1e-5)


def test_alignment_search_is_the_same_alone_and_in_a_batch():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 6, 15, generator=g)
    n, G = torch.tensor([6, 3, 4]), torch.tensor([15, 9, 4])
    both = monotonic_alignment(logp, n, G)
    for b in range(3):
        alone = monotonic_alignment(logp[b:b + 1, :n[b], :G[b]], n[b:b + 1], G[b:b + 1])
        assert torch.equal(both[b, :n[b], :G[b]], alone[0])
    with pytest.raises(ValueError, match="at least one frame group"):
        monotonic_alignment(logp, torch.tensor([6, 3, 5]), G)


def test_durations_become_consecutive_runs():
    path = durations_to_path(torch.tensor([[2, 1, 3, 0]]), 7)[0]
    assert path.tolist() == [[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0],
                             [0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]]


def test_normalise_writes_numbers_as_the_grammar_says_them():
    assert normalise("Set a timer for 25 minutes", ALPHABET) == (
        " set a timer for twenty five minutes ")
    assert normalise("4,821!", ALPHABET) == " four thousand eight hundred twenty one "
    assert normalise("What colour is the star?", ALPHABET) == " what colour is the star? "
    for bad in ("", "   ", "%%%"):
        with pytest.raises(ValueError, match="nothing to say"):
            normalise(bad, ALPHABET)
    chars, mask = encode_texts(["ab", "a"], ALPHABET)
    assert chars.tolist() == [[1, 2, 3, 1], [1, 2, 1, 0]] and mask.sum() == 7


def test_held_out_phrases_never_reach_training():
    train_ = data.utterances(400, "train")
    held = data.utterances(60, "heldout")
    assert not any(data.is_held_out(u.text) for u in train_)
    assert all(data.is_held_out(u.text) for u in held)
    assert {u.kind for u in held} >= {"number", "timer", "question"}
    assert any("thirty seven" in u.text for u in held)
    assert data.utterance_at(5, "heldout") == data.utterance_at(5, "heldout")
    assert {(u.voice, u.variant, u.speed, u.pitch) for u in train_} == {
        (data.VOICE, data.VARIANT, data.SPEED, data.PITCH)}


def test_held_out_numbers_are_said_as_the_grammar_says_them():
    from plait.data.speech import number_words

    numbers = [u for u in data.utterances(60, "heldout") if u.kind in ("number", "timer")]
    assert numbers
    for u in numbers:  # the digits of the transcript are the words of the text
        digits = next(w for w in u.transcript.split() if w.isdigit())
        assert digits.endswith("37")
        assert number_words(int(digits)) in u.text


def test_the_task_groups_frames_as_the_model_does():
    from plait.config import ConfigError
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.tts import TTSData, TTSTask

    task = TTSTask(TTSData(), TrainConfig(out_dir="/tmp/unused"), Dist())
    assert task.model_config(TTSConfig(reduction=2)).reduction == 2
    with pytest.raises(ConfigError, match="model.reduction must be 2, got 3"):
        task.model_config(TTSConfig(reduction=3))


def test_the_losses_follow_their_formulas():
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.tts import TTSData, TTSTask

    task = TTSTask(TTSData(), TrainConfig(out_dir="/tmp/unused"), Dist())
    torch.manual_seed(0)
    model = TTS(TTSConfig(n_layer=1, n_decoder_layer=1, n_embd=32, n_inner=64, n_head=2))
    feats = [torch.randn(80, 2 * k) for k in (12, 9)]
    batch = task.batch(["ab c", "de"], feats)
    assert batch["groups"].shape == (2, 12, 160)
    assert torch.equal(batch["groups"][1, 3], feats[1][:, 6:8].T.reshape(-1))
    with torch.no_grad():
        got = task.losses(model, batch)
        y_hat, aligned, d, log_d = model(batch["chars"], batch["char_mask"], batch["groups"],
                                         batch["group_mask"])
    prior, l1, dur = [], [], []
    for b, (f, text) in enumerate(zip(feats, ["ab c", "de"], strict=True)):
        G, N = f.shape[1] // 2, len(normalise(text, ALPHABET))
        y = batch["groups"][b, :G]
        prior.append(0.5 * (y - aligned[b, :G]).square())
        l1.append((y - y_hat[b, :G]).abs())
        dur.append((torch.log1p(d[b, :N]) - log_d[b, :N]).square())
        assert float(d[b, :N].sum()) == G and (d[b, :N] >= 1).all()
    assert float(got["prior"]) == pytest.approx(float(torch.cat(prior).mean()), rel=1e-5)
    assert float(got["l1"]) == pytest.approx(float(torch.cat(l1).mean()), rel=1e-5)
    assert float(got["duration"]) == pytest.approx(float(torch.cat(dur).mean()), rel=1e-5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tts")
    recipe = recipe_from_dict({
        "task": "tts",
        "model": {"arch": "tts", "n_layer": 1, "n_decoder_layer": 1, "n_embd": 32,
                  "n_inner": 64, "n_head": 2},
        "data": {"n_train": 24, "n_heldout": 6, "n_eval": 3, "batch_size": 4,
                 "speech_dir": str(tmp / "data"), "asr": str(tmp / "no-recogniser")},
        "train": {"max_steps": 6, "warmup_steps": 1, "eval_interval": 0, "threads": 1,
                  "progress": False, "device": "cpu", "out_dir": str(tmp / "run")}})
    train(recipe)
    return tmp / "run"


def test_the_recipe_trains_and_evaluates(folder, capsys):
    assert main(["eval", "--model", str(folder), "--task", "tts"]) == 0
    out = capsys.readouterr().out
    for name in ("loss", "prior", "l1", "duration"):
        assert f"{name}  " in out, out


def test_plait_speak_writes_audio(folder, tmp_path, capsys):
    out = tmp_path / "say.wav"
    assert main(["speak", "--model", str(folder), "count the shapes.", "set a timer for 5",
                 "--out", str(out), "--iterations", "4"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "say-1.wav"), str(tmp_path / "say-2.wav")]
    audio, rate = soundfile.read(written[0], dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and len(audio) >= 320
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("args, needle", [
    (["hello", "--out", "{tmp}/x.png"], "ending in .wav or .flac"),
    (["hello", "--out", "{tmp}/missing/x.wav"], "no directory"),
    (["hello", "--out", "{tmp}"], "ending in .wav or .flac"),
    (["hello", "--out", "{tmp}/folder.wav"], "it is a directory"),
    (["%%%", "--out", "{tmp}/x.wav"], "nothing to say"),
    (["{tmp}/scene.png", "--out", "{tmp}/x.wav"], "is a file: plait speak says text"),
    (["hello", "--out", "{tmp}/x.wav", "--iterations", "0"], "--iterations must be >= 1"),
])
def test_mistakes_are_one_line_and_exit_code_2(folder, tmp_path, capsys, args, needle):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "scene.png")
    (tmp_path / "folder.wav").mkdir()
    capsys.readouterr()
    code = main(["speak", "--model", str(folder), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_a_folder_of_the_wrong_kind_is_named(folder, tmp_path, capsys):
    from plait.checkpoint import save_model
    from plait.models.gpt import GPT, GPTConfig

    other = tmp_path / "gpt"
    save_model(GPT(GPTConfig(vocab_size=8, n_layer=1, n_head=1, n_embd=8, block_size=8)), other)
    capsys.readouterr()
    code = main(["speak", "--model", str(other), "hello", "--out", str(tmp_path / "x.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "not a text-to-speech model" in err and err.count("\n") == 1, err
