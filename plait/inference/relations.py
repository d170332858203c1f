"""Relation triples from raw text: an entity tagger finds the entities, a relation classifier
with entity markers (:mod:`plait.training.tasks.relations`) labels every candidate pair.

    from plait.inference.relations import RelationExtractor
    rx = RelationExtractor.from_folder("runs/relations")
    rx.extract(["Anna Weber, a native of Lyon, works for Acme GmbH."])
    # [[{"head": "Anna Weber", "head_type": "PER", "relation": "born in", "tail": "Lyon",
    #    "tail_type": "LOC", "score": 0.98}, ...]]

The folder is what ``plait train configs/relations.toml`` writes: the relation classifier, and
its ``tagger/`` stage (a token-classification folder with PER / LOC / ORG / DATE labels). A
pair is a candidate when a relation can join its types (``CANDIDATE_TYPES``: a person and an
organisation, a person and a place, an organisation and a place or a date), in either order
in the text; triples whose label is "none" are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from plait.inference.bert import Tagger
from plait.text import relations as data


class RelationExtractor:
    """``extract(texts) -> [[{"head", "head_type", "relation", "tail", "tail_type",
    "score"}, ...]]``, one list per text, in the order of the pairs' heads in the text."""

    def __init__(self, tagger: Tagger, model: Any, tokenizer: Any):
        if model.config.pooling != "markers" or model.config.head != "classify":
            raise ValueError("the relation model must be a BERT classifier with pooling ="
                             " 'markers' (plait train configs/relations.toml)")
        if tuple(model.config.labels) != data.LABELS:
            raise ValueError(f"the relation model's labels are {model.config.labels}; this"
                             f" reads {data.LABELS}")
        self.tagger, self.model, self.tokenizer = tagger, model, tokenizer
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu",
                    tagger: str | Path | None = None) -> RelationExtractor:
        """The relation classifier in ``folder`` and the tagger in ``tagger`` (default
        ``folder/tagger``, the recipe's first stage)."""
        from plait.inference.bert import _load

        folder = Path(folder)
        where = Path(tagger) if tagger else folder / "tagger"
        if not where.is_dir():
            raise FileNotFoundError(f"no entity tagger at {where}: train the folder with"
                                    " configs/relations.toml or pass --tagger DIR")
        model, tok = _load(folder, "classify", device)
        return cls(Tagger.from_folder(where, device), model, tok)

    def candidates(self, text: str) -> list[data.Pair]:
        """Every ordered pair of the tagged entities that a relation could join."""
        found = [data.Entity(e["type"], e["text"], e["start"], e["end"])
                 for e in self.tagger.tag([text])[0]]
        return [data.Pair(text, a, b, "none") for a in found for b in found
                if a is not b and (a.type, b.type) in data.CANDIDATE_TYPES]

    @torch.no_grad()
    def classify(self, pairs: list[data.Pair], batch_size: int = 64) -> list[tuple[str, float]]:
        """(label, probability) of each pair."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            ids, mask, starts, _ = data.encode_pairs(self.tokenizer, chunk,
                                                self.model.config.block_size)
            h = self.model(ids.to(device), mask.to(device))
            logits = self.model.head(self.model.pool_markers(h, starts.to(device)))
            probs = data.typed_logits(logits, data.allowed(chunk).to(device)).softmax(-1)
            best = probs.max(-1)
            out += [(data.LABELS[j], p) for p, j in zip(best.values.tolist(),
                                                      best.indices.tolist(), strict=True)]
        return out

    def extract(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        with self._lock:
            results = []
            for text in texts:
                if not text.strip():
                    raise ValueError("an empty text: give a sentence to read relations from")
                pairs = self.candidates(text)
                triples = [{"head": p.head.text, "head_type": p.head.type, "relation": label,
                            "tail": p.tail.text, "tail_type": p.tail.type,
                            "score": round(score, 4)}
                           for p, (label, score) in zip(pairs, self.classify(pairs), strict=True)
                           if label != "none"]
                results.append(triples)
            return results
