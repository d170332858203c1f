"""Training: one loop (``trainer.py``) for every model; tasks supply data, loss and metrics.

``plait train recipe.toml`` (``plait.cli.train``) and ``plait.training.train(recipe)`` run it;
``load_recipe`` reads a TOML recipe with ``[model]``, ``[data]`` and ``[train]`` sections.
"""

from plait.training.config import TrainConfig
from plait.training.losses import ClipLoss, CrossEntropy
from plait.training.recipe import Recipe, load_recipe, recipe_from_dict
from plait.training.schedule import lr_at
from plait.training.tasks import TASKS, Task, get_task
from plait.training.trainer import Trainer, train

__all__ = ["TASKS", "ClipLoss", "CrossEntropy", "Recipe", "Task", "TrainConfig", "Trainer",
           "get_task", "load_recipe", "lr_at", "recipe_from_dict", "train"]
