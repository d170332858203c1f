"""Translation metrics: exact match and sacreBLEU (Post 2018, arXiv:1804.08771), overall and
per group (``date-ru``, ``number-de``, ...).

sacreBLEU runs on the detokenised outputs with its ``char`` tokenizer: the canonical forms are
one "word" each ("2017-03-09"), so word n-grams would score a near miss as a total miss, while
characters give partial credit for a wrong digit. The signature is printed with the score
(``sacrebleu.corpus_bleu(..., tokenize="char")``) so the number can be reproduced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sacrebleu

BLEU_TOKENIZER = "char"


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)],
                                 tokenize=BLEU_TOKENIZER).score


def exact(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    return sum(h == r for h, r in zip(hypotheses, references, strict=True)) / max(len(references),
                                                                                  1)


def score(translator: Any, examples: Sequence[Any], beams: tuple[int, ...] = (1,),
          per_group: bool = True) -> dict[str, float]:
    """``exact`` and ``bleu`` of greedy decoding (``exact_beam4`` for 4 beams), and with
    ``per_group`` the same for every group of examples (``exact_date-ru``, ``bleu_date-ru``)."""
    refs = [e.target for e in examples]
    out: dict[str, float] = {}
    for beam in beams:
        hyps = translator.translate([e.source for e in examples], num_beams=beam)
        tag = "" if beam == 1 else f"_beam{beam}"
        out[f"exact{tag}"] = exact(hyps, refs)
        out[f"bleu{tag}"] = bleu(hyps, refs)
        if per_group and beam == 1:
            groups: dict[str, list[int]] = defaultdict(list)
            for i, e in enumerate(examples):
                groups[e.group].append(i)
            for g, idx in groups.items():
                out[f"exact_{g}"] = exact([hyps[i] for i in idx], [refs[i] for i in idx])
                out[f"bleu_{g}"] = bleu([hyps[i] for i in idx], [refs[i] for i in idx])
    return out
