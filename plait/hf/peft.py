"""LoRA adapters in peft's format, read and written: a folder with ``adapter_config.json`` and
``adapter_model.safetensors``.

peft's ``save_pretrained`` writes only the adapter. Its config names the base model
(``base_model_name_or_path``), ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``,
``peft_type: "LORA"`` and ``task_type``; its weights are, per adapted module,
``base_model.model.<module>.lora_A.weight`` (r, in) and ``.lora_B.weight`` (out, r), where
``<module>`` is the module's name in the ``transformers`` model.

plait's module names are not those, and the family's key map (:mod:`plait.hf.keymap`), which
already pairs every plait Linear weight with the Hugging Face weight(s) it is made of, pairs the
adapters too:

- one HF Linear (Llama's ``o_proj``) -> its plait Linear (``attn.proj``); A and B unchanged;
- a GPT-2 ``Conv1D`` (``c_attn``, weight stored (in, out)) -> its plait Linear (``attn.qkv``):
  peft keeps a Conv1D's adapter in Linear orientation (A (r, in), B (out, r)) and transposes only
  the merged update, so A and B carry over as they are;
- several HF Linears fused into one plait Linear (Llama's ``q_proj``, ``k_proj``, ``v_proj`` ->
  ``qkv``; ``gate_proj``, ``up_proj`` -> ``mlp.fc``) -> one :class:`LoRALinear` with a part per
  HF module (A stacked, B block-diagonal), each part exactly one of peft's adapters. A module
  peft left out (q and v adapted, k not) is a part with A = B = 0, which changes nothing, gets
  zero gradients and so stays zero, and is left out again on export. A single adapter over a
  fused Linear (``parts`` not given) exports as one adapter per HF module sharing A.

A plait model that no Hugging Face family writes keeps plait's own module names. Written
adapters name modules as :func:`plait.hf.export` names them (``GPT2LMHeadModel``,
``LlamaForCausalLM``); adapters made on a bare ``GPT2Model`` or ``LlamaModel`` read too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from plait import io
from plait.hf import family_of_model
from plait.hf.family import Family
from plait.models import GPT, Seq2Seq
from plait.nn.lora import LoRALinear, lora_modules, train_only_adapters, wrap

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"  # what peft wrote before safetensors
PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the transformers model
KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")
TASK_TYPES = {GPT: "CAUSAL_LM", Seq2Seq: "SEQ_2_SEQ_LM"}  # peft's, by plait model class
# peft options that change what an adapter computes, and the value plain LoRA has
PLAIN = {"use_dora": False, "bias": "none", "lora_bias": False, "modules_to_save": None,
         "rank_pattern": {}, "alpha_pattern": {}, "target_parameters": None,
         "trainable_token_indices": None, "layer_replication": None,
         "alora_invocation_tokens": None, "use_qalora": False, "use_bdlora": None}


@dataclass(frozen=True)
class Slot:
    """One plait Linear and the Hugging Face module(s) its output rows come from."""

    plait: str  # "transformer.blocks.0.attn.qkv"
    hf: tuple[str, ...]  # ("model.layers.0.self_attn.q_proj", "...k_proj", "...v_proj")
    heights: tuple[int, ...]  # rows of the plait weight each HF module holds
    conv1d: bool = False  # GPT-2's Conv1D (peft's fan_in_fan_out)


@dataclass(frozen=True)
class Names:
    """How a model's Linears are called in its Hugging Face form."""

    slots: dict[str, Slot]  # by plait module name
    modules: frozenset[str]  # every HF module name (what peft's target_modules match against)
    family: Family | None  # None: no family writes the model, names are plait's


def _linears(model: nn.Module) -> dict[str, int]:
    """Linear layers (adapted or not) -> output rows; an adapter's inner ``base`` is its own."""
    adapted = lora_modules(model)
    out = {n: m.base.out_features for n, m in adapted.items()}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear) and n.rpartition(".")[0] not in adapted:
            out[n] = m.out_features
    return out


def _exists(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _rename(fam: Family, names: list[str], hf_cfg: dict[str, Any] | None) -> dict[str, str]:
    """HF module names as the family's ``denormalize`` (with ``hf_cfg``: export's names) or
    ``normalize`` (without: the key map's names) renames their weights; old name -> new."""
    keys = {f"{n}.weight": n for n in names}
    renamed = fam.normalize(keys) if hf_cfg is None else fam.denormalize(keys, hf_cfg)
    return {old: new.removesuffix(".weight") for new, old in renamed.items()}


def names_of(model: nn.Module) -> Names:
    """The Hugging Face names of ``model``'s Linears, from its family's key map."""
    linears = _linears(model)
    try:
        fam = family_of_model(model)
    except ValueError:  # no family writes this model: plait's names, one module per Linear
        slots = {n: Slot(n, (n,), (rows,)) for n, rows in linears.items()}
        return Names(slots, frozenset(n for n, _ in model.named_modules()), None)
    slots, modules = {}, set()
    for r in fam.rules(model.config):
        if r.plait is not None and not _exists(model, r.plait.rpartition(".")[0]):
            continue  # a part this model lacks (GPT-2's cross-attention)
        hf = tuple(n.rpartition(".")[0] for n in r.hf_names)
        modules.update(hf)
        name = (r.plait or "").removesuffix(".weight")
        if r.plait and r.plait.endswith(".weight") and name in linears:
            heights = r.split or (linears[name] // len(hf),) * len(hf)
            slots[name] = Slot(name, hf, heights, r.transform == "transpose")
    return Names(slots, frozenset(modules), fam)


def lora_parts(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Module name -> heights of the HF modules fused in it (``add_lora``'s ``parts``), so that
    plait's adapters are peft's: one per q, k, v projection, not one over the fused qkv."""
    return {n: s.heights for n, s in names_of(model).slots.items() if len(s.hf) > 1}


def target_names(adapted: set[str], modules: frozenset[str]) -> list[str]:
    """The shortest dotted suffixes that name exactly the ``adapted`` modules: peft's
    ``target_modules`` entry ``t`` matches a module named ``t`` or ``*.t``."""
    out = set()
    for m in adapted:
        parts = m.split(".")
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if all(n in adapted for n in modules | adapted if n.split(".")[-k:] == tail):
                out.add(".".join(tail))
                break
    return sorted(out)


def _pieces(lora: LoRALinear, slot: Slot) -> list[tuple[str, Tensor, Tensor]]:
    """(HF module, A_i, B_i) for each HF module of ``slot``."""
    A, B = lora.lora_A.detach(), lora.lora_B.detach()
    Bs = B.split(slot.heights)
    if len(lora.parts) == 1:  # one adapter over the fused rows: module i gets B_i A
        As = [A.clone() for _ in slot.hf]
    elif lora.parts == slot.heights:
        As = list(A.split(lora.rank))
    else:
        raise ValueError(f"LoRA on {slot.plait}: parts {lora.parts} are not the Hugging Face"
                         f" modules' heights {slot.heights} ({', '.join(slot.hf)})")
    return [(hf, a, b) for hf, a, b in zip(slot.hf, As, Bs, strict=True) if a.any() or b.any()]


def _uniform(values: dict[str, Any], what: str) -> Any:
    """The one value every adapter has for ``what`` (peft's format holds one)."""
    distinct = set(values.values())
    if len(distinct) != 1:
        raise ValueError(f"peft's format holds one {what} for every adapter; this model's"
                         f" adapters have {sorted(distinct)}")
    return distinct.pop()


def _dropout(lora: LoRALinear) -> float:
    return lora.dropout.p if isinstance(lora.dropout, nn.Dropout) else 0.0


def _in_features(model: nn.Module, name: str) -> int:
    m = model.get_submodule(name)
    return (m.base if isinstance(m, LoRALinear) else m).in_features


def peft_tensors(model: nn.Module
                 ) -> tuple[dict[str, Tensor], dict[str, Slot], frozenset[str]]:
    """``model``'s adapters under peft's names; the adapted HF modules (-> their slot); every
    HF module name of the model."""
    names = names_of(model)
    rename = {m: m for m in names.modules}
    if names.family is not None:  # the names export writes (a bare BertModel has no "bert.")
        rename = _rename(names.family, sorted(names.modules),
                         names.family.config_to_hf(model.config))
    tensors, slots = {}, {}
    for name, lora in lora_modules(model).items():
        if name not in names.slots:
            raise ValueError(f"LoRA on {name}: the Hugging Face key map names no Linear for it,"
                             " so peft could not place the adapter")
        for hf, a, b in _pieces(lora, names.slots[name]):
            tensors[f"{PREFIX}{rename[hf]}.lora_A.weight"] = a
            tensors[f"{PREFIX}{rename[hf]}.lora_B.weight"] = b
            slots[rename[hf]] = names.slots[name]
    return tensors, slots, frozenset(rename.values())


def save_adapter(model: nn.Module, folder: str | Path, base: str,
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s adapters as peft does, for the base model in folder ``base``."""
    loras = lora_modules(model)
    if not loras:
        raise ValueError("the model has no LoRA adapters to save (add_lora first)")
    rank = _uniform({n: m.rank for n, m in loras.items()}, "rank")
    scale = _uniform({n: m.scale for n, m in loras.items()}, "scale")
    tensors, slots, modules = peft_tensors(model)
    alpha = scale * rank
    config = {
        "base_model_name_or_path": str(base), "peft_type": "LORA",
        "task_type": TASK_TYPES.get(type(model)), "r": rank,
        "lora_alpha": round(alpha) if abs(alpha - round(alpha)) < 1e-9 else alpha,
        "lora_dropout": _uniform({n: _dropout(m) for n, m in loras.items()}, "dropout"),
        "target_modules": target_names(set(slots), modules),
        "fan_in_fan_out": any(s.conv1d for s in slots.values()), "inference_mode": True,
        "init_lora_weights": True, "use_rslora": False, **PLAIN,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    io.write_safetensors(folder / ADAPTER_WEIGHTS, tensors, metadata)
    io.atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    """``adapter_config.json``, refusing (by key) what plain LoRA does not compute."""
    path = Path(folder) / ADAPTER_CONFIG
    cfg = io.read_json(path)
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {cfg.get('peft_type')!r} is not supported (plait"
                         " reads LORA adapters)")
    for key, plain in PLAIN.items():
        value = cfg.get(key, plain)
        if value != plain and value not in (None, False, {}, []):
            raise ValueError(f"{path}: unsupported {key}={value!r} (plait reads plain LoRA:"
                             f" {plain!r})")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not (isinstance(r, int) and r >= 1) or not isinstance(alpha, int | float):
        raise ValueError(f"{path}: r must be a positive integer and lora_alpha a number, got"
                         f" r={r!r}, lora_alpha={alpha!r}")
    return cfg


def base_folder(folder: str | Path) -> Path:
    """The local folder an adapter's ``base_model_name_or_path`` names: as given (absolute, or
    relative to the working directory, as peft reads it), else relative to the adapter folder."""
    folder = Path(folder)
    name = read_adapter_config(folder).get("base_model_name_or_path")
    where = folder / ADAPTER_CONFIG
    if not name:
        raise ValueError(f"{where} names no base model (base_model_name_or_path)")
    tried = [Path(name).expanduser()]
    if not tried[0].is_absolute():
        tried.append(folder / name)
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"base model {name!r} of {where} not found (looked in"
                            f" {', '.join(str(p) for p in tried)}); plait reads local folders"
                            " only: point base_model_name_or_path at the base model's folder")


def read_adapter_weights(folder: str | Path) -> tuple[dict[str, Tensor], Path]:
    """An adapter's tensors (``adapter_model.safetensors``, or an old ``adapter_model.bin``
    opened with ``weights_only``), and the file they came from."""
    folder = Path(folder)
    if (folder / ADAPTER_WEIGHTS).is_file() or not (folder / ADAPTER_BIN).is_file():
        return io.read_safetensors(folder / ADAPTER_WEIGHTS), folder / ADAPTER_WEIGHTS
    path = folder / ADAPTER_BIN
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (pickle errors come in many types)
        raise ValueError(f"cannot read {path} (truncated or not a PyTorch state dict)") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state, path


def adapter_state(model: nn.Module, tensors: dict[str, Tensor], rank: int,
                  source: str) -> dict[str, tuple[Tensor, Tensor, tuple[int, ...]]]:
    """peft's tensors as plait adapters: module name -> (A, B, parts), checked against the
    model's modules and shapes; every mismatch is one line naming the tensor."""
    names = names_of(model)
    found: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        m = KEY.fullmatch(key)
        if m is None:
            raise ValueError(f"{source}: unexpected tensor '{key}' (plait reads LoRA's"
                             f" {PREFIX}<module>.lora_A.weight and .lora_B.weight)")
        found.setdefault(m["module"], {})[m["ab"]] = t
    # the key map's names (a bare GPT2Model's adapter gains "transformer.")
    renamed = {m: m for m in found}
    if names.family is not None:
        renamed = _rename(names.family, list(found), None)
    where = {hf: (slot, i) for slot in names.slots.values() for i, hf in enumerate(slot.hf)}
    out = {}
    for module, ab in sorted(found.items()):
        if renamed[module] not in where:
            kind = names.family.name if names.family else type(model).__name__
            raise ValueError(f"{source}: the adapter adapts '{module}', which this {kind} base"
                             " model does not have (an adapter made for another model?)")
        slot, i = where[renamed[module]]
        rows, cols = slot.heights[i], _in_features(model, slot.plait)
        for x, want in (("A", (rank, cols)), ("B", (rows, rank))):
            key = f"{PREFIX}{module}.lora_{x}.weight"
            if x not in ab:
                raise ValueError(f"{source}: '{module}' has no lora_{x}.weight")
            if tuple(ab[x].shape) != want:
                raise ValueError(f"{source}: tensor '{key}' has shape {tuple(ab[x].shape)}, the"
                                 f" base model and r={rank} imply {want} (another base?)")
        A, B, _ = out.setdefault(slot.plait, (
            torch.zeros(len(slot.hf) * rank, cols), torch.zeros(sum(slot.heights), rank),
            slot.heights if len(slot.hf) > 1 else ()))
        A[i * rank:(i + 1) * rank] = ab["A"]
        B[sum(slot.heights[:i]):sum(slot.heights[:i + 1])] = ab["B"]
    return out


def apply_adapter(model: nn.Module, folder: str | Path) -> nn.Module:
    """Add the adapters of a peft folder to ``model`` (only they train); returns ``model``."""
    cfg = read_adapter_config(folder)
    tensors, path = read_adapter_weights(folder)
    r = cfg["r"]
    scale = cfg["lora_alpha"] / (math.sqrt(r) if cfg.get("use_rslora") else r)
    state = adapter_state(model, tensors, r, str(path))
    with torch.no_grad():
        for name, (A, B, parts) in state.items():
            lora = wrap(model, name, r, scale, float(cfg.get("lora_dropout") or 0.0), parts)
            lora.lora_A.copy_(A)
            lora.lora_B.copy_(B)
    return train_only_adapters(model)


def load_adapter_weights(model: nn.Module, folder: str | Path) -> None:
    """Copy a peft folder's adapters into the adapters ``model`` already has (resuming)."""
    loras = lora_modules(model)
    if not loras:
        raise ValueError("the model has no LoRA adapters to load weights into")
    tensors, path = read_adapter_weights(folder)
    state = adapter_state(model, tensors, _uniform({n: m.rank for n, m in loras.items()},
                                                   "rank"), str(path))
    odd = sorted(n for n in set(state) | set(loras) if n not in state or n not in loras
                 or (state[n][2] or (loras[n].base.out_features,)) != loras[n].parts)
    if odd:
        raise ValueError(f"{path}: the adapters of {', '.join(odd[:4])} do not match the"
                         " model's")
    with torch.no_grad():
        for name, (A, B, _) in state.items():
            loras[name].lora_A.copy_(A)
            loras[name].lora_B.copy_(B)
