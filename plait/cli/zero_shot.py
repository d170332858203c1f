"""Zero-shot image classification with a CLIP model: label probabilities for each image.

    plait zero-shot --model runs/clip_digits digit.png --labels "zero,one,two,three"
    plait zero-shot --model CLIP_DIR cat.jpg --labels "cat,dog" --template "a photo of a {}."

Each label's text embedding is the mean over a template ensemble (Radford et al. 2021, §3.1.4);
--template (repeatable) replaces the default ensemble.
"""

from __future__ import annotations

import argparse

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.",
                     "a drawing of a {}.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="CLIP model folder")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--labels", required=True, help="comma-separated class names")
    parser.add_argument("--template", action="append", metavar="T",
                        help="prompt template with {} for the label (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from plait.evaluation.retrieval import zero_shot_probs, zero_shot_weights
    from plait.inference import ClipEncoder
    from plait.vision import open_image

    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if len(labels) < 2:
        raise ValueError(f"--labels needs at least two comma-separated names, got {args.labels!r}")
    templates = tuple(args.template or DEFAULT_TEMPLATES)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"template {bad[0]!r} has no {{}} for the label")
    enc = ClipEncoder.from_folder(args.model, device=args.device)
    text = enc.embed_texts([t.format(lab) for lab in labels for t in templates])
    weights = zero_shot_weights(text.view(len(labels), len(templates), -1))  # (C, D)
    images = [open_image(p, enc.processor.config.max_pixels) for p in args.images]
    probs = zero_shot_probs(enc.embed_images(images), weights, enc.logit_scale)  # (N, C)
    for path, row in zip(args.images, probs.tolist(), strict=True):
        ranked = sorted(zip(labels, row, strict=True), key=lambda x: -x[1])
        print(f"{path}: " + ", ".join(f"{lab} {p:.3f}" for lab, p in ranked))
    return 0
