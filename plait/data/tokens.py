"""Token files for language models: ``prepare_text`` writes them, ``TokenDataset`` reads them.

A prepared folder (``plait prepare-text FILE --out DIR``) holds:

- ``train.bin`` / ``val.bin``: the token ids of the first ``1 - val_fraction`` and the last
  ``val_fraction`` of the text (split on a character boundary, then each part encoded), as raw
  little-endian ``uint16`` (``uint32`` when the vocabulary has more than 65,536 ids), so
  ``np.memmap`` reads them with no header, as in nanoGPT's ``prepare.py``.
- ``tokenizer.json``: the tokenizer (``plait.text.load_tokenizer(DIR)``).
- ``meta.json``: ``{"dtype", "vocab_size", "train_tokens", "val_tokens", "source", "tokenizer",
  "val_fraction", "eos_token_id"}``.

Training batches are random windows, and batch number ``step`` is a pure function of
``(seed, step)``: its random generator is seeded with both, so a resumed run (or another process)
draws exactly the batches the first run would have. A batch is always the *global* batch; under
DDP each rank keeps its contiguous ``batch_size // world_size`` rows, so two processes with B/2
rows each see exactly what one process with B rows sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from plait.config import read_json
from plait.io import atomic_write, atomic_write_text

SPLITS = ("train", "val")
META_FILE = "meta.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id in ``[0, vocab_size)``."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise ValueError(f"input text file is empty: {path}")
    return text


def check_tokenizer_args(kind: str, vocab_size: int | None) -> None:
    from plait.text.bpe import MIN_VOCAB

    if kind not in ("char", "bpe"):
        raise ValueError(f"unknown tokenizer {kind!r}; choose 'char' or 'bpe'")
    if kind == "char" and vocab_size is not None:
        raise ValueError("--vocab-size applies to --tokenizer bpe only; a char vocabulary "
                         "is the text's distinct characters")
    if kind == "bpe" and vocab_size is not None and vocab_size < MIN_VOCAB:
        raise ValueError(f"BPE vocab size must be >= {MIN_VOCAB} (256 bytes + <|endoftext|>), "
                         f"got {vocab_size}")


def build_tokenizer(kind: str, text: str, vocab_size: int | None):
    """A fresh ``char`` or ``bpe`` (default 1024 ids) tokenizer built from ``text``."""
    from plait.text import BPETokenizer, CharTokenizer

    check_tokenizer_args(kind, vocab_size)
    if kind == "char":
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, 1024 if vocab_size is None else vocab_size)


def prepare_text(source: str | Path, out_dir: str | Path, tokenizer: str = "char",
                 vocab_size: int | None = None, val_fraction: float = 0.1,
                 log: Callable[[str], None] = print) -> dict:
    """Tokenize ``source`` into ``out_dir`` (see module docstring); returns the meta dict.

    The char vocabulary covers the whole text (so val has no unknown characters); BPE merges
    are learned from the train part only (byte-level BPE encodes anything).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    check_tokenizer_args(tokenizer, vocab_size)
    t0 = time.time()
    text = read_text(source)
    n_train = len(text) - int(len(text) * val_fraction)
    parts = {"train": text[:n_train], "val": text[n_train:]}
    if not parts["train"]:
        raise ValueError(f"{source}: no text left for training with val fraction {val_fraction}")
    log(f"prepare-text: {len(text):,} characters from {source}; building the {tokenizer} "
        f"tokenizer and encoding ...")
    tok = build_tokenizer(tokenizer, text if tokenizer == "char" else parts["train"], vocab_size)
    dtype = token_dtype(tok.vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, part in parts.items():
        ids = np.asarray(tok.encode(part) if part else [], dtype=dtype)
        atomic_write(out / f"{split}.bin", ids.tofile)
        counts[split] = int(ids.size)
    tok.save(out)
    meta = {"dtype": dtype.name, "vocab_size": tok.vocab_size, "train_tokens": counts["train"],
            "val_tokens": counts["val"], "source": str(source), "tokenizer": tokenizer,
            "val_fraction": val_fraction, "eos_token_id": tok.eos_token_id}
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    log(f"prepare-text: vocab {tok.vocab_size}, train {counts['train']:,} tokens, val "
        f"{counts['val']:,} tokens ({dtype.name}) -> {out} in {time.time() - t0:.1f}s")
    return meta


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no token data in {folder} (missing {META_FILE}): run "
                                f"`plait prepare-text FILE --out {folder}` first")
    return read_json(path)  # a corrupt file is a one-line error naming it


class TokenDataset:
    """One split of a prepared folder, memory-mapped: ``len(ds)`` tokens in ``ds.data``."""

    def __init__(self, folder: str | Path, split: str = "train", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.folder, self.split, self.seed = Path(folder), split, int(seed)
        self.meta = read_meta(folder)
        self.vocab_size = int(self.meta["vocab_size"])
        path = self.folder / f"{split}.bin"
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {self.folder}: run "
                                    f"`plait prepare-text FILE --out {self.folder}` first")
        dtype = np.dtype(self.meta["dtype"])
        expected = int(self.meta[f"{split}_tokens"]) * dtype.itemsize
        if path.stat().st_size != expected:
            raise ValueError(f"{path} has {path.stat().st_size} bytes but meta.json says "
                             f"{expected}: the file is truncated or stale; run prepare-text again")
        if expected == 0:
            raise ValueError(f"the {split} split in {self.folder} is empty; prepare it again "
                             f"with a larger --val-fraction")
        self.data = np.memmap(path, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return len(self.data)

    def _check(self, block_size: int, batch_size: int, world_size: int) -> None:
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} "
                             f"and {batch_size}")
        if len(self.data) < block_size + 1:
            raise ValueError(f"the {self.split} split has {len(self.data)} tokens, fewer than "
                             f"block_size + 1 = {block_size + 1}; lower block_size")
        if batch_size % world_size:
            raise ValueError(f"global batch size {batch_size} is not divisible by world size "
                             f"{world_size}")

    def _windows(self, starts: np.ndarray, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self.data[s:s + T + 1] for s in starts]).astype(np.int64)  # (B, T+1)
        xy = torch.from_numpy(rows)
        x, y = xy[:, :-1], xy[:, 1:]  # (B, T) each: y is x shifted by one token
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def batch_starts(self, step: int, batch_size: int, block_size: int) -> np.ndarray:
        """Window starts of global batch ``step``: uniform over every full window, seeded by
        ``(seed, step)`` (numpy's SeedSequence mixes the pair, so steps are independent)."""
        rng = np.random.default_rng([self.seed, int(step)])
        return rng.integers(0, len(self.data) - block_size, size=batch_size)

    def get_batch(self, step: int, batch_size: int, block_size: int, rank: int = 0,
                  world_size: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of global batch ``step`` that belong to ``rank``: ``(x, y)``, (B/world, T) int64."""
        self._check(block_size, batch_size, world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
        per = batch_size // world_size
        starts = self.batch_starts(step, batch_size, block_size)[rank * per:(rank + 1) * per]
        return self._windows(starts, block_size, device)

    def iter_eval_batches(self, block_size: int, batch_size: int, rank: int = 0,
                          world_size: int = 1, device=None
                          ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Walk the whole split once in contiguous, non-overlapping windows.

        Every token but the first is a target exactly once: full windows of ``block_size``
        come in batches of up to ``batch_size`` rows, then a last (1, r) window with the r < T
        remaining targets. Weight each batch's mean loss by ``y.numel()`` to get the split's
        mean. With ``world_size > 1``, rank ``r`` takes windows ``r, r + world, ...``.
        """
        self._check(block_size, 1, 1)
        n_targets = len(self.data) - 1
        n_full = n_targets // block_size
        mine = np.arange(rank, n_full, world_size) * block_size
        for i in range(0, len(mine), batch_size):
            yield self._windows(mine[i:i + batch_size], block_size, device)
        tail = n_targets - n_full * block_size
        if tail and n_full % world_size == rank:  # the tail is window number n_full
            yield self._windows(np.array([n_full * block_size]), tail, device)
