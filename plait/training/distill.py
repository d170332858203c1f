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


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of -sum_c targets[c] log softmax(logits)[c]; (N, C) each."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def teacher_probs(folders: Sequence[str | Path], texts: Sequence[str],
                  labels: Sequence[str]) -> Tensor:
    """The mean of the classifiers in ``folders`` over their probabilities for ``texts``,
    (texts, labels), each read as ``plait classify`` reads them (its own tokenizer, a long
    text whole: :class:`plait.inference.bert.TextClassifier`); a folder that is not a
    classifier of exactly ``labels`` is an error naming it."""
    from plait.inference.bert import TextClassifier

    total = torch.zeros(len(texts), len(labels))
    for folder in folders:
        teacher = TextClassifier.from_folder(folder)
        if tuple(teacher.labels) != tuple(labels):
            raise ValueError(f"teacher {folder}: its labels {list(teacher.labels)} are not the"
                             f" task's {list(labels)}")
        total += teacher.probs(texts, batch_size=64)
    return total / len(folders)
