"""LoRA against full fine-tuning of a GPT-2-sized model, on the same data and steps.

    python -m experiments.lora_vs_full --base path/to/gpt2 --out runs/lora_vs_full
    python -m experiments.lora_vs_full --out runs/lora_vs_full --pretrain-minutes 20  # no base

``--base``: a GPT-2-sized model folder with its tokenizer (Hugging Face's ``gpt2`` saved
locally, or any plait or Hugging Face GPT folder); nothing is downloaded. Without it, a base is
pretrained first: GPT-2 small's 12 x 768 layers (85M parameters with a char vocabulary) on the
first half of ``data/tinyshakespeare.txt`` for ``--pretrain-minutes``.

The fine-tuning data is the second half of the text (which a base pretrained here never saw),
tokenized with the base's tokenizer, its last 10 % held out. Three runs, each in its own folder
under ``--out``:

- ``base``: LoRA at lr 0 for one step, i.e. the base's own loss on the held-out split;
- ``full``: every weight trains (AdamW, ``--full-lr``);
- ``lora``: rank ``--rank`` adapters on ``--targets`` (``[lora]``), only they train
  (``--lora-lr``).

Both fine-tunings take ``--steps`` optimizer steps on the same batches (the same seed), or with
``--minutes`` the same wall-clock time each instead (the lr decay then follows the clock), and
are then measured on the whole held-out split. Prints each final val loss,
the steps taken and the trainable fraction, and writes ``<out>/results.json``.

How long: the two runs (``2 x --minutes`` when timed) plus three whole-split evaluations and
start-up, and ``--pretrain-minutes`` when there is no base: on one GPU a few minutes each. On
a 2-core CPU one step of a 124M model on 16 x 256 tokens takes tens of seconds: use a GPU, or
fewer tokens a step (``--batch-size 4 --block-size 128``: a few seconds a step).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt")
GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "dropout": 0.0}


def write_tokens(tokenizer, text: str, out: Path, vocab_size: int) -> None:
    """``text`` as a prepared LM folder (train.bin, val.bin, meta.json; last 10 % val)."""
    from plait.data.tokens import META_FILE, token_dtype

    out.mkdir(parents=True, exist_ok=True)
    cut = len(text) - len(text) // 10
    dtype = token_dtype(vocab_size)
    counts = {}
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        ids = np.asarray(tokenizer.encode(part), dtype=dtype)
        ids.tofile(out / f"{split}.bin")
        counts[split] = int(ids.size)
    meta = {"dtype": dtype.name, "vocab_size": vocab_size, "train_tokens": counts["train"],
            "val_tokens": counts["val"], "source": "tinyshakespeare, second half",
            "tokenizer": "base", "val_fraction": 0.1, "eos_token_id": tokenizer.eos_token_id}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def pretrain_base(text: str, out: Path, minutes: float, block_size: int,
                  batch_size: int) -> Path:
    """A GPT-2-sized char model trained on the first half of ``text``; returns its folder."""
    from plait.data.tokens import build_tokenizer
    from plait.training import recipe_from_dict, train

    tok = build_tokenizer("char", text, None)  # the whole text's characters: both halves fit
    data = out / "data_pretrain"
    write_tokens(tok, text[: len(text) // 2], data, tok.vocab_size)
    tok.save(data)
    train(recipe_from_dict({
        "model": {**GPT2_SMALL, "block_size": block_size},
        "data": {"dir": str(data), "batch_size": batch_size},
        "train": {"out_dir": str(out / "pretrained"), "max_steps": 100_000,
                  "max_minutes": minutes, "lr": 6e-4, "min_lr": 6e-5, "warmup_steps": 50,
                  "eval_interval": 0, "eval_batches": 20, "progress": False},
    }))
    return out / "pretrained"


def fine_tune_data(base: Path, text: str, out: Path) -> Path:
    """The second half of ``text`` in the base's tokens, with the base's tokenizer files."""
    from plait.checkpoint import read_model_config
    from plait.text import load_tokenizer

    data = out / "data_finetune"
    write_tokens(load_tokenizer(base), text[len(text) // 2:], data,
                 int(read_model_config(base)["vocab_size"]))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, data / name)
    return data


def run(name: str, base: Path, data: Path, out: Path, args: argparse.Namespace,
        lora: dict | None, lr: float, minutes: float, steps: int) -> dict:
    """One fine-tuning run; returns its final metrics, steps, seconds and parameter counts."""
    from plait.training import recipe_from_dict, train

    tree = {"data": {"dir": str(data), "batch_size": args.batch_size,
                     "block_size": args.block_size},
            "train": {"out_dir": str(out / name), "init_from": str(base), "max_steps": steps,
                      "max_minutes": minutes, "lr": lr, "min_lr": lr / 10,
                      "warmup_steps": min(50, steps - 1), "weight_decay": 0.0,
                      "eval_interval": 0, "progress": False, "seed": args.seed}}
    if lora is not None:
        tree["lora"] = lora
    metrics = train(recipe_from_dict(tree))
    start = json.loads((out / name / "metrics.jsonl").read_text().splitlines()[0])
    total = start["trainable_params"] + start["frozen_params"]
    return {**metrics, "trainable_params": start["trainable_params"], "params": total,
            "trainable_fraction": start["trainable_params"] / total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, help="a GPT-2-sized model folder with its tokenizer")
    p.add_argument("--out", type=Path, default=Path("runs/lora_vs_full"))
    p.add_argument("--text", type=Path, default=Path("data/tinyshakespeare.txt"))
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per fine-tuning")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="equal training time per fine-tuning instead of equal steps")
    p.add_argument("--pretrain-minutes", type=float, default=20.0)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="qkv,proj,fc", help="LoRA target patterns, comma-separated")
    p.add_argument("--full-lr", type=float, default=1e-4)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args()
    text = args.text.read_text(encoding="utf-8")
    base = args.base or pretrain_base(text, args.out, args.pretrain_minutes, args.block_size,
                                         args.batch_size)
    data = fine_tune_data(base, text, args.out)
    lora = {"rank": args.rank, "alpha": args.alpha, "dropout": 0.05,
            "targets": args.targets.split(",")}
    steps = 100_000 if args.minutes > 0 else args.steps  # timed: the clock ends each run
    results = {
        "base": run("base", base, data, args.out, args, lora, 0.0, 0.0, 1),
        "full": run("full", base, data, args.out, args, None, args.full_lr, args.minutes,
                    steps),
        "lora": run("lora", base, data, args.out, args, lora, args.lora_lr, args.minutes,
                    steps),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nheld-out loss on the second half of {args.text} (nats/token), base {base}:")
    for name, r in results.items():
        print(f"  {name:5s} val loss {r['val_loss']:.4f} after {r['step']} steps in"
              f" {r['train_s']:.0f}s; trainable {r['trainable_params']:,} of {r['params']:,}"
              f" ({100 * r['trainable_fraction']:.2f} %)")


if __name__ == "__main__":
    main()
