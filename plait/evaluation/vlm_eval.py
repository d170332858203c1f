"""Held-out evaluation of a scene VLM: captions (content exact, BLEU-4) and answers (accuracy
overall and per question kind).

A caption is right when the (colour, kind) pairs it names are exactly the scene's
(:func:`plait.data.scenes.mentioned`); BLEU-4 is sacreBLEU's corpus score on detokenised text
against each scene's canonical caption. Questions are asked in their first phrasing, one turn
each, and an answer is right when it equals the reference exactly (a colour answer may give
the shape's true place first, :func:`plait.data.scenes.answer_right`).
(The answer-token loss of the same scenes is the task's, beside these.)
"""

from __future__ import annotations

from collections import defaultdict

from torch import Tensor

from plait.data.scenes import (
    QUESTION_KINDS,
    Scene,
    answer_right,
    canonical_caption,
    mentioned,
)


def evaluate_scenes(asker, held: list[Scene], pixels: Tensor,
                    questions: bool) -> dict[str, float]:
    """Caption metrics (and, with ``questions``, answer accuracy overall and per kind) of the
    ``held`` scenes, whose preprocessed images are ``pixels`` (N, 3, H, W)."""
    import sacrebleu

    refs = [canonical_caption(s.shapes) for s in held]
    caps = asker.caption(pixels)
    n = len(held)
    out = {"caption_exact": sum(mentioned(c) == s.key for c, s in zip(caps, held, strict=True))
           / n, "caption_bleu4": sacrebleu.corpus_bleu(caps, [refs]).score}
    if questions:
        asked = [(i, q) for i, s in enumerate(held) for q in s.qa]
        answers = asker.ask(pixels[[i for i, _ in asked]], [q.question for _, q in asked])
        right: dict[str, list[bool]] = defaultdict(list)
        for (i, q), a in zip(asked, answers, strict=True):
            right[q.kind].append(answer_right(held[i], q, a))
        out["vqa_accuracy"] = sum(sum(v) for v in right.values()) / len(asked)
        out.update({f"vqa_{k}": sum(right[k]) / len(right[k]) for k in QUESTION_KINDS
                    if right[k]})
    return out
