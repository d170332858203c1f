"""Find the shapes in pictures: one JSON list per picture of label, score and box in pixels.

    plait detect --model runs/detect_scenes scene1.png scene2.png
    [{"label": "red circle", "score": 0.98, "box": [3.0, 4.0, 15.0, 16.0]}, ...]

The folder is what ``plait train configs/detect_scenes.toml`` writes. A picture of any size is
read whole (resized to the model's square input, boxes mapped back to its pixels); pictures
come as arguments or one path per line of standard input. ``--threshold`` drops shapes scored
lower (default 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="detector folder (plait train configs/detect_scenes.toml)")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (default: one path per line of standard input)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="lowest score reported (default 0.5)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import read_texts
    from plait.inference.scenes import ShapeDetector
    from plait.vision import open_image

    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    paths = read_texts(args.images)
    images = [open_image(p) for p in paths]  # every file checked before any output
    detector = ShapeDetector.from_folder(args.model, device=args.device)
    for i in range(0, len(images), 64):
        for found in detector.detect(images[i:i + 64], args.threshold):
            sys.stdout.write(json.dumps(found) + "\n")
        sys.stdout.flush()
    return 0
