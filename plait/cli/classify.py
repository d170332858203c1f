"""Classify texts with a sequence-classification folder: the label per line (or JSON).

    plait classify --model runs/speakers "O Romeo, Romeo! wherefore art thou Romeo?"
    cat speeches.txt | plait classify --model runs/speakers --probs

The folder is plait's (plait train configs/classify_speakers.toml) or a Hugging Face BERT,
RoBERTa or ALBERT *ForSequenceClassification folder. --probs prints, per line, a JSON object
{"label": ..., "probs": {label: probability}}.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="classifier folder")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to classify (default: one per line of standard input)")
    parser.add_argument("--probs", action="store_true", help="JSON with every label's probability")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.cli.common import in_chunks, read_texts
    from plait.inference.bert import TextClassifier

    texts = read_texts(args.texts)
    classifier = TextClassifier.from_folder(args.model, device=args.device)
    out = sys.stdout
    for label, probs in in_chunks(texts, classifier.predict):
        line = json.dumps({"label": label, "probs": probs}) if args.probs else label
        out.write(line + "\n")
        out.flush()
    return 0
