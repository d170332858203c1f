"""The plait model folder: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``).

A folder written here is what ``plait.load`` reads back, what ``plait train`` leaves in its
``out_dir``, and what every command's ``--model`` accepts. ``config.json`` names the
architecture under ``plait_model`` (a key of :data:`plait.models.MODELS`) beside that
architecture's config fields. Every failure a user can cause (a missing folder, a corrupt
config, a truncated or mismatched weights file) raises one ``ValueError`` /
``FileNotFoundError`` whose message names the file and, where it applies, the tensor.
Writing is atomic (:mod:`plait.io`). Hugging Face folders are :mod:`plait.hf`'s business;
:func:`plait.loading.load` reads either kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from plait import io
from plait.models import MODELS, model_classes, model_type_of

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_KEY = "plait_model"  # config.json key naming the architecture in plait.models.MODELS


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without aliases (tied weights stored once, under their first name)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` strictly: every key present, none extra, shapes equal."""
    expected = unique_state_dict(model)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise ValueError(f"{source}: weights do not match the model: {'; '.join(parts)}")
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise ValueError(f"{source}: tensor '{k}' has shape {tuple(t.shape)}, the model"
                             f" expects {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=False)  # aliases (tied weights) are filled by their owner


def _few(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(f"'{k}'" for k in keys[:n]) + more


def save_model(model: nn.Module, folder: str | Path,
               extra_config: dict[str, Any] | None = None,
               metadata: dict[str, str] | None = None,
               weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``config.json`` (architecture + config) and ``model.safetensors`` into ``folder``.

    ``metadata`` goes into the safetensors header (the trainer records its step there).
    ``weights``: what to write instead of the model's own tensors (a sharded model's
    gathered whole weights).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {MODEL_KEY: model_type_of(model), **model.config.to_dict(), **(extra_config or {})}
    weights = unique_state_dict(model) if weights is None else weights
    io.write_safetensors(folder / WEIGHTS_NAME, weights, metadata)
    io.atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")


def read_model_config(folder: str | Path) -> dict[str, Any]:
    """A model folder's ``config.json`` (plait's or Hugging Face's), as a dict."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"--model must be a folder, got a file: {folder}")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: not a model folder")
    return io.read_json(folder / CONFIG_NAME)


def is_plait_folder(folder: str | Path) -> bool:
    return MODEL_KEY in read_model_config(folder)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model a plait ``folder`` describes and load its weights, in eval mode."""
    folder = Path(folder)
    raw = read_model_config(folder)
    kind = raw.pop(MODEL_KEY, None)
    if kind not in MODELS:
        raise ValueError(f"{folder / CONFIG_NAME}: unknown '{MODEL_KEY}' {kind!r}"
                         f" (known: {', '.join(MODELS)})")
    config_cls, model_cls = model_classes(kind)
    fields = set(config_cls.__dataclass_fields__)
    try:
        config = config_cls.from_dict({k: v for k, v in raw.items() if k in fields})
    except ValueError as e:  # ConfigError and __post_init__ validation
        raise ValueError(f"{folder / CONFIG_NAME}: {e}") from None
    model = model_cls(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no weights in {folder}: expected {WEIGHTS_NAME}")
    load_weights_into(model, io.read_safetensors(weights), str(weights))
    return model.to(device).eval()
