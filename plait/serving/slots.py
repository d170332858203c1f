"""The shared KV store behind dynamic batching: rows of right-aligned sequences.

Every self-attention layer of the model keeps its keys and values in a
:class:`plait.nn.KVCache`. Here each layer's cache is pointed at the first ``n`` rows of one
store ``(rows, kv_heads, width, head_dim)`` (views, so the model writes straight into it), and
one mask ``(rows, width)`` says which columns of a row hold its tokens. Column ``col`` is where
every row's next token goes: a row's tokens occupy ``[start, col)``.

- ``prefill``: a new prompt runs alone into a scratch cache of its own length (the exact
  numbers of a batch-1 prefill), then is copied into row ``n`` so that it ends at ``col``
  (everyone first moves right when the prompt is longer than ``col``);
- ``step``: one token per row at column ``col``; when ``col`` has reached the width, or the
  columns no row uses any more outnumber the used ones, every row first moves left by them;
- ``remove``: the last row takes the freed row's place, so rows ``[0, n)`` stay dense.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from plait.nn import KVCache


class Slots:
    """Rows of a model's KV caches, shared by the sequences decoding together."""

    def __init__(self, model: Any, rows: int, width: int):
        self.model, self.rows, self.width = model, rows, width
        model.setup_cache(1, 1)  # builds each layer's cache (and the decoding weight layout)
        self.layers = [m for m in model.modules() if isinstance(getattr(m, "kv_cache", None),
                                                                  KVCache)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} keeps no KV cache to batch")
        if any(getattr(m, "cache_memory", False) for m in model.modules()):
            raise ValueError("encoder-decoder models are not served by the batching engine")
        self.k = [torch.zeros(rows, *m.kv_cache.k.shape[1:2], width, m.kv_cache.k.shape[3],
                              dtype=m.kv_cache.k.dtype, device=m.kv_cache.k.device)
                  for m in self.layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.device = self.k[0].device
        self.mask = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        self.start: list[int] = []  # each row's first column
        self.col = 0

    @property
    def n(self) -> int:
        return len(self.start)

    def _bind(self, n: int) -> None:
        for m, k, v in zip(self.layers, self.k, self.v, strict=True):
            m.kv_cache = KVCache.over(k[:n], v[:n])

    def prefill(self, ids: Tensor, inputs: dict[str, Any]) -> Tensor:
        """Run prompt ``ids`` (1, L) alone, place it as row ``n``; next-token logits (1, V)."""
        length, n = ids.shape[1], self.n
        if n >= self.rows or length > self.width:
            raise ValueError(f"no room for a prompt of {length} tokens (rows {n}/{self.rows})")
        scratch = [(torch.empty(1, k.shape[1], length, k.shape[3], dtype=k.dtype, device=k.device),
                    torch.empty(1, v.shape[1], length, v.shape[3], dtype=v.dtype, device=v.device))
                   for k, v in zip(self.k, self.v, strict=True)]
        for m, (k, v) in zip(self.layers, scratch, strict=True):
            m.kv_cache = KVCache.over(k, v)
        try:
            logits = self.model.prefill(ids, None, **inputs)
        finally:
            self._bind(n)  # the rows' views again, even when the prefill failed
        if length > self.col:
            self._shift(length - self.col)
        for (k, v), K, V in zip(scratch, self.k, self.v, strict=True):
            K[n, :, self.col - length:self.col] = k[0]
            V[n, :, self.col - length:self.col] = v[0]
        self.mask[n].zero_()
        self.mask[n, self.col - length:self.col] = 1
        self.start.append(self.col - length)
        self._bind(n + 1)
        return logits

    def step(self, tokens: Tensor) -> Tensor:
        """One token per row (n, 1) at column col; next-token logits (n, V)."""
        n = self.n
        unused = min(self.start)  # columns on the left that no row reads any more
        # every step reads all columns up to col: once the unused ones outnumber the used, move
        # left (a copy of the used columns, paid back within as many steps), and always at the
        # width. Measured: 32 streams of a GPT-2-sized model drifted to ~1000 columns of
        # which ~90 were used, and reading their keys and values bounded the step
        if unused and (self.col >= self.width or unused >= self.col - unused):
            self._shift(-unused)
        if self.col >= self.width:
            raise RuntimeError("a row has outgrown the KV store (prompt + max_tokens > width)")
        self.mask[:n, self.col] = 1
        logits = self.model.step(tokens, self.mask[:n, :self.col + 1], self.col)
        self.col += 1
        return logits

    def remove(self, i: int) -> None:
        """Free row ``i``: the last row moves into it."""
        last = self.n - 1
        if i != last:
            for K, V in zip(self.k, self.v, strict=True):
                K[i, :, :self.col] = K[last, :, :self.col]
                V[i, :, :self.col] = V[last, :, :self.col]
            self.mask[i] = self.mask[last]
            self.start[i] = self.start[last]
        self.start.pop()
        self.mask[last].zero_()
        if not self.start:
            self.col = 0
        self._bind(self.n)

    def reset(self) -> None:
        self.start.clear()
        self.mask.zero_()
        self.col = 0
        self._bind(0)

    def _shift(self, d: int) -> None:
        """Move every row's columns by ``d`` (right if > 0, left if < 0); col follows."""
        n, P = self.n, self.col
        if d == 0 or n == 0:
            self.col = max(P + d, 0) if n else max(d, 0)
            return
        src, dst = (slice(0, P), slice(d, P + d)) if d > 0 else (slice(-d, P), slice(0, P + d))
        for t in (*self.k, *self.v):
            t[:n, :, dst] = t[:n, :, src].clone()
        self.mask[:n, dst] = self.mask[:n, src].clone()
        if d > 0:
            self.mask[:n, :d] = 0
        else:
            self.mask[:n, P + d:] = 0
        self.start = [s + d for s in self.start]
        self.col = P + d


__all__ = ["Slots"]
