"""Cross-modal retrieval metrics and zero-shot classification over embeddings.

Retrieval convention (docs/clip.md), for a gallery of images each with one or more captions:

- text -> image: EVERY caption is a query; a hit at K when its own image is among the K images
  most similar to it.
- image -> text: every image is a query against ALL captions; a hit at K when ANY of its own
  captions is among the K captions most similar to it.

recall@K is the fraction of queries with a hit. Ties are broken by index (``torch.topk``).

Zero-shot (Radford et al. 2021, arXiv:2103.00020, §3.1.4): a class's weight is the mean of its
prompts' L2-normalised text embeddings over a template ensemble, renormalised; an image's class
probabilities are softmax(s * <image, weight>) with the model's logit scale s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def text_to_image_recall(sim: Tensor, caption_owner: Tensor,
                         ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """recall@K for caption queries.

    Args:
        sim: (Q, G) similarity of each caption to each gallery image.
        caption_owner: (Q,) index of the image each caption describes.
    """
    k_max = min(max(ks), sim.shape[1])
    top = sim.topk(k_max, dim=1).indices  # (Q, k_max)
    hit_rank = _first_hit(top == caption_owner[:, None])  # (Q,)
    return {k: (hit_rank < k).float().mean().item() for k in ks}


def image_to_text_recall(sim: Tensor, caption_owner: Tensor,
                         ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """recall@K for image queries: hit when ANY own caption ranks in the top K.

    Args:
        sim: (Q, G) caption-by-image similarity (the same matrix as text_to_image_recall).
        caption_owner: (Q,) index of the image each caption describes.
    """
    G = sim.shape[1]
    k_max = min(max(ks), sim.shape[0])
    top = sim.T.topk(k_max, dim=1).indices  # (G, k_max) caption ids
    own = caption_owner[top] == torch.arange(G, device=sim.device)[:, None]  # (G, k_max)
    hit_rank = _first_hit(own)
    return {k: (hit_rank < k).float().mean().item() for k in ks}


def _first_hit(hits: Tensor) -> Tensor:
    """(N, K) bool -> (N,) position of the first True, or K when there is none."""
    K = hits.shape[1]
    pos = torch.arange(K, device=hits.device).expand_as(hits)
    return torch.where(hits, pos, torch.full_like(pos, K)).min(dim=1).values


def zero_shot_weights(prompt_embeddings: Tensor) -> Tensor:
    """(C, P, D) embeddings of P prompts per class -> (C, D) unit class weights."""
    return F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(dim=1), dim=-1)


def zero_shot_probs(image_embeddings: Tensor, class_weights: Tensor,
                    logit_scale: float | Tensor = 100.0) -> Tensor:
    """(N, D) images, (C, D) class weights -> (N, C) probabilities."""
    return (logit_scale * F.normalize(image_embeddings, dim=-1) @ class_weights.T).softmax(-1)
