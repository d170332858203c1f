"""Evaluate a CLIP model on a built-in task: retrieval recall@K and zero-shot accuracy.

    plait eval --model runs/clip_shapes --task clip-shapes
    plait eval --model runs/clip_digits --task clip-digits

clip-shapes: text->image and image->text recall@1/5/10 on held-out scenes whose colour+shape
pairs never occur in training, and zero-shot accuracy naming the pair of one-shape held-out
scenes. clip-digits: zero-shot accuracy on held-out digits with unseen prompt templates.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="CLIP model folder")
    parser.add_argument("--task", required=True, choices=("clip-shapes", "clip-digits"))
    parser.add_argument("--seed", type=int, default=0, help="data seed the model was trained on")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.evaluation.clip_eval import evaluate
    from plait.inference import ClipEncoder

    enc = ClipEncoder.from_folder(args.model, device=args.device)
    metrics = evaluate(enc, args.task, enc.processor.config.crop_size, seed=args.seed)
    for name, value in metrics.items():
        print(f"{name:>14}  {value:.4f}")
    return 0
