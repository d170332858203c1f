"""Progress that suits where it goes: a live tqdm bar on a terminal, a plain line every few
seconds in a log file or a pipe (tqdm's carriage-return redraws there become thousands of
updates on one enormous line).

``progress(total=..., desc=...)`` returns an object with tqdm's ``update``, ``set_postfix``,
``write`` and ``close``; ``progress(iterable, ...)`` also iterates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL = 10.0  # seconds between lines when the output is not a terminal


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


class LineProgress:
    """tqdm's small API, printing ``desc: n/total unit (pct), rate, eta, postfix`` lines."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0, file: TextIO | None = None,
                 disable: bool = False, interval: float | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = initial
        self.file = file or sys.stderr
        self.disable = disable
        self.interval = LINE_INTERVAL if interval is None else interval
        self.postfix = ""
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str) -> None:
        """Print a line to stdout (even when the bar is disabled), as ``tqdm.write`` does."""
        print(message, flush=True)

    def close(self) -> None:
        if not self.disable and self.n > self.start_n and self.last != self.start:
            self._line(time.monotonic())  # the final count, unless nothing was ever printed
        self.disable = True

    def _line(self, now: float) -> None:
        if self.disable:
            return
        done = self.n - self.start_n
        rate = done / max(now - self.start, 1e-9)
        parts = [f"{self.desc + ': ' if self.desc else ''}{self.n}"
                 + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.file, flush=True)


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, file: TextIO | None = None,
             disable: bool = False) -> tqdm | LineProgress:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    file = file or sys.stderr
    if is_terminal(file):
        return tqdm(iterable, total=total, desc=desc or None, unit=unit, initial=initial,
                    file=file, disable=disable, dynamic_ncols=True, leave=False)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                        disable=disable)
