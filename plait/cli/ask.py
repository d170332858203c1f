"""Ask a vision-language folder a question about an image: the answer on one line.

    plait ask --model runs/vlm_scenes scene.png "how many shapes are there?"
    plait ask --model runs/vlm_scenes scene.png "where is the red circle?" --attention-map att.png

The image goes before the question; a question may instead place it with ``<image>`` (one per
image given). ``--attention-map FILE`` draws, for each answer word, where the decoder looked:
its attention over the image patches (mean over heads and layers), over the image.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="vision-language folder")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE... QUESTION",
                        help="one or more image files, then the question")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--attention-map", metavar="FILE", help="write a PNG of where it looked")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.inference.vlm import VisionAsker
    from plait.vision import open_image

    if len(args.inputs) < 2:
        raise ValueError("give an image and a question: plait ask --model DIR IMAGE QUESTION (a"
                         " vision-language model answers about an image; for text alone use"
                         " plait generate)")
    *paths, question = args.inputs
    if not question.strip():
        raise ValueError("the question is empty")
    asker = VisionAsker.from_folder(args.model, device=args.device)
    images = [open_image(p) for p in paths]
    answer = asker.ask_one(images, question, args.max_new_tokens, args.num_beams)
    print(answer)
    if args.attention_map:
        from plait.inference.attention_map import draw_attention

        draw_attention(asker, images[0], question, answer, args.attention_map)
    return 0
