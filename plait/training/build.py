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
    """A fresh model from ``[model]``, or one started from the ``init_from`` folder; either
    way then fitted to the data by ``task.fit_model``.

    ``init_from``: the folder's architecture and config (``plait.load``, plait or Hugging
    Face) with the keys the recipe's ``[model]`` sets over it, adapted by the task (a
    classification head where a masked-LM head was, the labels' count); every tensor the two
    models share by name and shape is copied, and the rest start fresh (``start_from``)."""
    model = _build(recipe, task, device)
    with torch.no_grad():
        task.fit_model(model)
    return model


def _build(recipe: Recipe, task: Task, device: torch.device) -> nn.Module:
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


GROWABLE = ("wte.weight",)  # token embeddings: a tokenizer with added tokens makes them longer


def start_from(model: nn.Module, source: nn.Module, where: str) -> None:
    """Copy into ``model`` every tensor ``source`` has under the same name; say which are new
    (the fresh head) and which are left behind (the old head). A tensor both have with
    different shapes is an error naming it (the two models do not fit), except a task head
    (``head.*``) of another shape, which starts fresh, and a token embedding table that grew
    because the task's tokenizer added tokens (entity markers): its old rows are copied and
    the new ones start fresh."""
    ours, theirs = unique_state_dict(model), unique_state_dict(source)
    # a task head of another shape (a tagger's per-word labels, now a pair classifier's) is
    # that task's alone: it starts fresh rather than failing the fit
    theirs = {k: v for k, v in theirs.items()
              if not (k.startswith("head.") and k in ours and ours[k].shape != v.shape)}
    shared = [k for k in ours if k in theirs]
    grown = []  # token tables of a tokenizer with added tokens: the old rows copied
    for k in shared:
        if ours[k].shape == theirs[k].shape:
            continue
        if k.endswith(GROWABLE) and ours[k].shape[1:] == theirs[k].shape[1:] \
                and ours[k].shape[0] > theirs[k].shape[0]:
            grown.append(k)
            continue
        raise ValueError(f"train.init_from {where}: tensor '{k}' is {tuple(theirs[k].shape)}"
                         f" there but {tuple(ours[k].shape)} in the model to train")
    if not shared:
        raise ValueError(f"train.init_from {where}: no tensor in common with the model to train")
    state = {k: theirs[k] for k in shared if k not in grown}
    for k in grown:  # the added rows keep their fresh initialisation
        state[k] = torch.cat((theirs[k].to(ours[k]), ours[k][theirs[k].shape[0]:]))
    model.load_state_dict(state, strict=False)
    if grown and distributed_rank() == 0:
        print(f"init_from {where}: grown (new tokens, old rows kept): " + ", ".join(
            f"{k} {theirs[k].shape[0]} -> {ours[k].shape[0]}" for k in grown), flush=True)
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
