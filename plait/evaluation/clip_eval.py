"""The built-in CLIP evaluations: retrieval on held-out shape scenes, zero-shot on held-out digits.

clip-shapes: the gallery is ``n_gallery`` held-out scenes (each contains a colour+shape pair
never seen in training) with pairwise-distinct content, so every caption has exactly one right
image; every caption is a text->image query, every image an image->text query (convention in
``plait.evaluation.retrieval``).

clip-digits: held-out digit images classified by the zero-shot ensemble of prompt templates that
never occur in training captions (``plait.data.digits.ZERO_SHOT_TEMPLATES``).
"""

from __future__ import annotations

import torch

from plait.evaluation.retrieval import (
    image_to_text_recall,
    text_to_image_recall,
    zero_shot_probs,
    zero_shot_weights,
)
from plait.inference import ClipEncoder

TASKS = ("clip-shapes", "clip-digits")
# never used in training captions (plait.data.scenes.TRAIN_TEMPLATES)
SHAPES_ZERO_SHOT_TEMPLATES = ("a photo of a {}", "a rendering of a {}", "there is a {}")


def eval_shapes(enc: ClipEncoder, image_size: int, n_gallery: int = 100,
                seed: int = 0, placed: bool = False) -> dict[str, float]:
    """recall@1/5/10 both ways on a gallery of distinct held-out scenes (``placed``: with the
    captions that place every shape, for a tower trained on those)."""
    from plait.data import scenes

    gallery = scenes.distinct_scenes(n_gallery, "heldout", seed)
    gallery = scenes.with_placed_captions(gallery, "heldout") if placed else gallery
    img = enc.embed_images([s.render(image_size) for s in gallery])  # (G, D)
    texts = [c for s in gallery for c in s.captions]
    owner = torch.tensor([i for i, s in enumerate(gallery) for _ in s.captions])  # (Q,)
    sim = enc.embed_texts(texts) @ img.T  # (Q, G)
    out = {f"t2i_r{k}": v for k, v in text_to_image_recall(sim, owner).items()}
    out.update({f"i2t_r{k}": v for k, v in image_to_text_recall(sim, owner).items()})
    out["zero_shot_acc"] = shapes_zero_shot(enc, image_size, seed)
    return out


def shapes_zero_shot(enc: ClipEncoder, image_size: int, seed: int = 0, n: int = 300) -> float:
    """Name the colour+shape of one-shape held-out scenes among all 24 pairs, with templates
    never used in training captions. Every such scene shows a pair never seen in training."""
    from plait.data.scenes import COLOURS, KINDS, scenes

    singles = [s for s in scenes(n, "heldout", seed) if len(s.shapes) == 1]
    labels = [(c, k) for c in COLOURS for k in KINDS]
    templates = SHAPES_ZERO_SHOT_TEMPLATES
    text = enc.embed_texts([t.format(f"{c} {k}") for c, k in labels for t in templates])
    weights = zero_shot_weights(text.view(len(labels), len(templates), -1))
    img = enc.embed_images([s.render(image_size) for s in singles])
    pred = zero_shot_probs(img, weights, enc.logit_scale).argmax(-1)
    truth = torch.tensor([labels.index(s.shapes[0].pair) for s in singles])
    return (pred == truth).float().mean().item()


def eval_digits(enc: ClipEncoder, image_size: int, seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy on held-out digits with never-trained prompt templates."""
    from plait.data.digits import class_prompts, load_digits_split

    held = load_digits_split("heldout", seed)
    prompts = class_prompts()  # (10 classes) x (P templates)
    P = len(prompts[0])
    text = enc.embed_texts([p for cls in prompts for p in cls])  # (10 * P, D)
    weights = zero_shot_weights(text.view(len(prompts), P, -1))  # (10, D)
    img = enc.embed_images([d.render(image_size) for d in held])  # (N, D)
    pred = zero_shot_probs(img, weights, enc.logit_scale).argmax(-1)
    labels = torch.tensor([d.label for d in held])
    return {"zero_shot_acc": (pred == labels).float().mean().item()}


def evaluate(enc: ClipEncoder, task: str, image_size: int, seed: int = 0) -> dict[str, float]:
    if task == "clip-shapes":
        return eval_shapes(enc, image_size, seed=seed)
    if task == "clip-digits":
        return eval_digits(enc, image_size, seed=seed)
    raise ValueError(f"unknown eval task {task!r} (known: {', '.join(TASKS)})")
