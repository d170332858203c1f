"""Clips: animated GIFs and folders of frames in, GIFs out, resampled in time to a model's frames.

A clip is read as the frames a viewer would see at ``n`` evenly spaced instants over its
duration: frame k is the one on screen at time (k + 1/2) * D / n, where D is the sum of the
frames' display times (a folder's frames count one unit each). That is the identity for a GIF
of ``n`` equal frames, and it is also right when

- Pillow merged identical neighbouring frames on writing (it keeps one frame and adds up their
  durations: a clip whose last three frames are equal is stored as six frames, read back as
  eight);
- a GIF has more or fewer frames than the model takes (it is resampled, not refused: the model
  sees the same motion at another frame rate).

Each frame is then resized and cropped as an image is (:class:`plait.vision.ImageProcessor`).
Refused, with a one-line :class:`~plait.vision.ImageError` naming the file: an empty, corrupt
or truncated file, a still image (one frame: nothing moves), a folder without two frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

from PIL import Image

from plait.vision.image import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    check_pixels,
    open_image,
    to_rgb,
    unreadable,
)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
STILL = "a still image (one frame), not a clip: give an animated GIF or a folder of frames"


def write_gif(frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 100) -> Path:
    """Write frames as an animated GIF that loops; exact for frames of at most 256 colours."""
    if len(frames) < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {len(frames)}")
    path = Path(path)
    first, *rest = [to_rgb(f) for f in frames]
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=duration_ms,
               loop=0)
    return path


def sample_frames(durations: Sequence[float], n: int) -> list[int]:
    """Indices of the frames on screen at n evenly spaced instants (mid-interval) of a clip
    whose frames show for ``durations``; no positive duration anywhere counts each as one."""
    if n < 1 or not durations:
        raise ValueError(f"cannot sample {n} frames from {len(durations)}")
    if sum(durations) <= 0 or min(durations) < 0:
        durations = [1.0] * len(durations)
    ends = list(accumulate(durations))
    out, i = [], 0
    for k in range(n):
        t = (k + 0.5) * ends[-1] / n
        while i < len(ends) - 1 and ends[i] <= t:
            i += 1
        out.append(i)
    return out


def is_clip(path: str | Path) -> bool:
    """A folder, or a file that holds more than one frame (an unreadable file is no clip: the
    image reader will say what is wrong with it)."""
    path = Path(path)
    if path.is_dir():
        return True
    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) > 1
    except (OSError, SyntaxError, ValueError, EOFError):
        return False


def read_clip(path: str | Path, n_frames: int,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """``n_frames`` RGB frames of a GIF (or any animated image) or of a folder of frames, taken
    at evenly spaced instants (module docstring)."""
    path = Path(path)
    if path.is_dir():
        frames = _folder_frames(path, max_pixels)
        durations = [1.0] * len(frames)
    else:
        frames, durations = _file_frames(path, max_pixels)
    return [frames[i] for i in sample_frames(durations, n_frames)]


def _folder_frames(folder: Path, max_pixels: int) -> list[Image.Image]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if len(files) < 2:
        raise ImageError(f"{folder}: a folder of frames needs at least 2 images"
                         f" ({', '.join(FRAME_SUFFIXES)}), found {len(files)}")
    return [open_image(p, max_pixels) for p in files]


def _ends_gif(path: Path) -> bool:
    """Whether a GIF ends with its trailer byte (0x3B): Pillow counts the frames of a GIF cut
    short without complaint, so a clip cut inside its second frame would read as a still."""
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b";"


def _file_frames(path: Path, max_pixels: int) -> tuple[list[Image.Image], list[float]]:
    if not path.is_file():
        raise FileNotFoundError(f"clip not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    frames, durations = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
        try:
            with Image.open(path) as img:
                check_pixels(path, img.size, max_pixels)
                if img.format == "GIF" and not _ends_gif(path):
                    raise ImageError(f"{path}: not a readable clip (truncated: the GIF has no"
                                     " end marker)")
                n = getattr(img, "n_frames", 1)
                if n < 2:
                    raise ImageError(f"{path}: {STILL}")
                for i in range(n):
                    img.seek(i)
                    img.load()  # a truncated frame fails here
                    frames.append(to_rgb(img))
                    durations.append(float(img.info.get("duration") or 0))
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(f"{path}: clip is too large (decompression-bomb guard)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise unreadable(path, e, "clip", "an animated GIF or a folder of frames") from None
    return frames, durations
