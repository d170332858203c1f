"""The optimizer's parameter groups: weight decay, per-part learning rates, frozen parts.

AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) decays only 2-D weights (matmuls and
embeddings), never biases or norm gains. A recipe names parts of the model by parameter name:

    [train]
    freeze = ["vision"]                # every parameter under the module `vision`: left as is
    [train.part_lr]
    "text.encoder.blocks.0" = 1e-4     # its own peak learning rate; the rest keep train.lr
    "*.norm_*" = 3e-4                  # a glob over full parameter names

A pattern matches a parameter whose name equals it, lies under it (``name`` starts with
``pattern + "."``), or matches it as an ``fnmatch`` glob. The first ``part_lr`` entry that
matches decides a parameter's rate; a pattern that matches nothing is an error naming it, so a
typo cannot train what was meant to be frozen. Frozen parameters get ``requires_grad=False``
and no place in the optimizer: their values after training are the values before, bit for bit.

Every group follows the one schedule (``lr_at``) scaled to its own peak, as
``torch.optim.lr_scheduler.LambdaLR`` scales each group's base rate: ``min_lr`` scales too.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn as nn

from plait.training.config import TrainConfig
from plait.training.schedule import lr_at


def matches(name: str, pattern: str) -> bool:
    """Parameter ``name`` is the part ``pattern`` names (exact, under it, or by glob)."""
    return name == pattern or name.startswith(pattern + ".") or fnmatchcase(name, pattern)


def _check_patterns(names: list[str], patterns: Iterable[str], key: str) -> None:
    for pattern in patterns:
        if not any(matches(n, pattern) for n in names):
            tops = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
            raise ValueError(f"train.{key} pattern {pattern!r} matches no parameter (the model's"
                             f" top-level parts: {tops})")


def param_groups(model: nn.Module, t: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups for ``model`` under ``t``: frozen parts dropped (and ``requires_grad``
    turned off), the rest grouped by (peak lr, decayed or not). Each group carries its
    ``peak_lr``; ``set_lrs`` writes the scheduled rate from it every step."""
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    _check_patterns(names, t.freeze, "freeze")
    _check_patterns(names, t.part_lr, "part_lr")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in named:
        if any(matches(name, pat) for pat in t.freeze):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        lr = next((v for pat, v in t.part_lr.items() if matches(name, pat)), t.lr)
        groups.setdefault((lr, p.dim() >= 2), []).append(p)
    out = []
    for decayed in (True, False):  # decayed groups first, each in order of first appearance
        for (lr, is_2d), params in groups.items():
            if is_2d == decayed:
                out.append({"params": params, "peak_lr": lr, "lr": lr,
                            "weight_decay": t.weight_decay if decayed else 0.0})
    return out


def make_optimizer(groups: list[dict[str, Any]], t: TrainConfig,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups`` (from :func:`param_groups`)."""
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen (train.freeze)")
    # one fused kernel for all parameters (CPU and CUDA since torch 2.4; BENCHMARKS.md)
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=fused)


def set_lrs(optimizer: torch.optim.Optimizer, step: float, t: TrainConfig) -> float:
    """Every group's rate at (fractional) ``step``; returns the rate at ``train.lr``'s peak."""
    for group in optimizer.param_groups:
        group["lr"] = scheduled_lr(step, group.get("peak_lr", t.lr), t)
    return scheduled_lr(step, t.lr, t)


def scheduled_lr(step: float, peak: float, t: TrainConfig) -> float:
    # the floor scales with the peak; at train.lr itself it is min_lr exactly (no rounding)
    floor = t.min_lr if peak == t.lr else t.min_lr * peak / t.lr if t.lr else 0.0
    return lr_at(step, peak, floor, t.warmup_steps, t.max_steps, t.decay)
