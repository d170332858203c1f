"""Summarisation end to end on a tiny pointer-generator: the loss against its formula, the
recipe, `plait eval --task summarise`, and `plait summarise` with its mistakes."""

from __future__ import annotations

import pytest
import torch

from plait.cli.main import main
from plait.data import summarise as data
from plait.training import recipe_from_dict, train

TINY = {"arch": "pointer-generator", "n_layer": 1, "n_decoder_layer": 1, "n_head": 2,
        "n_embd": 32, "n_inner": 64}
SMALL = {"batch_size": 8, "n_heldout": 6, "n_eval": 4, "vocab_articles": 200}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("summarise") / "run"
    train(recipe_from_dict({
        "task": "summarise", "model": TINY, "data": SMALL,
        "train": {"max_steps": 5, "warmup_steps": 1, "eval_interval": 0, "threads": 1,
                  "progress": False, "device": "cpu", "out_dir": str(out)}}))
    return out


def test_the_loss_is_the_mean_negative_log_likelihood_of_the_labels(folder):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.summarise import SummariseData, SummariseTask

    task = SummariseTask(SummariseData(**SMALL), TrainConfig(out_dir=str(folder / "x")), Dist())
    b = task.train_batch(step=2, micro=0)
    again = task.train_batch(step=2, micro=0)
    assert all(torch.equal(b[k], again[k]) for k in b)  # a pure function of the step
    from plait.loading import load

    model = load(folder)
    from plait.models.pointer import Words

    with torch.no_grad():
        loss = float(task.loss(model, b))
        logp = model(Words(b["src_ids"], b["src_shapes"], b["src_slots"], b["src_ext"]),
                     b["src_mask"], Words(b["dec_ids"], b["dec_shapes"], b["dec_slots"],
                                          b["dec_ext"]), b["dec_pos"])
    picked = [-float(logp[i, t, y]) for i, row in enumerate(b["labels"])
              for t, y in enumerate(row.tolist()) if y != -100]
    assert loss == pytest.approx(sum(picked) / len(picked), rel=1e-5)
    # every label is a vocabulary word, a copy of an article word or the end: never <unk>
    assert not (b["labels"] == 3).any()


def test_the_recipe_trains_and_evaluates_beside_the_lead_baseline(folder, capsys):
    assert (folder / "copy_vocab.json").is_file()
    assert main(["eval", "--model", str(folder), "--task", "summarise"]) == 0
    out = capsys.readouterr().out
    for name in ("rougeL", "hallucination", "fact_recall", "lead_rougeL", "lead_hallucination"):
        assert f"{name}  " in out, out


def test_plait_summarise_prints_one_line_per_article(folder, tmp_path, capsys):
    a, b = data.articles("heldout", 2)
    path = tmp_path / "article.txt"
    path.write_text(b.text.replace(". ", ".\n"), encoding="utf-8")
    capsys.readouterr()
    assert main(["summarise", "--model", str(folder), a.text, "--file", str(path),
                 "--max-words", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line.split()) <= 8 for line in lines)


@pytest.mark.parametrize("args, needle", [
    (["   "], "text 1 is empty"),
    (["--file", "{tmp}/missing.txt"], "article file not found"),
    (["--file", "{tmp}/blank.txt"], "is empty"),
    (["--file", "{tmp}/binary.txt"], "is not UTF-8 text"),
    (["some text", "--max-words", "0"], "--max-words must be >= 1"),
])
def test_mistakes_are_one_line_and_exit_code_2(folder, tmp_path, capsys, args, needle):
    (tmp_path / "blank.txt").write_text("  \n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00abc")
    capsys.readouterr()
    code = main(["summarise", "--model", str(folder), *[x.format(tmp=tmp_path) for x in args]])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_a_folder_of_the_wrong_kind_is_named(tmp_path, capsys):
    from plait.checkpoint import save_model
    from plait.models.gpt import GPT, GPTConfig

    other = tmp_path / "gpt"
    save_model(GPT(GPTConfig(vocab_size=8, n_layer=1, n_head=1, n_embd=8, block_size=8)), other)
    capsys.readouterr()
    assert main(["summarise", "--model", str(other), "some text"]) == 2
    err = capsys.readouterr().err
    assert "not a summariser" in err and err.count("\n") == 1, err
