"""``plait train``: recipe errors are one line on stderr and exit code 2; overrides are typed."""

import json
import subprocess
import sys

import pytest

from plait.cli.main import main

RECIPE = """
[model]
n_layer = 1
n_head = 2
n_embd = 16
block_size = 8
[data]
dir = "{data}"
batch_size = 2
[train]
out_dir = "{out}"
max_steps = 2
warmup_steps = 1
eval_interval = 0
threads = 1
progress = false
device = "cpu"
"""


@pytest.fixture
def recipe(tmp_path):
    from plait.data.tokens import prepare_text

    (tmp_path / "t.txt").write_text("hello world, hello plait.\n" * 50)
    prepare_text(tmp_path / "t.txt", tmp_path / "data", log=lambda _: None)
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(data=tmp_path / "data", out=tmp_path / "out"))
    return path


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_overrides_are_coerced_from_the_field_type(recipe, capsys):
    out = recipe.parent / "out"
    assert main(["train", str(recipe), "--train.max_steps", "3", "--model.n_layer=2",
                 "--train.betas", "0.8,0.9"]) == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["train"]["max_steps"] == 3 and saved["model"]["n_layer"] == 2
    assert saved["train"]["betas"] == [0.8, 0.9]
    assert "val loss" in capsys.readouterr().out


def test_unknown_key_in_recipe(recipe, capsys):
    recipe.write_text(recipe.read_text() + "lr_typo = 3\n")
    one_line_error(capsys, ["train", str(recipe)], "train.lr_typo")


def test_unknown_override_key(recipe, capsys):
    one_line_error(capsys, ["train", str(recipe), "--model.n_layers", "4"], "model.n_layers")


def test_override_with_a_bad_value(recipe, capsys):
    one_line_error(capsys, ["train", str(recipe), "--train.lr", "fast"], "train.lr", "number")


def test_invalid_value_is_named(recipe, capsys):
    one_line_error(capsys, ["train", str(recipe), "--train.grad_accum", "0"], "grad_accum")


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1\n")
    one_line_error(capsys, ["train", str(bad)], "malformed TOML")


def test_missing_data_folder(recipe, capsys):
    one_line_error(capsys, ["train", str(recipe), "--data.dir", "/nonexistent/x"],
                   "prepare-text")


def test_resume_without_checkpoint(recipe, capsys):
    one_line_error(capsys, ["train", str(recipe), "--resume"], "cannot resume")


def test_missing_config_via_the_real_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "plait.cli.main", "train",
                           str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"plait train: error: config file not found: {tmp_path / 'nope.toml'}"]
