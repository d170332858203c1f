"""Draw pictures from a prompt with an imagine folder (text to image).

    plait imagine --model runs/imagine_scenes "a red circle left of a blue square" --out x.png
    plait imagine --model runs/imagine_scenes "a green star" --num 8 --seed 3 --grid stars.png

One picture writes --out itself; --num N writes N files (x-1.png ... x-N.png) and --grid one
sheet of all of them. The same prompt, --num, --seed and sampling settings give the same
pictures. Sampling defaults are the ones the folder's recipe was evaluated with. Pictures are
the model's canvas (48 x 48) scaled up --scale times, without smoothing. Every output path is
checked before anything is drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from plait.cli.common import writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="imagine folder")
    parser.add_argument("prompt", help='what to draw, e.g. "a red circle left of a blue square"')
    parser.add_argument("--out", metavar="PATH", help="picture file (.png, .jpg, ...)")
    parser.add_argument("--grid", metavar="PATH", help="all pictures on one sheet")
    parser.add_argument("--num", type=int, default=1, help="pictures to draw")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed")
    parser.add_argument("--temperature", type=float, help="0 takes the likeliest token")
    parser.add_argument("--top-k", type=int, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--guidance", type=float,
                        help="classifier-free guidance scale (1: none)")
    parser.add_argument("--scale", type=int, default=4, help="pixels per canvas pixel")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def outputs(args: argparse.Namespace) -> tuple[list[Path], Path | None]:
    """The picture paths and the grid path, each checked writable; a ValueError otherwise."""
    if not args.out and not args.grid:
        raise ValueError("say where to write: --out PATH and/or --grid PATH")
    if args.num < 1 or args.scale < 1:
        raise ValueError(f"--num and --scale must be >= 1, got {args.num} and {args.scale}")
    files: list[Path] = []
    if args.out:
        out = Path(args.out)
        files = [out] if args.num == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}")
                                              for i in range(1, args.num + 1)]
    grid = Path(args.grid) if args.grid else None
    for path in [*files, *([grid] if grid else [])]:
        writable(path)
    return files, grid


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from plait.inference.imagine import Artist, grid
    from plait.io import atomic_write

    files, sheet = outputs(args)
    artist = Artist.from_folder(args.model, device=args.device)
    artist.check(args.prompt)
    pictures = artist.draw(args.prompt, args.num, args.seed, temperature=args.temperature,
                           top_k=args.top_k, guidance=args.guidance)
    big = [p.resize((p.width * args.scale, p.height * args.scale), Image.NEAREST)
           for p in pictures]

    def save(image: Image.Image, path: Path) -> None:
        fmt = Image.registered_extensions()[path.suffix.lower()]
        atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
        print(path)

    for image, path in zip(big, files, strict=False):
        save(image, path)
    if sheet is not None:
        save(grid(big, gap=2 * args.scale), sheet)
    return 0
