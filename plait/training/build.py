"""The model a run trains: a fresh one from ``[model]`` or one started from ``init_from``."""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from plait.checkpoint import unique_state_dict
from plait.loading import load
from plait.models import model_classes
from plait.training.lora import require_unchanged
from plait.training.recipe import Recipe
from plait.training.tasks import Task


def build_model(recipe: Recipe, task: Task, device: torch.device) -> nn.Module:
    """A fresh model from ``[model]``, or one started from the ``init_from`` folder.

    ``init_from``: the folder's architecture and config (``plait.load``, plait or Hugging
    Face) with the keys the recipe's ``[model]`` sets over it, adapted by the task (a
    classification head where a masked-LM head was, the labels' count); every tensor the two
    models share by name and shape is copied, and the rest start fresh (``start_from``)."""
    if not recipe.train.init_from:
        config = task.model_config(recipe.model)
        model = model_classes(recipe.arch)[1](config)
        task.init_model(model)
        return model.to(device)
    source = load(recipe.train.init_from, device=device)
    if type(source) is not model_classes(recipe.arch)[1]:
        adopted = task.build_from(source, recipe.model, recipe.train.init_from)
        if adopted is not None:  # e.g. a VLM around a CLIP folder's image tower
            return adopted.to(device).train()
    config = source.config
    if type(recipe.model) is type(config) and recipe.model_keys:
        config = config.replace(**{k: getattr(recipe.model, k) for k in recipe.model_keys})
    config = task.model_config(config)
    if config == source.config:
        return source.train()
    if recipe.lora is not None:  # a changed model has new tensors, which would stay frozen
        require_unchanged(source.config, config)
    model = type(source)(config)
    start_from(model, source, recipe.train.init_from)
    return model.to(device).train()


def start_from(model: nn.Module, source: nn.Module, where: str) -> None:
    """Copy into ``model`` every tensor ``source`` has under the same name; say which are new
    (the fresh head) and which are left behind (the old head). A tensor both have with
    different shapes is an error naming it: the two models do not fit."""
    ours, theirs = unique_state_dict(model), unique_state_dict(source)
    shared = [k for k in ours if k in theirs]
    for k in shared:
        if ours[k].shape != theirs[k].shape:
            raise ValueError(f"train.init_from {where}: tensor '{k}' is {tuple(theirs[k].shape)}"
                             f" there but {tuple(ours[k].shape)} in the model to train")
    if not shared:
        raise ValueError(f"train.init_from {where}: no tensor in common with the model to train")
    model.load_state_dict({k: theirs[k] for k in shared}, strict=False)
    new = [k for k in ours if k not in theirs]
    left = [k for k in theirs if k not in ours]
    if distributed_rank() == 0:
        print(f"init_from {where}: {len(shared)} tensors loaded; new: {_names(new)}; left"
              f" behind: {_names(left)}", flush=True)


def _names(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def distributed_rank() -> int:
    """This process's rank under torchrun (0 alone): only rank 0 reports."""
    return int(os.environ.get("RANK", "0"))
