"""Text in, labels out, with a BERT-family encoder folder (plait's or Hugging Face's).

- :class:`TextClassifier`: one label per text (``head = "classify"``), with probabilities.
- :class:`Tagger`: entities per text (``head = "tag"``): words as BERT's pre-tokenizer splits
  them, each word's BIO label read at its first WordPiece, merged into
  ``{"type", "text", "start", "end"}`` spans with character offsets into the input.

A text too long for the model is read whole in runs of ``block_size`` pieces pooled together
when the classifier pools its tokens (pooling "mean" or "weighted"); otherwise, and for the
tagger, it is cut to its first ``block_size`` pieces. An empty text is a ValueError, so a
command can say which line was wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers

from plait.text.base import encode_texts


def _load(folder: str | Path, head: str, device: str | torch.device) -> tuple[Any, Any]:
    from plait.loading import load
    from plait.models import Bert
    from plait.text import load_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    model = load(folder, device=device)
    if not isinstance(model, Bert) or model.config.head != head:
        kind = model.config.head if isinstance(model, Bert) else type(model).__name__
        raise ValueError(f"{folder} holds a {kind} model; this needs a BERT-family model with a"
                         f" '{head}' head")
    return model, load_tokenizer(folder)


def _names(model: Any) -> tuple[str, ...]:
    c = model.config
    return c.labels or tuple(f"LABEL_{i}" for i in range(c.num_labels))


class TextClassifier:
    """``predict(texts) -> [(label, {label: probability})]``."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer, self.labels = model, tokenizer, _names(model)
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu"
                    ) -> TextClassifier:
        return cls(*_load(folder, "classify", device))

    def predict(self, texts: Sequence[str], batch_size: int = 32
                ) -> list[tuple[str, dict[str, float]]]:
        out = []
        for row in self.probs(texts, batch_size).tolist():
            scores = dict(zip(self.labels, row, strict=True))
            out.append((max(scores, key=scores.get), scores))
        return out

    @torch.no_grad()
    def probs(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Each text's probabilities over :attr:`labels`, (texts, labels) on the CPU; a text
        longer than the model's positions is read whole when the model pools its tokens."""
        out = []
        device = next(self.model.parameters()).device
        with self._lock:
            for i in range(0, len(texts), batch_size):
                chunk = list(texts[i:i + batch_size])
                for text in chunk:
                    if not text.strip():
                        raise ValueError("an empty text: give something to classify")
                ids, mask, owner = encode_texts(self.tokenizer, chunk, self.model.config.block_size,
                                                self.model.config.pools_tokens)
                owner = None if owner is None else owner.to(device)
                logits = self.model.logits(ids.to(device), mask.to(device), owner=owner)
                out.append(logits.softmax(-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))


class Tagger:
    """``tag(texts) -> [[{"type", "text", "start", "end"}, ...]]``, one list per text."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer, self.labels = model, tokenizer, _names(model)
        self.words = pre_tokenizers.BertPreTokenizer()
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> Tagger:
        return cls(*_load(folder, "tag", device))

    @torch.no_grad()
    def word_tags(self, text: str) -> tuple[list[tuple[int, int]], list[str]]:
        """(each word's character span, its BIO label)."""
        from plait.text.wordpiece import word_pieces

        if not text.strip():
            raise ValueError("an empty text: give something to tag")
        split = self.words.pre_tokenize_str(text)
        ids, wids = word_pieces(self.tokenizer, [w for w, _ in split],
                                self.model.config.block_size)
        device = next(self.model.parameters()).device
        best = self.model.logits(torch.tensor([ids], device=device))[0].argmax(-1).tolist()
        tags, seen = ["O"] * len(split), set()
        for piece, w in enumerate(wids):
            if w >= 0 and w not in seen:  # a word's label is its first piece's
                seen.add(w)
                tags[w] = self.labels[best[piece]]
        return [span for _, span in split], tags

    def tag(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        with self._lock:
            return [spans(text, *self.word_tags(text)) for text in texts]


def spans(text: str, offsets: list[tuple[int, int]], tags: list[str]) -> list[dict[str, Any]]:
    """BIO word labels -> entity spans. An I- that does not continue an entity of its type
    starts one (as seqeval's default, lenient scheme reads it); a comma, semicolon or colon
    the tagger put at an entity's end is left out of it."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for (start, end), tag in zip(offsets, tags, strict=True):
        if tag == "O":
            current = None
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and current is not None and current["type"] == kind:
            current["end"] = end
        else:
            current = {"type": kind, "start": start, "end": end}
            out.append(current)
    for e in out:  # a comma after a name ("Anna Weber, a native of ...") is not the name's
        while e["end"] > e["start"] + 1 and text[e["end"] - 1] in ",;:":
            e["end"] -= 1
        e["end"] = e["start"] + len(text[e["start"]:e["end"]].rstrip())
    return [{"type": e["type"], "text": text[e["start"]:e["end"]], "start": e["start"],
             "end": e["end"]} for e in out]
