"""Training checkpoints: the output folder is a loadable model folder plus what resuming needs.

``out_dir/`` after a save::

    config.json, model.safetensors   the model (``plait.load(out_dir)`` works at any time)
    tokenizer.json                   copied from the data folder, when the task has one
    recipe.json                      the full recipe the run was started with
    trainer_state.pt                 optimizer state (whole, keyed by parameter name), step,
                                     early-stopping state and every RNG state (torch CPU/CUDA,
                                     python, numpy), one per rank

A ``[lora]`` run writes ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's format,
naming ``train.init_from`` as the base; :mod:`plait.hf.peft`) and the base's tokenizer files
instead of the model, since only the adapters changed; ``plait.load(out_dir)`` reads it as well.

Each file is written to a temporary name, fsynced and renamed (``plait.io.atomic_write``),
so a crash during a save leaves every file either old or new, never half written. The weights
carry their step in the safetensors metadata and the trainer state records the same step, so a
crash *between* two files is detected on resume instead of silently mixing steps.
``trainer_state.pt`` holds only tensors and plain Python values and is read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from plait.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_weights_into, save_model
from plait.hf.peft import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    is_adapter_folder,
    load_adapter_weights,
    save_adapter,
)
from plait.io import atomic_write, read_safetensors, read_safetensors_metadata

STATE_NAME = "trainer_state.pt"
RECIPE_NAME = "recipe.json"
STEP_KEY = "plait_step"  # safetensors metadata key holding the step the weights belong to
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "vocab.txt")  # copied beside an adapter


def rng_state() -> dict[str, Any]:
    """Every random number generator the loop touches, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))  # weights_only loading turns tuples into lists
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, model: nn.Module, trainer: dict[str, Any],
                    extra_config: dict[str, Any] | None = None, adapter_base: str = "",
                    weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write the model folder, then the trainer state (each file atomically).

    Args:
        model: the unwrapped model (``distributed.unwrap``).
        trainer: step, optimizer state dict, early-stopping state, ``rng`` (a list, one per rank).
        adapter_base: a ``[lora]`` run's base folder: write only the adapters, for that base.
        weights: the whole weights of a sharded (FSDP) model, gathered on this rank.
    """
    meta = {"format": "pt", STEP_KEY: str(trainer["step"])}
    if adapter_base:
        save_adapter(model, out_dir, adapter_base, metadata=meta)
        for name in TOKENIZER_FILES:
            if (Path(adapter_base) / name).is_file():
                copy_file(Path(adapter_base) / name, out_dir / name)
    else:
        save_model(model, out_dir, extra_config, metadata=meta, weights=weights)
    # an earlier run's model of the other kind must not be what plait.load(out_dir) reads
    stale = (CONFIG_NAME, WEIGHTS_NAME) if adapter_base else (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
    for name in stale:
        (out_dir / name).unlink(missing_ok=True)
    atomic_write(out_dir / STATE_NAME, lambda tmp: torch.save(trainer, tmp))


def load_run_weights(out_dir: Path, model: nn.Module) -> None:
    """The weights a run saved in ``out_dir`` into ``model``: all of them, or its adapters."""
    if is_adapter_folder(out_dir):
        load_adapter_weights(model, out_dir)
    else:
        weights = out_dir / WEIGHTS_NAME
        load_weights_into(model, read_safetensors(weights), str(weights))


def load_trainer_state(out_dir: Path) -> dict[str, Any]:
    """The trainer state saved in ``out_dir``, checked against the weights' step."""
    path = out_dir / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: no {STATE_NAME} in {out_dir} (train without"
                                f" --resume to start fresh)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unpickling failure means a bad file)
        raise ValueError(f"cannot read {path}: {e}") from None
    weights = ADAPTER_WEIGHTS if is_adapter_folder(out_dir) else WEIGHTS_NAME
    w_step = read_safetensors_metadata(out_dir / weights).get(STEP_KEY)
    if w_step != str(state["step"]):
        raise ValueError(f"{out_dir}: weights are from step {w_step} but {STATE_NAME} from step"
                         f" {state['step']} (a crash between two files of a save); cannot resume")
    return state


def copy_file(src: Path, dst: Path) -> None:
    """Atomically copy ``src`` to ``dst`` (e.g. the tokenizer into the model folder)."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
