"""Summarise articles in one sentence: one summary per line, in the order given.

    plait summarise --model runs/summarise "Acme GmbH said on Tuesday that it would buy ..."
    plait summarise --model runs/summarise --file article1.txt --file article2.txt
    cat articles.txt | plait summarise --model runs/summarise      (one article per line)

The folder is what ``plait train configs/summarise.toml`` writes: a pointer-generator that
writes common words and copies names, numbers and dates from the article (it cannot write one
that is not there). Articles are the arguments, the ``--file`` files (each file one article), or
else one per line of standard input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="summariser folder (plait train configs/summarise.toml)")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="articles to summarise (default: one per line of standard input)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="a UTF-8 text file holding one article (repeatable)")
    parser.add_argument("--max-words", type=int, default=60,
                        help="longest summary, in words and punctuation marks (default 60)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def articles(args: argparse.Namespace) -> list[str]:
    from plait.cli.common import read_texts

    texts = read_texts(args.texts) if args.texts else []
    for name in args.file:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"article file not found: {path}")
        try:
            text = " ".join(path.read_text(encoding="utf-8").split())
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not text:
            raise ValueError(f"{path} is empty")
        texts.append(text)
    return texts if texts else read_texts([])


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks
    from plait.inference.summarise import Summariser

    if args.max_words < 1:
        raise ValueError(f"--max-words must be >= 1, got {args.max_words}")
    texts = articles(args)
    summariser = Summariser.from_folder(args.model, device=args.device)
    for summary in in_chunks(texts, lambda chunk: summariser.summarise(chunk, args.max_words)):
        sys.stdout.write(summary + "\n")
        sys.stdout.flush()
    return 0
