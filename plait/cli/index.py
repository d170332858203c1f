"""Build a faiss image-search index from a folder of images with a CLIP model.

    plait index --model runs/clip_shapes runs/clip_shapes/heldout --out heldout.faiss

--model is a plait CLIP folder or a Hugging Face CLIP folder (its preprocessor_config.json gives
the image size and normalisation). Every file under IMAGES_DIR is tried; one that is not a
readable image (empty, truncated, not an image, over --max-megapixels) is skipped with a one-line
warning naming it. Writes OUT (the vectors) and OUT.json (files in row order, model folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="CLIP model folder")
    parser.add_argument("images", metavar="IMAGES_DIR",
                        help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, metavar="INDEX", help="index file to write")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--max-megapixels", type=float, default=90.0,
                        help="skip larger images (decompression-bomb guard)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from plait.evaluation.index import SearchIndex, embed_files, list_files
    from plait.inference import ClipEncoder

    if args.batch_size <= 0 or args.max_megapixels <= 0:
        raise ValueError("--batch-size and --max-megapixels must be positive")
    files = list_files(args.images)
    if not files:
        print(f"plait index: error: no files in {args.images}; nothing to index", file=sys.stderr)
        return 2
    enc = ClipEncoder.from_folder(args.model, device=args.device)
    enc.processor.config = enc.processor.config.replace(
        max_pixels=int(args.max_megapixels * 1e6))
    vectors, kept = embed_files(enc, files, args.batch_size, progress=not args.quiet)
    if not kept:
        print(f"plait index: error: none of the {len(files)} files in {args.images} is a"
              " readable image", file=sys.stderr)
        return 2
    index = SearchIndex.build(vectors, [str(p) for p in kept], str(Path(args.model).resolve()))
    index.save(args.out)
    skipped = len(files) - len(kept)
    print(f"indexed {len(kept)} images ({skipped} skipped) -> {args.out}")
    return 0
