"""Memory bandwidth of this machine, and the decode roofline it implies.

Decoding one token at batch 1 multiplies a single vector by every weight matrix, so each weight
is read from memory once per token and the arithmetic is negligible: the best possible speed is

    tokens/s <= bandwidth (bytes/s) / weight bytes read per token         (the "roofline")

(Williams et al. 2009, "Roofline", CACM 52(4)). Bandwidth is measured the way decoding uses
memory: streaming reads of an array far larger than the caches (a sum), plus a copy for
reference (read + write bytes counted). Run: ``python -m benchmarks.bandwidth``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn


class Stream:
    """One streaming read (a sum) of a ``size_mb`` fp32 array per call; GB/s = bytes / seconds.

    For benchmarks that interleave a bandwidth reading with the work they set against it.
    """

    def __init__(self, size_mb: int = 1024):
        self.array = torch.rand(size_mb * 2**20 // 4)
        self.bytes = self.array.numel() * 4

    def __call__(self) -> None:
        self.array.sum()


def measure(size_mb: int = 1024, reps: int = 7, threads: int | None = None) -> dict[str, float]:
    """Median GB/s (1e9 bytes) of a streaming sum (read) and a copy (read + write), fp32."""
    if threads:
        torch.set_num_threads(threads)
    stream = Stream(size_mb)
    b = torch.empty_like(stream.array)
    read, copy = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        stream()
        read.append(stream.bytes / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        b.copy_(stream.array)
        copy.append(2 * stream.bytes / (time.perf_counter() - t0) / 1e9)
    return {"read": statistics.median(read), "copy": statistics.median(copy)}


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters, each counted once (tied embeddings / LM head share storage)."""
    # parameters() yields a tied Parameter once, so the shared embedding is not double-counted
    return sum(p.numel() * p.element_size() for p in model.parameters())


def roofline_tokens_per_s(model: nn.Module, read_gb_s: float) -> float:
    """Upper bound on batch-1 decode speed: all weights read once per token."""
    return read_gb_s * 1e9 / weight_bytes(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    bw = measure(args.size_mb, args.reps, args.threads)
    print(f"threads={args.threads} array={args.size_mb} MiB fp32:"
          f" read {bw['read']:.2f} GB/s, copy {bw['copy']:.2f} GB/s (median of {args.reps})")
    gpt2_bytes = 124_439_808 * 4  # GPT-2 small, tied embeddings counted once
    print(f"GPT-2 124M fp32 roofline at batch 1: {bw['read'] * 1e9 / gpt2_bytes:.1f} tok/s")


if __name__ == "__main__":
    main()
