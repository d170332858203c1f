"""Recommend catalogue items from a history of pictures, with a trained two-tower folder.

A folder from ``plait train configs/recommend.toml`` holds the towers (``model.safetensors``),
the catalogue (``catalogue.json``: each item's caption and picture; ``catalogue.safetensors``:
their CLIP embeddings) and the CLIP that embeds new pictures (``clip/``). A history picture that
is a catalogue item (the same pixels: :func:`picture_key`) is not recommended back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from plait.io import read_json, read_safetensors


def picture_key(image: Image.Image) -> str:
    """A digest of a picture's size and RGB pixels: equal for the same picture however it was
    saved (PNG compression, metadata), different for any other."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


class Recommender:
    def __init__(self, model, encoder, items: list[dict[str, Any]], image: torch.Tensor,
                 text: torch.Tensor, folder: Path):
        self.model, self.encoder, self.items = model, encoder, items
        self.image, self.text, self.folder = image, text, folder
        self.index = {item.get("key"): i for i, item in enumerate(items)}
        with torch.no_grad():
            self.vectors = model.items(image, text)  # (N, out_dim)
            self.bias = model.bias(len(items))

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> Recommender:
        from plait.inference.clip import ClipEncoder
        from plait.loading import load_as
        from plait.models.two_tower import TwoTower

        folder = Path(folder)
        model = load_as(folder, TwoTower, "a two-tower recommender", "configs/recommend.toml",
                        device)
        cat = folder / "catalogue.json"
        if not cat.is_file():
            raise FileNotFoundError(f"no catalogue.json in {folder}: not a recommender folder")
        meta = read_json(cat)
        feats = read_safetensors(folder / "catalogue.safetensors")
        clip = Path(meta["clip"])
        encoder = ClipEncoder.from_folder(clip if clip.is_absolute() else folder / clip,
                                          device=device)
        return cls(model, encoder, meta["items"], feats["image"].to(device),
                   feats["text"].to(device), folder)

    @torch.no_grad()
    def recommend(self, history: Sequence[Image.Image], k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` best items for one history, best first: id, caption, picture (a path),
        whether it is a cold-start item, and the score."""
        if not history:
            raise ValueError("the history is empty: give at least one picture")
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        pics = self.encoder.embed_images(history).to(self.image.device)  # (L, D)
        user = self.model.users(pics[None])  # (1, out_dim)
        scores = (user @ self.vectors.T)[0] + self.bias
        known = [self.index[key] for key in map(picture_key, history) if key in self.index]
        scores[known] = float("-inf")  # the history's own items
        best = scores.topk(min(k, len(self.items) - len(set(known))))
        return [{"item": item["id"], "caption": item["caption"],
                 "image": str(self.folder / item["image"]), "cold": item["cold"],
                 "score": round(float(s), 4)}
                for s, item in ((s, self.items[i]) for s, i in zip(best.values.tolist(),
                                                                   best.indices.tolist(),
                                                                   strict=True))]


__all__ = ["Recommender"]
