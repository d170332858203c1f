"""Knowledge distillation for classifiers (Hinton, Vinyals & Dean 2015, "Distilling the
Knowledge in a Neural Network").

Several fine-tuning runs of one pretrained encoder, each from its own seed, disagree on many
texts, and the mean of their probabilities is more accurate than any one of them (a deep
ensemble, Lakshminarayanan et al. 2017). Distillation moves that into one model: the student
is fine-tuned as usual and, beside that, on texts nobody labelled, towards the teachers' mean
probabilities q:

    loss = CE(head(x), y)  +  weight * mean over unlabelled texts of  -sum_c q_c log p_c

(the soft cross-entropy; it differs from KL(q || p) by q's entropy, a constant). The teachers
are read once, before training (:func:`teacher_probs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from plait.text.base import encode_texts


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of -sum_c targets[c] log softmax(logits)[c]; (N, C) each."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


@torch.no_grad()
def teacher_probs(folders: Sequence[str | Path], texts: Sequence[str],
                  labels: Sequence[str], max_length: int, batch_size: int = 64) -> Tensor:
    """The mean of the classifiers in ``folders`` over their probabilities for ``texts``,
    (texts, labels). Each reads with its own tokenizer and the texts whole, as ``plait
    classify`` does; a folder that is not a classifier of exactly ``labels`` is an error
    naming it."""
    from plait.loading import load_as
    from plait.models.bert import Bert
    from plait.text import load_tokenizer

    total = torch.zeros(len(texts), len(labels))
    for folder in folders:
        model = load_as(folder, Bert, "a BERT-family classifier", "a classification recipe")
        if model.config.head != "classify" or tuple(model.config.labels) != tuple(labels):
            raise ValueError(f"teacher {folder}: its labels {list(model.config.labels)} are"
                             f" not the task's {list(labels)}")
        tokenizer = load_tokenizer(folder)
        whole = model.config.pools_tokens
        size = min(max_length, model.config.block_size)
        for i in range(0, len(texts), batch_size):
            ids, mask, owner = encode_texts(tokenizer, list(texts[i:i + batch_size]), size,
                                            whole)
            total[i:i + batch_size] += model.logits(ids, mask, owner=owner).softmax(-1)
    return total / len(folders)
