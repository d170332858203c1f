"""The fusion task and its commands on a tiny run: batches, auxiliary targets, `plait eval
--task fusion` (one line, with a modality left out), `plait ask` with a picture and a
recording, and bad input as one line and exit code 2. The spoken words are a tiny espeak-ng
build (22 + 11 words), so these tests need espeak-ng as tests/test_speech_data.py explains."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from test_speech_data import espeak  # noqa: F401  (the fixture: fail or skip without espeak-ng)

from plait.cli.main import main
from plait.config import read_toml
from plait.data.fusion import WORDS, example_at
from plait.data.scenes import render
from plait.training import recipe_from_dict, train

RECIPE = "configs/fusion_scenes.toml"


def tiny_run(out, words, mode: str) -> None:
    """configs/fusion_scenes.toml without its CLIP stage, shrunk to two steps."""
    tree = read_toml(RECIPE)
    del tree["stages"]
    tree["model"].update(mode=mode, n_embd=16, n_head=2, n_cross_layer=1,
                         vision={"patch_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8},
                         audio={"n_layer": 1, "n_head": 2, "n_embd": 8})
    tree["data"].update(n_words=22, n_words_heldout=11, n_eval=8, batch_size=4,
                        words_dir=str(words))
    tree["train"].update(max_steps=2, warmup_steps=1, out_dir=str(out), progress=False,
                         threads=1, max_minutes=0.0, freeze=[])
    train(recipe_from_dict(tree))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, espeak):  # noqa: F811
    root = tmp_path_factory.mktemp("fusion")
    for mode in ("cross-attention", "concat"):
        tiny_run(root / mode, root / "words", mode)
    return root


def test_batches_carry_every_modality_and_the_auxiliary_targets(runs):
    from plait.training import TASKS, TrainConfig
    from plait.training.distributed import Dist

    recipe = recipe_from_dict(read_toml(RECIPE))
    data = recipe.data.replace(n_words=22, n_words_heldout=11, batch_size=6,
                               words_dir=str(runs / "words"))
    task = TASKS.get("fusion")(data, TrainConfig(out_dir=str(runs / "t")), Dist())
    task.model_config(recipe.model.replace(vision={"patch_size": 8}))
    batch = task.train_batch(3, 0)
    assert batch["pixel_values"].shape == (6, 3, 48, 48)
    assert batch["input_features"].shape == (6, 80, 96)
    assert batch["labels"].shape == (6,) and set(batch["labels"].tolist()) <= {0, 1}
    assert torch.equal(batch["input_features"], task.train_batch(3, 0)["input_features"])
    # the auxiliary targets: the word said, the count asked about (or none), the colours of
    # the kind asked about (or none), as the examples say
    examples, questions = task.train_examples(3, 0)
    assert len({tuple(q.split()[:3]) for q in questions}) >= 2  # phrasings and families vary
    assert batch["aux_word"].tolist() == [WORDS.index(e.word) for e in examples]
    for e, count, colours in zip(examples, batch["aux_count"].tolist(),
                                 batch["aux_colours"].tolist(), strict=True):
        if e.family == "colour-kind":
            assert count == -100 and sum(colours) >= 1
        else:
            assert colours[0] == -1
            attr = "colour" if e.family == "count-colour" else "kind"
            assert count == sum(getattr(s, attr) == e.slot for s in e.shapes)


def test_eval_prints_one_row_and_can_leave_a_modality_out(runs, capsys):
    run = str(runs / "cross-attention")
    assert main(["eval", "--model", run, "--task", "fusion"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("cross-attention  text+image+audio  accuracy ")
    assert all(f" {f} " in out[0] for f in ("count-colour", "count-kind", "colour-kind"))
    assert main(["eval", "--model", run, "--task", "fusion", "--without", "audio"]) == 0
    assert capsys.readouterr().out.startswith("cross-attention  text+image  accuracy ")


def files(tmp_path):
    e = example_at(0, "heldout")
    picture = tmp_path / "scene.png"
    render(list(e.shapes), 48).save(picture)
    word = tmp_path / "word.wav"
    sf.write(word, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16_000)
    return picture, word, e.question()


def test_ask_with_a_picture_a_recording_and_a_question(runs, tmp_path, capsys):
    picture, word, question = files(tmp_path)
    run = str(runs / "cross-attention")
    for args in ([str(picture), question, "--audio", str(word)],
                 [str(picture), "--audio", str(word), question],  # as docs/fusion.md writes it
                 [str(picture), question],  # a set mode: the recording may be left out
                 [question, "--audio", str(word)],
                 [str(picture), "--audio", str(word)]):
        capsys.readouterr()
        assert main(["ask", "--model", run, *args]) == 0, args
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and out[0] in ("yes", "no"), (args, out)


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    picture, word, question = files(tmp_path)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(32_000, np.float32), 16_000)
    broken = tmp_path / "broken.png"
    broken.write_bytes(picture.read_bytes()[:60])
    concat, cross = str(runs / "concat"), str(runs / "cross-attention")
    cases = [
        (["ask", "--model", concat, str(picture), question], "concat fusion needs every"),
        (["ask", "--model", cross, str(picture), question, "--audio", str(long)],
         "hears one word of at most 0.96 s"),
        (["ask", "--model", cross, str(broken), question], "broken.png"),
        (["ask", "--model", cross, str(picture), "is it £?"], "£"),
        (["ask", "--model", cross, str(picture), "  "], "the question is empty"),
        (["ask", "--model", cross, str(picture), question, "--asr", cross], "no --asr"),
        (["ask", "--model", cross, str(picture), str(picture), question], "at most one image"),
        (["eval", "--model", concat, "--task", "fusion", "--without", "image"],
         "concat fusion needs every"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
