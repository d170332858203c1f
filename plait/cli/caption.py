"""Caption images with a vision-language folder: one caption per line.

    plait caption --model runs/vlm_scenes scene1.png scene2.png
    ls *.png | plait caption --model runs/vlm_scenes --num-beams 4

The folder is plait's (plait train configs/vlm_scenes.toml). Images are read safely (a file
that is not a readable image is one error naming it).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="vision-language folder")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (default: one path per line of standard input)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.vlm import VisionAsker
    from plait.vision import open_image

    paths = read_texts(args.images)
    asker = VisionAsker.from_folder(args.model, device=args.device)
    images = [open_image(p) for p in paths]  # every file checked before any output

    def work(chunk: list[str]) -> list[str]:
        batch = [images[paths.index(p)] for p in chunk]
        return asker.caption(batch, args.max_new_tokens, args.num_beams)

    for caption in in_chunks(paths, work):
        sys.stdout.write(caption + "\n")
        sys.stdout.flush()
    return 0
