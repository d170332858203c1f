"""Train a model from a TOML recipe (single process, or DDP under torchrun).

Examples:
    plait train configs/shakespeare_char.toml
    plait train configs/shakespeare_char.toml --train.max_steps 500 --model.n_layer 2
    plait train configs/shakespeare_char.toml --resume          # continue from train.out_dir
    torchrun --nproc_per_node 2 -m plait.cli.main train configs/shakespeare_char.toml

Any recipe key can be overridden as --section.key VALUE (sections: model, data, train); values
are coerced to the field's type and unknown keys are errors. The output folder (train.out_dir)
is a model folder that `plait generate --model` and `plait.load` read, plus trainer_state.pt,
recipe.json, metrics.jsonl and loss.png.
"""

from __future__ import annotations

import argparse

from plait.config import parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML recipe with [model], [data] and [train] sections")
    parser.add_argument("--resume", action="store_true",
                        help="continue bit-for-bit from the checkpoint in train.out_dir")
    parser.set_defaults(_accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from plait.training import load_recipe, train

    recipe = load_recipe(args.config, parse_overrides(args.extra))
    train(recipe, resume=args.resume)
    return 0
