"""Declarative key maps between Hugging Face state dicts and plait's.

A family (GPT-2, BERT, ViT, CLIP) describes its checkpoint layout as a list of :class:`Rule`:

    Rule("h.{i}.attn.c_attn.weight", "transformer.blocks.{i}.attn.qkv.weight", "transpose")

``{i}`` stands for the layer index, a ``plait`` name of ``None`` drops the Hugging Face key
(buffers such as GPT-2's ``attn.bias`` causal mask), and the third field names a transform
from :data:`TRANSFORMS`. A ``cat`` of parts with different heights (grouped-query attention's
q, k, v) states them in ``split``. The same list drives import (HF -> plait) and export
(plait -> HF), so the two directions cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Transform:
    """``to_plait(hf tensors) -> plait tensor`` and its inverse ``to_hf``."""

    to_plait: Callable[[list[Tensor]], Tensor]
    to_hf: Callable[[Tensor, int], list[Tensor]]  # (plait tensor, number of HF tensors)


def _with_zero_keys(ts: list[Tensor]) -> Tensor:
    """(q, v) biases -> q, 0, v; (v,) -> 0, v: the fused layout with the key rows zero."""
    zero = torch.zeros_like(ts[-1])
    return torch.cat([ts[0], zero, ts[1]] if len(ts) == 2 else [zero, ts[0]], dim=0)


def _without_keys(t: Tensor, n: int) -> list[Tensor]:
    """The inverse of :func:`_with_zero_keys`: n = 2 (q, v) or 1 (v)."""
    parts = t.chunk(n + 1, dim=0)
    return [parts[0], parts[2]] if n == 2 else [parts[1]]


TRANSFORMS: dict[str, Transform] = {
    "": Transform(lambda ts: ts[0], lambda t, n: [t]),
    # GPT-2 stores Linear layers as Conv1D with weight (in, out); nn.Linear wants (out, in)
    "transpose": Transform(lambda ts: ts[0].t(), lambda t, n: [t.t()]),
    # separate q, k, v projections -> one fused qkv Linear (rows stacked q, k, v)
    "cat": Transform(lambda ts: torch.cat(ts, dim=0), lambda t, n: list(t.chunk(n, dim=0))),
    # Whisper's key projections have no bias: the fused bias of (q, v) or (v) alone keeps zeros
    # in its key rows. Dropping them on export is exact whatever they hold: a key bias b adds
    # q.b to every score of a query, and the softmax ignores a constant
    "no_key_bias": Transform(_with_zero_keys, _without_keys),
    # a class token stored as (C,) (CLIP) or (1, 1, C) (ViT) -> plait's (1, 1, C)
    "vec_to_token": Transform(lambda ts: ts[0].reshape(1, 1, -1), lambda t, n: [t.reshape(-1)]),
    # a position table stored as an nn.Embedding weight (N, C) (CLIP) -> plait's (1, N, C)
    "unsqueeze0": Transform(lambda ts: ts[0][None], lambda t, n: [t.squeeze(0)]),
}


@dataclass(frozen=True)
class Rule:
    """One (or several, fused) HF tensors <-> one plait tensor."""

    hf: str | tuple[str, ...]
    plait: str | None
    transform: str = ""
    split: tuple[int, ...] = ()  # "cat" of unequal parts: each HF tensor's rows; () = equal

    def __post_init__(self) -> None:
        if self.split and (self.transform != "cat" or len(self.split) != len(self.hf_names)):
            raise ValueError(f"Rule {self.hf!r}: split {self.split} needs transform 'cat' and"
                             " one height per HF tensor")

    @property
    def hf_names(self) -> tuple[str, ...]:
        return (self.hf,) if isinstance(self.hf, str) else self.hf

    def at(self, i: int) -> Rule:
        """This rule with ``{i}`` replaced by layer ``i``."""
        hf = tuple(n.replace("{i}", str(i)) for n in self.hf_names)
        plait = None if self.plait is None else self.plait.replace("{i}", str(i))
        return Rule(hf, plait, self.transform, self.split)

    def to_plait(self, tensors: list[Tensor]) -> Tensor:
        return TRANSFORMS[self.transform].to_plait(tensors)

    def to_hf(self, t: Tensor) -> list[Tensor]:
        """The plait tensor ``t`` as this rule's HF tensors."""
        if self.split:
            return list(t.split(list(self.split), dim=0))
        return TRANSFORMS[self.transform].to_hf(t, len(self.hf_names))


def expand(rules: list[Rule], n_layer: int) -> list[Rule]:
    """Concrete rules: each ``{i}`` rule once per layer."""
    out = []
    for r in rules:
        layered = any("{i}" in n for n in r.hf_names)
        out.extend(r.at(i) for i in range(n_layer if layered else 1))
    return out


def nested(rules: list[Rule], hf: str, plait: str) -> list[Rule]:
    """``rules`` for a model held inside another: ``hf`` and ``plait`` go before every name
    (LLaVA keeps its Llama under ``language_model.``, plait's VLM its GPT under ``decoder.``)."""
    return [Rule(tuple(hf + n for n in r.hf_names), None if r.plait is None else plait + r.plait,
                 r.transform, r.split) for r in rules]


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(f"'{k}'" for k in keys[:n]) + more


def to_plait(hf_state: dict[str, Tensor], rules: list[Rule],
             expected: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename and transform a HF state dict into plait names, checking names and shapes.

    Args:
        rules: concrete rules (after :func:`expand`).
        expected: the plait model's state dict (shapes to check against).
        source: the weights file, named in every error.
    """
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for r in rules:
        names = r.hf_names
        if r.plait is None:
            used.update(names)
            continue
        if r.plait not in expected:  # e.g. a head the chosen architecture does not have
            continue
        absent = [n for n in names if n not in hf_state]
        if absent:
            missing.extend(absent)
            continue
        used.update(names)
        want = r.to_hf(torch.empty(expected[r.plait].shape, device="meta"))
        for n, w in zip(names, want, strict=True):
            if tuple(hf_state[n].shape) != tuple(w.shape):
                raise ValueError(f"{source}: tensor '{n}' has shape {tuple(hf_state[n].shape)},"
                                 f" the config implies {tuple(w.shape)}")
        out[r.plait] = r.to_plait([hf_state[n] for n in names]).contiguous()
    if missing:
        raise ValueError(f"{source}: missing tensor(s) {_few(missing)}")
    unexpected = [k for k in hf_state if k not in used]
    if unexpected:
        raise ValueError(f"{source}: unexpected tensor(s) {_few(unexpected)} (not part of this"
                         " architecture; is config.json the right one?)")
    return out


def to_hf(state: dict[str, Tensor], rules: list[Rule]) -> dict[str, Tensor]:
    """Rename and transform a plait state dict into HF names (the inverse of :func:`to_plait`)."""
    out: dict[str, Tensor] = {}
    for r in rules:
        if r.plait is None or r.plait not in state:
            continue
        for n, t in zip(r.hf_names, r.to_hf(state[r.plait]), strict=True):
            out[n] = t.contiguous()
    return out
