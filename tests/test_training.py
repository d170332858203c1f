"""The trainer: LR schedule and label smoothing against their formulas, bit-for-bit resume,
crash-safe checkpoints, early stopping, fine-tuning from a folder."""

import json
import math
import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import plait
import plait.io
from plait.data.tokens import prepare_text
from plait.training import CrossEntropy, Trainer, lr_at, recipe_from_dict, train
from plait.training.optim import make_optimizer, param_groups
from plait.training.state import load_trainer_state


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small char corpus prepared by ``plait prepare-text``'s function."""
    rng = random.Random(0)
    words = ["the", "king", "queen", "sword", "crown", "night", "love", "death", "speak", "now"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) + "." for _ in range(600))
    folder = tmp_path_factory.mktemp("tokens")
    src = folder / "corpus.txt"
    src.write_text(text)
    prepare_text(src, folder / "char", log=lambda _: None)
    return folder / "char"


def recipe(data_dir, out_dir, **train):
    tree = {
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.1},
        "data": {"dir": str(data_dir), "batch_size": 4},
        "train": {"out_dir": str(out_dir), "max_steps": 12, "warmup_steps": 3, "lr": 3e-3,
                  "log_interval": 1, "eval_interval": 4, "eval_batches": 2, "save_interval": 4,
                  "threads": 1, "progress": False, "device": "cpu", **train},
    }
    return recipe_from_dict(tree)


def losses(out_dir, event="train", key="loss"):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [(e["step"], e[key]) for e in map(json.loads, lines) if e["event"] == event]


def test_lr_schedule_is_warmup_then_cosine():
    kw = dict(lr_max=1.0, lr_min=0.1, warmup_steps=10, decay_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(4, **kw) == pytest.approx(0.5)
    assert lr_at(10, **kw) == pytest.approx(1.0)  # top of the cosine
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway: (max + min) / 2
    assert lr_at(35, **kw) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)
    steps = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))  # monotone decay


def test_lr_schedule_linear_decay():
    kw = dict(lr_max=1.0, lr_min=0.0, warmup_steps=10, decay_steps=110, decay="linear")
    assert lr_at(9, **kw) == pytest.approx(1.0)  # warmup is the same as cosine's
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(35, **kw) == pytest.approx(0.75)
    assert lr_at(60, **kw) == pytest.approx(0.5)
    assert lr_at(109, **kw) == pytest.approx(0.01)
    assert lr_at(110, **kw) == 0.0
    with pytest.raises(ValueError, match="linear"):
        lr_at(20, 1.0, 0.0, 10, 110, decay="step")


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_its_formula(eps):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)  # (B, T, V)
    targets = torch.randint(0, 11, (3, 5))
    targets[0, :2] = -100  # ignored positions
    got = CrossEntropy(label_smoothing=eps)(logits, targets)
    logp = logits.log_softmax(-1).reshape(-1, 11)
    y = targets.reshape(-1)
    keep = y != -100
    nll = -logp[keep].gather(1, y[keep, None]).squeeze(1)
    uniform = -logp[keep].mean(-1)
    want = ((1 - eps) * nll + eps * uniform).mean()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    ref = F.cross_entropy(logits.reshape(-1, 11), y, label_smoothing=eps)
    torch.testing.assert_close(got, ref)


def test_weight_decay_only_on_matrices(data_dir, tmp_path):
    r = recipe(data_dir, tmp_path)
    model = plait.GPT(r.model.replace(vocab_size=20))
    groups = param_groups(model, r.train)
    decay, no_decay = make_optimizer(groups, r.train, torch.device("cpu")).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])  # biases, norm gains
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_run_leaves_a_loadable_model_folder(data_dir, tmp_path, capsys):
    out = train(recipe(data_dir, tmp_path / "run"))
    assert "val loss" in capsys.readouterr().out
    folder = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.json",
                 "trainer_state.pt", "metrics.jsonl", "loss.png"):
        assert (folder / name).is_file(), name
    model = plait.load(folder)
    assert model.config.vocab_size == json.loads((data_dir / "meta.json").read_text())["vocab_size"]
    assert [s for s, _ in losses(folder)] == list(range(1, 13))
    (final,) = losses(folder, "final", "val_loss")
    assert final == (12, out["val_loss"])
    assert json.loads((folder / "recipe.json").read_text())["train"]["max_steps"] == 12


class Crash(Exception):
    pass


def test_resume_is_bit_for_bit(data_dir, tmp_path):
    """A run killed at step 10 (last checkpoint: step 8) and resumed equals an unbroken run."""
    train(recipe(data_dir, tmp_path / "whole"))

    def crash_at_10(event):
        if event["event"] == "train" and event["step"] == 10:
            raise Crash

    with pytest.raises(Crash):
        train(recipe(data_dir, tmp_path / "broken"), callbacks=[crash_at_10])
    assert load_trainer_state(tmp_path / "broken")["step"] == 8
    train(recipe(data_dir, tmp_path / "broken"), resume=True)
    for event, key in (("train", "loss"), ("eval", "val_loss"), ("final", "val_loss")):
        assert losses(tmp_path / "broken", event, key) == losses(tmp_path / "whole", event, key)
    a, b = plait.load(tmp_path / "whole"), plait.load(tmp_path / "broken")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_crash_during_save_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    r = recipe(data_dir, tmp_path, max_steps=4, eval_interval=0, save_interval=0)
    trainer = Trainer(r)
    trainer.fit()
    saved = {k: v.clone() for k, v in plait.load(tmp_path).state_dict().items()}
    trainer.train_step(4)  # the weights move on ...

    def dies_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # ... and the process dies half-way through writing them
        raise Crash

    monkeypatch.setattr(plait.io, "save_file", dies_midway)
    with pytest.raises(Crash):
        trainer.save()
    monkeypatch.undo()
    loaded = plait.load(tmp_path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert load_trainer_state(tmp_path)["step"] == 4  # still a consistent, resumable checkpoint
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_time_budget_moves_the_schedule_on_when_the_clock_runs_ahead(data_dir, tmp_path):
    trainer = Trainer(recipe(data_dir, tmp_path, max_steps=100, warmup_steps=10, max_minutes=1.0))
    assert trainer.schedule_step(5, 59.0) == 5  # warmup is counted in steps only
    assert trainer.schedule_step(50, 15.0) == 50  # ahead of the clock: the steps decide
    assert trainer.schedule_step(20, 45.0) == pytest.approx(75.0)  # behind: 3/4 of the budget
    no_budget = Trainer(recipe(data_dir, tmp_path / "b", max_steps=100, warmup_steps=10))
    assert no_budget.schedule_step(20, 1e9) == 20


def test_time_budget_stops_with_the_decay_finished(data_dir, tmp_path, monkeypatch):
    """A clock that says 7 s per step against a 0.5-minute budget: the run stops after step 5
    (35 s > 30 s), and the lr it used on its last step is already near the floor."""
    monkeypatch.setattr(Trainer, "_clock", lambda self, start: 7.0 * self.state["step"])
    r = recipe(data_dir, tmp_path, max_steps=12, warmup_steps=1, max_minutes=0.5, min_lr=0.0,
               decay="linear", eval_interval=0, save_interval=0)
    result = train(r)
    assert result["step"] < 12
    lrs = losses(tmp_path, "train", "lr")
    assert lrs[-1][1] < 0.2 * r.train.lr  # decayed by the clock, not by the 12 steps
    assert all(a[1] >= b[1] for a, b in zip(lrs[1:], lrs[2:], strict=False))


def test_early_stopping_with_patience(data_dir, tmp_path):
    # lr 0: the val loss never improves after the first eval, so patience 2 stops at step 6
    r = recipe(data_dir, tmp_path, lr=0.0, min_lr=0.0, eval_interval=2, patience=2,
               max_steps=50)
    out = train(r)
    assert out["step"] == 6
    (final,) = (json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
                if '"final"' in x)
    assert final["stopped"].startswith("early stop")


def test_init_from_fine_tunes_a_saved_model(data_dir, tmp_path):
    train(recipe(data_dir, tmp_path / "base", max_steps=4))
    r = recipe(data_dir, tmp_path / "ft", max_steps=2, lr=0.0, min_lr=0.0,
               init_from=str(tmp_path / "base"))
    train(r)
    base, ft = plait.load(tmp_path / "base"), plait.load(tmp_path / "ft")
    for (name, p), q in zip(base.state_dict().items(), ft.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # lr 0: the fine-tuned copy starts from the base weights


def test_init_from_takes_the_recipes_own_model_keys_over_the_folders(data_dir, tmp_path):
    """A key the fine-tuning recipe sets (dropout here) wins over the folder's config; keys it
    leaves out are the folder's; a key that would change a weight's shape is refused by name."""
    train(recipe(data_dir, tmp_path / "base", max_steps=2))
    tree = recipe(data_dir, tmp_path / "ft", max_steps=1, init_from=str(tmp_path / "base"))
    assert tree.model_keys == ("n_layer", "n_head", "n_embd", "block_size", "dropout")
    r = recipe_from_dict({**tree.to_dict(), "model": {"dropout": 0.3}})
    r = replace(r, train=tree.train)
    train(r)
    ft = plait.load(tmp_path / "ft")
    assert ft.config.dropout == 0.3 and ft.config.n_embd == 32
    wider = replace(r, model=tree.model.replace(n_embd=64), model_keys=("n_embd",))
    with pytest.raises(ValueError, match="init_from .*tensor"):
        train(replace(wider, train=r.train.replace(out_dir=str(tmp_path / "wide"))))


def test_demo_samples_past_the_context_with_a_sliding_window(data_dir, tmp_path):
    from plait.demo import sample_text

    train(recipe(data_dir, tmp_path, max_steps=2, eval_interval=0, save_interval=0))
    text = sample_text(tmp_path, n_chars=40)  # block_size is 16: needs several windows
    assert len(text) == 40  # one character per token
