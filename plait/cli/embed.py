"""Sentence embeddings from a sentence-transformers (or BERT) folder, one JSON array per line.

    plait embed --model all-MiniLM-L6-v2 "A cat sits." "Un chat est assis."
    cat sentences.txt | plait embed --model all-MiniLM-L6-v2 > vectors.jsonl

Texts come from the arguments, or else one per line of standard input; the output keeps the
input order. Pooling, normalisation and the length limit follow the folder's modules.json,
1_Pooling/config.json and sentence_bert_config.json, as sentence-transformers reads them.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="sentence-transformers folder (or a Hugging Face / plait BERT folder)")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to embed (default: one per line of standard input)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None,
                        help="store the weights in 8 or 4 bits (docs/efficiency.md)")


def run(args: argparse.Namespace) -> int:
    from plait.inference import SentenceEncoder

    texts = args.texts or [line.rstrip("\r\n") for line in sys.stdin]
    encoder = SentenceEncoder.from_folder(args.model, device=args.device, quantize=args.quantize)
    vectors = encoder.encode(texts, batch_size=args.batch_size)
    out = sys.stdout
    for row in vectors.tolist():
        out.write(json.dumps(row) + "\n")
    out.flush()
    return 0
