"""GB/s of one decode GEMV per GPT-2 weight shape: F.linear row-major, column-major, and split.

A batch-1 decode step multiplies one vector by each weight matrix, so its speed is the memory
bandwidth each product reaches. For every matrix shape of GPT-2 124M this times, on weights too
many to stay in cache (about 200 MB of copies per shape, used in turn):

* ``row``: ``F.linear`` on the (out, in) weight as stored (what ``transformers`` runs);
* ``col``: ``F.linear`` on the same values stored column-major (:func:`plait.nn.gemv_layout`);
* ``split``: :class:`plait.nn.Linear` on the column-major weight, the product split over threads;

and a streaming sum for the machine's read bandwidth. The contenders take turns each round.

    python -m benchmarks.gemv [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.bandwidth import Stream
from plait.nn import Linear, gemv_layout

SHAPES = {"qkv": (768, 2304), "attn proj": (768, 768), "mlp fc": (768, 3072),
          "mlp proj": (3072, 768), "LM head": (768, 50257)}  # (in, out)


def measure(n_in: int, n_out: int, bias: bool, rounds: int, stream: Stream,
            reads: list[float]) -> dict[str, float]:
    """GB/s of each contender on one shape; appends one bandwidth reading per round."""
    copies = max(1, 200_000_000 // (4 * n_in * n_out))
    layers = [gemv_layout(Linear(n_in, n_out, bias=bias)) for _ in range(copies)]
    rows = [lay.weight.contiguous() for lay in layers]  # the same values, row-major
    x = torch.randn(1, 1, n_in)
    cases = {
        "row": lambda: [F.linear(x, w, lay.bias) for w, lay in zip(rows, layers, strict=True)],
        "col": lambda: [F.linear(x, lay.weight, lay.bias) for lay in layers],
        "split": lambda: [lay(x) for lay in layers],
    }
    secs: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()
    for _ in range(rounds):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            secs[k].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stream()
        reads.append(stream.bytes / (time.perf_counter() - t0) / 1e9)
    return {k: 4 * n_in * n_out * copies / statistics.median(v) / 1e9 for k, v in secs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    stream = Stream(1024)
    reads: list[float] = []
    print(f"threads={args.threads}; GB/s of weight bytes read, median of {args.rounds} rounds")
    print("| matrix | in -> out | row (F.linear) | col (F.linear) | split (plait) |")
    print("|---|---|---:|---:|---:|")
    with torch.inference_mode():
        for name, (n_in, n_out) in SHAPES.items():
            gb = measure(n_in, n_out, name != "LM head", args.rounds, stream, reads)
            print(f"| {name} | {n_in} -> {n_out} | {gb['row']:.1f} | {gb['col']:.1f} |"
                  f" {gb['split']:.1f} |", flush=True)
    print(f"\nstreaming sum (read bandwidth): {statistics.median(reads):.1f} GB/s"
          f" (range {min(reads):.1f}-{max(reads):.1f})")


if __name__ == "__main__":
    main()
