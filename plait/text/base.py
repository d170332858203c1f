"""The one tokenizer interface every plait model, dataset and command talks to.

A tokenizer maps text to a list of integer ids and back. Three kinds live in ``plait.text``:
characters (``CharTokenizer``), byte-level BPE (``BPETokenizer``, Sennrich et al. 2016,
arXiv:1508.07909, in GPT-2's byte-level form, Radford et al. 2019) and WordPiece
(``WordPieceTokenizer``, BERT, Devlin et al. 2019, arXiv:1810.04805). The last two run on the
Rust ``tokenizers`` library, wrapped by ``BackedTokenizer`` below, so their ids are the ids
Hugging Face ``transformers`` gives for the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from tokenizers import Tokenizer as RustTokenizer

from plait.io import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
    """What plait needs from a tokenizer."""

    vocab_size: int  # ids are in [0, vocab_size)
    eos_token_id: int | None  # end of text / document, or None when the vocabulary has none
    pad_token_id: int  # fills padded positions; they are always masked, so any id is safe

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, folder: str | Path) -> Path: ...


def pad_batch(rows: list[list[int]], pad_id: int,
              side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to the longest: ``(input_ids, attention_mask)``, both (B, T) int64."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    T = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(T - len(row), T)
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def in_pieces(rows: list[list[int]], size: int) -> tuple[list[list[int]], torch.Tensor]:
    """Encoded texts, each framed by one special id at either end ([CLS] ... [SEP]), cut so
    no row is longer than ``size``: a longer text's inner ids in runs of ``size - 2``, each run
    framed by the text's two ends. ``(rows, owner)``: ``owner`` (rows,) is each row's text."""
    if size < 3:
        raise ValueError(f"a piece of {size} ids has no room between its two ends")
    out, owner, n = [], [], size - 2
    for i, row in enumerate(rows):
        pieces = [row] if len(row) <= size else [
            [row[0], *row[1 + k:min(1 + k + n, len(row) - 1)], row[-1]]
            for k in range(0, len(row) - 2, n)]
        out += pieces
        owner += [i] * len(pieces)
    return out, torch.tensor(owner, dtype=torch.long)


def encode_texts(tokenizer: Any, texts: list[str], size: int, whole: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Right-padded ``(input_ids, attention_mask, owner)`` of ``texts``, each cut to ``size``
    ids; ``whole``: a longer text in pieces instead (:func:`in_pieces`, ``owner`` each row's
    text; None when not ``whole``)."""
    if whole:
        rows, owner = in_pieces([tokenizer.encode(text) for text in texts], size)
    else:
        rows, owner = [tokenizer.encode(text, max_length=size) for text in texts], None
    return (*pad_batch(rows, tokenizer.pad_token_id), owner)


class BackedTokenizer:
    """A ``tokenizers.Tokenizer`` (normalizer, pre-tokenizer, model, post-processor, decoder)."""

    def __init__(self, backend: RustTokenizer, eos_token: str | None = None,
                 pad_token: str | None = None):
        # Padding and truncation baked into a tokenizer.json (e.g. MiniLM's fixed 128) would
        # silently change `encode`; transformers also switches them off unless asked per call.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.eos_token_id = self._id(eos_token)
        pad = self._id(pad_token)
        self.pad_token_id = pad if pad is not None else (self.eos_token_id or 0)

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int | None = None,
               add_special_tokens: bool = True) -> list[int]:
        """Ids of ``text``; with ``max_length``, cut the text's tokens so the total (specials
        included) fits, as ``transformers`` does with ``truncation=True, max_length=...``."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        enc = self.backend.encode(text, add_special_tokens=False)
        post = self.backend.post_processor
        n_special = post.num_special_tokens_to_add(False) if post and add_special_tokens else 0
        if max_length is not None:
            if max_length <= n_special:
                raise ValueError(f"max_length={max_length} leaves no room for text next to "
                                 f"{n_special} special tokens; use max_length > {n_special}")
            enc.truncate(max_length - n_special)
        if post is not None:
            enc = self.backend.post_process(enc, None, add_special_tokens)
        return enc.ids

    def encode_batch(self, texts: list[str], max_length: int | None = None,
                     padding_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad to the longest: ``(input_ids, attention_mask)``, both (B, T) int64."""
        rows = [self.encode(t, max_length=max_length) for t in texts]
        return pad_batch(rows, self.pad_token_id, padding_side)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id(s) {bad[:5]} outside the vocabulary [0, {self.vocab_size})")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json`` in the standard ``tokenizers`` format."""
        path = Path(folder) / TOKENIZER_FILE
        atomic_write_text(path, self.backend.to_str(pretty=True))
        return path

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(vocab_size={self.vocab_size}, eos_token_id={self.eos_token_id})"
