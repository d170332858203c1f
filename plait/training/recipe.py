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

A recipe may first run **stages** (pretraining, then fine-tuning; aligning a projector, then
the whole model), each a ``[[stages]]`` table with a ``name`` and its own ``task``, ``[data]``
and ``[train]`` keys over the recipe's; ``[model]`` is shared unless a stage has its own
``[stages.model]`` (a CLIP trained first, whose image tower a vision-language model then
reads)::

    [[stages]]
    name = "pretrain"            # trains into <train.out_dir>/pretrain
    task = "mlm"
    [stages.data]
    ...
    [stages.train]
    max_steps = 3000

Stages run in order, each starting from the one before (``init_from``), and the recipe's own
task last, starting from the last stage, in ``train.out_dir``. A stage (or the recipe, at the
top level) with ``start = "NAME"`` starts from that earlier stage instead: several fine-tuning
runs from one pretrained encoder. A stage of the recipe's own task takes the recipe's ``[data]``
with its own keys over them.

A ``[data]`` list ``teachers`` (the speaker task: knowledge distillation) may name earlier stages;
each name becomes that stage's folder.

An optional ``[lora]`` section (``plait.training.lora.LoRAConfig``) trains low-rank adapters
on the frozen ``init_from`` model instead of the model itself (the recipe's own run, not its
stages).

Command-line overrides (``--train.lr 3e-4 --model.n_layer 4``) are applied to the TOML tree
before the dataclasses are built, so they are coerced from each field's type and unknown keys
fail the same way (``plait.config``). Every malformed value (a table where a name belongs, a
name where a table belongs) is one ``ConfigError`` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plait.config import Config, ConfigError, apply_overrides, read_toml
from plait.models import MODELS, model_classes
from plait.registry import Registry
from plait.training.config import TrainConfig
from plait.training.lora import LoRAConfig
from plait.training.tasks import TASKS


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the task name, the architecture, and the model, data, train configs;
    ``stages`` (each a Recipe) run before it."""

    task: str
    arch: str
    model: Config
    data: Config
    train: TrainConfig
    stages: tuple[Recipe, ...] = ()
    name: str = ""  # a stage's name ("" for the recipe itself)
    # the [model] keys the recipe itself sets: over an init_from folder's config they win
    # (dropout, pooling); the rest of that config is the folder's
    model_keys: tuple[str, ...] = ()
    lora: LoRAConfig | None = None  # [lora]: adapters on the frozen init_from model
    start: str = ""  # the earlier stage this run starts from ("" = the one before)

    def to_dict(self) -> dict[str, Any]:
        out = {"task": self.task, "model": {"arch": self.arch, **self.model.to_dict()},
               "data": self.data.to_dict(), "train": self.train.to_dict()}
        if self.lora is not None:
            out["lora"] = self.lora.to_dict()
        if self.stages:
            out["stages"] = [{"name": s.name, "task": s.task, "data": s.data.to_dict(),
                              "train": s.train.to_dict(), **({"start": s.start} if s.start
                                                             else {})} for s in self.stages]
        if self.start:
            out["start"] = self.start
        return out

    def runs(self) -> list[Recipe]:
        """Every training run in order: the stages, then this recipe itself, each starting
        from the one before."""
        out: list[Recipe] = []
        folders = {s.name: s.train.out_dir for s in self.stages}
        for stage in [*self.stages, replace(self, stages=())]:
            if stage.start:
                begin = folders[stage.start]
            else:
                begin = out[-1].train.out_dir if out else self.train.init_from
            out.append(replace(stage, start="", train=stage.train.replace(init_from=begin),
                               data=_named_teachers(stage.data, folders)))
        return out


SECTIONS = ("model", "data", "train")


def _named_teachers(data: Config, folders: dict[str, str]) -> Config:
    """``data`` with each of its ``teachers`` that names a stage replaced by that folder."""
    teachers = getattr(data, "teachers", ())
    if not teachers:
        return data
    return data.replace(teachers=tuple(folders.get(t, t) for t in teachers))


def _check_order(stages: tuple[Recipe, ...], start: str, teachers: tuple[str, ...],
                 where: str) -> None:
    """A run may start from, and learn from, only stages that come before it."""
    names = [s.name for s in stages]
    if start and start not in names:
        raise ConfigError(f"'{where}start' names {start!r}, not an earlier stage (the stages"
                          f" before it: {', '.join(names) or 'none'})")
    for name in teachers:
        if name.isidentifier() and name not in names and not Path(name).exists():
            raise ConfigError(f"'{where}data.teachers' names {name!r}: not an earlier stage"
                              f" (the stages before it: {', '.join(names) or 'none'}) nor a"
                              " folder")


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
        if key not in ("task", "stages", "lora", "start", *SECTIONS):
            raise ConfigError(f"unknown config key '{key}' (allowed: task, data, model, train,"
                              " lora, stages, start)")
    start = tree.get("start", "")
    if not isinstance(start, str):
        raise ConfigError(f"'start' must be the name of an earlier stage, got {start!r}")
    for key in (*SECTIONS, "lora"):
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
        lora = LoRAConfig.from_dict(tree["lora"], where="lora") if "lora" in tree else None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise ConfigError(str(e)) from None
    if lora is not None and train.strategy == "fsdp":
        raise ConfigError("train.strategy 'fsdp' is not supported with [lora] (only the small"
                          " adapters train: nothing worth sharding); use 'ddp'")
    stages: tuple[Recipe, ...] = ()
    for i, table in enumerate(_stage_tables(tree)):
        stage = _stage(tree, i, table)
        _check_order(stages, stage.start, getattr(stage.data, "teachers", ()), f"stages[{i}].")
        stages = (*stages, stage)
    if stages or start:
        _check_order(stages, start, getattr(data, "teachers", ()), "")
    return Recipe(task, arch, model, data, train, stages, model_keys=tuple(model_tree),
                  lora=lora, start=start)


def _stage_tables(tree: dict[str, Any]) -> list[dict[str, Any]]:
    stages = tree.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ConfigError("'stages' must be a list of tables ([[stages]]), got"
                          f" {stages!r}")
    return stages


def _stage(tree: dict[str, Any], i: int, stage: dict[str, Any]) -> Recipe:
    """Stage ``i``: its own task, data and train keys over the recipe's; the recipe's model."""
    where = f"stages[{i}]"
    for key in stage:
        if key not in ("name", "task", "model", "data", "train", "start"):
            raise ConfigError(f"unknown config key '{where}.{key}' (allowed: name, task, model,"
                              " data, train, start)")
    name = stage.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"'{where}.name' must be a simple name (it names the stage's folder),"
                          f" got {name!r}")
    task = stage.get("task", tree.get("task", "lm"))
    same = task == tree.get("task", "lm")  # the recipe's [data] keys apply to its own task
    sub = {"task": task, "model": stage.get("model", tree.get("model", {})),
           "data": {**(tree.get("data", {}) if same else {}), **stage.get("data", {})},
           "train": {**tree.get("train", {}), **stage.get("train", {})}}
    start = stage.get("start", "")
    if not isinstance(start, str):
        raise ConfigError(f"'{where}.start' must be the name of an earlier stage, got {start!r}")
    try:
        recipe = recipe_from_dict(sub)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    out_dir = str(Path(recipe.train.out_dir) / name)
    return replace(recipe, name=name, start=start, train=recipe.train.replace(out_dir=out_dir))


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read a TOML recipe, apply dotted overrides, and build the typed Recipe."""
    return recipe_from_dict(apply_overrides(read_toml(path), overrides or {}))
