"""What a Hugging Face family is: a key map, a config table, and the few quirks of its checkpoints.

A family (GPT-2, BERT, ViT, CLIP) subclasses :class:`Family`, is registered in
:data:`plait.hf.FAMILIES` under the ``model_type`` values it reads, and states, once each:

- the plait model class;
- ``FIELDS``: the config keys that map one to one, as :class:`Field` pairs used in both
  directions, with the value ``transformers`` assumes when a key is absent;
- ``RULES``: the tensor key map (:mod:`plait.hf.keymap`), also used in both directions;
- ``config_from_hf`` / ``config_to_hf``: the table plus the checks and fixed values around it
  (a value plait cannot reproduce is refused by name, on the way in and on the way out).

Checkpoint quirks (a bare ``BertModel`` without the ``bert.`` prefix, TF-era ``gamma``/``beta``
names, a ViT saved without its pooler) are the optional ``normalize`` / ``denormalize`` /
``adjust`` hooks; their defaults do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn
from torch import Tensor

from plait.config import Config
from plait.hf.keymap import Rule, expand

# Hugging Face activation names <-> plait's; the first pair naming a plait activation is the
# one written on export (both tanh approximations are one formula, silu and swish one function)
ACTIVATIONS: tuple[tuple[str, str], ...] = (
    ("gelu_new", "gelu_tanh"), ("gelu_pytorch_tanh", "gelu_tanh"), ("gelu", "gelu"),
    ("relu", "relu"), ("silu", "silu"), ("swish", "silu"), ("quick_gelu", "quick_gelu"),
)


def require(cfg: dict[str, Any], field: str, ok: bool, allowed: str, where: str) -> None:
    """Raise a one-line ValueError naming a config field plait cannot honour."""
    if not ok:
        raise ValueError(f"{where}: unsupported {field}={cfg.get(field)!r} ({allowed})")


@dataclass(frozen=True)
class Field:
    """One ``config.json`` key <-> one plait config field.

    Args:
        hf: the key in Hugging Face's ``config.json``.
        plait: the field of the plait config.
        default: what ``transformers`` assumes when ``config.json`` lacks the key.
        values: (hf value, plait value) pairs when the two name values differently
            (activations); empty when values carry over unchanged.
    """

    hf: str
    plait: str
    default: Any = None
    values: tuple[tuple[Any, Any], ...] = ()


def encoder_fields(width: int, heads: int, inner: int, act: str, eps: float,
                   dropout: str = "hidden_dropout_prob", p: float = 0.0) -> tuple[Field, ...]:
    """The sizes BERT-style configs (BERT, ViT, CLIP's towers) name alike, with a family's
    defaults; ``dropout`` is the key that holds the rate plait uses everywhere (default p)."""
    return (
        Field("num_hidden_layers", "n_layer", 12),
        Field("num_attention_heads", "n_head", heads),
        Field("hidden_size", "n_embd", width),
        Field("intermediate_size", "n_inner", inner),
        Field("hidden_act", "mlp", act, ACTIVATIONS),
        Field("layer_norm_eps", "norm_eps", eps),
        Field(dropout, "dropout", p),
    )


def with_prefix(state: dict[str, Tensor], prefix: str,
                keep: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """A bare model's keys under ``prefix`` (``bert.``, ``vit.``), as its *For* classes save
    them; keys in ``keep`` (heads outside the body) and already-prefixed states stay."""
    if any(k.startswith(prefix) for k in state):
        return state
    return {k if k in keep else prefix + k: v for k, v in state.items()}


def without_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def fields_from_hf(fields: Iterable[Field], cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """plait config fields from a ``config.json`` dict; an unknown value raises naming its key."""
    out = {}
    for f in fields:
        value = cfg.get(f.hf, f.default)
        if f.values:
            known = dict(f.values)
            require(cfg, f.hf, value in known, f"supported: {', '.join(known)}", where)
            value = known[value]
        out[f.plait] = value
    return out


def fields_to_hf(fields: Iterable[Field], config: Config, family: str) -> dict[str, Any]:
    """``config.json`` keys from a plait config; a value the family cannot name raises."""
    out = {}
    for f in fields:
        value = getattr(config, f.plait)
        if f.values:
            names = [hf for hf, ours in f.values if ours == value]
            if not names:
                supported = ", ".join(dict.fromkeys(ours for _, ours in f.values))
                raise ValueError(f"cannot export to {family}: {type(config).__name__}.{f.plait}="
                                 f"{value!r} ({family} supports {supported})")
            value = names[0]
        out[f.hf] = value
    return out


def require_export(config: Config, needs: dict[str, Any], family: str) -> None:
    """Refuse, by field name, a plait config whose values the family has no way to express."""
    for name, value in needs.items():
        if getattr(config, name) != value:
            raise ValueError(f"cannot export to {family}: {type(config).__name__}.{name}="
                             f"{getattr(config, name)!r} ({family} needs {value!r})")


def label_maps(num_labels: int, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """``id2label`` / ``label2id``: the given names, or transformers' default LABEL_i."""
    names = names or tuple(f"LABEL_{i}" for i in range(num_labels))
    return {"id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)}}


class Family:
    """One Hugging Face model family; subclasses fill in the class attributes and two methods."""

    name: str  # for messages: "GPT-2"
    model_class: type[nn.Module]
    FIELDS: tuple[Field, ...] = ()
    RULES: tuple[Rule, ...] = ()
    LAYOUT: dict[str, Any] = {}  # fixed config values: a model exports here only if it has them

    def config_from_hf(self, cfg: dict[str, Any], where: str) -> Config:
        raise NotImplementedError

    def config_to_hf(self, config: Config) -> dict[str, Any]:
        raise NotImplementedError

    def rules(self, config: Config) -> list[Rule]:
        """Concrete tensor rules for this config (``{i}`` expanded over its layers)."""
        return expand(list(self.RULES), config.n_layer)

    def normalize(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Give a checkpoint's keys the names ``RULES`` use (e.g. add a missing prefix)."""
        return state

    def denormalize(self, state: dict[str, Tensor], hf_cfg: dict[str, Any]) -> dict[str, Tensor]:
        """The inverse of ``normalize`` for the architecture being written."""
        return state

    def adjust(self, config: Config, state: dict[str, Tensor]) -> Config:
        """Amend the config from what the checkpoint holds (e.g. a missing pooler)."""
        return config

    def build(self, config: Config, architecture: str) -> nn.Module:
        return self.model_class(config)

    def exports(self, model: nn.Module) -> bool:
        """This family can write ``model``: its class, with the family's fixed layout."""
        return type(model) is self.model_class and all(
            getattr(model.config, k) == v for k, v in self.LAYOUT.items())
