"""Evaluation: retrieval recall@K, zero-shot classification, a faiss image index, task evals.

Heavy pieces (faiss) are imported only when their functions run.
"""

from plait.evaluation.retrieval import (
    image_to_text_recall,
    text_to_image_recall,
    zero_shot_probs,
    zero_shot_weights,
)

__all__ = ["image_to_text_recall", "text_to_image_recall", "zero_shot_probs", "zero_shot_weights"]
