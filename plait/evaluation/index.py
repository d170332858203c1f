"""An image search index: L2-normalised CLIP embeddings in a faiss ``IndexFlatIP``.

On unit vectors the inner product IS the cosine similarity, so the flat (exact) inner-product
index returns the same top-k as brute-force cosine (tests/test_search.py checks it). The index
file ``NAME`` holds the vectors (``faiss.write_index``); ``NAME.json`` beside it lists the image
files in row order and the model folder that embedded them, which ``plait search`` reuses to
embed its query.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from plait.inference import ClipEncoder
from plait.io import atomic_write, atomic_write_text
from plait.progress import progress as progress_bar
from plait.vision import ImageError, open_image


def list_files(folder: str | Path) -> list[Path]:
    """Every regular file under ``folder``, sorted (hidden files skipped)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got a file: {folder}")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:]))


def embed_files(enc: ClipEncoder, files: list[Path], batch_size: int = 64,
                warn: Callable[[str], None] | None = None,
                progress: bool = True) -> tuple[np.ndarray, list[Path]]:
    """Embed every readable image; each unreadable one is skipped with a one-line warning.

    Returns (N, D) float32 unit vectors and the N files they came from.
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
    max_pixels = enc.processor.config.max_pixels
    kept: list[Path] = []
    chunks: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    for path in progress_bar(files, desc="embedding", unit="img", disable=not progress):
        try:
            batch.append(enc.processor(open_image(path, max_pixels)))
        except ImageError as e:
            warn(f"skipping {e}")
            continue
        kept.append(path)
        if len(batch) == batch_size:
            chunks.append(enc.embed_pixels(torch.stack(batch)))
            batch = []
    if batch:
        chunks.append(enc.embed_pixels(torch.stack(batch)))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32), []
    return torch.cat(chunks).numpy().astype(np.float32), kept


@dataclass
class SearchIndex:
    """A faiss index with the files its rows stand for and the model that embedded them."""

    index: object  # faiss.IndexFlatIP
    files: list[str]
    model: str

    @classmethod
    def build(cls, vectors: np.ndarray, files: list[str], model: str) -> SearchIndex:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index, list(files), model)

    def save(self, path: str | Path) -> None:
        import faiss

        path = Path(path)
        atomic_write(path, lambda tmp: faiss.write_index(self.index, tmp))
        meta = {"model": self.model, "files": self.files, "dim": self.index.d}
        atomic_write_text(_meta_path(path), json.dumps(meta, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        import faiss

        path, meta_path = Path(path), _meta_path(Path(path))
        if not path.is_file():
            raise FileNotFoundError(f"index not found: {path} (build one with `plait index`)")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing: the index needs its file list")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise ValueError(f"cannot read faiss index {path}: {str(e).splitlines()[0]}") from None
        meta = json.loads(meta_path.read_text())
        if index.ntotal != len(meta["files"]):
            raise ValueError(f"{path} holds {index.ntotal} vectors but {meta_path} lists"
                             f" {len(meta['files'])} files; rebuild the index")
        return cls(index, meta["files"], meta["model"])

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k files most similar to one unit query vector (D,), best first."""
        k = min(k, len(self.files))
        scores, rows = self.index.search(np.asarray(query, dtype=np.float32)[None], k)
        return [(self.files[r], float(s)) for r, s in zip(rows[0], scores[0], strict=True)
                if r >= 0]


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_grid(results: list[tuple[str, float]], out: str | Path, tile: int = 128,
               gap: int = 4) -> None:
    """A one-row PNG of the result images, each captioned with its rank and score."""
    if not results:
        raise ValueError("no results to draw")
    step = tile + gap
    grid = Image.new("RGB", (step * len(results), tile + 16), (200, 200, 200))
    draw = ImageDraw.Draw(grid)
    for i, (file, score) in enumerate(results):
        img = ImageOps.contain(open_image(file), (tile, tile), Image.Resampling.BICUBIC)
        grid.paste(img, (i * step + (tile - img.width) // 2, (tile - img.height) // 2))
        draw.text((i * step + 4, tile + 2), f"#{i + 1}  {score:.3f}", fill="black")
    out = Path(out)
    atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))
