"""Speech recognition metrics: word and character error rates (jiwer), overall and per kind.

WER = (substitutions + deletions + insertions) / reference words, summed over the corpus
before dividing (jiwer's corpus rate, not a mean of per-utterance rates, so a short
utterance weighs by its words). CER is the same over characters, spaces included. Both can
exceed 1 when a hypothesis babbles. Transcripts are compared as written: the speech data's
transcripts are lower case without punctuation already (``plait.data.speech``), so no
normalisation is applied that could hide an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import jiwer


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate of ``hypotheses`` against non-empty ``references``."""
    _check(references, hypotheses)
    return float(jiwer.wer(list(references), list(hypotheses)))


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate (spaces count as characters)."""
    _check(references, hypotheses)
    return float(jiwer.cer(list(references), list(hypotheses)))


def score(references: Sequence[str], hypotheses: Sequence[str],
          kinds: Sequence[str] | None = None) -> dict[str, float]:
    """``wer``, ``cer`` and ``exact`` (the share of utterances transcribed without an error),
    and with ``kinds`` (one label per utterance) ``wer_<kind>`` for each kind."""
    out = {"wer": wer(references, hypotheses), "cer": cer(references, hypotheses),
           "exact": sum(r == h for r, h in zip(references, hypotheses, strict=True))
           / len(references)}
    if kinds is not None:
        if len(kinds) != len(references):
            raise ValueError(f"{len(kinds)} kinds for {len(references)} references")
        groups: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(kinds):
            groups[k].append(i)
        for k, idx in groups.items():
            out[f"wer_{k}"] = wer([references[i] for i in idx], [hypotheses[i] for i in idx])
    return out


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references or any(not r.strip() for r in references):
        raise ValueError("every reference transcript must be non-empty (jiwer cannot score an"
                         " empty reference)")
