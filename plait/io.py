"""Files, safely: atomic writes, JSON objects and safetensors; a failure is one line naming the
file.

The leaf of the package (it imports nothing of plait's), so that every layer above can write a
checkpoint, a tokenizer or an index the same way:

- ``atomic_write(path, write)``: ``write(tmp)`` into a temporary file beside ``path``, fsync, then
  rename over ``path``. A reader sees the old file or the new one, never half of one, and a crash
  mid-write leaves the old file and no temporary behind.
- ``read_json(path)``: a JSON object; missing is ``FileNotFoundError``, corrupt ``ValueError``.
- ``read_safetensors(path)`` / ``read_safetensors_metadata(path)`` / ``write_safetensors(...)``:
  a missing, truncated or foreign file is a ``FileNotFoundError`` / ``ValueError`` naming it.
- ``file_kind(head)``: what a file's first bytes say it is ("a PNG image", "a WAV audio file"),
  so a decoder that fails can say "an image, not audio" instead of "format not recognised".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """``write(tmp)``, fsync, rename onto ``path``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; missing -> FileNotFoundError, anything else -> ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt JSON in {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at top level")
    return data


def _open_safetensors(path: str | Path, read: Callable[[Any], Any]) -> Any:
    """``read(handle)`` on an open safetensors file; a missing, truncated or foreign file is a
    FileNotFoundError / ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return read(f)
    except (SafetensorError, OSError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot read {path} (truncated or not a safetensors file): {reason}") from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file."""
    return _open_safetensors(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (e.g. the training step it was saved at)."""
    return _open_safetensors(path, lambda f: f.metadata() or {})


def write_safetensors(path: str | Path, state: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` (moved to the CPU, made contiguous) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata or {"format": "pt"}))


# leading bytes -> what the file is (offset, magic, description); RIFF is told apart at 8
_MAGIC = ((0, b"\x89PNG\r\n\x1a\n", "a PNG image"), (0, b"\xff\xd8\xff", "a JPEG image"),
          (0, b"GIF8", "a GIF image"), (8, b"WEBP", "a WebP image"), (0, b"BM", "a BMP image"),
          (0, b"II*\x00", "a TIFF image"), (0, b"MM\x00*", "a TIFF image"),
          (8, b"WAVE", "a WAV audio file"), (0, b"fLaC", "a FLAC audio file"),
          (0, b"OggS", "an Ogg audio file"), (0, b"ID3", "an MP3 audio file"),
          (8, b"AIFF", "an AIFF audio file"))


def file_kind(head: bytes) -> str | None:
    """What a file whose first bytes are ``head`` (16 suffice) is, for error messages: "a PNG
    image", "a WAV audio file", ...; None when the bytes say nothing known."""
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def head_of(path: str | Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of a file (fewer for a shorter one)."""
    with open(path, "rb") as f:
        return f.read(n)
