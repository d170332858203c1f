"""Recommend catalogue items for a history of pictures: one JSON list per history.

    plait recommend --model runs/recommend --history runs/recommend/items/0001.png,b.png -k 10
    [{"item": 17, "caption": "a picture of a red star", "image": "runs/recommend/items/0017.png",
      "cold": false, "score": 4.21}, ...]

The folder is what ``plait train configs/recommend.toml`` writes (the two towers, the
catalogue and its CLIP). ``--history`` takes comma-separated image files; repeat it for several
users. Pictures of catalogue items in a history are not recommended back; ``cold`` marks items
no training history held.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="recommender folder (plait train configs/recommend.toml)")
    parser.add_argument("--history", required=True, action="append", metavar="A.png,B.png",
                        help="a user's pictures, comma-separated (repeat for more users)")
    parser.add_argument("-k", type=int, default=10, help="items to recommend (default 10)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def histories(given: list[str]) -> list[list[str]]:
    """Each ``--history`` value split at commas; an empty one is an error naming it."""
    out = []
    for i, value in enumerate(given, 1):
        paths = [p.strip() for p in value.split(",") if p.strip()]
        if not paths:
            raise ValueError(f"--history {i} is empty: give image files separated by commas")
        out.append(paths)
    return out


def run(args: argparse.Namespace) -> int:
    from plait.inference.recommend import Recommender
    from plait.vision import open_image

    if args.k <= 0:
        raise ValueError(f"-k must be a positive number of items, got {args.k}")
    users = histories(args.history)
    pictures = [[open_image(p) for p in paths] for paths in users]  # all checked first
    recommender = Recommender.from_folder(args.model, device=args.device)
    for history in pictures:
        sys.stdout.write(json.dumps(recommender.recommend(history, args.k)) + "\n")
        sys.stdout.flush()
    return 0
