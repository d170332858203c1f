"""``[lora]``: fine-tune low-rank adapters on a frozen ``train.init_from`` model.

    [train]
    init_from = "runs/base"          # the model to adapt (a plait or Hugging Face folder)
    [lora]
    rank = 8
    alpha = 16.0                     # the update is scaled by alpha / rank
    dropout = 0.05                   # on the adapters' input
    targets = ["qkv", "attn.proj"]   # regexes over module names (plait.nn.lora)

The adapters are added after ``init_from`` is loaded, split as the base's Hugging Face modules
are (one per q, k, v projection of a Llama: :func:`plait.hf.peft.lora_parts`), and only they
train. The run folder then holds only them, in peft's format (``adapter_config.json`` naming
``init_from`` as the base, ``adapter_model.safetensors``), which ``plait.load`` and peft's
``PeftModel.from_pretrained`` both read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from plait.config import Config
from plait.hf.peft import lora_parts
from plait.nn.lora import add_lora, lora_modules
from plait.training.config import TrainConfig


@dataclass(frozen=True)
class LoRAConfig(Config):
    """Low-rank adapters: y = W x + (alpha / rank) B A dropout(x) on every targeted Linear."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # regular expressions, each matching a trailing run of a module's dotted name
    targets: tuple[str, ...] = ("qkv",)

    def __post_init__(self) -> None:
        if self.rank < 1 or not self.alpha > 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.rank must be >= 1, lora.alpha > 0 and lora.dropout in [0, 1);"
                             f" got {self.rank}, {self.alpha}, {self.dropout}")
        if not self.targets:
            raise ValueError("lora.targets must name at least one module pattern (e.g. 'qkv')")


def adapt(model: nn.Module, lora: LoRAConfig | None, t: TrainConfig) -> nn.Module:
    """``model`` with the recipe's adapters (only they train), or unchanged without ``[lora]``."""
    if lora_modules(model):  # init_from an adapter folder: its run folder would hold neither
        raise ValueError(f"train.init_from {t.init_from} is a LoRA adapter; merge it into a model"
                         " folder first (plait.load, plait.nn.merge, plait.save_model)")
    if lora is None:
        return model
    if not t.init_from:
        raise ValueError("[lora] adapts a trained model: set train.init_from to its folder")
    if Path(t.out_dir).resolve() == Path(t.init_from).resolve():
        raise ValueError(f"train.out_dir {t.out_dir} is the base model's folder (init_from); the"
                         " adapter needs the base kept: write it to another folder")
    return add_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets, lora_parts(model))


def require_unchanged(old: Config, new: Config) -> None:
    """Refuse a recipe that changes the ``init_from`` model under ``[lora]``: its new tensors
    (a head for other labels, another vocabulary) would start fresh and stay frozen."""
    changed = ", ".join(f"{k} {getattr(old, k)!r} -> {v!r}" for k, v in new.to_dict().items()
                        if getattr(old, k) != v)
    if changed:
        raise ValueError(f"[lora] adapts train.init_from as it is, but the recipe changes its"
                         f" config: {changed}")
