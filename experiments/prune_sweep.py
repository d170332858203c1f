"""Quality against sparsity: a trained GPT's validation perplexity as its MLPs are pruned.

    python -m experiments.prune_sweep --model runs/shakespeare_char --data data/shakespeare_char \\
        --out runs/prune_sweep

For each amount a in 0, 0.1, ..., 0.7, two copies of ``--model`` lose the same count of MLP
weights (a of every block's ``fc`` and ``proj``):

- **structured**: ``prune_mlp(model, a)`` removes a of the channels (the rows and columns go:
  smaller and faster; docs/efficiency.md §3);
- **magnitude**: ``magnitude_prune(mlp_linears(model), a)`` zeroes the a smallest-|w| MLP
  weights over all blocks together (shapes stay: no faster).

Neither is retrained: this is what pruning alone costs. Each copy's perplexity is measured on
the whole validation split of ``--data`` (or its first ``--max-batches`` batches). Writes
``<out>/prune_sweep.png`` (perplexity against the fraction of MLP weights removed, both kinds),
``<out>/prune_sweep.md`` (the table) and ``<out>/prune_sweep.json``, and prints the table.
Any plait or Hugging Face GPT folder works; ``--small`` runs three amounts on two batches.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

AMOUNTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SMALL_AMOUNTS = (0.0, 0.3, 0.6)


@torch.no_grad()
def perplexity(model: nn.Module, data: Path, batch: int = 16,
               max_batches: int | None = None) -> float:
    """exp(mean next-token cross-entropy) over the val split, in the model's context windows."""
    from plait.data.tokens import TokenDataset

    val = TokenDataset(data, "val")
    loss, count = 0.0, 0
    for i, (x, y) in enumerate(val.iter_eval_batches(model.config.block_size, batch)):
        if max_batches is not None and i >= max_batches:
            break
        logits = model(x)  # (B, T, V)
        loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return math.exp(loss / count)


def pruned(model: nn.Module, kind: str, amount: float) -> nn.Module:
    """A copy of ``model`` with ``amount`` of its MLP weights removed (structured) or zeroed."""
    from plait.nn import prune

    m = copy.deepcopy(model)
    if amount > 0 and kind == "structured":
        prune.prune_mlp(m, amount)
    elif amount > 0:
        prune.magnitude_prune(prune.mlp_linears(m), amount)
    return m.eval()


def sweep(model: nn.Module, data: Path, amounts: tuple[float, ...],
          max_batches: int | None) -> list[dict]:
    rows = []
    for a in amounts:
        row = {"amount": a}
        for kind in ("structured", "magnitude"):
            m = pruned(model, kind, a)
            row[kind] = perplexity(m, data, max_batches=max_batches)
            if kind == "structured":
                row["params"] = sum(p.numel() for p in m.parameters())
        rows.append(row)
        print(f"amount {a:.1f}: structured {row['structured']:.4f},"
              f" magnitude {row['magnitude']:.4f}", flush=True)
    return rows


def table(rows: list[dict], name: str) -> str:
    dense = rows[0]
    lines = [f"Validation perplexity of {name} with a fraction of its MLP weights removed"
             " (no retraining).", "",
             "| MLP weights removed | parameters | structured (channels removed) |"
             " magnitude (weights zeroed) |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['amount']:.0%} | {r['params'] / 1e6:.2f} M |"
                     f" {r['structured']:.3f} ({r['structured'] / dense['structured'] - 1:+.1%}) |"
                     f" {r['magnitude']:.3f} ({r['magnitude'] / dense['magnitude'] - 1:+.1%}) |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, name: str) -> None:
    """Perplexity against the fraction removed, one line per kind (the project's Agg style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * r["amount"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(x, [r["structured"] for r in rows], "o-", ms=3, label="structured: channels removed")
    ax.plot(x, [r["magnitude"] for r in rows], "s--", ms=3, label="magnitude: weights zeroed")
    ax.set_xlabel("MLP weights removed (%)")
    ax.set_ylabel("validation perplexity")
    ax.set_yscale("log")
    ax.set_title(f"pruning {name}, no retraining", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="a trained GPT folder")
    p.add_argument("--data", type=Path, default=Path("data/shakespeare_char"),
                   help="prepared token folder with val.bin (plait prepare-text)")
    p.add_argument("--out", type=Path, default=Path("runs/prune_sweep"))
    p.add_argument("--max-batches", type=int, default=None, help="val batches (default: all)")
    p.add_argument("--small", action="store_true", help="3 amounts, 2 batches: checks the script")
    args = p.parse_args(argv)
    import plait
    from plait.io import atomic_write_text

    model = plait.load(args.model)
    amounts = SMALL_AMOUNTS if args.small else AMOUNTS
    rows = sweep(model, args.data, amounts, 2 if args.small else args.max_batches)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.model.name
    md = table(rows, name)
    atomic_write_text(args.out / "prune_sweep.md", md)
    atomic_write_text(args.out / "prune_sweep.json", json.dumps(rows, indent=2) + "\n")
    plot(rows, args.out / "prune_sweep.png", name)
    print(md)
    print(f"wrote {args.out / 'prune_sweep.png'}, .md and .json")
    return rows


if __name__ == "__main__":
    main()
