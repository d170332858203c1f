"""Segment a picture: its class map as a PNG, and the shapes found as one JSON line.

    plait segment --model runs/segment_scenes scene.png --out mask.png [--overlay over.png]
    [{"label": "red circle", "score": 0.97, "box": [3, 4, 15, 16], "pixels": 118}, ...]

The folder is what ``plait train configs/segment_scenes.toml`` writes. ``--out`` is a paletted
PNG at the picture's size whose pixel values are class ids (0 background, then one per colour +
kind, in the order of the model's ``labels``), coloured for viewing; ``--overlay`` the picture
with those colours blended over its shapes. Output paths are checked before the model runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="segmenter folder (plait train configs/segment_scenes.toml)")
    parser.add_argument("image", metavar="IMAGE", help="the picture")
    parser.add_argument("--out", required=True, metavar="MASK.png", help="class map (PNG)")
    parser.add_argument("--overlay", metavar="PATH", help="also the picture with the classes"
                        " blended over it")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from plait.cli.common import writable
    from plait.inference.scenes import ShapeSegmenter, overlay
    from plait.io import atomic_write
    from plait.vision import open_image

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"cannot write a class map to {out}: it is written as PNG, give a"
                         " name ending in .png")
    writable(out)
    if args.overlay:
        writable(Path(args.overlay))
    image = open_image(args.image)
    mask, shapes = ShapeSegmenter.from_folder(args.model, device=args.device).segment(image)
    atomic_write(out, lambda tmp: mask.save(tmp, format="PNG"))
    if args.overlay:
        path, blended = Path(args.overlay), overlay(image, mask)
        fmt = Image.registered_extensions()[path.suffix.lower()]
        atomic_write(path, lambda tmp: blended.save(tmp, format=fmt))
    sys.stdout.write(json.dumps(shapes) + "\n")
    return 0
