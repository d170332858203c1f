"""A Linear layer whose few-row products use every CPU core, and the weight layout they need.

Decoding one token multiplies a single vector by every weight matrix. That is a GEMV: each
weight is read from memory once and used for one multiply-add, so the speed is the memory
bandwidth the product reaches. MKL runs a GEMV of GPT-2's sizes on one core, which reads memory
at about two thirds of what all cores together can.

The product splits along the inner dimension instead:

    x W^T = sum_s  x[:, K_s] (W[:, K_s])^T        K_1 ... K_S: S equal slices of 0 .. in-1

With W stored column-major ((in, out) memory, :func:`gemv_layout`), the S slices of W are S
contiguous blocks, viewed without a copy as an (S, in/S, out) tensor. One batched matmul then
hands each thread one block to stream, and a sum over S (S x out numbers) joins them. Only the
order of the additions changes. The speeds, and the measurements behind the two thresholds
below, are in BENCHMARKS.md ("Thread-split GEMVs"; ``python -m benchmarks.gemv``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SPLIT_MAX_ROWS = 16  # more rows: plain F.linear is as fast (BENCHMARKS.md)
SPLIT_MIN_WEIGHT = 1 << 17  # smaller weights: the split's fixed cost outweighs it (BENCHMARKS.md)


def split_count(weight: Tensor, threads: int) -> int:
    """Slices a product with this (out, in) weight is split into: the most (at most one per
    thread) that divide ``in`` evenly, for fp32 CPU weights of at least SPLIT_MIN_WEIGHT
    elements; 1 = no split."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or (
            weight.numel() < SPLIT_MIN_WEIGHT):
        return 1
    return max(s for s in range(1, threads + 1) if weight.shape[1] % s == 0)


class Linear(nn.Linear):
    """``nn.Linear`` that, once :func:`gemv_layout` has prepared it, splits products of a few
    rows across CPU threads (module docstring). Parameters, state-dict keys and results (up to
    the order of float additions) are those of ``nn.Linear``; training never takes the split.
    """

    split_weight: Tensor | None = None  # (S, in/S, out) view of the column-major weight

    def prepare_split(self, threads: int) -> None:
        """View the column-major weight as ``threads``-or-fewer slices (or drop the view)."""
        w = self.weight
        s = split_count(w, threads)
        ok = s > 1 and w.t().is_contiguous()
        self.split_weight = w.detach().t().view(s, -1, self.out_features) if ok else None

    def forward(self, x: Tensor) -> Tensor:
        ws = self.split_weight
        # the view shares the weight's memory, so in-place updates reach it; a weight replaced
        # by new memory (.to(), load into a new tensor) no longer matches, and goes the usual way
        if (ws is not None and x.numel() <= SPLIT_MAX_ROWS * self.in_features
                and not torch.is_grad_enabled() and ws.data_ptr() == self.weight.data_ptr()
                and x.shape[-1] == self.in_features):
            s, k, out = ws.shape
            rows = x.reshape(-1, s, k).transpose(0, 1)  # (S, M, k)
            if self.bias is None:
                partial = torch.bmm(rows, ws)
            else:  # each slice adds bias / S, so the sum adds the bias once: one op fewer
                partial = torch.baddbmm(self.bias.view(1, 1, out), rows, ws, beta=1.0 / s)
            return partial.sum(0).view(*x.shape[:-1], out)
        return F.linear(x, self.weight, self.bias)


def gemv_layout(model: nn.Module) -> nn.Module:
    """Store Linear weights column-major for decoding, where that is faster; values unchanged.

    Column-major memory is what :class:`Linear` splits across threads (prepared here for the
    current ``torch.get_num_threads()``), and even MKL's single-thread GEMV streams widening
    matrices faster from it. A narrowing weight that will not be split (one thread, too small)
    stays row-major, where MKL reads it faster (per-matrix speeds in BENCHMARKS.md's
    "Thread-split GEMVs" table). Only strides change: shapes, values,
    state-dict keys and results stay the same, and ``load_state_dict`` copies into whatever
    layout a weight has. Idempotent.
    """
    threads = torch.get_num_threads()
    for m in model.modules():
        if not isinstance(m, nn.Linear) or min(m.weight.shape) <= 1:
            continue
        # a copy keeps its weight's kind. generate runs under inference_mode, where a copy of
        # an ordinary weight would be an inference tensor and the model could not be trained
        # afterwards; a weight made under inference_mode (a model loaded there) must stay one,
        # or using it raises "Inference tensors do not track version counter"
        with torch.inference_mode(m.weight.is_inference()):
            split = isinstance(m, Linear) and split_count(m.weight, threads) > 1
            if m.weight.is_contiguous() and (split or m.out_features > m.in_features):
                m.weight.data = m.weight.data.t().contiguous().t()  # (out, in) view of (in, out)
            if isinstance(m, Linear):
                m.prepare_split(threads)
    return model


def row_major(model: nn.Module) -> nn.Module:
    """Undo :func:`gemv_layout`: every parameter contiguous (row-major) again, split views
    dropped. The trainer calls it after an evaluation that may have generated, since an
    optimizer's state keeps the layout its parameters had at the first step (a fused AdamW
    given a column-major weight and a row-major moment updates the wrong elements)."""
    for m in model.modules():
        if isinstance(m, Linear):
            m.split_weight = None
    for p in model.parameters():
        if not p.is_contiguous():
            p.data = p.data.contiguous()
    return model
