"""Pictures of the synthetic scenes as discrete tokens: a fixed palette, then blocks of pixels.

The scenes are drawn without anti-aliasing in seven colours (the background and
:data:`plait.data.scenes.COLOURS`), so a picture is exactly a grid of palette indices. A
``block`` x ``block`` square of it holds the background and, almost always, one colour: it
becomes one token, (that colour, the square's mask of where it is). The masks are a fixed
codebook (:class:`BlockCodebook`): the most frequent masks of training pictures, a mask not in
it encoded as the nearest one (fewest pixels different). Token 0 is a square of background;
token ``1 + c * K + k`` is colour ``c`` on mask ``k``. A 48 x 48 picture in 4 x 4 squares is 144
tokens, against 2,304 palette pixels, and no colour is ever approximate: a language model that
writes these tokens draws in the scenes' exact colours. The round trip's error is the pixels
of masks outside the codebook and of the rare squares where two shapes meet
(``tests/test_palette.py`` bounds it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from plait.data.scenes import BACKGROUND, COLOURS
from plait.io import atomic_write_text

PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.uint8)  # (7, 3): index 0 = empty


def to_indices(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) palette indices, each pixel its nearest palette colour."""
    diff = rgb[:, :, None, :].astype(np.int32) - PALETTE[None, None].astype(np.int32)
    return np.abs(diff).sum(-1).argmin(-1).astype(np.uint8)


def to_rgb(indices: np.ndarray) -> np.ndarray:
    """(H, W) palette indices -> (H, W, 3) uint8."""
    return PALETTE[indices]


def blocks(indices: np.ndarray, block: int) -> np.ndarray:
    """(H, W) -> (H/b * W/b, b*b): the squares in reading order, each flattened by rows."""
    H, W = indices.shape
    if H % block or W % block:
        raise ValueError(f"a {H} x {W} picture does not split into {block} x {block} squares")
    return (indices.reshape(H // block, block, W // block, block).transpose(0, 2, 1, 3)
            .reshape(-1, block * block))


class BlockCodebook:
    """``encode(indices) -> tokens`` and ``decode(tokens) -> indices`` over a mask codebook."""

    def __init__(self, masks: np.ndarray, block: int = 4, size: int = 48):
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != block * block or not len(masks):
            raise ValueError(f"masks must be (K, {block * block}) with K >= 1, got"
                             f" {masks.shape}")
        self.masks, self.block, self.size = masks, block, size
        self._index = {m.tobytes(): k for k, m in enumerate(masks)}

    @property
    def vocab_size(self) -> int:
        return 1 + (len(PALETTE) - 1) * len(self.masks)

    @property
    def n_tokens(self) -> int:
        """Tokens per picture."""
        return (self.size // self.block) ** 2

    @classmethod
    def build(cls, pictures: Iterable[np.ndarray], block: int = 4, size: int = 48,
              k: int = 256) -> BlockCodebook:
        """The ``k`` most frequent masks of ``pictures`` (palette indices), ties broken by the
        mask's bytes so the codebook is a pure function of the pictures."""
        counts: Counter[bytes] = Counter()
        for p in pictures:
            for square in blocks(p, block):
                colour = _main_colour(square)
                if colour:
                    counts[(square == colour).tobytes()] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        masks = np.stack([np.frombuffer(m, dtype=bool) for m, _ in ranked])
        return cls(masks, block, size)

    def encode(self, indices: np.ndarray) -> np.ndarray:
        """(size, size) palette indices -> (n_tokens,) int64 tokens."""
        if indices.shape != (self.size, self.size):
            raise ValueError(f"a picture must be {self.size} x {self.size}, got {indices.shape}")
        K = len(self.masks)
        out = np.zeros(self.n_tokens, dtype=np.int64)
        for i, square in enumerate(blocks(indices, self.block)):
            colour = _main_colour(square)
            if colour:
                mask = square == colour
                k = self._index.get(mask.tobytes())
                if k is None:  # the nearest mask of the codebook
                    k = int((self.masks != mask).sum(1).argmin())
                out[i] = 1 + (colour - 1) * K + k
        return out

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(n_tokens,) tokens -> (size, size) palette indices."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape != (self.n_tokens,) or tokens.min() < 0 or tokens.max() >= \
                self.vocab_size:
            raise ValueError(f"a picture is {self.n_tokens} tokens in [0, {self.vocab_size}),"
                             f" got shape {tokens.shape}")
        K, b, g = len(self.masks), self.block, self.size // self.block
        colour = np.where(tokens > 0, (tokens - 1) // K + 1, 0)
        masks = np.where((tokens > 0)[:, None], self.masks[(tokens - 1).clip(0) % K], False)
        squares = (masks * colour[:, None]).astype(np.uint8)  # (n, b*b)
        return squares.reshape(g, g, b, b).transpose(0, 2, 1, 3).reshape(self.size, self.size)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "codebook.json"
        atomic_write_text(path, json.dumps({"block": self.block, "size": self.size,
                                            "masks": self.masks.astype(int).tolist()}) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> BlockCodebook:
        path = Path(folder) / "codebook.json"
        if not path.is_file():
            raise FileNotFoundError(f"no image codebook in {folder} (missing codebook.json)")
        tree = json.loads(path.read_text())
        return cls(np.array(tree["masks"], dtype=bool), tree["block"], tree["size"])


def _main_colour(square: np.ndarray) -> int:
    """The square's most frequent non-background index (0 if it is all background)."""
    counts = np.bincount(square, minlength=len(PALETTE))
    counts[0] = 0
    return int(counts.argmax()) if counts.any() else 0


__all__ = ["PALETTE", "BlockCodebook", "blocks", "to_indices", "to_rgb"]
