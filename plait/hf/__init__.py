"""Hugging Face interop: load a ``transformers`` folder as a plait model, and export one back.

``load(folder)`` reads ``config.json``'s ``model_type`` (and ``architectures`` for the head),
picks the family module below, translates the config (refusing, by field name, any value plait
cannot reproduce exactly), renames the weights through the family's declarative key map
(:mod:`plait.hf.keymap`) and loads them strictly. ``export(model, folder)`` runs the same map
backwards and writes a folder ``transformers``' ``from_pretrained`` loads unchanged.

Each family module provides ``MODEL_TYPES``, ``config_from_hf(cfg, where)``,
``build(config, architecture)``, ``rules(config)``, ``normalize(state)``,
``denormalize(state, hf_config)``, ``exports(model)``, ``config_to_hf(config, model)`` and
optionally ``adjust(config, state)``.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from plait.checkpoint import load_weights_into, unique_state_dict
from plait.hf.io import read_config, read_weights, write_folder
from plait.hf.keymap import to_hf, to_plait

FAMILIES = ("gpt2", "bert", "vit", "clip")  # modules in plait.hf, in this order of lookup
# extra config.json keys carried across unchanged (generation and tokenizer ids)
PASS_THROUGH = ("bos_token_id", "eos_token_id", "pad_token_id")


def _families() -> list[ModuleType]:
    out = []
    for name in FAMILIES:
        try:
            out.append(importlib.import_module(f"plait.hf.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"plait.hf.{name}":
                raise
    return out


def family_for(cfg: dict[str, Any], where: str) -> ModuleType:
    """The family module for a ``config.json``'s ``model_type``."""
    model_type = cfg.get("model_type")
    families = _families()
    for fam in families:
        if model_type in fam.MODEL_TYPES:
            return fam
    known = ", ".join(t for fam in families for t in fam.MODEL_TYPES)
    arch = cfg.get("architectures")
    raise ValueError(f"{where}: unsupported architecture (model_type={model_type!r},"
                     f" architectures={arch!r}); plait loads: {known}")


def load(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A plait model (eval mode, trainable, with ``.config``) from a Hugging Face folder."""
    folder = Path(folder)
    cfg = read_config(folder)
    where = str(folder / "config.json")
    fam = family_for(cfg, where)
    config = fam.config_from_hf(cfg, where)
    hf_state, path = read_weights(folder)
    hf_state = fam.normalize(hf_state)
    if hasattr(fam, "adjust"):  # e.g. a ViTModel saved without its pooler
        config = fam.adjust(config, hf_state)
    model = fam.build(config, (cfg.get("architectures") or [""])[0])
    state = to_plait(hf_state, fam.rules(config), model.state_dict(), str(path))
    load_weights_into(model, state, str(path))
    return model.to(device).eval()


def family_of_model(model: nn.Module) -> ModuleType:
    for fam in _families():
        if hasattr(fam, "exports") and fam.exports(model):
            return fam
    raise ValueError(f"cannot export {type(model).__name__} to Hugging Face format (supported:"
                     " GPT as GPT-2, Bert, ViT, CLIP)")


def export(model: nn.Module, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors``)."""
    fam = family_of_model(model)
    hf_cfg = fam.config_to_hf(model.config, model)
    for key in PASS_THROUGH:
        if extra and extra.get(key) is not None:
            hf_cfg[key] = extra[key]
    state = to_hf(unique_state_dict(model), fam.rules(model.config))
    write_folder(folder, hf_cfg, fam.denormalize(state, hf_cfg))


def convert_folder(src: str | Path, dst: str | Path) -> None:
    """plait folder -> Hugging Face folder, copying ``tokenizer*.json`` along."""
    from plait.checkpoint import load_model, read_model_config

    src, dst = Path(src), Path(dst)
    model = load_model(src)
    export(model, dst, extra=read_model_config(src))
    for extra_file in sorted(src.glob("tokenizer*.json")) + sorted(src.glob("vocab.*")) + sorted(
            src.glob("special_tokens_map.json")):
        shutil.copyfile(extra_file, dst / extra_file.name)


__all__ = ["convert_folder", "export", "family_for", "load"]
