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
from dataclasses import dataclass

import torch


def sync(device: str) -> None:
    """Wait for queued GPU work, so the clock measures it (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(cases: dict[str, Callable[[], object]], reps: int, device: str = "cpu",
                warmup: int = 1) -> dict[str, float]:
    """Median seconds of each case, the cases run round-robin ``reps`` times after a warm-up."""
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
    return {name: statistics.median(ts) for name, ts in times.items()}


@dataclass
class Row:
    """One benchmark line: throughput (or latency) of both libraries on the same work."""

    name: str
    unit: str  # "tok/s", "seq/s", "img/s" (higher is better) or "ms" (lower is better)
    hf: float | None
    plait: float | None
    check: str = ""  # parity evidence: "tokens equal", "max|diff| 3e-6", or why it was skipped

    @property
    def speedup(self) -> float | None:
        """How many times faster plait is (>1 = plait faster), whatever the unit."""
        if not self.hf or not self.plait:
            return None
        return self.hf / self.plait if self.unit == "ms" else self.plait / self.hf


def rate(work: float, seconds: float) -> float:
    return work / seconds


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(rows: list[Row]) -> str:
    """A Markdown table: benchmark, unit, transformers, plait, speedup, parity check."""
    lines = ["| benchmark | unit | transformers | plait | plait speedup | check |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        s = r.speedup
        lines.append(f"| {r.name} | {r.unit} | {fmt(r.hf)} | {fmt(r.plait)} |"
                     f" {'-' if s is None else f'{s:.2f}x'} | {r.check} |")
    return "\n".join(lines)
