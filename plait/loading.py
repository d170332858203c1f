"""``plait.load(folder)``: a ready model from a plait folder, a Hugging Face one, or a LoRA
adapter folder in peft's format (the base model it names, with the adapter applied).

It sits above both formats: :mod:`plait.checkpoint` (``config.json`` with ``plait_model``) and
:mod:`plait.hf` (``config.json`` with ``model_type``; ``adapter_config.json``:
:mod:`plait.hf.peft`), and neither of them imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from plait import hf
from plait.checkpoint import is_plait_folder, load_model
from plait.hf.peft import apply_adapter, base_folder, is_adapter_folder
from plait.nn import quant


def load(folder: str | Path, device: str | torch.device = "cpu", *,
         quantize: str | None = None, group_size: int | None = None) -> nn.Module:
    """A ready model (eval mode, with ``.config``) from a plait, a Hugging Face or an adapter
    folder; ``quantize="int8"`` or ``"int4"`` stores its Linear weights so
    (:func:`plait.nn.quant.quantize`, ``group_size`` for int4)."""
    if quantize is not None:
        quant.check_method(quantize, group_size)  # a bad name fails before the model is read
        return quant.quantize(load(folder, device), quantize, group_size)
    if is_adapter_folder(folder):
        return load_adapter(folder, device)
    if is_plait_folder(folder):
        return load_model(folder, device)
    return hf.load(folder, device=device)


def load_as(folder: str | Path, kind: type, what: str, recipe: str,
            device: str | torch.device = "cpu") -> nn.Module:
    """:func:`load` for a command that needs one architecture: a missing folder or a model of
    another class is one line naming it, ``what`` it should have been and the ``recipe`` that
    trains one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    model = load(folder, device=device)
    if not isinstance(model, kind):
        raise ValueError(f"{folder} holds a {type(model).__name__}, not {what} (plait train"
                         f" {recipe})")
    return model


def load_adapter(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The base model an adapter folder names (a plait or Hugging Face folder), with the
    adapter's LoRA layers added, unmerged (``plait.nn.lora.merge`` folds them in)."""
    base = base_folder(folder)
    if is_adapter_folder(base):
        raise ValueError(f"{Path(folder) / 'adapter_config.json'}: its base {base} is itself an"
                         " adapter; merge that one into a model folder first")
    model = load(base, device)
    return apply_adapter(model, folder).to(device).eval()
