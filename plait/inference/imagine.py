"""Drawing with an imagine folder (:mod:`plait.models.imagine`): a prompt in, pictures out.

    artist = Artist.from_folder("runs/imagine_scenes")
    [picture] = artist.draw("a red circle left of a blue square", seed=0)   # PIL image
    artist.draw("a green star", num=8, seed=3)                             # 8 pictures

A draw is a pure function of the prompt, ``num``, ``seed`` and the sampling settings: the same
call gives the same pictures. Prompts are checked before anything is drawn (no words, words the
model never saw, too many words: one ``ValueError`` naming it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGINE_MODEL = "imagine"


def is_imagine_folder(folder: str | Path) -> bool:
    from plait.checkpoint import MODEL_KEY, read_model_config

    return read_model_config(folder).get(MODEL_KEY) == IMAGINE_MODEL


def sampling_defaults(folder: str | Path) -> dict[str, float]:
    """The temperature, top_k and guidance the folder's recipe evaluated with (recipe.json's
    ``[data]``), else plain sampling."""
    import json

    tree = {}
    recipe = Path(folder) / "recipe.json"
    if recipe.is_file():
        tree = json.loads(recipe.read_text()).get("data", {})
    return {"temperature": float(tree.get("temperature", 1.0)),
            "top_k": int(tree.get("top_k", 0)), "guidance": float(tree.get("guidance", 1.0))}


class Artist:
    """``draw(prompt, num, seed, ...) -> list of PIL images`` (the model's canvas size)."""

    def __init__(self, model, defaults: dict[str, float] | None = None):
        self.model = model
        self.defaults = defaults or {"temperature": 1.0, "top_k": 0, "guidance": 1.0}

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> Artist:
        from plait.loading import load

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        if not is_imagine_folder(folder):
            raise ValueError(f"{folder} holds no imagine model (train one with"
                             " configs/imagine_scenes.toml)")
        return cls(load(folder, device=device), sampling_defaults(folder))

    def check(self, prompt: str) -> None:
        """A ValueError naming what is wrong with ``prompt``, if anything is."""
        self.model.word_ids([prompt])

    @torch.no_grad()
    def draw_indices(self, prompt: str, num: int = 1, seed: int = 0,
                     **sampling: float) -> list[np.ndarray]:
        """``num`` pictures for ``prompt`` as (size, size) palette indices."""
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        gen = torch.Generator(device=self.model.start.device).manual_seed(seed)
        settings = {**self.defaults, **{k: v for k, v in sampling.items() if v is not None}}
        drawn = self.model.draw([prompt] * num, temperature=settings["temperature"],
                                top_k=int(settings["top_k"]), guidance=settings["guidance"],
                                generator=gen)
        return list(drawn.cpu().numpy().astype(np.uint8))

    def draw(self, prompt: str, num: int = 1, seed: int = 0,
             **sampling: float) -> list[Image.Image]:
        """``num`` pictures for ``prompt`` as RGB images."""
        drawn = self.draw_indices(prompt, num, seed, **sampling)
        rgb = self.model.to_rgb(torch.from_numpy(np.stack(drawn)).long())
        return [Image.fromarray(p) for p in rgb.numpy()]


def grid(pictures: list[Image.Image], columns: int | None = None, gap: int = 2) -> Image.Image:
    """Pictures side by side, ``columns`` to a row (default: as square as it gets)."""
    n = len(pictures)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    w, h = pictures[0].size
    sheet = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap),
                      (255, 255, 255))
    for i, p in enumerate(pictures):
        sheet.paste(p, ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return sheet


__all__ = ["Artist", "grid", "is_imagine_folder", "sampling_defaults"]
