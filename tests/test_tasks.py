"""The task contract: dict batches, every metric printed and logged with its unit, per-part
learning rates and frozen parts from the recipe, malformed recipes refused in one line, and the
worked example of docs/training.md run exactly as written."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import plait.training
from plait.cli.main import main
from plait.training import TASKS, Trainer, recipe_from_dict
from plait.training.optim import scheduled_lr

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def reverse_task(tmp_path, monkeypatch):
    """docs/training.md's ReverseTask, written to a module and registered as the page says."""
    task_code = doc_blocks()[0]
    (tmp_path / "reverse_task.py").write_text(task_code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    if "reverse" in TASKS:
        TASKS.unregister("reverse")
    sys.modules.pop("reverse_task", None)


def fast(recipe, out_dir, **train):
    """The same recipe, shortened for a test."""
    t = recipe.train.replace(out_dir=str(out_dir), max_steps=40, warmup_steps=5,
                             eval_interval=20, log_interval=5, progress=False, threads=1,
                             device="cpu", **train)
    return plait.training.recipe.Recipe(recipe.task, recipe.arch, recipe.model, recipe.data, t)


def test_the_worked_example_runs_as_written(reverse_task, monkeypatch, capsys):
    runs = []
    real_train = plait.training.train
    # the page's second block calls train(recipe); run its recipe shortened
    monkeypatch.setattr(plait.training, "train",
                        lambda r: runs.append(real_train(fast(r, reverse_task / "run"))))
    exec(compile(doc_blocks()[1], str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert len(runs) == 1 and "val_exact" in runs[0]
    # every metric printed with its unit, at every evaluation and at the end
    assert re.search(r"step 20: val loss [\d.]+ nats/token \(best [\d.]+\); exact [\d.]+"
                     r" fraction", out)
    assert re.search(r"val exact [\d.]+ fraction", out)
    events = [json.loads(x) for x in (reverse_task / "run" / "metrics.jsonl").read_text()
              .splitlines()]
    assert events[0]["event"] == "start" and events[0]["task"] == "reverse"
    assert events[0]["units"] == {"loss": "nats/token", "exact": "fraction"}
    evals = [e for e in events if e["event"] in ("eval", "final")]
    assert [e["step"] for e in evals] == [20, 40]
    assert all({"val_loss", "val_exact"} <= set(e) for e in evals)
    assert evals[-1]["val_loss"] < 2.0  # below the 2.30 nats of guessing a digit: it learned


def test_generating_in_an_evaluation_does_not_change_training(reverse_task, tmp_path):
    """The example's evaluate generates, which lays weights out for decoding; training after it
    must be the training without it (the loop restores the layout its optimizer state has)."""
    __import__("reverse_task")
    TASKS.register("reverse", "reverse_task:ReverseTask")
    base = recipe_from_dict({"task": "reverse", "model": {"n_layer": 2, "n_head": 2,
                             "n_embd": 64, "block_size": 16}})

    def train_losses(folder, eval_interval):
        plait.training.train(fast(base, folder).__class__(
            base.task, base.arch, base.model, base.data,
            fast(base, folder).train.replace(eval_interval=eval_interval, log_interval=1)))
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [e["loss"] for e in map(json.loads, lines) if e["event"] == "train"]

    assert train_losses(tmp_path / "a", 10) == train_losses(tmp_path / "b", 0)


# -- per-part learning rates and freezing ---------------------------------------------------------
@pytest.fixture
def lm_data(tmp_path):
    from plait.data.tokens import prepare_text

    src = tmp_path / "corpus.txt"
    src.write_text("the king and the queen speak of love and death by night. " * 300)
    prepare_text(src, tmp_path / "char", log=lambda _: None)
    return tmp_path / "char"


def lm_recipe(data, out, **train):
    return recipe_from_dict({
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16},
        "data": {"dir": str(data), "batch_size": 4},
        "train": {"out_dir": str(out), "max_steps": 10, "warmup_steps": 2, "lr": 3e-3,
                  "eval_interval": 0, "eval_batches": 1, "threads": 1, "progress": False,
                  "device": "cpu", **train}})


def test_frozen_parts_are_bit_identical_and_the_rest_trains(lm_data, tmp_path, capsys):
    recipe = lm_recipe(lm_data, tmp_path / "run", freeze=["transformer.blocks.0", "*.norm_*"],
                       part_lr={"transformer.blocks.1.mlp": 0.0})
    trainer = Trainer(recipe)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith("transformer.blocks.0.") or ".norm_" in k]
    zero_lr = [k for k in before if k.startswith("transformer.blocks.1.mlp.")]
    assert frozen and zero_lr
    for k in frozen + zero_lr:  # lr 0 moves nothing either (decoupled decay is lr-scaled)
        assert torch.equal(before[k], after[k]), k
    moved = [k for k in before if k not in frozen + zero_lr and not torch.equal(before[k],
                                                                                 after[k])]
    assert "wte.weight" in moved and "transformer.blocks.1.attn.qkv.weight" in moved
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters()
                   if n in frozen)
    out = capsys.readouterr().out
    assert re.search(r"parameters: [\d,]+ trainable, [\d,]+ frozen \(transformer\.blocks\.0,"
                     r" \*\.norm_\*\); transformer\.blocks\.1\.mlp at lr 0", out)
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["frozen_params"] == sum(before[k].numel() for k in frozen)


def test_each_part_follows_the_schedule_from_its_own_peak(lm_data, tmp_path):
    recipe = lm_recipe(lm_data, tmp_path / "run", min_lr=3e-4,
                       part_lr={"transformer.blocks.1": 1e-2, "wte": 1e-4})
    trainer = Trainer(recipe)
    for step in (0, 1, 5, 9):
        trainer.train_step(step)
        peaks = {g["peak_lr"] for g in trainer.optimizer.param_groups}
        assert peaks == {3e-3, 1e-2, 1e-4}
        for g in trainer.optimizer.param_groups:
            assert g["lr"] == scheduled_lr(step, g["peak_lr"], recipe.train)
    t = recipe.train
    assert scheduled_lr(10, 1e-2, t) == pytest.approx(1e-2 * t.min_lr / t.lr)  # floor scales
    assert scheduled_lr(10, t.lr, t) == t.min_lr  # and is exact at train.lr


@pytest.mark.parametrize("train,msg", [
    ({"freeze": ["vision"]}, r"train.freeze pattern 'vision' matches no parameter \(the"
                             r" model's top-level parts: wte, pos, transformer"),
    ({"part_lr": {"transformr": 1e-3}}, "train.part_lr pattern 'transformr'"),
    ({"freeze": ["*"]}, "every parameter is frozen"),
])
def test_part_names_that_miss_are_errors(lm_data, tmp_path, train, msg):
    with pytest.raises(ValueError, match=msg):
        Trainer(lm_recipe(lm_data, tmp_path / "run", **train))


# -- malformed recipes: one line, exit 2 ----------------------------------------------------------
@pytest.mark.parametrize("toml,msg", [
    ('[task]\nname = "lm"\n', "'task' must be a name, one of lm, clip, "),
    ('task = 3\n', "'task' must be a name"),
    ('task = "lmm"\n', "unknown task 'lmm' (known: lm, clip, "),
    ('model = "gpt"\n', "'model' must be a table ([model]), got 'gpt'"),
    ('[model]\narch = ["gpt"]\n', "'arch' must be a name"),
    ('[model]\narch = "gpt5"\n', "unknown arch 'gpt5'"),
    ('[train]\nfreeze = 3\n', "'train.freeze' must be a list"),
    ('[train]\npart_lr = [1, 2]\n', "'train.part_lr' must be a table of keys"),
    ('[train.part_lr]\nwte = "fast"\n', "'train.part_lr.wte' must be a number"),
    ('[train]\nlr = "fast"\n', "'train.lr' must be a number"),
    ('[dataa]\n', "unknown config key 'dataa'"),
    ('x = [1\n', "malformed TOML"),
])
def test_malformed_recipes_are_one_line_and_exit_2(tmp_path, capsys, toml, msg):
    path = tmp_path / "r.toml"
    path.write_text(toml)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err, err


# -- progress where no terminal is ----------------------------------------------------------------
def test_progress_to_a_file_is_plain_lines_not_carriage_returns(monkeypatch):
    import io

    import plait.progress

    monkeypatch.setattr(plait.progress, "LINE_INTERVAL", 0.0)
    out = io.StringIO()
    bar = plait.progress.progress(total=5, desc="train", unit="step", file=out)
    assert isinstance(bar, plait.progress.LineProgress)
    for _ in range(5):
        bar.set_postfix(loss="1.2345")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train: 1/5 step (20%)") and "loss=1.2345" in lines[0]
    assert lines[-1].startswith("train: 5/5 step (100%)")
