"""Tokenize a text file into train.bin / val.bin for language-model training.

Example:
    plait prepare-text data/tinyshakespeare.txt --tokenizer char --out data/shakespeare_char
    plait prepare-text data/tinyshakespeare.txt --tokenizer bpe --vocab-size 1024 --out data/sh_bpe

Writes DIR/train.bin and DIR/val.bin (raw uint16/uint32 ids), DIR/tokenizer.json and
DIR/meta.json. The validation split is the last --val-fraction of the text.
"""

from __future__ import annotations

import argparse

from plait.data.tokens import prepare_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="UTF-8 text file to tokenize")
    parser.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                        help="char: one id per distinct character (default); "
                             "bpe: byte-level BPE")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="BPE vocabulary size, >= 257 (default 1024); not used by char")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of the text, taken from its end, kept for validation")


def run(args: argparse.Namespace) -> int:
    prepare_text(args.file, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                 val_fraction=args.val_fraction)
    return 0
