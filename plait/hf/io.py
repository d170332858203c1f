"""Reading and writing Hugging Face model folders: ``config.json`` + weights.

Weights are read from ``model.safetensors``, a sharded ``model.safetensors.index.json``, or a
legacy ``pytorch_model.bin`` (opened with ``torch.load(weights_only=True)``, so no pickled code
runs). Every failure names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from plait.checkpoint import read_model_config
from plait.io import atomic_write_text, read_safetensors, write_safetensors

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"

def read_config(folder: str | Path) -> dict[str, Any]:
    return read_model_config(folder)


def weights_file(folder: str | Path) -> Path:
    """The file holding a folder's weights (the first of the known names that exists)."""
    folder = Path(folder)
    for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weights in {folder}: expected {SAFETENSORS},"
                            f" {SAFETENSORS_INDEX} or {TORCH_BIN}")


def read_weights(folder: str | Path) -> tuple[dict[str, Tensor], Path]:
    """All tensors of a Hugging Face folder, and the file they came from."""
    path = weights_file(folder)
    if path.name == SAFETENSORS:
        return read_safetensors(path), path
    if path.name == SAFETENSORS_INDEX:
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ValueError(f"corrupt shard index {path}: {e}") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(path.parent / shard))
        return state, path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (pickle errors come in many types)
        raise ValueError(f"cannot read {path} (truncated or not a PyTorch state dict):"
                         f" {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state, path


def write_folder(folder: str | Path, config: dict[str, Any], state: dict[str, Tensor]) -> None:
    """Write ``config.json`` and ``model.safetensors`` (atomically) as transformers expects."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / SAFETENSORS, state)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")

