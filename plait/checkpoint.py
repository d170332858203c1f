"""Model folders: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``), saved atomically.

A folder written here is what ``plait.load`` reads back, what ``plait train`` leaves in its
``out_dir``, and what every command's ``--model`` accepts. Every failure a user can cause (a
missing folder, a corrupt config, a truncated or mismatched weights file) raises one
``ValueError`` / ``FileNotFoundError`` whose message names the file and, where it applies, the
tensor.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from plait.config import ConfigError, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_KEY = "plait_model"  # config.json key naming the architecture in plait.models.REGISTRY


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """``write(tmp)``, fsync, rename onto ``path``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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


def save_weights(model: nn.Module, path: str | Path,
                 metadata: dict[str, str] | None = None) -> None:
    state = {k: v.cpu() for k, v in unique_state_dict(model).items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata or {"format": "pt"}))


def _open_safetensors(path: str | Path, read: Callable[[Any], Any]) -> Any:
    """``read(handle)`` on an open safetensors file; a missing, truncated or foreign file is a
    FileNotFoundError / ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return read(f)
    except (SafetensorError, OSError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot read {path} (truncated or not a safetensors file): {reason}") from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file."""
    return _open_safetensors(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (e.g. the training step it was saved at)."""
    return _open_safetensors(path, lambda f: f.metadata() or {})


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
               metadata: dict[str, str] | None = None) -> None:
    """Write ``config.json`` (architecture + config) and ``model.safetensors`` into ``folder``.

    ``metadata`` goes into the safetensors header (the trainer records its step there).
    """
    from plait.models import model_type_of

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {MODEL_KEY: model_type_of(model), **model.config.to_dict(), **(extra_config or {})}
    save_weights(model, folder / WEIGHTS_NAME, metadata)
    atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")


def read_model_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"--model must be a folder, got a file: {folder}")
    try:
        return read_json(folder / CONFIG_NAME)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def is_plait_folder(folder: str | Path) -> bool:
    return MODEL_KEY in read_model_config(folder)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model a plait ``folder`` describes and load its weights, in eval mode."""
    from plait.models import REGISTRY

    folder = Path(folder)
    raw = read_model_config(folder)
    kind = raw.pop(MODEL_KEY, None)
    if kind not in REGISTRY:
        raise ValueError(f"{folder / CONFIG_NAME}: unknown '{MODEL_KEY}' {kind!r}"
                         f" (known: {', '.join(REGISTRY)})")
    config_cls, model_cls = REGISTRY[kind]
    fields = set(config_cls.__dataclass_fields__)
    try:
        config = config_cls.from_dict({k: v for k, v in raw.items() if k in fields})
    except ValueError as e:  # ConfigError and __post_init__ validation
        raise ValueError(f"{folder / CONFIG_NAME}: {e}") from None
    model = model_cls(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no weights in {folder}: expected {WEIGHTS_NAME}")
    load_weights_into(model, read_safetensors(weights), str(weights))
    return model.to(device).eval()


def load(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A ready model (eval mode) from a plait folder or a Hugging Face folder."""
    if is_plait_folder(folder):
        return load_model(folder, device)
    from plait import hf  # Hugging Face interop, only when needed

    return hf.load(folder, device=device)
