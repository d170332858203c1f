"""Fair side-by-side timing: interleaved repetitions, medians, and a ratio table.

Running every contender once per round (HF, plait, HF, plait, ...) rather than all of one and
then all of the other spreads slow phases of a shared machine (other processes, CPU frequency,
page cache) evenly over both sides, so the *ratio* stays meaningful even when absolute numbers
drift. The median of the rounds ignores the odd outlier.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def sync(device: str) -> None:
    """Wait for queued GPU work, so the clock measures it (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(cases: dict[str, Callable[[], object]], reps: int, device: str = "cpu",
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each round of each case, the cases run round-robin after a warm-up."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


@dataclass
class Row:
    """One benchmark line: seconds per round of both libraries on the same work.

    ``work`` items per round (tokens, sequences, images) turn seconds into a throughput;
    ``work=0`` reports a latency in ms instead.
    """

    name: str
    unit: str  # "tok/s", "seq/s", "img/s" (higher is better) or "ms" (lower is better)
    work: int
    hf_s: list[float]
    plait_s: list[float]
    check: str = ""  # parity evidence: "tokens equal", "max abs diff 3e-06", or a skip reason
    extra: dict[str, list[float]] = field(default_factory=dict)  # seconds of other cases

    def value(self, seconds: float) -> float:
        return seconds * 1e3 if self.work == 0 else self.work / seconds

    @property
    def hf(self) -> float | None:
        return self.value(statistics.median(self.hf_s)) if self.hf_s else None

    @property
    def plait(self) -> float | None:
        return self.value(statistics.median(self.plait_s)) if self.plait_s else None

    @property
    def speedup(self) -> float | None:
        """Median HF time / median plait time (>1: plait faster)."""
        if not self.hf_s or not self.plait_s:
            return None
        return statistics.median(self.hf_s) / statistics.median(self.plait_s)

    @property
    def best_speedup(self) -> float | None:
        """The same from each side's fastest round: other processes only ever slow a round
        down, so on a busy machine the minimum is the steadier estimate."""
        if not self.hf_s or not self.plait_s:
            return None
        return min(self.hf_s) / min(self.plait_s)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(rows: list[Row]) -> str:
    """Markdown: benchmark, unit, medians of both sides, speed-ups (median, best), parity."""
    lines = ["| benchmark | unit | transformers | plait | plait speed-up (median) |"
             " (best round) | check |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.unit} | {fmt(r.hf)} | {fmt(r.plait)} |"
                     f" {times(r.speedup)} | {times(r.best_speedup)} | {r.check} |")
    return "\n".join(lines)


def times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"
