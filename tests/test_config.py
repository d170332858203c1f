"""Typed configs: strict keys, coercion from strings, TOML and dotted overrides."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from plait.config import (
    Config,
    ConfigError,
    apply_overrides,
    parse_overrides,
    read_json,
    read_toml,
)
from plait.models import GPTConfig


@dataclass(frozen=True)
class Inner(Config):
    width: int = 4


@dataclass(frozen=True)
class Outer(Config):
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    maybe: int | None = None
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.n_layers'.*n_layer"):
        GPTConfig.from_dict({"n_layers": 2}, where="model")
    with pytest.raises(ConfigError, match=r"'inner\.depth'"):
        Outer.from_dict({"inner": {"depth": 3}})


def test_strings_from_the_command_line_are_coerced_by_field_type():
    c = Outer.from_dict({"lr": "3e-4", "steps": "20", "flag": "true", "mode": "b",
                         "maybe": "none", "sizes": "3,4", "inner": {"width": "8"}})
    assert c == Outer(lr=3e-4, steps=20, flag=True, mode="b", maybe=None, sizes=(3, 4),
                      inner=Inner(8))
    assert Outer.from_dict({"maybe": "7"}).maybe == 7


@pytest.mark.parametrize("bad,match", [
    ({"steps": "ten"}, "'steps' must be an integer"),
    ({"steps": 2.5}, "'steps' must be an integer"),
    ({"lr": "fast"}, "'lr' must be a number"),
    ({"flag": "maybe"}, "'flag' must be true or false"),
    ({"mode": "c"}, "'mode' must be one of 'a', 'b'"),
    ({"name": 3}, "'name' must be a string"),
])
def test_bad_values_name_the_key_and_the_allowed_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        Outer.from_dict(bad)


def test_round_trip_through_json(tmp_path):
    c = Outer(lr=0.5, inner=Inner(2), sizes=(5,))
    c.save_json(tmp_path / "c.json")
    assert Outer.from_json(tmp_path / "c.json") == c


def test_overrides_parse_and_apply():
    ov = parse_overrides(["--train.lr", "3e-4", "--model.n_layer=4"])
    assert ov == {"train.lr": "3e-4", "model.n_layer": "4"}
    tree = apply_overrides({"model": {"n_layer": 2, "n_head": 2}}, ov)
    assert tree == {"model": {"n_layer": "4", "n_head": 2}, "train": {"lr": "3e-4"}}


@pytest.mark.parametrize("args,match", [
    (["--train.lr"], "needs a value"),
    (["lr", "3"], "expected an override"),
    (["--lr", "3"], "must name a section"),
])
def test_bad_overrides_are_one_line_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        parse_overrides(args)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="malformed TOML"):
        read_toml(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ConfigError, match="corrupt JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        read_json(tmp_path / "list.json")


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses_and_ends_with_its_own_run(path):
    from plait.training import load_recipe

    runs = load_recipe(path).runs()
    assert runs[-1].name == "" and all(r.name for r in runs[:-1])
    for k, run in enumerate(runs[1:], 1):  # each starts from a run before it
        assert run.train.init_from in {r.train.out_dir for r in runs[:k]}, run.name
