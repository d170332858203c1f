"""Held-out evaluation of a scene VLM: captions (content exact, BLEU-4) and answers (accuracy
overall and per question kind), with the answer-token loss of the canonical turns.

A caption is right when the (colour, kind) pairs it names are exactly the scene's
(:func:`plait.data.scenes.mentioned`); BLEU-4 is sacreBLEU's corpus score on detokenised text
against each scene's canonical caption. Questions are asked in their first phrasing, one turn
each, and an answer is right when it equals the reference exactly.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from plait.data.scenes import QUESTION_KINDS, canonical_caption, mentioned, scenes
from plait.inference.vlm import CAPTION_QUESTION
from plait.vision import normalize


def evaluate_scenes(asker, task, n: int, questions: bool,
                    device: torch.device) -> dict[str, float]:
    """Metrics on the first ``n`` held-out scenes (``task`` supplies the image size, seed and
    batching)."""
    import sacrebleu

    from plait.training.tasks import to_device
    from plait.training.tasks.vlm import _uint8

    held = scenes(n, "heldout", task.data.seed)
    uint8 = torch.stack([_uint8(s, task.data.image_size) for s in held])
    cfg = task.image_config
    pixels = normalize(uint8.float() / 255.0, cfg.mean, cfg.std)
    refs = [canonical_caption(s.shapes) for s in held]
    caps = asker.caption(pixels)
    out = {"caption_exact": sum(mentioned(c) == s.key for c, s in zip(caps, held, strict=True))
           / n, "caption_bleu4": sacrebleu.corpus_bleu(caps, [refs]).score}
    turns = [[(CAPTION_QUESTION, r)] for r in refs]
    if questions:
        asked = [(i, q) for i, s in enumerate(held) for q in s.qa]
        answers = asker.ask(pixels[[i for i, _ in asked]], [q.question for _, q in asked])
        right: dict[str, list[bool]] = defaultdict(list)
        for (_, q), a in zip(asked, answers, strict=True):
            right[q.kind].append(a == q.answer)
        out["vqa_accuracy"] = sum(sum(v) for v in right.values()) / len(asked)
        out.update({f"vqa_{k}": sum(right[k]) / len(right[k]) for k in QUESTION_KINDS
                    if right[k]})
        turns = [t + [(q.question, q.answer) for q in s.qa] for t, s in zip(turns, held,
                                                                              strict=True)]
    total, count = 0.0, 0
    for i in range(0, n, 64):
        batch = to_device(task.batch(uint8[i:i + 64], turns[i:i + 64]), device)
        k = task.count(batch)
        total += float(task.loss(asker.model, batch)) * k
        count += k
    return {"loss": total / max(count, 1), **out}
