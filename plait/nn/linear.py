"""A Linear layer whose few-row products use every CPU core, and the weight layout they need.

Decoding one token multiplies a single vector by every weight matrix. That is a GEMV: each
weight is read from memory once and used for one multiply-add, so the speed is the memory
bandwidth the product reaches. MKL runs a GEMV of GPT-2's sizes on one core, which reads memory
at about two thirds of what all cores together can.

The product splits along the inner dimension instead:

    x W^T = sum_s  x[:, K_s] (W[:, K_s])^T        K_1 ... K_S: S equal slices of 0 .. in-1

With W stored column-major ((in, out) memory, :func:`gemv_layout`), the S slices of W are S
contiguous blocks, viewed without a copy as an (S, in/S, out) tensor. One batched matmul then
hands each thread one block to stream, and a sum over S (S x out numbers) joins them. On a
2-core EPYC this lifted GPT-2's GEMVs from 14-23 GB/s to 26-28 GB/s, as fast as a plain streaming
sum reads memory (see BENCHMARKS.md). Only the order of the additions changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SPLIT_MAX_ROWS = 16  # measured: from 64 rows on, plain F.linear is as fast or faster
SPLIT_MIN_WEIGHT = 1 << 17  # measured: a 4 x 128 GPT decodes faster unsplit, 6 x 256 split


def _split_count(in_features: int, threads: int) -> int:
    """The most slices (at most one per thread) that divide ``in_features`` evenly."""
    return max(s for s in range(1, threads + 1) if in_features % s == 0)


class Linear(nn.Linear):
    """``nn.Linear`` that, once :func:`gemv_layout` has prepared it, splits products of a few
    rows across CPU threads (module docstring). Parameters, state-dict keys and results (up to
    the order of float additions) are those of ``nn.Linear``; training never takes the split.
    """

    split_weight: Tensor | None = None  # (S, in/S, out) view of the column-major weight

    def prepare_split(self, threads: int) -> None:
        """View the column-major weight as ``threads``-or-fewer slices (or drop the view)."""
        w = self.weight
        s = _split_count(self.in_features, threads)
        ok = (s > 1 and w.device.type == "cpu" and w.dtype == torch.float32
              and w.t().is_contiguous() and w.numel() >= SPLIT_MIN_WEIGHT)
        self.split_weight = w.detach().t().view(s, -1, self.out_features) if ok else None

    def forward(self, x: Tensor) -> Tensor:
        ws = self.split_weight
        # the view shares the weight's memory, so in-place updates reach it; a weight replaced
        # by new memory (.to(), load into a new tensor) no longer matches, and goes the usual way
        if (ws is not None and x.numel() <= SPLIT_MAX_ROWS * self.in_features
                and not torch.is_grad_enabled() and ws.data_ptr() == self.weight.data_ptr()):
            s, k, out = ws.shape
            rows = x.reshape(-1, s, k).transpose(0, 1)  # (S, M, k)
            if self.bias is None:
                partial = torch.bmm(rows, ws)
            else:  # each slice adds bias / S, so the sum adds the bias once: one op fewer
                partial = torch.baddbmm(self.bias.view(1, 1, out), rows, ws, beta=1.0 / s)
            return partial.sum(0).view(*x.shape[:-1], out)
        return F.linear(x, self.weight, self.bias)


def gemv_layout(model: nn.Module) -> nn.Module:
    """Store every Linear's (out, in) weight column-major for decoding; values unchanged.

    Column-major memory is what :class:`Linear` splits across threads (prepared here for the
    current ``torch.get_num_threads()``), and even MKL's single-thread GEMV streams wide matrices
    faster from it: GPT-2's LM head (768 -> 50257) 1.6x and qkv (768 -> 2304) 1.3x at batch 1.
    Only strides change: shapes, values, state-dict keys and results stay the same, and
    ``load_state_dict`` copies into whatever layout a weight has. Idempotent.
    """
    threads = torch.get_num_threads()
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.is_contiguous() and min(m.weight.shape) > 1:
            m.weight.data = m.weight.data.t().contiguous().t()  # (out, in) view of (in, out)
        if isinstance(m, Linear):
            m.prepare_split(threads)
    return model
