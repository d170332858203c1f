"""A training recipe: one TOML file with ``[model]``, ``[data]`` and ``[train]`` sections.

    task = "lm"                  # which Task reads [data] (plait.training.tasks.TASKS)
    [model]                      # the architecture's config (GPTConfig for arch = "gpt")
    arch = "gpt"
    n_layer = 4
    [data]                       # the task's data config (LMData for "lm")
    dir = "data/shakespeare_char"
    [train]                      # TrainConfig below
    max_steps = 2000

Command-line overrides (``--train.lr 3e-4 --model.n_layer 4``) are applied to the TOML tree
before the dataclasses are built, so they are coerced from each field's type and unknown keys
fail the same way (``plait.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plait.config import Config, ConfigError, apply_overrides, read_toml


@dataclass(frozen=True)
class TrainConfig(Config):
    """How to train: optimizer, schedule, evaluation, checkpoints, precision, devices."""

    out_dir: str = "runs/run"
    max_steps: int = 1000  # optimizer steps; the LR schedule decays over exactly these
    # > 0: a wall-time budget. The run stops when it is spent, and the lr decay follows
    # whichever runs out first, steps or time, so a slow machine still ends the schedule.
    # The clock makes such a run machine-dependent; 0 keeps it a pure function of the step.
    max_minutes: float = 0.0
    lr: float = 1e-3
    min_lr: float = 1e-4
    decay: Literal["cosine", "linear"] = "cosine"  # shape of the lr decay after warmup
    warmup_steps: int = 100
    weight_decay: float = 0.1  # applied to 2-D weights only (matmuls, embeddings)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step
    label_smoothing: float = 0.0
    eval_interval: int = 250  # steps between evaluations; 0 = only at the end
    eval_batches: int = 20  # batches per periodic eval (per rank); 0 = whole split, as the final
    patience: int = 0  # stop after this many evals without a better val loss; 0 = never
    save_interval: int = 0  # steps between checkpoints; 0 = only at the end
    log_interval: int = 10
    seed: int = 1337
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads; 0 = torch's default
    init_from: str = ""  # a plait or Hugging Face model folder to fine-tune (plait.load)
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "eval_batches", "patience",
                     "save_interval", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must be in [0, lr={self.lr}]")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the task name, the model, data and train configs, and the raw tree."""

    task: str
    arch: str
    model: Config
    data: Config
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "model": {"arch": self.arch, **self.model.to_dict()},
                "data": self.data.to_dict(), "train": self.train.to_dict()}


def recipe_from_dict(tree: dict[str, Any]) -> Recipe:
    """Build a Recipe from a TOML/JSON tree; every unknown key is a ConfigError naming it."""
    from plait.models import REGISTRY
    from plait.training.tasks import get_task

    tree = dict(tree)
    task = tree.pop("task", "lm")
    try:
        task_cls = get_task(task)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sections = {"model", "data", "train"}
    for key in tree:
        if key not in sections:
            raise ConfigError(f"unknown config key '{key}' (allowed: task, data, model, train)")
    model_tree = dict(tree.get("model", {}))
    arch = model_tree.pop("arch", "gpt")
    if arch not in REGISTRY:
        raise ConfigError(f"unknown model.arch {arch!r} (known: {', '.join(REGISTRY)})")
    try:
        model = REGISTRY[arch][0].from_dict(model_tree, where="model")
        data = task_cls.data_config.from_dict(tree.get("data", {}), where="data")
        train = TrainConfig.from_dict(tree.get("train", {}), where="train")
    except ConfigError:
        raise
    except ValueError as e:  # __post_init__ validation
        raise ConfigError(str(e)) from None
    return Recipe(task, arch, model, data, train)


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read a TOML recipe, apply dotted overrides, and build the typed Recipe."""
    return recipe_from_dict(apply_overrides(read_toml(path), overrides or {}))
