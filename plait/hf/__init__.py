"""Hugging Face interop: load a ``transformers`` folder as a plait model, and export one back.

``load(folder)`` reads ``config.json``'s ``model_type`` (and ``architectures`` for the head),
picks the family registered for it in :data:`FAMILIES`, translates the config (refusing, by
field name, any value plait cannot reproduce exactly), renames the weights through the family's
declarative key map (:mod:`plait.hf.keymap`) and loads them strictly. ``export(model, folder)``
runs the same tables backwards and writes a folder ``transformers``' ``from_pretrained`` loads
unchanged. What a family provides is :class:`plait.hf.family.Family`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from plait.checkpoint import load_model, load_weights_into, read_model_config, unique_state_dict
from plait.hf.family import Family
from plait.hf.io import read_config, read_weights, write_folder
from plait.hf.keymap import to_hf, to_plait
from plait.registry import Registry

# config.json's model_type -> the family that reads it
FAMILIES = Registry("Hugging Face model_type", {
    "gpt2": "plait.hf.gpt2:GPT2",
    "bert": "plait.hf.bert:BertFamily",
    "vit": "plait.hf.vit:ViTFamily",
    "clip": "plait.hf.clip:CLIPFamily",
    "bart": "plait.hf.bart:BartFamily",
    "marian": "plait.hf.marian:MarianFamily",
    "t5": "plait.hf.t5:T5Family",
    "roberta": "plait.hf.bert:RobertaFamily",
    "albert": "plait.hf.albert:AlbertFamily",
    "llama": "plait.hf.llama:LlamaFamily",
    "mistral": "plait.hf.llama:MistralFamily",
    "qwen2": "plait.hf.llama:Qwen2Family",
    "llava": "plait.hf.llava:LlavaFamily",
    "whisper": "plait.hf.whisper:WhisperFamily",
})
# extra config.json keys carried across unchanged (generation and tokenizer ids)
PASS_THROUGH = ("bos_token_id", "eos_token_id", "pad_token_id")


def family_for(cfg: dict[str, Any], where: str) -> Family:
    """The family for a ``config.json``'s ``model_type``."""
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{where}: unsupported architecture (model_type={model_type!r},"
                         f" architectures={cfg.get('architectures')!r}); plait loads:"
                         f" {', '.join(FAMILIES)}")
    return FAMILIES.get(model_type)()


def load(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A plait model (eval mode, trainable, with ``.config``) from a Hugging Face folder."""
    folder = Path(folder)
    cfg = read_config(folder)
    where = str(folder / "config.json")
    fam = family_for(cfg, where)
    config = fam.config_from_hf(cfg, where)
    hf_state, path = read_weights(folder)
    hf_state = fam.normalize(hf_state)
    config = fam.adjust(config, hf_state)  # e.g. a ViTModel saved without its pooler
    model = fam.build(config, (cfg.get("architectures") or [""])[0])
    state = to_plait(hf_state, fam.rules(config), model.state_dict(), str(path))
    load_weights_into(model, state, str(path))
    return model.to(device).eval()


def family_of_model(model: nn.Module) -> Family:
    """The family that writes ``model``; else an error naming the settings that no family of
    its class can express (a rotary or pre-norm Bert), or the classes that can be written."""
    near = []
    for model_type in FAMILIES:
        fam = FAMILIES.get(model_type)()
        if fam.exports(model):
            return fam
        if type(model) is fam.model_class:
            off = [k for k, v in fam.LAYOUT.items() if getattr(model.config, k) != v]
            near.append((len(off), model_type, off))
    name = type(model).__name__
    if near and min(near)[2]:
        fewest, seen, why = min(near)[0], set(), []
        for n, model_type, off in sorted(near):  # every nearest family, once per set of fields
            if n == fewest and tuple(off) not in seen:
                seen.add(tuple(off))
                shown = ", ".join(f"{k}={getattr(model.config, k)!r}" for k in off)
                why.append(f"{shown} has no {model_type} equivalent")
        raise ValueError(f"cannot export {name} to Hugging Face format: {'; '.join(why)}")
    raise ValueError(f"cannot export {name} to Hugging Face format (supported: GPT as GPT-2,"
                     " Llama or Qwen2, Bert, ViT, CLIP, Seq2Seq as BART, Marian or T5,"
                     " Whisper, VLM as LLaVA)")


def export(model: nn.Module, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors``)."""
    fam = family_of_model(model)
    hf_cfg = fam.config_to_hf(model.config)
    for key in PASS_THROUGH:
        if extra and extra.get(key) is not None:
            hf_cfg[key] = extra[key]
    state = to_hf(unique_state_dict(model), fam.rules(model.config))
    write_folder(folder, hf_cfg, fam.denormalize(state, hf_cfg))


def convert_folder(src: str | Path, dst: str | Path) -> None:
    """plait folder -> Hugging Face folder, copying ``tokenizer*.json`` along."""
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    export(model, dst, extra=read_model_config(src))
    for extra_file in sorted(src.glob("tokenizer*.json")) + sorted(src.glob("vocab.*")) + sorted(
            src.glob("special_tokens_map.json")):
        shutil.copyfile(extra_file, dst / extra_file.name)


__all__ = ["FAMILIES", "convert_folder", "export", "family_for", "load"]
