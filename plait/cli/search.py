"""Search an image index by text (or by an image) and print the best files with their scores.

    plait search runs/clip_shapes/heldout.faiss "a red triangle above a blue circle" -k 5
    plait search runs/clip_shapes/heldout.faiss --image query.png -k 5 --grid top.png

Scores are cosine similarities. The query is embedded by the model that built the index
(recorded beside it in INDEX.json; --model overrides).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX", help="index written by `plait index`")
    parser.add_argument("text", nargs="?", help="text query")
    parser.add_argument("--image", metavar="FILE", help="search by this image instead of text")
    parser.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    parser.add_argument("--grid", metavar="PNG", help="also write the results as a PNG grid")
    parser.add_argument("--model", metavar="DIR", help="model folder (default: the index's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.evaluation.index import SearchIndex, write_grid
    from plait.inference import ClipEncoder
    from plait.vision import open_image

    if (args.text is None) == (args.image is None):
        raise ValueError("give exactly one query: a TEXT argument or --image FILE")
    if args.k <= 0:
        raise ValueError(f"-k must be positive, got {args.k}")
    index = SearchIndex.load(args.index)
    enc = ClipEncoder.from_folder(args.model or index.model, device=args.device)
    if args.image is not None:
        query = enc.embed_images([open_image(args.image)])[0]
    else:
        query = enc.embed_texts([args.text])[0]
    results = index.search(query.numpy(), args.k)
    for file, score in results:
        print(f"{score:.4f}  {file}")
    if args.grid:
        write_grid(results, args.grid)
        print(f"grid -> {args.grid}")
    return 0
