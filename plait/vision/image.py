"""Image preprocessing: decode safely, resize, centre-crop, to tensor, normalise, augment.

The eval path reproduces Hugging Face's ``CLIPImageProcessor`` (PIL backend) step by step, so a
plait CLIP sees the same pixels as a transformers one:

    1. convert to RGB (transparency composited onto white)
    2. resize so the SHORTEST side is ``size`` (bicubic; the long side is truncated, ``int()``)
    3. centre-crop ``crop_size`` x ``crop_size`` (top/left offset ``(H - h) // 2``)
    4. x / 255, then (x - mean) / std with OpenAI CLIP's mean and std

Resizing happens on uint8 pixels (as HF does), so the only difference from transformers is float
rounding in steps 4: ~1e-6. Training adds a modest random-resized crop and NO flips: a flip turns
"a circle left of a square" into a lie (Radford et al. 2021, arXiv:2103.00020, used only a random
square crop as augmentation as well).
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from plait.config import Config, read_json
from plait.io import file_kind, head_of

# OpenAI CLIP's normalisation, the default of every CLIP checkpoint on the Hub
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 90_000_000  # decompression-bomb guard (Pillow's own default is ~89.5 MP)


class ImageError(ValueError):
    """An image file that cannot be used: names the file and why, on one line."""


@dataclass(frozen=True)
class ImageConfig(Config):
    """Images -> model input: ``size`` = shortest side after resize, ``crop_size`` = output side."""

    size: int = 224
    crop_size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    max_pixels: int = DEFAULT_MAX_PIXELS
    # training augmentation: random-resized-crop area range (1.0, 1.0 = none)
    crop_scale: tuple[float, ...] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.crop_size <= 0:
            raise ValueError(f"ImageConfig: size ({self.size}) and crop_size ({self.crop_size})"
                             " must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ImageConfig: mean/std need 3 values with std > 0, got"
                             f" mean={self.mean} std={self.std}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"ImageConfig.crop_scale must satisfy 0 < lo <= hi <= 1,"
                             f" got {self.crop_scale}")


# -- decoding --------------------------------------------------------------------------------
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` to an RGB PIL image, upright per its EXIF orientation.

    Raises ImageError (one line naming the file) for: an empty file, a non-image, a truncated or
    corrupt image, and an image with more than ``max_pixels`` pixels (checked from the header,
    before any pixel is decoded).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check size ourselves
        try:
            with Image.open(path) as probe:  # reads the header only
                check_pixels(path, probe.size, max_pixels)
                probe.verify()  # checksums / structure, without decoding (PNG CRCs, ...)
            with Image.open(path) as img:  # verify() leaves the image unusable: reopen
                img.load()  # full decode: a truncated file fails here
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
        except ImageError:
            raise
        except Image.DecompressionBombError:  # Pillow's own hard stop (2x its default limit)
            raise ImageError(f"{path}: image is too large (decompression-bomb guard)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise unreadable(path, e, "image", "a PNG, JPEG or GIF picture") from None


def unreadable(path: str | Path, error: BaseException, what: str, wanted: str) -> ImageError:
    """The one-line error for a file Pillow could not read as ``what`` ("image", "clip"):
    a sound file given where a picture belongs is named as such, anything else gets Pillow's
    reason."""
    kind = file_kind(head_of(path))
    if kind is not None and "audio" in kind:
        noun = ("an " if what[0] in "aeiou" else "a ") + what
        return ImageError(f"{path}: this is {kind}, not {noun}: give {wanted}")
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return ImageError(f"{path}: not a readable {what} ({reason})")


def check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(f"{path}: {w}x{h} = {w * h / 1e6:.1f} megapixels exceeds the limit of"
                         f" {max_pixels / 1e6:.1f} MP (raise max_pixels if you trust the file)")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers does)."""
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


# -- geometry --------------------------------------------------------------------------------
def resize_shortest(img: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so min(H, W) == size; the long side is ``int(size * long / short)``."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Central size x size window; a smaller image is zero-padded first (as transformers does)."""
    w, h = img.size
    if w < size or h < size:
        canvas = Image.new("RGB", (max(w, size), max(h, size)), (0, 0, 0))
        canvas.paste(img, ((max(w, size) - w + 1) // 2, (max(h, size) - h + 1) // 2))
        img, (w, h) = canvas, canvas.size
    top, left = (h - size) // 2, (w - size) // 2
    return img.crop((left, top, left + size, top + size))


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float],
                        rng: random.Random, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        ) -> Image.Image:
    """A random crop covering ``scale`` of the area at a random aspect, resized to size x size."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.Resampling.BICUBIC,
                              box=(left, top, left + cw, top + ch))
    return center_crop(resize_shortest(img, size), size)  # fallback: the eval view


# -- tensors ---------------------------------------------------------------------------------
def to_tensor(img: Image.Image) -> Tensor:
    """(3, H, W) float32 in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std per channel; x is (..., 3, H, W)."""
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


class ImageProcessor:
    """PIL image -> normalised (3, crop, crop) tensor; ``train=True`` adds the random crop."""

    def __init__(self, config: ImageConfig | None = None):
        self.config = config or ImageConfig()

    def __call__(self, img: Image.Image, train: bool = False,
                 rng: random.Random | None = None) -> Tensor:
        c = self.config
        img = to_rgb(img)
        if train and c.crop_scale[0] < 1.0:
            lo, hi = c.crop_scale
            img = random_resized_crop(img, c.crop_size, (lo, hi), rng or random.Random())
        else:
            img = center_crop(resize_shortest(img, c.size), c.crop_size)
        return normalize(to_tensor(img), c.mean, c.std)  # (3, H, W)

    def batch(self, images: list[Image.Image], train: bool = False,
              rng: random.Random | None = None) -> Tensor:
        """(B, 3, H, W)."""
        return torch.stack([self(im, train, rng) for im in images])

    def load(self, path: str | Path) -> Tensor:
        """Decode a file safely and preprocess it: (3, H, W)."""
        return self(open_image(path, self.config.max_pixels))


def read_preprocessor_config(folder: str | Path) -> ImageConfig:
    """ImageConfig from a Hugging Face folder's ``preprocessor_config.json`` (CLIP style)."""
    path = Path(folder) / "preprocessor_config.json"
    try:
        raw = read_json(path)
    except ValueError as e:
        raise FileNotFoundError(str(e)) from None
    size = raw.get("size", 224)
    if isinstance(size, dict):  # {"shortest_edge": 224} or {"height": .., "width": ..}
        size = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
    crop = raw.get("crop_size", size)
    if isinstance(crop, dict):
        crop = min(crop.get("height", size), crop.get("width", size))
    if not raw.get("do_center_crop", True):
        crop = size
    return ImageConfig(size=int(size), crop_size=int(crop),
                       mean=tuple(raw.get("image_mean", CLIP_MEAN)),
                       std=tuple(raw.get("image_std", CLIP_STD)))


def write_preprocessor_config(folder: str | Path, config: ImageConfig) -> Path:
    """Write ``preprocessor_config.json`` as transformers' CLIPImageProcessor reads it."""
    import json

    from plait.io import atomic_write_text

    raw = {"image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True,
           "do_resize": True, "size": {"shortest_edge": config.size}, "resample": 3,
           "do_center_crop": True, "crop_size": {"height": config.crop_size,
                                                 "width": config.crop_size},
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": list(config.mean), "image_std": list(config.std)}
    path = Path(folder) / "preprocessor_config.json"
    atomic_write_text(path, json.dumps(raw, indent=2) + "\n")
    return path
