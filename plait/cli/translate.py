"""Translate texts with an encoder-decoder folder, one output line per input.

    plait translate --model runs/translate "jeudi 9 mars 2017" "trente-sept mille"
    cat written.txt | plait translate --model runs/translate --num-beams 4

The folder is plait's (plait train configs/translate.toml) or a Hugging Face BART, Marian or T5
folder with its tokenizer. Texts come from the arguments, or else one per line of stdin.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="encoder-decoder folder")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to translate (default: one per line of standard input)")
    parser.add_argument("--num-beams", type=int, default=1, metavar="B",
                        help="beam search with B beams (default 1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.seq2seq import Translator

    texts = read_texts(args.texts)
    translator = Translator.from_folder(args.model, device=args.device)
    translator.encode(texts)  # refuses a bad text before anything is printed
    out = sys.stdout
    for line in in_chunks(texts, lambda c: translator.translate(
            c, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)):
        out.write(line + "\n")
        out.flush()
    return 0
