"""Read relation triples from text: one JSON list per input line.

    plait relations --model runs/relations "Anna Weber, a native of Lyon, works for Acme GmbH."
    [{"head": "Anna Weber", "head_type": "PER", "relation": "born in", "tail": "Lyon", ...}, ...]

The folder is what ``plait train configs/relations.toml`` writes: an entity tagger (its
``tagger/`` stage, or ``--tagger DIR``) finds people, places, organisations and dates, and the
relation classifier labels every pair a relation could join ("works for", "born in", "located
in", "founded on"; pairs it calls "none" are not printed). Texts are the arguments or, with
none, one per line of standard input.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="relation folder (plait train configs/relations.toml)")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to read (default: one per line of standard input)")
    parser.add_argument("--tagger", metavar="DIR", default=None,
                        help="entity tagger folder (default: DIR/tagger)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.relations import RelationExtractor

    texts = read_texts(args.texts)
    extractor = RelationExtractor.from_folder(args.model, device=args.device, tagger=args.tagger)
    out = sys.stdout
    for triples in in_chunks(texts, extractor.extract):
        out.write(json.dumps(triples, ensure_ascii=False) + "\n")
        out.flush()
    return 0
