"""Structured pruning (plait.nn.prune) against the dense model: speed, size and quality.

* **speed**: a random GPT-2-124M-shaped plait GPT (``GPTConfig()``: 12 x 768, 50257 tokens),
  fp32 on the CPU, and three pruned copies: 30 % of the MLP channels removed; 30 % of the MLP
  channels and 25 % of the heads removed; and 30 % of the MLP weights zeroed by magnitude (the
  same count of weights as the first, masked instead of removed: shapes and speed unchanged).
  Each round times, for every model in turn (:mod:`benchmarks.timing`), one forward of
  1 x 128 tokens (all logits) and greedy decoding at batch 1 (16 prompt + ``--new-tokens``).
* **ppl** (with ``--ppl-model DIR``): the same four prunings of a trained character model and
  their validation perplexity on ``--ppl-data`` (the quality the speed costs, untuned: no
  retraining after pruning). ``experiments/prune_sweep.py`` draws the whole curve.

    python -m benchmarks.prune_speed
    python -m benchmarks.prune_speed --ppl-model runs/shakespeare_char
    python -m benchmarks.prune_speed --small          # seconds: checks the script
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

import plait
from benchmarks.timing import fmt, interleaved
from plait.models.gpt import GPT, GPTConfig
from plait.nn import prune

MLP, HEADS = 0.3, 0.25


def _mlp(m: nn.Module) -> None:
    prune.prune_mlp(m, MLP)


def _mlp_heads(m: nn.Module) -> None:
    prune.prune_heads(m, HEADS)
    prune.prune_mlp(m, MLP)


def _magnitude(m: nn.Module) -> None:
    prune.magnitude_prune(prune.mlp_linears(m), MLP)


VARIANTS: dict[str, Callable[[nn.Module], None] | None] = {
    "dense": None,
    f"MLP -{MLP:.0%}": _mlp,
    f"MLP -{MLP:.0%}, heads -{HEADS:.0%}": _mlp_heads,
    f"MLP weights -{MLP:.0%} by magnitude (masked)": _magnitude,
}


def variants(model: nn.Module) -> dict[str, nn.Module]:
    out = {}
    for name, fn in VARIANTS.items():
        m = copy.deepcopy(model) if fn is not None else model
        if fn is not None:
            fn(m)
        out[name] = m.eval()
    return out


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def speed(args: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    cfg = (GPTConfig(vocab_size=1000, n_layer=2, n_head=4, n_embd=64, block_size=256)
           if args.small else GPTConfig())
    models = variants(GPT(cfg))
    ids = torch.randint(0, cfg.vocab_size, (1, args.tokens))
    prompt = ids[:, :16]
    for m in models.values():
        m.generate(prompt, max_new_tokens=2)  # warm-up; the decode weight layout is set here
    fwd = interleaved({k: (lambda m=m: m(ids)) for k, m in models.items()}, args.reps)
    gen = interleaved({k: (lambda m=m: m.generate(prompt, max_new_tokens=args.new_tokens))
                       for k, m in models.items()}, args.reps, warmup=0)
    ms = {k: 1e3 * statistics.median(t) for k, t in fwd.items()}
    tok_s = {k: args.new_tokens / statistics.median(t) for k, t in gen.items()}
    dense = next(iter(models))
    lines = [f"| GPT-2 {'small' if args.small else '124M'}-shaped, fp32 | parameters |"
             f" forward 1x{args.tokens} ms (median) | speed-up | greedy decode tok/s"
             f" (16+{args.new_tokens}) | speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for k, m in models.items():
        lines.append(f"| {k} | {n_params(m):,} | {fmt(ms[k])} |"
                     f" {ms[dense] / ms[k]:.2f}x | {fmt(tok_s[k])} |"
                     f" {tok_s[k] / tok_s[dense]:.2f}x |")
    return lines


@torch.no_grad()
def ppl(args: argparse.Namespace) -> list[str]:
    from benchmarks.quant_speed import perplexity

    models = variants(plait.load(args.ppl_model))
    p = {k: perplexity(m, args.ppl_data) for k, m in models.items()}
    dense = p["dense"]
    return [f"| {args.ppl_model} val perplexity ({args.ppl_data}) | "
            + " | ".join(f"{k}: {v:.4f} ({v / dense - 1:+.2%})" for k, v in p.items()) + " |"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="a tiny model: checks the script")
    p.add_argument("--reps", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--tokens", type=int, default=128, help="forward length (default 128)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens decoded (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--ppl-model", type=Path, default=None, help="a trained character GPT")
    p.add_argument("--ppl-data", type=Path, default=Path("data/shakespeare_char"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# prune_speed: torch {torch.__version__}, {platform.processor() or platform.machine()},"
          f" {torch.get_num_threads()} threads")
    for line in speed(args):
        print(line)
    if args.ppl_model is not None:
        print()
        for line in ppl(args):
            print(line)


if __name__ == "__main__":
    main()
