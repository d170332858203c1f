"""A training recipe: one TOML file with ``[model]``, ``[data]`` and ``[train]`` sections.

    task = "lm"                  # which Task reads [data] (plait.training.tasks.TASKS)
    [model]                      # the architecture's config (GPTConfig for arch = "gpt",
                                 # plait.models.MODELS)
    arch = "gpt"
    n_layer = 4
    [data]                       # the task's data config (LMData for "lm")
    dir = "data/shakespeare_char"
    [train]                      # plait.training.config.TrainConfig
    max_steps = 2000

Command-line overrides (``--train.lr 3e-4 --model.n_layer 4``) are applied to the TOML tree
before the dataclasses are built, so they are coerced from each field's type and unknown keys
fail the same way (``plait.config``). Every malformed value (a table where a name belongs, a
name where a table belongs) is one ``ConfigError`` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.config import Config, ConfigError, apply_overrides, read_toml
from plait.models import MODELS, model_classes
from plait.registry import Registry
from plait.training.config import TrainConfig
from plait.training.tasks import TASKS


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the task name, the architecture, and the model, data, train configs."""

    task: str
    arch: str
    model: Config
    data: Config
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "model": {"arch": self.arch, **self.model.to_dict()},
                "data": self.data.to_dict(), "train": self.train.to_dict()}


SECTIONS = ("model", "data", "train")


def _name(tree: dict[str, Any], key: str, default: str, registry: Registry) -> str:
    """A registry name read from ``tree[key]``, checked for type and membership."""
    value = tree.get(key, default)
    if not isinstance(value, str):
        kind = "table" if isinstance(value, dict) else type(value).__name__
        raise ConfigError(f"'{key}' must be a name, one of {', '.join(registry)}; got a {kind}"
                          f" ({value!r})")
    if value not in registry:
        raise ConfigError(f"unknown {key} {value!r} (known: {', '.join(registry)})")
    return value


def recipe_from_dict(tree: dict[str, Any]) -> Recipe:
    """Build a Recipe from a TOML/JSON tree; every unknown key or malformed value is a
    ConfigError naming it."""
    if not isinstance(tree, dict):
        raise ConfigError(f"a recipe is a table with task, model, data and train; got {tree!r}")
    for key in tree:
        if key not in ("task", *SECTIONS):
            raise ConfigError(f"unknown config key '{key}' (allowed: task, data, model, train)")
    for key in SECTIONS:
        if not isinstance(tree.get(key, {}), dict):
            raise ConfigError(f"'{key}' must be a table ([{key}]), got {tree[key]!r}")
    task = _name(tree, "task", "lm", TASKS)
    model_tree = dict(tree.get("model", {}))
    arch = _name(model_tree, "arch", "gpt", MODELS)
    model_tree.pop("arch", None)
    try:
        model = model_classes(arch)[0].from_dict(model_tree, where="model")
        data = TASKS.get(task).data_config.from_dict(tree.get("data", {}), where="data")
        train = TrainConfig.from_dict(tree.get("train", {}), where="train")
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise ConfigError(str(e)) from None
    return Recipe(task, arch, model, data, train)


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read a TOML recipe, apply dotted overrides, and build the typed Recipe."""
    return recipe_from_dict(apply_overrides(read_toml(path), overrides or {}))
