"""Find named entities with a token-classification folder: one JSON list per input line.

    plait tag --model runs/ner "Maria Rossi flew from Milano to Lyon on March 3, 2021."
    [{"type": "PER", "text": "Maria Rossi", "start": 0, "end": 11}, ...]

Each entity has its type, its text and its character offsets into the input. The folder is
plait's (plait train configs/ner.toml) or a Hugging Face *ForTokenClassification folder with
BIO labels in its id2label.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="tagger folder")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to tag (default: one per line of standard input)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.bert import Tagger

    texts = read_texts(args.texts)
    tagger = Tagger.from_folder(args.model, device=args.device)
    out = sys.stdout
    for entities in in_chunks(texts, tagger.tag):
        out.write(json.dumps(entities, ensure_ascii=False) + "\n")
        out.flush()
    return 0
