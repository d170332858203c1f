"""Prune a model: remove MLP channels and attention heads, or zero its smallest weights.

    plait prune --model runs/shakespeare_char --out runs/pruned --mlp 0.3
    plait prune --model runs/gpt --out runs/gpt_small --mlp 0.3 --heads 0.25
    plait prune --model runs/gpt --out runs/gpt_sparse --magnitude 0.5

--mlp and --heads remove that fraction of every block's MLP channels / attention heads (each
layer its lowest-scoring ones: docs/efficiency.md §3), so the model written is smaller and
faster. --magnitude zeroes that fraction of the blocks' smallest weights (over all of them
together) and keeps every shape: the quality reference, no faster. Steps run in that order:
heads, MLP, magnitude. --out is a normal model folder (tokenizer files copied beside it) that
every command's --model accepts.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

STEPS = ("heads", "mlp", "magnitude")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model folder to prune")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    p.add_argument("--mlp", type=float, default=None, metavar="A",
                   help="fraction of MLP channels to remove, in (0, 1)")
    p.add_argument("--heads", type=float, default=None, metavar="A",
                   help="fraction of attention heads to remove, in (0, 1)")
    p.add_argument("--magnitude", type=float, default=None, metavar="A",
                   help="fraction of the blocks' weights to zero (no speed-up), in (0, 1)")


def run(args: argparse.Namespace) -> int:
    from plait.nn import prune

    amounts = {s: getattr(args, s) for s in STEPS if getattr(args, s) is not None}
    if not amounts:
        raise ValueError("nothing to prune: give --mlp, --heads and/or --magnitude")
    for step, amount in amounts.items():
        prune.check_amount(amount, f"--{step}")
    src, dst = Path(args.model), Path(args.out)
    if dst.exists() and src.resolve() == dst.resolve():
        raise ValueError(f"--out is the --model folder ({src}); write to a new folder")

    import plait
    from plait.checkpoint import save_model
    from plait.training.state import TOKENIZER_FILES

    model = plait.load(src)
    before = sum(p.numel() for p in model.parameters())
    if "heads" in amounts:
        prune.prune_heads(model, amounts["heads"])
    if "mlp" in amounts:
        prune.prune_mlp(model, amounts["mlp"])
    if "magnitude" in amounts:
        prune.magnitude_prune(prune.block_linears(model), amounts["magnitude"])
    after = sum(p.numel() for p in model.parameters())
    save_model(model, dst)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    zeros = prune.sparsity(prune.block_linears(model))
    print(f"parameters {before:,} -> {after:,} ({after / before:.1%});"
          f" block weights zero: {zeros:.1%}")
    print(f"wrote {dst}")
    return 0
