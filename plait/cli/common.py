"""What the commands on a trained folder share: texts from the arguments or from stdin, and
results written one per line as they are ready (with a progress bar on a terminal for many)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from plait.progress import is_terminal, progress

T = TypeVar("T")
PROGRESS_FROM = 64  # inputs before a progress bar is worth showing


def read_texts(given: Sequence[str]) -> list[str]:
    """The texts given as arguments, or else one per line of standard input."""
    texts = list(given) if given else [line.rstrip("\r\n") for line in sys.stdin]
    if not texts:
        raise ValueError("no text: give texts as arguments or one per line on standard input")
    for i, t in enumerate(texts, 1):
        if not t.strip():
            raise ValueError(f"text {i} is empty")
    return texts


def in_chunks(texts: list[str], work: Callable[[list[str]], list[T]],
              size: int = 64) -> Iterator[T]:
    """``work`` over chunks of ``texts``, results in order; a progress bar on stderr when there
    are many and stderr is a terminal."""
    show = len(texts) >= PROGRESS_FROM and is_terminal(sys.stderr)
    bar = progress(total=len(texts), desc="texts", unit="text", disable=not show)
    for i in range(0, len(texts), size):
        chunk = texts[i:i + size]
        yield from work(chunk)
        bar.update(len(chunk))
    bar.close()


def writable(path: Path) -> None:
    """A ValueError naming why ``path`` cannot take a picture, if it cannot."""
    from PIL import Image

    known = Image.registered_extensions()
    if path.suffix.lower() not in known or known[path.suffix.lower()] not in Image.SAVE:
        raise ValueError(f"cannot write a picture to {path}: give a file name ending in an image"
                         " type, e.g. .png")
    can_write(path, "a picture")


def can_write(path: Path, what: str) -> None:
    """A ValueError naming why ``path`` cannot be written (``what`` names its content), if it
    cannot: a directory, a missing directory, no permission."""
    if path.is_dir():
        raise ValueError(f"cannot write {what} to {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {what} to {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write {what} to {path}: permission denied")
